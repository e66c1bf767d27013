"""Where Data Mash keeps its state: one PostgreSQL, either a configured server or an embedded one.

`DATA_MASH_DATABASE_URL` names a server. Left unset, an embedded PostgreSQL (the `pgserver`
package) is started in `$DATA_MASH_HOME/pg` and reused by every later command. There is no other
dialect: the demo, the tests and production all speak PostgreSQL.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
import warnings
from pathlib import Path

import dagster as dg
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from resources import guard
from legacy.errors import SettingError
from resources.migrations import migrate

DATABASE_URL_ENV = "DATA_MASH_DATABASE_URL"
HOME_ENV = "DATA_MASH_HOME"

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def data_mash_home() -> Path:
    """The project-local folder for the embedded database, the landing folder and reports."""
    return Path(os.environ.get(HOME_ENV) or Path.cwd() / ".data-mash").resolve()


def embedded_url(data_dir: Path) -> str:
    """Start (or reuse) the embedded PostgreSQL in `data_dir` and return its URL."""
    with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR on servers; harmless
        warnings.simplefilter("ignore")
        import pgserver  # imported late: only the embedded path needs it

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    # A unix socket path must stay under ~107 bytes; pgserver puts it inside the data folder.
    if len(str(data_dir)) > 90:
        raise SettingError(
            f"The embedded PostgreSQL folder {data_dir} is too long a path for a unix socket. "
            f"Set {HOME_ENV} to a shorter folder, or {DATABASE_URL_ENV} to a server."
        )
    server = pgserver.get_server(data_dir, cleanup_mode=None)
    return server.get_uri()


class DatabaseUrlError(SettingError, ValueError):
    """The database URL is not a PostgreSQL URL that can be read."""


class DatabaseUnavailableError(SettingError):
    """The configured PostgreSQL did not answer (or refused us): a setting to fix. Raised before this process
    changed anything there, so the message can say that nothing was changed."""

    def __init__(self, url: str, reason: str) -> None:
        self.where = describe_url(url)
        parsed = make_url(url)
        self.host, self.port, self.database = parsed.host or "localhost", parsed.port or 5432, parsed.database
        super().__init__(
            f"cannot connect to PostgreSQL at {self.where} (host {self.host}, port {self.port}, database "
            f"{self.database or '(default)'}): {reason} Nothing was changed. Check that the server runs and accepts "
            f"connections there; {DATABASE_URL_ENV} names it (unset, Data Mash starts its embedded PostgreSQL).")


def connection_failure(error: BaseException, url: str | None = None) -> str:
    """What a driver said when a connection failed, in one sentence, without the password."""
    reason = str(getattr(error, "orig", None) or error).strip()
    reason = " ".join(reason.replace("connection failed: ", "", 1).split())
    password = make_url(url).password if url else None
    reason = reason.replace(str(password), "***") if password else reason
    return reason if reason[-1:] in (".", "?", "!") else f"{reason}."


def sqlalchemy_url(url: str) -> str:
    """Normalise any PostgreSQL URL to SQLAlchemy's psycopg 3 driver."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as error:
        raise DatabaseUrlError(f"{DATABASE_URL_ENV} is not a database URL ({error}); expected "
                               "postgresql://user:password@host:port/database") from None
    if parsed.get_backend_name() != "postgresql":
        raise DatabaseUrlError(
            f"{DATABASE_URL_ENV} must be a PostgreSQL URL (postgresql://user@host:port/db); "
            f"got a '{parsed.get_backend_name()}' URL. Data Mash speaks only PostgreSQL."
        )
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def get_engine(url: str) -> Engine:
    """One engine per URL per process, migrated to the current schema on first use. A server that does not
    answer is a `DatabaseUnavailableError` naming where it was tried, raised before anything is written."""
    key = sqlalchemy_url(url)
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = create_engine(key, pool_pre_ping=True, pool_size=5, max_overflow=5)
            try:
                with engine.connect():  # the first contact: nothing has been written yet
                    pass
            except DBAPIError as error:
                engine.dispose()
                raise DatabaseUnavailableError(url, connection_failure(error, key)) from None
            guard.install(engine)  # each transaction carries the WAL intent it works for (the database checks)
            migrate(engine)
            _engines[key] = engine
        return engine


def connected() -> bool:
    """Whether this process has reached a database (after which a lost connection may have left work behind)."""
    return bool(_engines)


@contextmanager
def psycopg_cursor(engine: Engine, *, name: str | None = None, row_factory=None):
    """A psycopg 3 cursor on a pooled connection, for COPY and server-side cursors: one transaction,
    committed when the block ends, rolled back if it raises."""
    raw = engine.raw_connection()
    try:
        kwargs = {"name": name} if name else {}
        if row_factory is not None:
            kwargs["row_factory"] = row_factory
        if guard.current_intent() is not None:
            with raw.driver_connection.cursor() as setting:
                guard.apply(setting)
        with raw.driver_connection.cursor(**kwargs) as cur:
            yield cur
        raw.commit()
    except BaseException:
        raw.rollback()
        raise
    finally:
        raw.close()


def describe_url(url: str) -> str:
    """The URL without its password, for messages and metadata."""
    return make_url(url).render_as_string(hide_password=True)


class DatabaseResource(dg.ConfigurableResource):
    """The PostgreSQL that holds staging, quarantine, the WAL, the registry and the targets.

    `url` empty means the embedded server under `home` (default `$DATA_MASH_HOME`).
    """

    url: str = ""
    home: str = ""

    def resolved_url(self) -> str:
        if self.url:
            return self.url
        home = Path(self.home) if self.home else data_mash_home()
        return embedded_url(home / "pg")

    def engine(self) -> Engine:
        return get_engine(self.resolved_url())

    def describe(self) -> str:
        if self.url:
            return f"PostgreSQL server {describe_url(self.url)}"
        home = Path(self.home) if self.home else data_mash_home()
        return f"embedded PostgreSQL in {home / 'pg'}"


def dispose_engine(url: str) -> None:
    """Close the pooled connections of a URL's engine (tests drop their databases after)."""
    with _lock:
        engine = _engines.pop(sqlalchemy_url(url), None)
    if engine is not None:
        engine.dispose()
