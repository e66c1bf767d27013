"""The nightly sync over two days (real PostgreSQL, real Dagster instance, real files).

Day 1: the sample book is routed and one wave moves it (new platform, bridge, legacy batch, DQ
queue). Day 2: a legacy delta changes policies, and business on the new platform changes others
(some the same ones). One night of sync must leave both sides agreed for every policy, with every
conflict recorded and settled by its line's rule, and a second run must change nothing.
"""

from datetime import date, datetime, timedelta

import dagster as dg
import pytest
from sqlalchemy import text

from dagster_project.runner import ingest, route, rollback_sync, sync_night
from legacy import outbound
from legacy.delta import write_delta
from resources.platform_activity import simulate_activity
from resources.sync_store import sync_id
from routing.waves import ROUTED
from tests.book import run_one_wave, sample_book
from tests.inprocess import InProcessLauncher

NIGHT = date(2026, 11, 21)
PLATFORM_TABLES = ("policy", "party", "coverage", "rating", "payment", "endorsement", "document", "claim_link")


@pytest.fixture
def day_1(routed_book, resources, engine, instance):
    """One routed wave over the whole day-1 book: every policy where routing sends it."""
    wave, run = run_one_wave(engine, resources, instance, target=ROUTED, name="whole book")
    assert run.success, run.error
    return wave


def _owners(engine) -> dict[str, set[str]]:
    with engine.connect() as conn:
        bridge = set(conn.execute(text("SELECT policy_id FROM targets.coexistence_bridge")).scalars())
        migrated = set(conn.execute(text(
            "SELECT policy_id FROM coexistence.registry WHERE system_of_record = 'new_platform'")).scalars()) - bridge
    return {"bridge": bridge, "migrated": migrated}


def _day_2_delta(resources, instance, tmp_path, change_rate: float = 0.02) -> set[str]:
    """Ingest and apply a day-2 legacy delta; the policies whose legacy version changed."""
    write_delta(sample_book(), tmp_path / "day-2", day=2, seed=7, change_rate=change_rate)
    for source in ("mainframe_life", "pc_csv"):
        assert ingest(tmp_path / "day-2" / source, source, "day-2", resources=resources, launcher=InProcessLauncher(resources, instance)).success
    assert route(resources=resources, launcher=InProcessLauncher(resources, instance)).success
    with resources["database"].engine().connect() as conn:
        return set(conn.execute(text("SELECT policy_id FROM canonical.changes WHERE drop_key LIKE :d "
                                     "AND change <> 'new'"), {"d": "%:day-2"}).scalars())


def _platform_hashes(engine) -> dict[str, str]:
    """Each platform policy's content hash, computed here from the rows (not by the code under test)."""
    parts = " UNION ALL ".join(
        f"SELECT policy_number AS pn, '{t}' AS t, md5(string_agg(r, E'\\n' ORDER BY r)) AS h FROM "
        f"(SELECT policy_number, (to_jsonb(x) - 'wave_id' - 'wal_id' - 'loaded_at')::text AS r "
        f"FROM new_platform.{t} x) q GROUP BY policy_number" for t in PLATFORM_TABLES)
    with engine.connect() as conn:
        return dict(conn.execute(text(f"SELECT pn, md5(string_agg(t || h, '|' ORDER BY t)) FROM ({parts}) x "
                                      "GROUP BY pn")).all())


def _sync_store(resources):
    from resources.sync_store import SyncStore
    from routing.sync import load_sync_rules

    return SyncStore(resources["targets"].store(), load_sync_rules())


def _snapshot(engine, home) -> dict:
    """Everything a night of sync may write."""
    with engine.connect() as conn:
        state = {t: sorted(map(tuple, conn.execute(text(
            f"SELECT (to_jsonb(x) - 'loaded_at')::text FROM new_platform.{t} x")).all())) for t in PLATFORM_TABLES}
        state["queue"] = sorted(map(tuple, conn.execute(text(
            "SELECT policy_id, wave_id, reasons FROM targets.dq_queue WHERE released_at IS NULL")).all()))
        state["baseline"] = sorted(map(tuple, conn.execute(text(
            "SELECT policy_id, legacy_hash, platform_hash FROM sync.baseline")).all()))
        state["outbound"] = sorted(map(tuple, conn.execute(text(
            "SELECT wave_id, sha256 FROM targets.outbound_files WHERE status = 'delivered'")).all()))
    folder = home / "outbound" / "legacy_batch"
    state["files"] = sorted(p.name for p in folder.glob("*.dat")) if folder.exists() else []
    return state


def test_a_night_of_sync_leaves_both_sides_agreed_for_every_policy_and_a_second_run_changes_nothing(
        day_1, resources, engine, instance, home, tmp_path):
    owners = _owners(engine)
    assert owners["bridge"] and owners["migrated"]
    legacy_changed = _day_2_delta(resources, instance, tmp_path, change_rate=0.1)
    on_platform = owners["bridge"] | owners["migrated"]
    assert legacy_changed & owners["bridge"] and legacy_changed & owners["migrated"]
    before_activity = _platform_hashes(engine)
    activity = simulate_activity(engine, 60, seed=3)
    platform_changed = {p for ids in activity.changed.values() for p in ids}
    after_activity = _platform_hashes(engine)
    assert {p for p in after_activity if after_activity[p] != before_activity.get(p)} == platform_changed

    run = sync_night(NIGHT, resources=resources, launcher=InProcessLauncher(resources, instance))
    assert run.success, (run.error, run.failed_checks)

    with engine.connect() as conn:
        decisions = {r.policy_id: r for r in conn.execute(text(
            "SELECT * FROM sync.decisions WHERE night = :n AND undone_at IS NULL"), {"n": NIGHT})}
        report = conn.execute(text("SELECT report FROM sync.nights WHERE night = :n"), {"n": NIGHT}).scalar_one()
    # every change on either side of a platform policy was seen, and nothing else
    assert {p for p, d in decisions.items() if d.legacy_changed} == legacy_changed & on_platform
    assert {p for p, d in decisions.items() if d.platform_changed} == platform_changed
    # a conflict: both sides changed a policy, or legacy changed one it no longer owns; each recorded with its rule
    for p, d in decisions.items():
        both = p in legacy_changed and p in platform_changed
        assert d.conflict == (both or (p in owners["migrated"] and p in legacy_changed)), p
        assert (d.rule is not None) == d.conflict and d.applied_at is not None
    assert report["changed_policies"] == len(decisions)
    assert report["conflicts_total"] == sum(d.conflict for d in decisions.values()) > 0
    assert all(c["passed"] for c in report["checks"])

    # both sides agree for every policy on the platform: the baseline is each side's hash now...
    with engine.connect() as conn:
        agreed = conn.execute(text(
            "SELECT count(*) FROM sync.baseline b JOIN canonical.current k USING (policy_id)")).scalar_one()
        stale = conn.execute(text(
            "SELECT count(*) FROM sync.baseline b JOIN canonical.current k USING (policy_id) "
            "WHERE b.legacy_hash <> k.content_hash")).scalar_one()
    queued = {p for p, d in decisions.items() if d.action == "queue"}
    assert agreed == len(on_platform) and stale == len(queued & legacy_changed)
    # ...legacy's version is on the platform where the sync sent it (hash of the mapped book = hash on the platform)...
    sent = {p for p, d in decisions.items() if d.action == "to_platform"}
    assert sent
    from resources.target_store import image_hashes, platform_hashes
    from resources.database import psycopg_cursor
    from psycopg import sql
    from canonical.targets import load_target_mapping
    with psycopg_cursor(engine) as cur:
        cur.execute("CREATE TEMP TABLE scope (policy_id text PRIMARY KEY)")
        cur.executemany("INSERT INTO scope VALUES (%s)", [(p,) for p in sorted(on_platform)])
        cur.execute(sql.SQL("SELECT a.pn FROM ({}) a JOIN ({}) e USING (pn) WHERE a.h = e.h").format(
            platform_hashes(load_target_mapping()), image_hashes(load_target_mapping())))
        equal = {r[0] for r in cur.fetchall()}
    assert sent <= equal
    untouched_bridge = owners["bridge"] - legacy_changed - platform_changed
    assert untouched_bridge <= equal
    # ...and the platform's changes to bridge policies went back to legacy, as the platform has them
    back = {p for p, d in decisions.items() if d.action == "to_legacy"}
    files = list((home / "outbound" / "legacy_batch").glob(f"POLOUT-{sync_id(NIGHT)}-*.dat"))
    if back:
        assert len(files) == 1
        records = outbound.read_policies(files[0])
        assert set(records.column("policy_id").to_pylist()) == back

    # a second run the same night, and one the next night, find nothing and write nothing
    before = _snapshot(engine, home)
    assert sync_night(NIGHT, resources=resources, launcher=InProcessLauncher(resources, instance)).success
    assert sync_night(NIGHT + timedelta(days=1), resources=resources, launcher=InProcessLauncher(resources, instance)).success
    assert _snapshot(engine, home) == before
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM sync.decisions WHERE night > :n"), {"n": NIGHT}).scalar_one() == 0

    # the wave still reconciles: what the sync changed is the sync's to prove, not a difference of the load
    from dagster_project.runner import reconcile_wave
    assert reconcile_wave(day_1, resources=resources, launcher=InProcessLauncher(resources, instance), compensate=False).success


@pytest.fixture
def rules_file(tmp_path, monkeypatch):
    def write(rule: str):
        path = tmp_path / f"sync-{rule}.yaml"
        path.write_text(f"version: 1\nschedule: {{time: '02:00', timezone: America/New_York}}\n"
                        f"conflicts: {{default: {rule}}}\n", encoding="utf-8")
        monkeypatch.setenv("DATA_MASH_SYNC_RULES", str(path))
    return write


@pytest.mark.parametrize("rule, platform_later, migrated_action, bridge_action", [
    ("system_of_record", True, "keep_platform", "to_platform"),
    ("latest", True, "keep_platform", "to_legacy"),
    ("latest", False, "to_platform", "to_platform"),
    ("manual", True, "queue", "queue"),
])
def test_each_conflict_rule_settles_a_policy_both_sides_changed(
        rule, platform_later, migrated_action, bridge_action, rules_file, day_1, resources, engine, instance, tmp_path):
    rules_file(rule)
    owners = _owners(engine)
    legacy_changed = _day_2_delta(resources, instance, tmp_path, change_rate=0.2)
    migrated = min(legacy_changed & owners["migrated"])
    bridge = min(legacy_changed & owners["bridge"])
    with engine.connect() as conn:
        since = conn.execute(text("SELECT max(since) FROM canonical.current")).scalar_one()
    at = since + timedelta(hours=1) if platform_later else since - timedelta(hours=1)
    simulate_activity(engine, 2, only=[migrated, bridge], at=at)
    hashes = _platform_hashes(engine)

    assert sync_night(NIGHT, resources=resources, launcher=InProcessLauncher(resources, instance)).success
    with engine.connect() as conn:
        got = {r.policy_id: r for r in conn.execute(text(
            "SELECT * FROM sync.decisions WHERE night = :n AND policy_id IN (:a, :b)"),
            {"n": NIGHT, "a": migrated, "b": bridge})}
        queue = {r.policy_id: r for r in conn.execute(text(
            "SELECT * FROM targets.dq_queue WHERE wave_id = :s"), {"s": sync_id(NIGHT)})}
    assert (got[migrated].action, got[bridge].action) == (migrated_action, bridge_action)
    assert got[migrated].conflict and got[bridge].conflict
    assert got[migrated].rule == got[bridge].rule == rule
    after = _platform_hashes(engine)
    for policy, action in ((migrated, migrated_action), (bridge, bridge_action)):
        if action in ("keep_platform", "to_legacy", "queue"):  # the platform's version stands (for now)
            assert after[policy] == hashes[policy]
        else:  # legacy's version replaced the platform's
            assert after[policy] != hashes[policy]
        if action == "queue":
            versions = got[policy].versions
            assert versions["legacy"]["policies"] and versions["new_platform"]["policy"]
            assert "both versions" in queue[policy].reasons and str(got[policy].id) in queue[policy].reasons
        else:
            assert policy not in queue
    if rule != "manual":
        return

    # queued conflicts wait, night after night, until someone settles them; then the sync carries the choice out
    assert sync_night(NIGHT + timedelta(days=1), resources=resources, launcher=InProcessLauncher(resources, instance)).success
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM sync.decisions WHERE night > :n"), {"n": NIGHT}).scalar_one() == 0
    store = _sync_store(resources)
    store.resolve(migrated, "legacy", actor="tester", reason="legacy had the signed endorsement")
    store.resolve(bridge, "new_platform", actor="tester", reason="the platform's correction stands")
    with pytest.raises(LookupError):
        store.resolve(bridge, "legacy", actor="tester", reason="twice")
    assert sync_night(NIGHT, resources=resources, launcher=InProcessLauncher(resources, instance)).success  # the same night, again
    with engine.connect() as conn:
        settled = dict(conn.execute(text(
            "SELECT policy_id, action FROM sync.decisions WHERE night = :n AND policy_id IN (:a, :b) "
            "AND action <> 'queue'"), {"n": NIGHT, "a": migrated, "b": bridge}).all())
        released = conn.execute(text("SELECT count(*) FROM targets.dq_queue WHERE wave_id = :s AND released_at IS NULL "
                                     "AND policy_id IN (:a, :b)"), {"s": sync_id(NIGHT), "a": migrated, "b": bridge}
                                ).scalar_one()
    assert settled == {migrated: "to_platform", bridge: "to_legacy"} and released == 0
    after = _platform_hashes(engine)
    assert after[migrated] != hashes[migrated] and after[bridge] == hashes[bridge]


def test_a_night_that_fails_is_rolled_back_and_a_completed_one_can_be(day_1, resources, engine, instance, home,
                                                                       tmp_path):
    _day_2_delta(resources, instance, tmp_path, change_rate=0.1)
    simulate_activity(engine, 60, seed=3)
    before = _snapshot(engine, home)
    run = sync_night(NIGHT, resources=resources, launcher=InProcessLauncher(resources, instance),
                     fault="fail:mid_load:sync/legacy_batch", compensate=False)
    assert not run.success and "InjectedFault" in run.error
    assert _snapshot(engine, home) != before  # the platform got legacy's versions before the batch failed

    # the compensation sensor, evaluated as the daemon would, asks for the night's rollback, once
    launcher = InProcessLauncher(resources, instance)
    (request,) = launcher.requests_for(run.run_id)
    assert request.run_config["ops"]["plan_wave_rollback"]["config"]["wave_id"] == sync_id(NIGHT)
    assert request.tags["data_mash/launched_by"] == "compensation"
    assert [r.success for r in launcher.compensations(run.run_id)] == [True]
    assert _snapshot(engine, home) == before
    assert launcher.requests_for(run.run_id) == []  # compensated once
    with engine.connect() as conn:
        assert conn.execute(text("SELECT status FROM sync.nights WHERE night = :n"), {"n": NIGHT}).scalar_one() \
            == "rolled_back"

    # the night runs again cleanly, then is rolled back by hand: everything as before, twice over
    assert sync_night(NIGHT, resources=resources, launcher=InProcessLauncher(resources, instance)).success
    assert _snapshot(engine, home) != before
    assert rollback_sync(NIGHT, resources=resources, launcher=InProcessLauncher(resources, instance)).success
    assert _snapshot(engine, home) == before
    assert rollback_sync(NIGHT, resources=resources, launcher=InProcessLauncher(resources, instance)).success
    assert _snapshot(engine, home) == before


def test_the_schedule_syncs_the_night_that_ended_at_the_configured_time_and_zone(resources):
    from dagster_project.definitions import build_definitions

    defs = build_definitions(resources=resources)
    schedule = defs.resolve_schedule_def("nightly_sync_schedule")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 2 * * *", "America/New_York")
    from zoneinfo import ZoneInfo
    at = datetime(2026, 11, 22, 2, 0, tzinfo=ZoneInfo("America/New_York"))
    with dg.build_schedule_context(scheduled_execution_time=at) as context:
        request = schedule(context)
    assert request.partition_key == "2026-11-21" and request.run_key == "sync:2026-11-21"
    assert defs.resolve_job_def("nightly_sync_job").partitions_def.timezone == "America/New_York"
