"""The daemon tier: the product's own path, end to end. Runs are submitted to a real Dagster (webserver, daemon and code
server started by `dagster_project.services`, as the CLI starts them), launched into run workers of their own, and
compensated by the daemon's sensors; storage is PostgreSQL (the test's database, Dagster's schema in it)."""

from __future__ import annotations

import os
import re
import time

import dagster as dg
import pytest

from tests.book import sample_book

PID = re.compile(r"Started process for run \(pid: (\d+)\)")


@pytest.fixture
def dagster_services(database_url, home, monkeypatch):
    """This test's Dagster, on its own database and home; stopped after the test."""
    from dagster_project import services
    from resources.database import DatabaseResource

    monkeypatch.setenv("DATA_MASH_DATABASE_URL", database_url)
    monkeypatch.setenv("DATA_MASH_LANDING", str(home / "landing"))
    monkeypatch.setenv("DATA_MASH_OUTBOUND", str(home / "outbound"))
    monkeypatch.setenv(services.PORT_ENV, "0")
    monkeypatch.delenv(services.URL_ENV, raising=False)
    running = services.ensure(DatabaseResource(url=database_url))
    try:
        yield running
    finally:
        services.stop()


@pytest.fixture
def launcher(dagster_services, resources):
    from dagster_project.launcher import DagsterLauncher

    return DagsterLauncher(resources["database"])


@pytest.fixture
def daemon_book(launcher, resources):
    """The sample book ingested and routed through the real Dagster."""
    from dagster_project.runner import ingest, route

    book = sample_book()
    for source in ("mainframe_life", "pc_csv"):
        outcome = ingest(book / source, source, "day-1", resources=resources, launcher=launcher)
        assert outcome.success, outcome.error
    routed = route(resources=resources, launcher=launcher)
    assert routed.success, routed.error
    return book


def worker_pid(instance: dg.DagsterInstance, run_id: str, timeout: float = 60) -> int:
    """The pid of a run's worker process, from the event Dagster logs when it starts it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
            if match := PID.search(event.message or ""):
                return int(match.group(1))
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} never reported its worker's pid")


def wait_for_pending(engine, operation: str, unit: str, timeout: float = 120) -> None:
    """Until the WAL has a pending intent of `operation` for the wave or night (the worker is mid-write)."""
    from sqlalchemy import text

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            if conn.execute(text("SELECT 1 FROM wal.intents WHERE operation = :o AND wave = :w AND status = 'pending'"),
                            {"o": operation, "w": unit}).first():
                return
        time.sleep(0.2)
    raise AssertionError(f"no pending {operation} for {unit} within {timeout} s")


def kill(pid: int) -> None:
    os.kill(pid, 9)
