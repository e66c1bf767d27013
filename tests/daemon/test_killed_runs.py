"""A run worker killed with SIGKILL mid-write is cleaned up by Dagster alone, with no manual step: the code server
reports the run failed, and `compensation_sensor` on the daemon rolls back a wave or a night of sync (the state is as
before); an ingest is retried by Dagster from the step that died, and the drop is taken whole."""

from __future__ import annotations

import threading
from datetime import datetime, timezone

import dagster as dg
import pytest
from sqlalchemy import text

from tests.daemon.conftest import kill_worker, wait_for_pending

pytestmark = [pytest.mark.postgres, pytest.mark.daemon, pytest.mark.xdist_group(name="dagster")]


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
