"""Test fixtures: a real PostgreSQL for every test that needs one, each test in its own database.

`DATA_MASH_TEST_DATABASE_URL` names a server (CI sets it to 127.0.0.1:5432); without it an
embedded PostgreSQL (pgserver) is started once per test worker. Under CI=true a configured server
that cannot be reached fails the run: tests that need PostgreSQL never skip.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from resources.database import dispose_engine, sqlalchemy_url
from tests.inprocess import InProcessLauncher

SERVER_ENV = "DATA_MASH_TEST_DATABASE_URL"
# one WAL key for the whole session (its processes, and the template databases every test copies); the default key
# file is tested on its own (tests/unit/test_wal_seal.py)
os.environ.setdefault("DATA_MASH_WAL_KEY", "tests-only-wal-key-" + "7" * 40)


@pytest.fixture(scope="session")
def pg_server_url(tmp_path_factory) -> str:
    url = os.environ.get(SERVER_ENV)
    if url:
        try:
            engine = create_engine(sqlalchemy_url(url))
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            engine.dispose()
        except Exception as error:  # noqa: BLE001 - any failure to reach the server is fatal here
            pytest.fail(f"{SERVER_ENV}={make_url(url).render_as_string(hide_password=True)} is not reachable: {error}")
        yield url
        return
    import pgserver

    # Not under pytest's tmp folder: pytest resets its mode to 0700 when a session starts, which
    # locks out the embedded server (it runs as its own system user when we are root).
    parent = Path(tempfile.mkdtemp(prefix="dm-pgtest-"))
    server = pgserver.get_server(parent / "data", cleanup_mode="stop")
    yield server.get_uri()  # the handle stays alive (and the server up) for the whole session
    server.cleanup()
    shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture(scope="session")
def template_database(pg_server_url) -> str:
    """A database with Data Mash's migrations and Dagster's storage schema applied, once per test worker: each
    test's database is a copy of it (CREATE DATABASE ... TEMPLATE), which is much faster than migrating each."""
    import dagster as dg

    from dagster_project.instance import storage_url
    from resources.database import DatabaseResource, get_engine

    name = f"dm_template_{uuid.uuid4().hex[:12]}"
    admin = create_engine(sqlalchemy_url(pg_server_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(pg_server_url).set(database=name).render_as_string(hide_password=False)
    get_engine(url)  # migrates
    with dg.instance_for_test(overrides={"storage": {"postgres": {"postgres_url": storage_url(
            DatabaseResource(url=url))}}}) as inst:
        inst.get_runs(limit=1)  # Dagster's tables exist
    dispose_engine(url)
    try:
        yield name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _scratch_database(pg_server_url: str, template: str | None):
    """A database on the test server (a copy of `template`, or empty), dropped when the generator ends."""
    name = f"dm_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(sqlalchemy_url(pg_server_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")))
    url = make_url(pg_server_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        dispose_engine(url)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def database_url(request, pg_server_url, template_database) -> str:
    """A fresh database on the test server, migrated (a copy of the template); dropped after the test. A test that
    asks for `routed_book` gets a copy of the routed book's database instead (see `routed_book`)."""
    template = template_database
    if "routed_book" in request.fixturenames:
        template = request.getfixturevalue("routed_template").database
    yield from _scratch_database(pg_server_url, template)


@pytest.fixture
def empty_database_url(pg_server_url) -> str:
    """A fresh, empty database (no migration applied yet); dropped after the test."""
    yield from _scratch_database(pg_server_url, None)


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A private DATA_MASH_HOME (landing folder, reports, Dagster home) for one test."""
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("DATA_MASH_HOME", str(path))
    monkeypatch.setenv("DAGSTER_HOME", str(path / "dagster_home"))
    monkeypatch.delenv("DATA_MASH_DATABASE_URL", raising=False)
    monkeypatch.delenv("DATA_MASH_LANDING", raising=False)
    return path


@pytest.fixture
def resources(database_url, home):
    from resources.database import DatabaseResource
    from resources.landing import LandingResource
    from resources.target_store import TargetsResource
    from resources.wal import WriteAheadLog

    database = DatabaseResource(url=database_url)
    return {"database": database, "landing": LandingResource(path=str(home / "landing")),
            "wal": WriteAheadLog(database=database),
            "targets": TargetsResource(database=database, outbound=str(home / "outbound"))}


@pytest.fixture
def engine(resources):
    return resources["database"].engine()


@pytest.fixture
def instance(home):
    """A real, temporary Dagster instance (runs, events, dynamic partitions), on local files: fast for the in-process
    tiers. The daemon tier (tests/daemon) runs the product's own instance, its storage in PostgreSQL."""
    import dagster as dg

    with dg.instance_for_test() as inst:
        yield inst


@dataclass
class RoutedTemplate:
    database: str
    landing: Path
    outcome: object  # the RouteOutcome of routing it


@pytest.fixture(scope="session")
def routed_template(pg_server_url, template_database, tmp_path_factory) -> RoutedTemplate:
    """The sample book ingested, mapped and routed through Dagster once per test worker, in a database that each
    `routed_book` test gets a copy of (ingesting and routing it again cost every such test several seconds)."""
    import dagster as dg

    from dagster_project.runner import ingest, route
    from resources.database import DatabaseResource
    from resources.landing import LandingResource
    from resources.target_store import TargetsResource
    from resources.wal import WriteAheadLog
    from tests.book import sample_book

    name = f"dm_routed_{uuid.uuid4().hex[:12]}"
    admin = create_engine(sqlalchemy_url(pg_server_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"'))
    url = make_url(pg_server_url).set(database=name).render_as_string(hide_password=False)
    root = tmp_path_factory.mktemp("routed")
    database = DatabaseResource(url=url)
    resources = {"database": database, "landing": LandingResource(path=str(root / "landing")),
                 "wal": WriteAheadLog(database=database),
                 "targets": TargetsResource(database=database, outbound=str(root / "outbound"))}
    book = sample_book()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DATA_MASH_HOME", str(root))
        with dg.instance_for_test() as inst:
            launcher = InProcessLauncher(resources, inst)
            for source in ("mainframe_life", "pc_csv"):
                assert ingest(book / source, source, "day-1", resources=resources, launcher=launcher).success
            outcome = route(resources=resources, launcher=launcher)
    assert outcome.success, outcome.error
    dispose_engine(url)
    try:
        yield RoutedTemplate(name, root / "landing", outcome)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def routed_book(routed_template, resources, engine, instance):
    """The sample book ingested and mapped for both sources (drop day-1), then routed through Dagster: the test's
    database is a copy of `routed_template`'s, its landing folder a copy of that one, and its Dagster instance knows
    the drops' partitions."""
    from dagster_project.partitions import drops_partitions_name

    shutil.copytree(routed_template.landing, resources["landing"].path, dirs_exist_ok=True)
    for source in ("mainframe_life", "pc_csv"):
        instance.add_dynamic_partitions(drops_partitions_name(source), ["day-1"])
    return routed_template.outcome


@pytest.fixture(autouse=True)
def _stop_project_dagster():
    """A test whose CLI call started this project's Dagster (as the CLI does on first use) has it ended after."""
    from dagster_project import services

    yield
    while services.STARTED:
        services.terminate(services.STARTED.pop())
