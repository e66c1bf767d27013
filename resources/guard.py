"""The write path: the database refuses a change to Data Mash's tables unless its transaction carries an open intent.

Every product table has a statement trigger (`data_mash.require_intent`, migration 14) that raises unless the setting
`data_mash.intent` of the transaction names a WAL intent that is pending. The WAL sets it: while an intent's work
runs, `acting_for(intent)` holds it in a context variable, and every transaction this process begins on a Data Mash
engine (`install`) or raw cursor (`apply`) sets it first, locally. A forgotten intent is thus an error at the
first write, not a silent gap.

Two named exceptions, both explicit in the SQL: schema migrations (`data_mash.migration`), and the new platform's
own users, who change its tables outside Data Mash (`data_mash.external_writer`, new_platform schema only; the
demo's `simulate-activity` plays them).

The principal of the work (who asked for it) travels the same way, for the intents this process writes.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from sqlalchemy import Engine, event

PRINCIPAL_ENV = "DATA_MASH_PRINCIPAL"
ERRCODE = "DMW01"  # the SQLSTATE the guard raises
# the schemas of Data Mash's own state and of the target it loads; `wal` guards itself (append-only log, verify),
# `dagster` is Dagster's storage, `data_mash` the migrations' own bookkeeping
GUARDED_SCHEMAS = ("intake", "staging", "canonical", "canonical_registry", "routing", "coexistence", "waves",
                   "targets", "new_platform", "sync")

_intent: ContextVar[object | None] = ContextVar("data_mash_intent", default=None)
_principal: ContextVar[str | None] = ContextVar("data_mash_principal", default=None)


def current_intent():
    """The intent whose work this code runs in, if any."""
    return _intent.get()


@contextmanager
def acting_for(intent) -> Iterator[None]:
    token = _intent.set(intent)
    try:
        yield
    finally:
        _intent.reset(token)


def current_principal() -> str:
    """Who asked for the work: set by the CLI or the run (its tags), else $DATA_MASH_PRINCIPAL, else the OS user."""
    return _principal.get() or os.environ.get(PRINCIPAL_ENV) or f"os:{_os_user()}"


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid-{os.getuid()}"


@contextmanager
def as_principal(principal: str | None) -> Iterator[None]:
    token = _principal.set(principal or None)
    try:
        yield
    finally:
        _principal.reset(token)


def _setting_sql() -> tuple[str, tuple] | None:
    intent = _intent.get()
    if intent is None:
        return None
    return "SELECT set_config('data_mash.intent', %s, true)", (str(intent.id),)


def apply(cursor) -> None:
    """Set the current intent on a raw psycopg cursor's transaction (COPY and server-side work)."""
    if statement := _setting_sql():
        cursor.execute(*statement)


def install(engine: Engine) -> None:
    """Every transaction begun on `engine` carries the current intent, if there is one."""

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:
        if statement := _setting_sql():
            with conn.connection.dbapi_connection.cursor() as cursor:
                cursor.execute(*statement)
