"""Wave plans through approval, the schedule sensor and candidate selection, on a real PostgreSQL."""

from datetime import datetime, timedelta, timezone

import dagster as dg
import pytest
import yaml
from sqlalchemy import text

from dagster_project.definitions import build_definitions
from dagster_project.runner import rollback_wave, run_wave
from resources.wave_store import WaveError, WaveStore
from routing.waves import propose_plan
from resources.wave_store import WaveError
from tests.book import tampered
from tests.inprocess import InProcessLauncher


@pytest.fixture
def planned(routed_book, engine):
    store = WaveStore(engine)
    waves = propose_plan(store.routed_book(), start=datetime.now(timezone.utc) - timedelta(hours=1), size_cap=60)
    plan_id, ids = store.save_plan("test plan", waves, "tester")
    return store, plan_id, ids


def test_a_plan_is_stored_and_exported(planned):
    store, plan_id, ids = planned
    assert len(ids) >= 3 and ids[0] == f"p{plan_id}-w00"
    exported = yaml.safe_load(store.export_yaml(plan_id))
    assert [w["wave_id"] for w in exported["waves"]] == ids
    assert all(w["status"] == "draft" and w["size_cap"] == 60 for w in exported["waves"])


def test_only_approved_due_waves_are_launched_by_the_sensor(planned, resources, instance):
    store, plan_id, ids = planned
    sensor = build_definitions(resources=resources).resolve_sensor_def("wave_schedule_sensor")
    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        assert isinstance(sensor(context), dg.SkipReason)
    store.set_status(ids[0], "approved", allowed_from=("draft",), approved_by="tester")
    with pytest.raises(WaveError, match="must be draft"):
        store.set_status(ids[0], "approved", allowed_from=("draft",), approved_by="tester")
    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        result = sensor(context)
    assert [(r.partition_key, r.run_key) for r in result.run_requests] == [(ids[0], f"{ids[0]}:attempt-1")]
    assert result.dynamic_partitions_requests[0].partition_keys == [ids[0]]


def test_a_wave_selects_its_policies_once_and_the_next_wave_excludes_them(planned, resources, engine, instance):
    store, plan_id, ids = planned
    for wave_id in ids[:2]:
        store.set_status(wave_id, "approved", allowed_from=("draft",), approved_by="tester")
    first = run_wave(ids[0], resources=resources, launcher=InProcessLauncher(resources, instance))
    assert first.success, first.error
    with pytest.raises(WaveError, match="is completed"):  # a completed wave does not select again
        run_wave(ids[0], resources=resources, launcher=InProcessLauncher(resources, instance))
    assert run_wave(ids[1], resources=resources, launcher=InProcessLauncher(resources, instance)).success
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT c.wave_id, c.policy_id, d.target, r.system_of_record, p.status, p.dq_score, p.line_of_business "
            "FROM waves.candidates c JOIN routing.decisions d USING (policy_id) "
            "JOIN coexistence.registry r USING (policy_id) JOIN canonical.policies p USING (policy_id)")).all()
    by_wave = {w: [r for r in rows if r.wave_id == w] for w in ids[:2]}
    assert 0 < len(by_wave[ids[0]]) <= 60
    # wave 0 takes only policies routed to the new platform, and moves them there
    assert all(r.target == "new_platform" and r.system_of_record == "new_platform" for r in by_wave[ids[0]])
    assert all(r.status == "in_force" and r.dq_score >= 99 for r in by_wave[ids[0]])  # wave 0's criteria
    assert not {r.policy_id for r in by_wave[ids[0]]} & {r.policy_id for r in by_wave[ids[1]]}
    assert store.wave(ids[0])["status"] == "completed" and store.wave(ids[0])["attempts"] == 1  # refused: no attempt


def test_gates_pass_for_a_clean_wave_and_stop_a_wave_that_falls_short(planned, resources, engine, instance):
    store, plan_id, ids = planned
    for wave_id in ids[:2]:
        store.set_status(wave_id, "approved", allowed_from=("draft",), approved_by="tester")
    clean = run_wave(ids[0], resources=resources, launcher=InProcessLauncher(resources, instance))
    assert clean.success and clean.failed_checks == []
    assert store.wave(ids[0])["status"] == "completed"
    store.set_gates(ids[1], {"mean_dq_score": 100.5})  # a stricter wave: its mean DQ score cannot reach 100.5
    strict = run_wave(ids[1], resources=resources, launcher=InProcessLauncher(resources, instance))
    assert not strict.success
    assert "waves/candidates: waves_candidates_dq_score" in strict.failed_checks
    wave = store.wave(ids[1])
    assert wave["status"] == "failed" and "dq_score failed" in wave["status_reason"]


def test_business_rules_name_the_policies_that_break_them(planned, resources, engine, instance):
    store, plan_id, ids = planned
    store.set_status(ids[0], "approved", allowed_from=("draft",), approved_by="tester")
    assert run_wave(ids[0], resources=resources, launcher=InProcessLauncher(resources, instance)).success
    with engine.connect() as conn:
        victim = conn.execute(text("SELECT policy_id FROM waves.candidates WHERE wave_id = :w ORDER BY policy_id LIMIT 1"),
                              {"w": ids[0]}).scalar_one()
    # a completed wave runs again only once rolled back; its policy's record then breaks a rule
    assert rollback_wave(ids[0], resources=resources, launcher=InProcessLauncher(resources, instance)).success
    store.set_status(ids[0], "approved", allowed_from=("rolled_back",), approved_by="tester")
    with tampered(engine) as conn:
        conn.execute(text("UPDATE canonical.policies SET annual_premium = -1 WHERE policy_id = :p"), {"p": victim})
    again = run_wave(ids[0], resources=resources, launcher=InProcessLauncher(resources, instance))
    assert not again.success and "waves/candidates: waves_candidates_business_rules" in again.failed_checks
    reason = store.wave(ids[0])["status_reason"]
    assert "business_rules failed" in reason and victim in reason
    assert again.rollbacks == []  # the rerun loaded nothing: the earlier load stays
