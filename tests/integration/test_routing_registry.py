"""Routing the canonical book and the coexistence registry, through Dagster, on a real PostgreSQL."""

import textwrap

import pyarrow as pa
import pytest
from sqlalchemy import text

from tests.book import as_intent

from dagster_project.runner import route
from resources.coexistence_store import CoexistenceStore
from tests.inprocess import InProcessLauncher

ALL_TO = """
rule_set: everything_to_{target}
version: {version}
rules:
  - name: default_route
    priority: 999
    condition: true
    target: {target}
"""


@pytest.fixture
def routed(routed_book):
    return routed_book


def rules_file(tmp_path, target: str, version: str):
    path = tmp_path / f"{target}-{version}.yaml"
    path.write_text(textwrap.dedent(ALL_TO.format(target=target, version=version)))
    return path


def counts(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {name: conn.execute(text(f"SELECT count(*) FROM {name}")).scalar_one()
                for name in ("routing.decisions", "routing.decision_history", "coexistence.registry",
                             "coexistence.history", "coexistence.conflicts")}


def test_the_book_is_routed_and_registered_once(routed, engine):
    with engine.connect() as conn:
        book = conn.execute(text("SELECT count(*) FROM canonical.policies")).scalar_one()
        sor = dict(conn.execute(text("SELECT system_of_record, count(*) FROM coexistence.registry GROUP BY 1")).all())
    c = counts(engine)
    assert c["routing.decisions"] == c["coexistence.registry"] == book
    assert c["coexistence.history"] == book and c["coexistence.conflicts"] == 0
    assert set(sor) == {"mainframe_life", "pc_csv"}  # nothing migrated yet: the legacy systems own everything
    assert set(routed.by_target) <= {"new_platform", "legacy_batch", "dq_queue", "coexistence_bridge"}
    assert len(routed.by_target) >= 3  # the default rules really split the book


def test_rerunning_the_same_rules_changes_nothing(routed, resources, engine, instance):
    before = counts(engine)
    with engine.connect() as conn:
        snapshot = conn.execute(text("SELECT * FROM coexistence.registry ORDER BY policy_id")).all()
    assert route(resources=resources, launcher=InProcessLauncher(resources, instance)).success
    with engine.connect() as conn:
        assert conn.execute(text("SELECT * FROM coexistence.registry ORDER BY policy_id")).all() == snapshot
    assert counts(engine) == before


def test_a_rule_change_moves_policies_and_a_reversal_moves_them_back(routed, resources, engine, instance, tmp_path):
    book = counts(engine)["routing.decisions"]
    assert route(rules_file(tmp_path, "legacy_batch", "2.0.0"), resources=resources, launcher=InProcessLauncher(resources, instance)).success
    with engine.connect() as conn:
        targets = dict(conn.execute(text("SELECT planned_target, count(*) FROM coexistence.registry GROUP BY 1")).all())
        moved = conn.execute(text("SELECT count(*) FROM coexistence.history WHERE reason = 'routing decision changed'")).scalar_one()
    assert targets == {"legacy_batch": book}
    assert moved == book - routed.by_target.get("legacy_batch", 0)
    assert route(resources=resources, launcher=InProcessLauncher(resources, instance)).success  # back to the default rules
    with engine.connect() as conn:
        back = dict(conn.execute(text("SELECT target, count(*) FROM routing.decisions GROUP BY 1")).all())
        reversals = conn.execute(text(
            "SELECT count(*) FROM routing.decision_history WHERE from_target = 'legacy_batch' "
            "AND to_target <> 'legacy_batch'")).scalar_one()
    assert back == routed.by_target and reversals == moved


def test_pinned_and_migrated_policies_are_not_moved_but_conflicts_are_recorded(routed, resources, engine, instance, tmp_path):
    store = CoexistenceStore(engine)
    with engine.connect() as conn:
        pinned, migrated, plain = conn.execute(text(
            "SELECT policy_id FROM coexistence.registry WHERE planned_target <> 'dq_queue' ORDER BY policy_id LIMIT 3")).scalars()
    store.override(pinned, "dq_queue", "claims team holds it", "tester")
    with as_intent(engine), engine.begin() as conn:  # as a wave load will do
        conn.execute(text("UPDATE coexistence.registry SET system_of_record = 'new_platform', planned_target = 'new_platform' "
                          "WHERE policy_id = :p"), {"p": migrated})
    assert route(rules_file(tmp_path, "coexistence_bridge", "3.0.0"), resources=resources, launcher=InProcessLauncher(resources, instance)).success
    assert store.where(pinned)["planned_target"] == "dq_queue"
    assert store.where(migrated)["planned_target"] == "new_platform"
    assert store.where(plain)["planned_target"] == "coexistence_bridge"
    why = {c["policy_id"]: c["why"] for c in store.conflicts()}
    assert why == {pinned: "pinned by a manual override", migrated: "already migrated to the new platform"}
    # the same disagreement is recorded once, however often routing runs
    assert route(rules_file(tmp_path, "coexistence_bridge", "3.0.0"), resources=resources, launcher=InProcessLauncher(resources, instance)).success
    assert len(store.conflicts()) == 2


def test_where_answers_for_a_policy_in_each_state(routed, resources, engine):
    store = CoexistenceStore(engine)
    with engine.connect() as conn:
        a, b = conn.execute(text("SELECT policy_id FROM coexistence.registry ORDER BY policy_id LIMIT 2")).scalars()
    routed_only = store.where(a)
    assert routed_only["system_of_record"] in ("mainframe_life", "pc_csv") and not routed_only["pinned"]
    assert [c["change"] for c in routed_only["last_changes"]] == ["routing"]
    store.override(b, "legacy_batch", "run off in legacy", "tester")
    overridden = store.where(b)
    assert overridden["pinned"] and overridden["planned_target"] == "legacy_batch"
    assert [c["change"] for c in overridden["last_changes"]] == ["manual_override", "routing"]
    assert store.where("NO-SUCH-POLICY") is None
    assert [h["change"] for h in store.history(b)] == ["routing", "manual_override"]


def test_what_if_reports_moves_without_writing(routed, engine, tmp_path):
    from routing.rules import compare, evaluate, load_rule_set

    store = CoexistenceStore(engine)
    before = counts(engine)
    candidate = load_rule_set(rules_file(tmp_path, "new_platform", "9.0.0"))
    proposed = pa.concat_tables([evaluate(candidate, block) for block in store.read_book()])
    report = compare(store.current_decisions(), proposed)
    moved = sum(r.get("policies", 0) for r in report.to_rows() if r.get("to_target", r.get("to")) == "new_platform"
                and r.get("from_target", r.get("from")) != "new_platform")
    assert moved == before["routing.decisions"] - routed.by_target.get("new_platform", 0)
    assert counts(engine) == before
