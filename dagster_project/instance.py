"""The Dagster instance Data Mash runs on: one per project, its storage in PostgreSQL.

Dagster's own storage (runs, event logs, schedules, sensor cursors) lives in the schema `dagster` of the same
PostgreSQL that holds Data Mash's state: the embedded server by default, `DATA_MASH_DATABASE_URL` otherwise. The CLI,
the daemon and the webserver all read `$DAGSTER_HOME/dagster.yaml`, so they see one instance.

The file is written here when `$DAGSTER_HOME` has none (and rewritten while it is still the one written here, so a
moved embedded server is followed); a `dagster.yaml` of your own (`deploy/dagster.yaml` is a model) is left alone.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from sqlalchemy import text
from sqlalchemy.engine import make_url

from resources.database import DatabaseResource, data_mash_home

MARK = "# written by data-mash"
SCHEMA = "dagster"

# Dagster's queue: how many runs at once, and one run per wave / sync night at a time (a second request waits).
RUN_QUEUE = {
    "max_concurrent_runs": 4,
    "tag_concurrency_limits": [
        {"key": "data_mash/wave", "value": {"applyLimitPerUniqueValue": True}, "limit": 1},
        {"key": "data_mash/sync", "value": {"applyLimitPerUniqueValue": True}, "limit": 1},
        {"key": "data_mash/drop", "value": {"applyLimitPerUniqueValue": True}, "limit": 1},
    ],
    "dequeue_interval_seconds": 1,
}

# A run whose worker cannot start, or will not stop when cancelled, is failed by the daemon; a worker that dies
# mid-run is reported failed by its code server (DefaultRunLauncher); either way a run-failure sensor compensates.
RUN_MONITORING = {
    "enabled": True,
    "start_timeout_seconds": 180,
    "cancel_timeout_seconds": 180,
    "max_resume_run_attempts": 0,
    "poll_interval_seconds": 5,
}

# Runs that crash (not those whose step failed) are run again once: an ingest is then finished for the whole drop.
RUN_RETRIES = {"enabled": True, "max_retries": 0, "retry_on_asset_or_op_failure": False}


def dagster_home() -> Path:
    """$DAGSTER_HOME, defaulting to `$DATA_MASH_HOME/dagster_home`; exported so Dagster finds it."""
    home = Path(os.environ.get("DAGSTER_HOME") or data_mash_home() / "dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def storage_url(database: DatabaseResource) -> str:
    """Dagster's storage URL: the database's, through psycopg2 (dagster-postgres' driver), in schema `dagster`."""
    engine = database.engine()
    with engine.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
    url = make_url(database.resolved_url()).set(drivername="postgresql+psycopg2")
    query = dict(url.query)
    query["options"] = f"-csearch_path={SCHEMA}"
    return url.set(query=query).render_as_string(hide_password=False)


def instance_config(database: DatabaseResource) -> dict:
    return {
        "storage": {"postgres": {"postgres_url": storage_url(database)}},
        "run_coordinator": {"module": "dagster.core.run_coordinator", "class": "QueuedRunCoordinator",
                            "config": RUN_QUEUE},
        "run_launcher": {"module": "dagster", "class": "DefaultRunLauncher"},
        "run_monitoring": RUN_MONITORING,
        "run_retries": RUN_RETRIES,
        "telemetry": {"enabled": False},
    }


def ensure_instance_config(database: DatabaseResource) -> Path:
    """Write `$DAGSTER_HOME/dagster.yaml` for this database unless the file there is somebody else's."""
    home = dagster_home()
    path = home / "dagster.yaml"
    if path.exists() and not path.read_text().startswith(MARK):
        return path
    body = yaml.safe_dump(instance_config(database), sort_keys=False)
    content = f"{MARK}: Dagster storage in PostgreSQL ({database.describe()}, schema {SCHEMA}).\n{body}"
    if not path.exists() or path.read_text() != content:
        path.write_text(content)
    return path


def open_instance(database: DatabaseResource):
    """This project's Dagster instance, to read runs and events (no service needs to run for that)."""
    import dagster as dg

    ensure_instance_config(database)
    return dg.DagsterInstance.get()
