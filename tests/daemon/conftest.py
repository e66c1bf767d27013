"""The daemon tier: the product's own path, end to end. Runs are submitted to a real Dagster (webserver, daemon and code
server started by `dagster_project.services`, as the CLI starts them), launched into run workers of their own, and
compensated by the daemon's sensors; storage is PostgreSQL (the world's database, Dagster's schema in it).

One world per test session: `make demo`'s migration, run by the CLI in its own process on a small book, then the
daemon tests act on it through the same Dagster (starting it and the demo cost a minute or two; each test plans its
own waves). They are one module, which `--dist loadfile` sends to one worker."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from resources.database import dispose_engine, sqlalchemy_url

PID = re.compile(r"Started process for run \(pid: (\d+)\)")
CLI = [sys.executable, "-m", "dagster_project.cli"]


@dataclass
class World:
    home: Path
    env: dict[str, str]
    resources: dict
    launcher: object
    demo_output: str

    @property
    def engine(self):
        return self.resources["database"].engine()

    def cli(self, *args: str, expect: int | None = 0) -> subprocess.CompletedProcess:
        proc = subprocess.run([*CLI, *args], cwd=self.home, env=self.env, capture_output=True, text=True, timeout=600)
        assert expect is None or proc.returncode == expect, \
            f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        return proc


@pytest.fixture(scope="session")
def world(pg_server_url, tmp_path_factory):
    """`data-mash demo` on a small book, by the CLI in its own process; its Dagster is left running for the tests."""
    from dagster_project import services
    from dagster_project.launcher import DagsterLauncher
    from resources.database import DatabaseResource
    from resources.landing import LandingResource
    from resources.target_store import TargetsResource
    from resources.wal import WriteAheadLog

    name = f"dm_daemon_{uuid.uuid4().hex[:10]}"
    admin = create_engine(sqlalchemy_url(pg_server_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(pg_server_url).set(database=name).render_as_string(hide_password=False)
    home = tmp_path_factory.mktemp("world") / "home"
    home.mkdir()
    settings = {"DATA_MASH_DATABASE_URL": url, "DATA_MASH_HOME": str(home), "DAGSTER_HOME": str(home / "dagster_home"),
                "DATA_MASH_LANDING": str(home / "landing"), "DATA_MASH_OUTBOUND": str(home / "outbound"),
                services.PORT_ENV: "0"}
    env = {**os.environ, **settings, "COLUMNS": "200"}
    env.pop(services.URL_ENV, None)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in settings.items():
            patch.setenv(key, value)
        patch.delenv(services.URL_ENV, raising=False)
        demo = subprocess.run([*CLI, "demo", "--policies", "2000", "--seed", "42"], cwd=home, env=env,
                              capture_output=True, text=True, timeout=900)
        try:
            assert demo.returncode == 0, f"demo exit {demo.returncode}\n{demo.stdout}\n{demo.stderr}"
            database = DatabaseResource(url=url)
            resources = {"database": database, "landing": LandingResource(path=settings["DATA_MASH_LANDING"]),
                         "wal": WriteAheadLog(database=database),
                         "targets": TargetsResource(database=database, outbound=settings["DATA_MASH_OUTBOUND"])}
            yield World(home, env, resources, DagsterLauncher(database), demo.stdout)
        finally:
            services.stop()
            dispose_engine(url)
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


def worker_pid(instance: dg.DagsterInstance, run_id: str, timeout: float = 60) -> int:
    """The pid of a run's worker process, from the event Dagster logs when it starts it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
            if match := PID.search(event.message or ""):
                return int(match.group(1))
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} never reported its worker's pid")


def wait_for_pending(engine, operation: str, unit: str | None = None, timeout: float = 120) -> dict:
    """Until the WAL has a pending intent of `operation` (for the wave or night): the worker is mid-write."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            row = conn.execute(text("SELECT id, run_id FROM wal.intents WHERE operation = :o AND status = 'pending' "
                                    "AND (CAST(:w AS text) IS NULL OR wave = :w) ORDER BY id DESC LIMIT 1"),
                               {"o": operation, "w": unit}).mappings().first()
        if row:
            return dict(row)
        time.sleep(0.2)
    raise AssertionError(f"no pending {operation} for {unit} within {timeout} s")


def kill_worker(instance: dg.DagsterInstance, run_id: str) -> int:
    pid = worker_pid(instance, run_id)
    os.kill(pid, 9)
    return pid
