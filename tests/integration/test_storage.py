"""Storage: migrations, the embedded default, and Dagster's own storage in PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dagster as dg
import pytest
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from resources.database import DatabaseResource, dispose_engine, sqlalchemy_url
from resources.migrations import MIGRATIONS, current_version, migrate

REPO = Path(__file__).resolve().parents[2]


def test_migrations_apply_once_even_when_raced(empty_database_url):
    engine = create_engine(sqlalchemy_url(empty_database_url))
    with ThreadPoolExecutor(4) as pool:
        applied = list(pool.map(lambda _: migrate(engine), range(4)))
    # exactly one of the racers applied each migration; the others found it done
    flat = sorted(v for versions in applied for v in versions)
    assert flat == [m.version for m in MIGRATIONS]
    assert current_version(engine) == MIGRATIONS[-1].version
    assert migrate(engine) == []
    with engine.connect() as conn:
        tables = {r[0] for r in conn.execute(text("SELECT table_schema || '.' || table_name FROM information_schema.tables"))}
    assert {"intake.drops", "intake.files", "intake.quarantine", "data_mash.schema_migrations"} <= tables
    engine.dispose()


def test_files_row_refuses_counts_that_do_not_add_up(engine):
    from tests.book import as_intent

    with pytest.raises(Exception, match="check"):
        with as_intent(engine), engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO intake.files (source, drop_id, kind, file_name, file_sha256, file_bytes, records_read, "
                "records_parsed, records_quarantined, staging_table) VALUES ('s','d','k','f','x',1,10,8,1,'t')"))


def test_only_postgresql_urls_are_accepted():
    with pytest.raises(ValueError, match="only PostgreSQL"):
        sqlalchemy_url("sqlite:///x.db")
    assert sqlalchemy_url("postgresql://u@h:5432/d").startswith("postgresql+psycopg://")


def test_embedded_default_starts_once_and_is_reused():
    # not under pytest's tmp folder, whose mode pytest resets to 0700 (the server runs as its own user)
    import shutil
    import tempfile

    parent = Path(tempfile.mkdtemp(prefix="dm-embedded-"))
    home = parent / "h"
    first = DatabaseResource(home=str(home))
    url = first.resolved_url()
    assert (home / "pg" / "PG_VERSION").exists()
    assert "embedded PostgreSQL in" in first.describe()
    with first.engine().connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM data_mash.schema_migrations")).scalar_one() == len(MIGRATIONS)
    # a second command (another process) reuses the same running server and data folder
    script = (
        "from resources.database import DatabaseResource;"
        f"print(DatabaseResource(home={str(home)!r}).resolved_url())"
    )
    second = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True)
    assert second.stdout.strip() == url
    dispose_engine(url)
    import pgserver

    pgserver.get_server(home / "pg", cleanup_mode=None).cleanup()
    shutil.rmtree(parent, ignore_errors=True)


def test_a_materialization_lands_in_dagster_postgres_storage(database_url, tmp_path):
    """Dagster's runs and events in PostgreSQL through dagster-postgres (scheme postgresql+psycopg2)."""
    pg_url = make_url(database_url).set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    deploy = yaml.safe_load((REPO / "deploy" / "dagster.yaml").read_text())
    assert deploy["storage"]["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"

    @dg.asset
    def probe() -> int:
        return 1

    with dg.instance_for_test(overrides={"storage": {"postgres": {"postgres_url": pg_url}}}) as instance:
        result = dg.materialize([probe], instance=instance)
        assert result.success
        assert instance.get_latest_materialization_event(dg.AssetKey("probe")) is not None
    engine = create_engine(sqlalchemy_url(database_url))
    with engine.connect() as conn:
        runs = conn.execute(text("SELECT count(*) FROM runs")).scalar_one()
        events = conn.execute(text("SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'")).scalar_one()
    engine.dispose()
    assert runs == 1 and events == 1
