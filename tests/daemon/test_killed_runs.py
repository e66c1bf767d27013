"""A run worker killed with SIGKILL mid-write is cleaned up by Dagster alone: the run is failed (its code server
reports the dead worker), `compensation_sensor` on the daemon launches the rollback, and the state is as before."""

from __future__ import annotations

import threading
from datetime import datetime, timezone

import dagster as dg
import pytest

from dagster_project.runner import run_wave
from resources.wave_store import WaveStore
from routing.waves import ROUTED, WaveSpec
from tests.book import NO_GATES
from tests.daemon.conftest import kill, wait_for_pending, worker_pid
from tests.integration.test_wave_loads import snapshot

pytestmark = [pytest.mark.postgres, pytest.mark.daemon]


def test_a_wave_whose_worker_is_killed_mid_load_is_failed_and_rolled_back_by_the_daemon(
        daemon_book, launcher, resources, engine, home):
    waves = WaveStore(engine)
    _, (wave,) = waves.save_plan("kill drill", [WaveSpec(0, "everything routed", ROUTED, True, 10_000,
                                                         datetime.now(timezone.utc), dict(NO_GATES))], "tester")
    waves.set_status(wave, "approved", allowed_from=("draft",), approved_by="tester")
    before = snapshot(engine, home / "outbound")

    outcome = {}
    user = threading.Thread(target=lambda: outcome.update(run=run_wave(
        wave, resources=resources, launcher=launcher, fault="hold:mid_load:targets/new_platform")))
    user.start()  # as `data-mash wave execute` does: submit, follow, wait for the compensation
    wait_for_pending(engine, "load_new_platform", wave)
    (run,) = launcher.instance.get_runs(dg.RunsFilter(tags={"data_mash/wave": wave}, job_name="run_wave_job"))
    kill(worker_pid(launcher.instance, run.run_id))
    user.join(timeout=300)
    assert not user.is_alive()

    result = outcome["run"]
    assert result.run_id == run.run_id and not result.success
    assert launcher.instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
    assert "terminated by signal 9" in result.error, result.error  # Dagster's own account of the dead worker
    # the rollback was launched by the daemon's sensor, not by this process, and it succeeded
    (rollback,) = result.rollbacks
    assert rollback.success, rollback.error
    launched = launcher.instance.get_run_by_id(rollback.run_id)
    assert launched.tags["data_mash/compensates"] == run.run_id
    assert launched.tags["dagster/sensor_name"] == "compensation_sensor"
    assert snapshot(engine, home / "outbound") == before
    assert waves.wave(wave)["status"] == "rolled_back"
    # nothing of the killed run is left pending in the WAL
    pending = [e for e in resources["wal"].store().wave_entries(wave, ("load_new_platform",), ("pending",))]
    assert pending == []
