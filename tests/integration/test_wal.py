"""The write-ahead log on a real PostgreSQL: order, failure, retry, tampering, crash recovery, replay, audit."""


import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import dagster as dg
import pytest
from sqlalchemy import create_engine, text

from dagster_project.definitions import build_definitions
from dagster_project.runner import audit_key_columns, ingest, recover
from resources.database import sqlalchemy_url
from resources.intake_store import IntakeStore, partition_name, staging_table_name
from resources.wal import WalStore, WriteAheadLog
from tests.book import manifest, sample_book, tampered
from tests.inprocess import InProcessLauncher


def probe_asset(behaviour: str, key: str = "probe-key"):
    """A tiny asset that writes through the WAL and records what another connection saw meanwhile."""
    seen: dict = {}

    @dg.asset(name="probe")
    def probe(context: dg.AssetExecutionContext, wal: WriteAheadLog):
        with wal.intent(context, namespace="test", operation="write", target="test.thing", key=key,
                        payload={"n": 1}) as intent:
            # the side effect's view, from a separate connection: the intent is already committed
            other = create_engine(sqlalchemy_url(wal.database.url))
            with other.connect() as conn:
                seen["status"] = conn.execute(text("SELECT status FROM wal.intents WHERE id = :i"),
                                              {"i": intent.id}).scalar_one()
                seen["events"] = conn.execute(text("SELECT event FROM wal.log WHERE intent_id = :i ORDER BY seq"),
                                              {"i": intent.id}).scalars().all()
            other.dispose()
            if behaviour == "fail":
                raise ValueError("target refused the write")
            intent.result = {"written": 1}
        return dg.MaterializeResult(metadata={"wal_entry_id": intent.id})

    return probe, seen


def test_the_intent_is_committed_before_the_work_and_marked_committed_after(resources, engine):
    probe, seen = probe_asset("ok")
    result = dg.materialize([probe], resources=resources)
    assert result.success
    assert seen == {"status": "pending", "events": ["intent"]}
    store = WalStore(engine)
    intent = store.get(1)
    assert (intent["status"], intent["attempts"], intent["result"]) == ("committed", 1, {"written": 1})
    assert intent["asset_key"] == "probe" and intent["run_id"] == result.run_id
    assert [e["event"] for e in store.events(1)] == ["intent", "committed"]


def test_a_load_cannot_commit_without_its_committed_intent(engine, tmp_path):
    """The database refuses the load's writes: no WAL intent is open in its transaction (the write guard)."""
    import pyarrow as pa

    from legacy.copybook import DecodeResult

    f = tmp_path / "x.csv"
    f.write_text("x\n")
    block = DecodeResult(table=pa.table({"record_no": pa.array([1], pa.int64()), "A": ["a"]}),
                         quarantine=pa.table({"record_no": pa.array([], pa.int64()), "offset": pa.array([], pa.int64()),
                                              "field": pa.array([], pa.string()), "reason": pa.array([], pa.string()),
                                              "detail": pa.array([], pa.string()), "raw": pa.array([], pa.binary())}))
    store = IntakeStore(engine)
    with pytest.raises(Exception, match="refused: no WAL intent is open"):
        store.load_file(source="s", kind="k", drop_id="d", path=f, columns=[("A", pa.string())], blocks=[block], wal_id=999)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM intake.files")).scalar_one() == 0


def test_a_failure_marks_the_intent_failed_with_the_error(resources, engine):
    probe, _ = probe_asset("fail")
    assert not dg.materialize([probe], resources=resources, raise_on_error=False).success
    intent = WalStore(engine).get(1)
    assert intent["status"] == "failed"
    assert "ValueError: target refused the write" in intent["error"]
    assert intent["next_attempt_at"] > intent["updated_at"]


def test_a_retry_reuses_its_intent(resources, engine):
    failing, _ = probe_asset("fail")
    dg.materialize([failing], resources=resources, raise_on_error=False)
    working, _ = probe_asset("ok")
    assert dg.materialize([working], resources=resources).success
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM wal.intents")).scalar_one() == 1
    store = WalStore(engine)
    assert (store.get(1)["status"], store.get(1)["attempts"]) == ("committed", 2)
    assert [e["event"] for e in store.events(1)] == ["intent", "failed", "retry", "committed"]


def _some_history(resources, n: int = 3) -> None:
    for i in range(n):
        probe, _ = probe_asset("ok", key=f"k{i}")
        dg.materialize([probe], resources=resources)


@pytest.mark.parametrize(
    "tamper, expected",
    [
        ("UPDATE wal.log SET body = jsonb_set(body, '{state,payload,n}', '2') WHERE seq = 3", "seq 3 "),
        ("UPDATE wal.log SET at = at + interval '1 second' WHERE seq = 2", "seq 2 "),
        ("DELETE FROM wal.log WHERE seq = (SELECT max(seq) FROM wal.log)", "deleted from its end"),
        ("UPDATE wal.intents SET status = 'committed', error = NULL WHERE id = 2", "intent 2"),
        ("UPDATE wal.intents SET payload = '{\"n\": 5}' WHERE id = 1", "intent 1: payload"),
    ],
)
def test_verify_detects_tampering_and_names_the_entry(resources, engine, tamper, expected):
    _some_history(resources)
    store = WalStore(engine)
    if "intents SET status" in tamper:  # make intent 2 fail honestly first, then lie about it
        store.fail(store_intent(store, 2), "boom")
    assert store.verify().ok, store.verify().problems
    with tampered(engine) as conn:  # a tamperer would not respect triggers or foreign keys either
        conn.execute(text(tamper))
    report = store.verify()
    assert not report.ok
    assert any(expected in p for p in report.problems), report.problems


def store_intent(store: WalStore, intent_id: int):
    from resources.wal import Intent

    row = store.get(intent_id)
    return Intent(row["id"], row["namespace"], row["operation"], row["target"], row["idempotency_key"], row["attempts"])


def test_wal_verify_cli_exits_non_zero_naming_the_entry(resources, engine, database_url, tmp_path):
    _some_history(resources)
    env = {**os.environ, "DATA_MASH_DATABASE_URL": database_url, "DATA_MASH_HOME": str(tmp_path)}
    cli = [sys.executable, "-m", "dagster_project.cli", "wal", "verify"]
    ok = subprocess.run(cli, env=env, capture_output=True, text=True)
    assert ok.returncode == 0 and "WAL intact" in ok.stdout
    with tampered(engine) as conn:
        conn.execute(text("UPDATE wal.log SET body = jsonb_set(body, '{status}', '\"failed\"') WHERE seq = 4"))
    bad = subprocess.run(cli, env=env, capture_output=True, text=True)
    assert bad.returncode == 1 and "seq 4 " in bad.stdout


def test_replay_returns_entries_in_order_by_namespace_and_time(resources, engine):
    _some_history(resources, 2)
    store = WalStore(engine)
    entries = list(store.replay("test"))
    assert [e["seq"] for e in entries] == sorted(e["seq"] for e in entries)
    assert [(e["intent_id"], e["event"]) for e in entries] == [(1, "intent"), (1, "committed"), (2, "intent"), (2, "committed")]
    middle = entries[2]["at"]
    assert [e["seq"] for e in store.replay("test", since=middle)] == [e["seq"] for e in entries[2:]]
    assert [e["seq"] for e in store.replay("test", until=middle)] == [e["seq"] for e in entries[:2]]
    assert list(store.replay("other")) == []


@pytest.mark.daemon  # the CLI starts this project's Dagster
def test_a_crashed_load_is_recovered_exactly_once(resources, engine, database_url, home):
    """Kill the worker mid-load (after its intent is committed); recovery completes the work once."""
    book = sample_book()
    env = {**os.environ, "DATA_MASH_DATABASE_URL": database_url, "DATA_MASH_HOME": str(home),
           "DAGSTER_HOME": str(home / "dagster_home"), "DATA_MASH_LANDING": resources["landing"].path,
           "DATA_MASH_FAULT": "mid_load:legacy/pc_csv/policies"}
    env["DATA_MASH_UI_PORT"] = "0"
    try:  # the CLI starts this project's Dagster; its run worker dies mid-load, and the CLI reports the failed run
        crashed = subprocess.run([sys.executable, "-m", "dagster_project.cli", "ingest", str(book / "pc_csv"),
                                  "--source", "pc_csv", "--drop-id", "day-1"], env=env, capture_output=True, text=True)
    finally:
        subprocess.run([sys.executable, "-m", "dagster_project.cli", "services", "stop"], env=env, capture_output=True)
    assert crashed.returncode == 1, crashed.stderr
    assert "exited with code 137" in " ".join(crashed.stdout.split()), crashed.stdout
    store = WalStore(engine)
    with engine.connect() as conn:
        pending = conn.execute(text("SELECT id, attempts FROM wal.intents WHERE status = 'pending'")).all()
        files = conn.execute(text("SELECT count(*) FROM intake.files WHERE kind = 'policies'")).scalar_one()
    assert len(pending) == 1 and files == 0  # the intent survived; the half-done load did not
    intent_id = pending[0][0]

    # the sensor sees a dead owner and asks for a re-run of exactly that asset and partition
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    plan = store.recovery_plan(now=later)
    assert [(a.intent_id, a.action, a.asset_key, a.partition_key) for a in plan] == \
        [(intent_id, "relaunch", "legacy/pc_csv/policies", "day-1")]

    # recovery runs on the same Dagster instance the crashed run used (it knows the drop's partition)
    with dg.DagsterInstance.from_config(str(home / "dagster_home")) as instance:
        outcomes = recover(resources=resources, launcher=InProcessLauncher(resources, instance), now=later)
    assert [(o.intent_id, o.action, o.success) for o in outcomes] == [(intent_id, "relaunched", True)]
    intent = store.get(intent_id)
    # the fault is in the environment of every run worker: the run and Dagster's two retries of it all died there,
    # then recovery ran it once more and it went through (with the fault gone from this process's resources)
    assert (intent["status"], intent["attempts"]) == ("committed", 4)
    expected = manifest(book)["files"]["pc_csv/policies.csv"]["records"]
    part = partition_name(staging_table_name("pc_csv", "policies"), "day-1")
    with engine.connect() as conn:
        staged = conn.execute(text(f'SELECT count(*), count(DISTINCT record_no) FROM staging."{part}"')).one()
        quarantined = conn.execute(text("SELECT count(*) FROM intake.quarantine WHERE kind = 'policies'")).scalar_one()
    assert staged[0] == staged[1] and staged[0] + quarantined == expected
    assert store.recovery_plan(now=later) == []
    assert store.verify().ok


def test_recovery_sensor_requests_the_rerun_and_dead_letters_spent_intents(resources, engine, instance):
    store = WalStore(engine)
    from resources.wal import Lifecycle

    dead = store.begin(namespace="intake", operation="stage_file", target="t", key="a", payload={},
                       job_name="ingest_pc_csv_job", asset_key="legacy/pc_csv/policies", partition_key="d1",
                       lifecycle=Lifecycle(retry_delay_seconds=0))
    spent = store.begin(namespace="intake", operation="stage_file", target="t", key="b", payload={},
                        lifecycle=Lifecycle(max_retries=0, retry_delay_seconds=0), job_name="ingest_pc_csv_job",
                        asset_key="legacy/pc_csv/coverages", partition_key="d1")
    store.fail(spent, "boom")
    with store.owned("c"):  # an intent whose run is alive is left alone
        store.begin(namespace="intake", operation="stage_file", target="t", key="c", payload={},
                    lifecycle=Lifecycle(retry_delay_seconds=0))
        sensor = build_definitions(resources=resources).resolve_sensor_def("wal_recovery_sensor")
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            result = sensor(context)
    assert [(r.job_name, r.partition_key, r.asset_selection, r.run_key) for r in result.run_requests] == [
        ("ingest_pc_csv_job", "d1", [dg.AssetKey(["legacy", "pc_csv", "policies"])], f"wal-recover:{dead.id}:1")]
    assert store.get(spent.id)["status"] == "dead_lettered"
    assert [e["event"] for e in store.events(spent.id)] == ["intent", "failed", "dead_lettered"]


def test_every_asset_writes_through_the_wal_and_says_so(resources, engine, instance):
    defs = build_definitions(resources=resources)
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        assert "wal" in graph.get(key).assets_def.required_resource_keys, f"{key.to_user_string()} bypasses the WAL"
    book = sample_book()
    outcome = ingest(book / "pc_csv", "pc_csv", "day-1", resources=resources, launcher=InProcessLauncher(resources, instance))
    store = WalStore(engine)
    for kind in ("policies", "coverages"):
        key = dg.AssetKey(["legacy", "pc_csv", kind])
        event = instance.get_latest_materialization_event(key)
        intent = store.get(event.asset_materialization.metadata["wal_entry_id"].value)
        assert intent["status"] == "committed" and intent["asset_key"] == key.to_user_string()
        assert intent["run_id"] == outcome.run_id and intent["partition_key"] == "day-1"


def test_audit_trail_lists_the_writes_that_touched_a_policy(resources, engine, instance):
    book = sample_book()
    assert ingest(book / "mainframe_life", "mainframe_life", "day-1", resources=resources, launcher=InProcessLauncher(resources, instance)).success
    assert ingest(book / "mainframe_life", "mainframe_life", "day-1", resources=resources, launcher=InProcessLauncher(resources, instance)).success
    store = IntakeStore(engine)
    part = partition_name(staging_table_name("mainframe_life", "coverages"), "day-1")
    with engine.connect() as conn:
        policy = conn.execute(text(f'SELECT pol_number FROM staging."{part}" ORDER BY record_no LIMIT 1')).scalar_one()
    trail = WalStore(engine).audit_trail(policy, audit_key_columns(store))
    tables = {t for e in trail for t in e["tables"]}
    assert {"staging.mainframe_life__policies", "staging.mainframe_life__coverages"} <= tables
    # both loads of the drop: one intent per file, reused by the rerun
    policies_events = [e["event"] for e in trail if e["target"] == "staging.mainframe_life__policies"]
    assert policies_events == ["intent", "committed", "retry", "committed"]
    assert [e["seq"] for e in trail] == sorted(e["seq"] for e in trail)
