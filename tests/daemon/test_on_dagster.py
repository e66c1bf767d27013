"""The daemon tier, on one demo world (see conftest.py): everything here runs through a real Dagster.

- After the demo's waves, Dagster's own record of each wave partition (read through its GraphQL API, as the UI reads
  it) says what `data-mash wave list` says: loaded, stopped by a gate, rolled back, or not run.
- A run worker killed with SIGKILL mid-write is cleaned up by Dagster alone, with no manual step: the code server
  reports the run failed, and `compensation_sensor` on the daemon rolls back a wave or a night of sync (the state is as
  before); an ingest is retried by Dagster from the step that died, and the drop is taken whole.
- What scaling out relies on: two waves run at once in two run workers, and Dagster's queue never lets two runs of
  the same wave overlap (the CLI refuses to even ask while one is queued or running).

One module, so that one test worker runs them all in a row on the one world (`make test` distributes by file:
pytest 9.2 broke pytest-xdist's loadgroup, which renames node ids).
"""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timezone

import dagster as dg
import pytest
import requests
from sqlalchemy import text

from dagster_project.launcher import LaunchError
from tests.daemon.conftest import kill_worker, wait_for_pending

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


def in_background(target) -> tuple[threading.Thread, dict]:
    """Run what the CLI runs (submit, follow, wait for compensation) in a thread, as a user's command would."""
    result = {}
    thread = threading.Thread(target=lambda: result.update(outcome=target()))
    thread.start()
    return thread, result


def assert_compensated(world, outcome, run_id: str) -> None:
    assert outcome.run_id == run_id and not outcome.success
    assert world.launcher.instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
    assert "terminated by signal 9" in outcome.error, outcome.error  # Dagster's own account of the dead worker
    (rollback,) = outcome.rollbacks  # launched by the daemon's sensor, not by this process
    assert rollback.success, rollback.error
    launched = world.launcher.instance.get_run_by_id(rollback.run_id)
    assert launched.tags["data_mash/compensates"] == run_id
    assert launched.tags["dagster/sensor_name"] == "compensation_sensor"


def test_a_wave_whose_worker_is_killed_mid_load_is_failed_and_rolled_back_by_the_daemon(world):
    from dagster_project.runner import run_wave
    from resources.wave_store import WaveStore
    from routing.waves import ROUTED, WaveSpec
    from tests.book import NO_GATES
    from tests.integration.test_wave_loads import snapshot

    waves = WaveStore(world.engine)
    _, (wave,) = waves.save_plan("kill drill", [WaveSpec(0, "everything routed", ROUTED, True, 10_000,
                                                         datetime.now(timezone.utc), dict(NO_GATES))], "tester")
    waves.set_status(wave, "approved", allowed_from=("draft",), approved_by="tester")
    before = snapshot(world.engine, world.home / "outbound")

    thread, result = in_background(lambda: run_wave(wave, resources=world.resources, launcher=world.launcher,
                                                    fault="hold:mid_load:targets/new_platform"))
    pending = wait_for_pending(world.engine, "load_new_platform", wave)
    kill_worker(world.launcher.instance, pending["run_id"])
    thread.join(timeout=300)
    assert not thread.is_alive()

    assert_compensated(world, result["outcome"], pending["run_id"])
    assert snapshot(world.engine, world.home / "outbound") == before
    assert waves.wave(wave)["status"] == "rolled_back"
    assert world.resources["wal"].store().wave_entries(wave, ("load_new_platform",), ("pending",)) == []


def test_a_worker_that_dies_between_recording_the_batch_and_delivering_it_leaves_no_file_for_the_mainframe(world):
    from dagster_project.runner import run_wave
    from resources.wave_store import WaveStore
    from routing.waves import ROUTED, WaveSpec
    from tests.book import NO_GATES
    from tests.integration.test_wave_loads import snapshot

    waves = WaveStore(world.engine)
    _, (wave,) = waves.save_plan("publish drill", [WaveSpec(0, "everything routed", ROUTED, True, 10_000,
                                                            datetime.now(timezone.utc), dict(NO_GATES))], "tester")
    waves.set_status(wave, "approved", allowed_from=("draft",), approved_by="tester")
    before = snapshot(world.engine, world.home / "outbound")
    # the worker exits at once (as if killed) after the batch is recorded, before it is moved into the pickup folder
    outcome = run_wave(wave, resources=world.resources, launcher=world.launcher,
                       fault="before_publish:targets/legacy_batch")
    assert not outcome.success
    assert world.launcher.instance.get_run_by_id(outcome.run_id).status == dg.DagsterRunStatus.FAILURE
    (rollback,) = outcome.rollbacks
    assert rollback.success, rollback.error
    pickup = world.home / "outbound" / "legacy_batch"
    assert not (pickup / f"POLOUT-{wave}.dat").exists()
    assert [p.name for p in (pickup / "withdrawn").glob(f"POLOUT-{wave}.dat.unpublished.*")]
    assert snapshot(world.engine, world.home / "outbound") == before
    with world.engine.connect() as conn:
        assert conn.execute(text("SELECT status FROM targets.outbound_files WHERE wave_id = :w"),
                            {"w": wave}).scalar_one() == "withdrawn"


def test_a_night_of_sync_whose_worker_is_killed_mid_write_is_rolled_back_by_the_daemon(world):
    from dagster_project.runner import rollback_sync, sync_night, tonight
    from resources.platform_activity import simulate_activity
    from resources.sync_store import sync_id
    from tests.integration.test_sync import _snapshot

    night = tonight()  # the demo synced it: undo it, change the platform, and sync it again, killed halfway
    assert rollback_sync(night, resources=world.resources, launcher=world.launcher).success
    simulate_activity(world.engine, 40, seed=11)
    before = _snapshot(world.engine, world.home)

    thread, result = in_background(lambda: sync_night(night, resources=world.resources, launcher=world.launcher,
                                                      fault="hold:mid_load:sync/legacy_batch"))
    pending = wait_for_pending(world.engine, "sync_legacy_batch", sync_id(night))
    kill_worker(world.launcher.instance, pending["run_id"])
    thread.join(timeout=300)
    assert not thread.is_alive()

    assert_compensated(world, result["outcome"], pending["run_id"])
    assert _snapshot(world.engine, world.home) == before
    with world.engine.connect() as conn:
        assert conn.execute(text("SELECT status FROM sync.nights WHERE night = :n"), {"n": night}).scalar_one() \
            == "rolled_back"


def test_an_ingest_whose_worker_is_killed_is_retried_by_dagster_and_takes_the_whole_drop(world, tmp_path):
    from dagster_project.runner import ingest
    from legacy.delta import write_delta

    book = world.home / "samples" / "book-2000-42"  # the demo's book
    write_delta(book, tmp_path / "day-3", day=3, seed=3)
    thread, result = in_background(lambda: ingest(tmp_path / "day-3" / "pc_csv", "pc_csv", "kill-day-3",
                                                  resources=world.resources, launcher=world.launcher,
                                                  fault="hold:mid_load:legacy/pc_csv/coverages"))
    pending = wait_for_pending(world.engine, "stage_file")
    kill_worker(world.launcher.instance, pending["run_id"])
    thread.join(timeout=300)
    assert not thread.is_alive()

    outcome = result["outcome"]
    assert outcome.success, outcome.error
    killed = world.launcher.instance.get_run_by_id(pending["run_id"])
    retry = world.launcher.instance.get_run_by_id(outcome.run_id)
    assert killed.status == dg.DagsterRunStatus.FAILURE and retry.tags["dagster/parent_run_id"] == killed.run_id
    # the whole drop: every file read is accounted for, once, and its intents are committed
    assert {f.kind for f in outcome.files} == {"policies", "coverages"}
    assert all(f.records_read == f.records_parsed + f.records_quarantined > 0 for f in outcome.files)
    with world.engine.connect() as conn:
        statuses = conn.execute(text("SELECT status, count(*) FROM wal.intents WHERE partition_key = 'kill-day-3' "
                                     "GROUP BY 1")).all()
    assert dict(statuses).keys() == {"committed"}, statuses
    # the drop goes into the book, as an operator would do next (waves refuse to select before)
    from dagster_project.runner import route
    assert route(resources=world.resources, launcher=world.launcher).success


def test_two_waves_run_at_once_and_the_same_wave_never_twice_at_once(world):
    from dagster_project.runner import run_wave
    from resources.wave_store import WaveStore
    from routing.waves import ROUTED, WaveSpec
    from tests.book import NO_GATES

    waves = WaveStore(world.engine)
    now = datetime.now(timezone.utc)
    life = {"field": "line_of_business", "operator": "in", "value": ["life", "annuity"]}
    other = {"field": "line_of_business", "operator": "not_in", "value": ["life", "annuity"]}
    _, (a, b) = waves.save_plan("parallel", [WaveSpec(0, "life", ROUTED, life, 300, now, dict(NO_GATES)),
                                             WaveSpec(1, "p&c", ROUTED, other, 300, now, dict(NO_GATES))], "tester")
    for wave in (a, b):
        waves.set_status(wave, "approved", allowed_from=("draft",), approved_by="tester")
        world.launcher.add_partitions("waves", [wave])

    hold = {"resources": {"wal": {"config": {"fault": "hold:after_intent:waves/candidates"}}}}
    first = world.launcher.submit("run_wave_job", partition_key=a, tags={"data_mash/wave": a}, run_config=hold)
    other_wave = world.launcher.submit("run_wave_job", partition_key=b, tags={"data_mash/wave": b}, run_config=hold)
    # a second request for wave a, as a sensor tick and a person could make at once: Dagster queues it
    second = world.launcher.submit("run_wave_job", partition_key=a, tags={"data_mash/wave": a})
    deadline = time.monotonic() + 120
    while world.launcher.instance.get_run_by_id(first).status != dg.DagsterRunStatus.STARTED:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    with pytest.raises(LaunchError, match=f"wave {a} already has run"):  # the CLI does not ask for a third
        run_wave(a, resources=world.resources, launcher=world.launcher)

    outcomes = {r: world.launcher.follow(r) for r in (first, other_wave, second)}
    records = {r: world.launcher.instance.get_run_record_by_id(r) for r in outcomes}
    assert outcomes[first].success and outcomes[other_wave].success, outcomes
    # two run workers at once: wave b started before wave a's first run ended
    assert records[other_wave].start_time < records[first].end_time
    assert records[first].start_time < records[other_wave].end_time
    # the per-wave limit held: the second run of wave a started only after the first ended
    assert records[second].start_time >= records[first].end_time
    # and the waves never shared a policy
    from sqlalchemy import text
    with world.engine.connect() as conn:
        shared = conn.execute(text("SELECT count(*) FROM (SELECT policy_id FROM waves.candidates "
                                   "WHERE wave_id IN (:a, :b) GROUP BY 1 HAVING count(*) > 1) x"),
                              {"a": a, "b": b}).scalar_one()
    assert shared == 0
