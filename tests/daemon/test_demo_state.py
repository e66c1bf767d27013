"""After the demo's waves, Dagster's own record of each wave partition (read through its GraphQL API, as the UI reads
it) says what `data-mash wave list` says: loaded, stopped by a gate, rolled back, or not run."""

from __future__ import annotations

import json

import pytest
import requests

pytestmark = [pytest.mark.postgres, pytest.mark.daemon, pytest.mark.xdist_group(name="dagster")]

WAVE_ASSETS = (["waves", "candidates"], ["targets", "new_platform"], ["targets", "legacy_batch"],
               ["targets", "dq_queue"], ["targets", "coexistence_bridge"], ["waves", "report"])
GATES = ("completeness", "dq_score", "mapping_confidence", "business_rules", "target_readiness")

MATERIALIZATIONS = """
query ($key: AssetKeyInput!, $partition: String!) {
  assetOrError(assetKey: $key) {
    __typename
    ... on Asset { assetMaterializations(partitions: [$partition], limit: 1) {
      partition runId metadataEntries { label ... on TextMetadataEntry { text } } } }
  }
}"""
CHECKS = """
query ($key: AssetKeyInput!, $check: String!, $partition: String!) {
  assetCheckExecutions(assetKey: $key, checkName: $check, partition: $partition, limit: 1) {
    runId partition status evaluation { success }
  }
}"""


def graphql(url: str, query: str, variables: dict) -> dict:
    body = requests.post(f"{url}/graphql", json={"query": query, "variables": variables}, timeout=30).json()
    assert not body.get("errors"), body["errors"]
    return body["data"]


def dagster_state(url: str, wave_id: str) -> str:
    """A wave partition's state, from Dagster alone: latest materialization per asset, latest gate evaluations."""
    states = {}
    for path in WAVE_ASSETS:
        data = graphql(url, MATERIALIZATIONS, {"key": {"path": path}, "partition": wave_id})["assetOrError"]
        events = data.get("assetMaterializations") or []
        states["/".join(path)] = next((e["text"] for e in events[0]["metadataEntries"] if e["label"] == "state"),
                                      "?") if events else None
    gates = [graphql(url, CHECKS, {"key": {"path": ["waves", "candidates"]}, "check": f"waves_candidates_{g}",
                                   "partition": wave_id})["assetCheckExecutions"] for g in GATES]
    gate_failed = any(e and e[0]["status"] == "FAILED" for e in gates)
    for executions in gates:
        assert all(e["partition"] == wave_id for e in executions)  # the check evaluations stand on the partition
    targets = [states["/".join(p)] for p in WAVE_ASSETS[1:5]]
    if all(s is None for s in states.values()):
        return "not run"
    if states["waves/candidates"] == "rolled back" and all(t == "rolled back" for t in targets):
        return "rolled back"
    if gate_failed and states["waves/candidates"] == "selected" and all(t is None for t in targets):
        return "stopped by a gate"
    if not gate_failed and all(t == "loaded" for t in targets) and states["waves/report"] == "loaded":
        return "loaded"
    return f"inconsistent: {states}, gate failed: {gate_failed}"


def product_state(wave: dict) -> str:
    if wave["status"] == "completed":
        return "loaded"
    if wave["status"] == "rolled_back":
        return "rolled back"
    if wave["status"] == "failed" and (wave["status_reason"] or "").startswith("gate failed"):
        return "stopped by a gate"
    if wave["status"] in ("draft", "approved"):
        return "not run"
    return f"{wave['status']}: {wave['status_reason']}"


def test_dagster_tells_the_same_truth_as_wave_list_after_the_demo(world):
    waves = json.loads(world.cli("wave", "list", "--json").stdout)
    demo_waves = [w for w in waves if w["name"] and w["status"] != "draft"]
    assert [product_state(w) for w in demo_waves[:4]] == ["loaded", "loaded", "stopped by a gate", "rolled back"]
    url = world.launcher.services.url
    assert {w["wave_id"]: dagster_state(url, w["wave_id"]) for w in waves} == \
        {w["wave_id"]: product_state(w) for w in waves}
