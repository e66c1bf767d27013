"""Waves end to end on a real PostgreSQL: load every target, reconcile, report, and compensate.

Snapshots are whole tables (every column, every row), taken before a wave and compared after its
rollback.
"""

from datetime import datetime, timedelta, timezone

import dagster as dg
import pytest
from sqlalchemy import text

from dagster_project.definitions import build_definitions
from dagster_project.runner import reconcile_wave, rollback_wave, run_wave
from legacy.outbound import read_policies
from resources.wave_store import WaveError, WaveStore
from routing.waves import ROUTED, WaveSpec
from tests.book import NO_GATES, as_intent, tampered
from tests.inprocess import InProcessLauncher

NEW_PLATFORM_TABLES = ("policy", "party", "coverage", "rating", "payment", "endorsement", "document", "claim_link")
# what the targets and the registry hold: a withdrawn legacy batch file stays on record as withdrawn, and its
# file moves to `withdrawn/`, so the legacy side's state is the delivered files and the files in the folder
STATE = {f"new_platform.{t}": f"SELECT * FROM new_platform.{t}" for t in NEW_PLATFORM_TABLES} | {
    t: f"SELECT * FROM {t}" for t in ("coexistence.registry", "targets.dq_queue", "targets.coexistence_bridge",
                                      "targets.registry_saved")} | {
    "delivered files": "SELECT * FROM targets.outbound_files WHERE status = 'delivered'",
    "delivered records": "SELECT r.* FROM targets.outbound_records r JOIN targets.outbound_files f USING (file_id) "
                         "WHERE f.status = 'delivered' AND r.withdrawn_at IS NULL"}


def snapshot(engine, outbound=None) -> dict[str, list]:
    with engine.connect() as conn:
        state = {name: sorted(tuple(r) for r in conn.execute(text(query)).all()) for name, query in STATE.items()}
    if outbound is not None:
        folder = outbound / "legacy_batch"
        state["legacy batch folder"] = sorted((p.name, p.read_bytes()) for p in folder.glob("*.dat")) if folder.exists() else []
    return state


def counts(engine) -> dict[str, int]:
    return {name: len(rows) for name, rows in snapshot(engine).items()}


@pytest.fixture
def waves(routed_book, engine):
    """Two waves over the sample book: every routed target present in each."""
    store = WaveStore(engine)
    start = datetime.now(timezone.utc) - timedelta(hours=1)
    gates = {"completeness": 0.9, "mean_dq_score": 50.0, "min_dq_score": 0.0, "mapping_confidence": 0.5}
    specs = [WaveSpec(0, "life", ROUTED, {"field": "line_of_business", "operator": "in",
                                          "value": ["life", "annuity"]}, 400, start, gates),
             WaveSpec(1, "property and casualty", ROUTED, {"field": "line_of_business", "operator": "not_in",
                                                           "value": ["life", "annuity"]}, 400, start, gates)]
    plan_id, ids = store.save_plan("test plan", specs, "tester")
    for wave_id in ids:
        store.set_status(wave_id, "approved", allowed_from=("draft",), approved_by="tester")
    return store, ids


def test_a_wave_loads_every_target_reconciles_and_once_completed_refuses_to_load_again(waves, resources, engine,
                                                                                      instance):
    store, ids = waves
    run = run_wave(ids[0], resources=resources, launcher=InProcessLauncher(resources, instance))
    assert run.success, (run.error, run.failed_checks)
    wave = store.wave(ids[0])
    assert wave["status"] == "completed"
    by_target = store.candidate_targets(ids[0])
    assert set(by_target) >= {"new_platform", "coexistence_bridge", "legacy_batch"}, by_target
    with engine.connect() as conn:
        loaded = conn.execute(text("SELECT count(*) FROM new_platform.policy WHERE wave_id = :w"), {"w": ids[0]}).scalar_one()
        registry = dict(conn.execute(text(
            "SELECT c.target, count(*) FILTER (WHERE r.system_of_record = 'new_platform') FROM waves.candidates c "
            "JOIN coexistence.registry r USING (policy_id) WHERE c.wave_id = :w AND r.wave = :w GROUP BY 1"),
            {"w": ids[0]}).all())
        history = conn.execute(text("SELECT count(*) FROM coexistence.history WHERE change = 'wave_load'")).scalar_one()
        wal_ids = conn.execute(text("SELECT DISTINCT i.operation FROM new_platform.coverage x JOIN wal.intents i "
                                    "ON i.id = x.wal_id")).scalars().all()
        path = conn.execute(text("SELECT path FROM targets.outbound_files WHERE wave_id = :w"), {"w": ids[0]}).scalar_one()
    assert loaded == by_target["new_platform"] + by_target["coexistence_bridge"]
    assert registry["new_platform"] == by_target["new_platform"]  # moved to the new platform
    assert registry["coexistence_bridge"] == 0 and registry["legacy_batch"] == 0  # legacy stays system of record
    assert history == by_target["new_platform"] + by_target["coexistence_bridge"] + by_target["legacy_batch"]
    assert wal_ids == ["load_new_platform"]
    batch = read_policies(path)  # the file decodes with the mainframe codec
    assert batch.num_rows == by_target["legacy_batch"] + by_target["coexistence_bridge"]
    assert {r["target"] for r in wave["report"]} == set(by_target)

    # the new platform owns the migrated policies now: neither the wave nor one of its target partitions loads again
    # over them (a re-materialization once rewrote migrated policies with legacy's version), until it is rolled back
    before = snapshot(engine)
    with pytest.raises(WaveError, match=f"wave {ids[0]} is completed.*Roll it back first"):
        run_wave(ids[0], resources=resources, launcher=InProcessLauncher(resources, instance))
    from assets.targets import NEW_PLATFORM

    again = InProcessLauncher(resources, instance).run("run_wave_job", partition_key=ids[0],
                                                       asset_selection=[NEW_PLATFORM])
    assert not again.success and "is completed" in again.error and "does not load it again" in again.error
    assert snapshot(engine) == before  # nothing changed, down to load times
    assert store.wave(ids[0])["status"] == "completed"


def test_a_crash_between_recording_the_batch_and_delivering_it_leaves_no_file_for_the_mainframe(waves, resources,
                                                                                                  engine, instance, home):
    store, ids = waves
    launcher = InProcessLauncher(resources, instance)
    run = run_wave(ids[0], resources=resources, launcher=launcher, compensate=False,
                   fault="fail:before_publish:targets/legacy_batch")
    assert not run.success and "before_publish" in run.error
    pickup = home / "outbound" / "legacy_batch"
    assert sorted(p.name for p in pickup.glob("*.dat")) == []  # nothing where the mainframe picks files up
    with engine.connect() as conn:
        (status,) = conn.execute(text("SELECT status FROM targets.outbound_files WHERE wave_id = :w"),
                                 {"w": ids[0]}).scalars()
    assert status == "written"  # recorded, beside the pickup folder
    (rollback,) = launcher.compensations(run.run_id)
    assert rollback.success, rollback.error
    assert list(pickup.glob("*.dat")) == [] and list((home / "outbound" / ".pending").rglob("*.dat")) == []
    assert [p.name.split(".dat")[1].split(".")[1] for p in (pickup / "withdrawn").iterdir()] == ["unpublished"]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT status FROM targets.outbound_files WHERE wave_id = :w"),
                            {"w": ids[0]}).scalar_one() == "withdrawn"
    # approved again, the wave delivers its file whole
    store.set_status(ids[0], "approved", allowed_from=("rolled_back",), approved_by="tester")
    assert run_wave(ids[0], resources=resources, launcher=launcher).success
    assert [p.name for p in pickup.glob("*.dat")] == [f"POLOUT-{ids[0]}.dat"]


def test_a_wave_that_fails_a_gate_loads_nothing(waves, resources, engine, instance):
    store, ids = waves
    before = snapshot(engine)
    store.set_gates(ids[0], {"mean_dq_score": 100.5})
    run = run_wave(ids[0], resources=resources, launcher=InProcessLauncher(resources, instance))
    assert not run.success and "waves/candidates: waves_candidates_dq_score" in run.failed_checks
    assert run.rollbacks == []  # nothing was loaded, nothing to undo
    assert snapshot(engine) == before
    assert store.wave(ids[0])["status"] == "failed"


def test_a_load_that_fails_partway_is_rolled_back_automatically(waves, resources, engine, instance):
    store, ids = waves
    assert run_wave(ids[0], resources=resources, launcher=InProcessLauncher(resources, instance)).success
    outbound = resources["targets"].outbound_dir()
    before = snapshot(engine, outbound)
    run = run_wave(ids[1], resources=resources, launcher=InProcessLauncher(resources, instance),
                   fault="fail:mid_load:targets/coexistence_bridge")
    assert not run.success and "fault injected at" in run.error
    assert [r.success for r in run.rollbacks] == [True], [r.error for r in run.rollbacks]
    assert snapshot(engine, outbound) == before
    assert (outbound / "legacy_batch" / "withdrawn").exists()  # the withdrawn file is kept aside, not deleted
    wave = store.wave(ids[1])
    assert wave["status"] == "rolled_back"
    # Dagster's asset state says the same: the rolled-back wave's partitions are superseded by the rollback (state
    # rolled back, no rows), the loaded wave's still say loaded
    from assets.targets import REPORT, TARGET_KEYS
    from assets.waves import CANDIDATES

    def latest(key, wave_id):
        (record,) = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[wave_id]), limit=1).records
        metadata = record.asset_materialization.metadata
        return metadata["state"].value, metadata["dagster/row_count"].value > 0, record.run_id

    rolled = [latest(k, ids[1]) for k in (CANDIDATES, *TARGET_KEYS)]
    assert [(s, rows) for s, rows, _ in rolled] == [("rolled back", False)] * 5
    assert {run_id for *_, run_id in rolled} == {run.rollbacks[0].run_id}
    assert [latest(k, ids[0])[:2] for k in (*TARGET_KEYS, REPORT)] == [("loaded", True)] * 5
    with engine.connect() as conn:
        statuses = dict(conn.execute(text("SELECT operation, status FROM wal.intents WHERE wave = :w "
                                          "AND namespace = 'targets'"), {"w": ids[1]}).all())
        steps = conn.execute(text("SELECT count(*) FROM wal.intents WHERE wave = :w AND namespace = 'compensation' "
                                  "AND status = 'committed'"), {"w": ids[1]}).scalar_one()
    # the loads are undone; the reconciliations that checked them stay on record as what they were
    assert statuses == {"load_new_platform": "compensated", "write_legacy_batch": "compensated",
                        "queue_held_back": "compensated", "record_bridge": "compensated",
                        "reconcile_new_platform": "committed", "reconcile_legacy_batch": "committed",
                        "reconcile_dq_queue": "committed"}
    assert steps == 5  # four targets and the candidate selection
    assert resources["wal"].store().verify().ok
    # a second rollback changes nothing, and writes nothing to the WAL
    with engine.connect() as conn:
        entries = conn.execute(text("SELECT count(*) FROM wal.log")).scalar_one()
    assert rollback_wave(ids[1], resources=resources, launcher=InProcessLauncher(resources, instance)).success
    assert snapshot(engine, outbound) == before
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM wal.log")).scalar_one() == entries


def test_a_failed_reconciliation_rolls_the_wave_back(waves, resources, engine, instance):
    store, ids = waves
    before = snapshot(engine)
    assert run_wave(ids[0], resources=resources, launcher=InProcessLauncher(resources, instance)).success
    with tampered(engine) as conn:  # a cent lost on the new platform
        victim = conn.execute(text("UPDATE new_platform.rating SET annual_premium = annual_premium - 0.01 WHERE "
                                   "policy_number = (SELECT min(policy_number) FROM new_platform.rating) "
                                   "RETURNING policy_number")).scalar_one()
    run = reconcile_wave(ids[0], resources=resources, launcher=InProcessLauncher(resources, instance))
    assert not run.success
    assert {"targets/new_platform: targets_new_platform_money_totals",
            "targets/new_platform: targets_new_platform_content_hash"} <= set(run.failed_checks)
    assert [r.success for r in run.rollbacks] == [True]
    assert snapshot(engine) == before
    history = store.wave(ids[0])
    assert history["status"] == "rolled_back" and victim  # the tampered policy went back with the rest


def test_one_policy_can_be_rolled_back_and_the_rest_of_the_wave_stays(waves, resources, engine, instance):
    store, ids = waves
    with engine.connect() as conn:
        registry_before = {r[0]: tuple(r) for r in conn.execute(text("SELECT * FROM coexistence.registry")).all()}
    assert run_wave(ids[0], resources=resources, launcher=InProcessLauncher(resources, instance)).success
    with engine.connect() as conn:
        policy = conn.execute(text("SELECT policy_id FROM waves.candidates WHERE wave_id = :w AND target = 'new_platform' "
                                   "ORDER BY policy_id LIMIT 1"), {"w": ids[0]}).scalar_one()
    counts_before = counts(engine)
    assert rollback_wave(ids[0], policy_id=policy, resources=resources, launcher=InProcessLauncher(resources, instance)).success
    with engine.connect() as conn:
        left = sum(conn.execute(text(f"SELECT count(*) FROM new_platform.{t} WHERE policy_number = :p"),
                                {"p": policy}).scalar_one() for t in NEW_PLATFORM_TABLES)
        row = tuple(conn.execute(text("SELECT * FROM coexistence.registry WHERE policy_id = :p"), {"p": policy}).one())
        others = conn.execute(text("SELECT count(*) FROM new_platform.policy WHERE wave_id = :w"), {"w": ids[0]}).scalar_one()
    assert left == 0 and row == registry_before[policy]
    assert others == counts_before["new_platform.policy"] - 1
    assert store.wave(ids[0])["status"] == "completed"
    assert reconcile_wave(ids[0], resources=resources, launcher=InProcessLauncher(resources, instance)).success  # the rest still reconciles
    again = counts(engine)
    assert rollback_wave(ids[0], policy_id=policy, resources=resources, launcher=InProcessLauncher(resources, instance)).success
    assert counts(engine) == again  # idempotent


def test_the_compensation_sensor_asks_for_a_rollback_only_when_something_was_loaded(waves, resources, engine, instance):
    store, ids = waves
    launcher = InProcessLauncher(resources, instance)
    run = run_wave(ids[1], resources=resources, launcher=launcher, fault="fail:mid_load:targets/new_platform",
                   compensate=False)
    assert not run.success
    # the new platform load failed inside its transaction: its entry is failed, and undoing it is still asked for,
    # since an earlier attempt may have committed rows under the same entry
    (request,) = launcher.requests_for(run.run_id)
    assert request.run_key == f"rollback:{run.run_id}"
    assert request.tags["data_mash/compensates"] == run.run_id
    assert request.run_config["ops"]["plan_wave_rollback"]["config"]["wave_id"] == ids[1]
    # a rerun stopped before it loaded anything asks for nothing (the wave's earlier load is left alone)
    store.set_status(ids[1], "approved", allowed_from=("failed",), approved_by="tester")
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE new_platform.rating DROP COLUMN billing_mode"))
    gated = run_wave(ids[1], resources=resources, launcher=launcher, compensate=False)
    assert not gated.success and launcher.requests_for(gated.run_id) == []


def test_a_target_schema_that_is_not_as_the_mapping_says_stops_the_wave_before_any_load(waves, resources, engine, instance):
    store, ids = waves
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE new_platform.rating DROP COLUMN billing_mode"))
    before = snapshot(engine)
    run = run_wave(ids[0], resources=resources, launcher=InProcessLauncher(resources, instance))
    assert not run.success and "waves/candidates: waves_candidates_target_readiness" in run.failed_checks
    assert snapshot(engine) == before
    assert "new_platform.rating is missing or has other columns" in store.wave(ids[0])["status_reason"]


def test_a_queued_policy_re_enters_a_later_wave_once_remediated(waves, resources, engine, instance):
    from resources.coexistence_store import CoexistenceStore

    store, ids = waves
    assert run_wave(ids[0], resources=resources, launcher=InProcessLauncher(resources, instance)).success
    with engine.connect() as conn:
        queued = conn.execute(text("SELECT policy_id, reasons FROM targets.dq_queue WHERE wave_id = :w ORDER BY 1 LIMIT 1"),
                              {"w": ids[0]}).one()
    assert queued.reasons.startswith("routing rule ")
    with as_intent(engine), engine.begin() as conn:  # remediation: its record is corrected where it breaks a business rule ...
        conn.execute(text("UPDATE canonical.policies SET annual_premium = abs(annual_premium), expiration_date = CASE "
                          "WHEN expiration_date <= effective_date THEN NULL ELSE expiration_date END WHERE policy_id = :p"),
                     {"p": queued.policy_id})
        conn.execute(text("UPDATE canonical.coverages SET deductible_amount = least(deductible_amount, limit_amount) "
                          "WHERE policy_id = :p"), {"p": queued.policy_id})
    # ... and it is sent on by hand; a later wave takes it to the new platform and releases it from the queue
    CoexistenceStore(engine).override(queued.policy_id, "new_platform", "remediated", "tester")
    _, (later,) = store.save_plan("remediated", [WaveSpec(0, "remediated", ROUTED, {
        "field": "policy_id", "operator": "equals", "value": queued.policy_id}, 10, datetime.now(timezone.utc),
        dict(NO_GATES))], "tester")
    store.set_status(later, "approved", allowed_from=("draft",), approved_by="tester")
    run = run_wave(later, resources=resources, launcher=InProcessLauncher(resources, instance))
    with engine.connect() as conn:
        released = conn.execute(text("SELECT released_by_wave FROM targets.dq_queue WHERE policy_id = :p"),
                                {"p": queued.policy_id}).scalar_one()
        system = conn.execute(text("SELECT system_of_record FROM coexistence.registry WHERE policy_id = :p"),
                              {"p": queued.policy_id}).scalar_one()
    assert run.success, (run.error, run.failed_checks)
    assert released == later and system == "new_platform"


def test_a_failed_reconciliation_fails_its_run_and_the_compensation_sensor_rolls_the_wave_back(waves, resources, engine,
                                                                                                instance):
    store, ids = waves
    launcher = InProcessLauncher(resources, instance)
    loaded = run_wave(ids[0], resources=resources, launcher=launcher)
    assert loaded.success and launcher.requests_for(loaded.run_id) == []
    with tampered(engine) as conn:
        conn.execute(text("DELETE FROM new_platform.claim_link WHERE wave_id = :w AND policy_number = "
                          "(SELECT min(policy_number) FROM new_platform.claim_link WHERE wave_id = :w)"), {"w": ids[0]})
    failed = reconcile_wave(ids[0], resources=resources, launcher=launcher, compensate=False)
    assert not failed.success and "targets/new_platform: targets_new_platform_row_counts" in failed.failed_checks
    assert store.wave(ids[0])["status_reason"].startswith("reconciliation failed: new_platform row_counts DIFFERS")
    (request,) = launcher.requests_for(failed.run_id)
    assert (request.run_key, request.run_config["ops"]["plan_wave_rollback"]["config"]["wave_id"]) == (
        f"rollback:{failed.run_id}", ids[0])


def test_waves_selecting_at_the_same_time_never_share_a_policy(routed_book, engine):
    from concurrent.futures import ThreadPoolExecutor

    store = WaveStore(engine)
    start = datetime.now(timezone.utc)
    specs = [WaveSpec(i, f"overlapping {i}", ROUTED, True, 10_000, start) for i in range(4)]
    _, ids = store.save_plan("parallel", specs, "tester")
    for wave_id in ids:
        store.set_status(wave_id, "running", allowed_from=("draft",))
    def select(wave_id: str) -> int:
        with as_intent(engine, f"select {wave_id}") as intent:  # each selection its own intent, as in a wave run
            return store.select_candidates(wave_id, intent.id)

    with ThreadPoolExecutor(4) as pool:
        selected = list(pool.map(select, ids))
    with engine.connect() as conn:
        shared = conn.execute(text("SELECT count(*) FROM (SELECT policy_id FROM waves.candidates GROUP BY 1 "
                                   "HAVING count(*) > 1) d")).scalar_one()
        book = conn.execute(text("SELECT count(*) FROM coexistence.registry")).scalar_one()
    assert shared == 0
    assert sorted(selected) == [0, 0, 0, book]  # whichever selected first took the whole book; the others nothing


def test_the_load_maps_in_sql_exactly_as_the_reference_transform_and_refuses_an_unknown_code(waves, resources,
                                                                                                engine, instance):
    """The load maps where the data is (SQL); the Arrow `transform` is the mapping's reference implementation: the
    rows the platform holds equal what it makes of the same canonical rows, table by table."""
    import pyarrow as pa

    from canonical.tables import V1_TABLES
    from canonical.targets import load_target_mapping, transform
    from resources.book_store import in_book
    from resources.database import psycopg_cursor
    from resources.intake_store import copy_to_arrow
    from psycopg import sql

    store, ids = waves
    assert run_wave(ids[0], resources=resources, launcher=InProcessLauncher(resources, instance)).success
    mapping = load_target_mapping()
    compared = 0
    with psycopg_cursor(engine) as cur:
        cur.execute("CREATE TEMP TABLE scope ON COMMIT DROP AS SELECT policy_id FROM waves.candidates "
                    "WHERE wave_id = %s AND target IN ('new_platform', 'coexistence_bridge')", (ids[0],))
        for t in mapping.tables.values():
            want = []
            for source in t.sources:
                canonical = V1_TABLES[source.table]
                rows = copy_to_arrow(cur, sql.SQL("COPY (SELECT {} FROM canonical.{} c JOIN scope USING (policy_id) "
                                                  "WHERE {}) TO STDOUT (FORMAT csv)").format(
                    sql.SQL(", ").join(sql.SQL("c.{}").format(sql.Identifier(n)) for n in canonical.names),
                    sql.Identifier(canonical.name), in_book("c")), [(c.name, c.type) for c in canonical.columns])
                want += transform(t, source, rows).to_pylist()
            have = copy_to_arrow(cur, sql.SQL("COPY (SELECT {} FROM new_platform.{} WHERE wave_id = {}) TO STDOUT "
                                              "(FORMAT csv)").format(
                sql.SQL(", ").join(sql.Identifier(c) for c in t.columns), sql.Identifier(t.name), sql.Literal(ids[0])),
                list(zip(t.columns, t.types))).to_pylist()
            key = lambda row: tuple(str(row[c]) for c in t.columns)  # noqa: E731
            assert sorted(have, key=key) == sorted(want, key=key), t.name
            compared += len(have)
    assert compared > 0
    # a canonical code the platform has no code for: the business-rule gate stops such a wave first; the load's own
    # mapping refuses it too (as the reference transform does), never writing a NULL code
    from datetime import datetime, timezone

    with engine.connect() as conn:
        victim = conn.execute(text("SELECT min(policy_id) FROM canonical.current")).scalar_one()
    with tampered(engine) as conn:
        conn.execute(text("UPDATE canonical.policies SET status = 'zombie' WHERE policy_id = :p"), {"p": victim})
    targets = resources["targets"].store()
    with pytest.raises(Exception, match="canonical policies.status value 'zombie' has no code on the new platform"):
        with psycopg_cursor(engine) as cur:
            cur.execute("CREATE TEMP TABLE scope ON COMMIT DROP AS SELECT %s::text AS policy_id", (victim,))
            for select in targets._mapped_rows(mapping.tables["policy"], ids[1], 1, datetime.now(timezone.utc)):
                cur.execute(select)
