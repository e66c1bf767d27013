"""What every `data-mash` command shares: the Typer app, the two consoles, errors and exact JSON.

Errors leave every command in one place, `DataMashGroup.invoke` (and `main()` for what happens outside a command):
a `DataMashError` (legacy/errors.py: unreadable input, unknown names, bad settings, work refused) as its message and
exit code; a database that does not answer as where it was tried; anything else as one line and the log file that
holds its traceback. No traceback reaches the person at the terminal.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import traceback
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup
from typer.exceptions import TyperException

console = Console(stderr=True)


out = Console()


class DataMashGroup(TyperGroup):
    """The `data-mash` command group: whatever a command raises ends as a message and an exit code."""

    def invoke(self, ctx):
        command = [*getattr(ctx, "_protected_args", []), *ctx.args]  # for the log, before the subcommand takes them
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, TyperException):  # Typer's own: usage errors (exit 2), exits, aborts
            raise
        except OSError as error:
            if error.errno == errno.EPIPE:  # stdout closed (`| head`): Typer ends quietly
                raise
            raise typer.Exit(report(error, command)) from None
        except Exception as error:  # noqa: BLE001 - the one place every error is told to a person
            raise typer.Exit(report(error, command)) from None


app = typer.Typer(
    cls=DataMashGroup,
    help="Data Mash: move an insurer's book of policies from legacy systems to a new platform, wave by wave.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def report(error: BaseException, command: list[str] | None = None) -> int:
    """Tell a person what went wrong, on one line or a few, and return the exit code (see the module docstring)."""
    from legacy.errors import DataMashError

    if isinstance(error, DataMashError):
        console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
        return error.exit_code
    if (lost := database_unreachable(error)) is not None:
        message, code = lost
        console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
        return code
    log = write_traceback(error, command)
    first = (str(error).strip().splitlines() or [""])[0][:300]
    where = f"the traceback is in {log}" if log else "the traceback could not be written to a log file"
    console.print(f"[bold red]error:[/] unexpected {type(error).__name__}" + (f": {escape(first)}" if first else "")
                  + f". This is a bug or a case Data Mash does not handle yet; {where} (please attach it to a report).",
                  highlight=False, soft_wrap=True)
    return 1


def database_unreachable(error: BaseException) -> tuple[str, int] | None:
    """A database connection that failed or was lost, told as where it was, and the exit code: 2 when this process
    had not reached the database yet (nothing was changed: a bad setting), 1 when it was lost mid-work."""
    from resources.database import DATABASE_URL_ENV, DatabaseResource, connected, connection_failure

    orig = getattr(error, "orig", None) or error
    kinds = {f"{type(e).__module__.split('.')[0]}.{type(e).__name__}" for e in (error, orig)}
    if not kinds & {"psycopg.OperationalError", "psycopg2.OperationalError", "psycopg.InterfaceError",
                    "psycopg2.InterfaceError"}:
        return None
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if state and not state.startswith(("08", "57P")):  # a statement that failed (a deadlock, a timeout): not this
        return None
    url = os.environ.get(DATABASE_URL_ENV, "")
    database = DatabaseResource(url=url).describe()
    reason = connection_failure(orig, url or None)
    if not connected():
        return (f"cannot connect to the database ({database}): {reason} Nothing was changed. Check that the server "
                f"runs and accepts connections there ({DATABASE_URL_ENV} names it).", 2)
    return (f"lost the connection to the database ({database}) while working: {reason} What was committed before "
            "stays (every change is a WAL intent first: `data-mash wal recover` carries on work left pending).", 1)


def write_traceback(error: BaseException, command: list[str] | None = None) -> Path | None:
    """Write the command and the error's traceback to `$DATA_MASH_HOME/logs/` (else the temp folder); the file, or
    None if neither could be written."""
    import tempfile

    from resources.database import data_mash_home

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    text = (f"data-mash {' '.join(sys.argv[1:] if command is None else command)}\n"
            f"{datetime.now(timezone.utc).isoformat()}\n\n"
            + "".join(traceback.format_exception(type(error), error, error.__traceback__)))
    for folder in (data_mash_home() / "logs", Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"data-mash-error-{stamp}-{os.getpid()}.log"
            path.write_text(text, encoding="utf-8")
            return path
        except OSError:
            continue
    return None


def dumps_exact(value) -> str:
    """JSON with decimals written as exact numbers (never through float)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))}: {dumps_exact(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(dumps_exact(v) for v in value) + "]"
    return json.dumps(str(value))


def when_option(value: Optional[str], option: str):
    from datetime import datetime, timezone

    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        fail(f"{option} {value!r} is not an ISO date or time (e.g. 2026-11-01 or 2026-11-01T02:00:00+00:00)")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


# --------------------------------------------------------------------------- inputs checked before any work


def writable_output(path: Path, option: str = "--output") -> Path:
    """`path` if a file can be written there (its folder exists and is writable, it is not a folder itself); else a
    `UsageError` (exit 2) said before any work is done, so that nothing is saved for an output that cannot be."""
    from legacy.errors import UsageError

    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise UsageError(f"{option} {path}: is a folder; name a file in it, e.g. {path / 'out.yaml'}")
    if not folder.is_dir():
        raise UsageError(f"{option} {path}: folder {folder} does not exist" + (
            " (it is a file)" if folder.exists() else "") + "; create it or name another file")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"{option} {path}: cannot write there (permission denied); name another file")
    return path


def writable_folder(path: Path, option: str) -> Path:
    """`path` if it is a folder that can be written, or one that can be created (its nearest existing ancestor is a
    writable folder); else a `UsageError` (exit 2) before any work is done."""
    from legacy.errors import UsageError

    existing = path.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{option} {path}: {existing} is a file, not a folder; name a folder")
    if not os.access(existing, os.W_OK):
        raise UsageError(f"{option} {path}: cannot write in {existing} (permission denied); name another folder")
    return path


def staged_drop_or_fail(engine, source: str, drop: str) -> None:
    """Refuse (exit 2) a drop id that was never taken in for this source, naming the ones that were."""
    from legacy.errors import UsageError
    from resources.intake_store import IntakeStore

    drops = [d for s, d in IntakeStore(engine).drops() if s == source]
    if drop not in drops:
        known = ", ".join(drops[-10:]) if drops else "none yet (`data-mash ingest PATH --source " + source + "`)"
        raise UsageError(f"--drop {drop!r}: no drop of {source} by that id has been taken in; drops of {source}: "
                         f"{known} (see `data-mash status`)")


def fault_option(fault: str | None, asset_keys) -> str | None:
    """A drill's `--inject-fault`, checked: `[fail:|hold:]<after_intent|mid_load>:<asset key>` naming an asset of
    the run. A misspelt one would never fire, and the drill would be a real run: refused (exit 2) instead."""
    from legacy.errors import UsageError

    if fault is None:
        return None
    parts = fault.split(":")
    mode, rest = (parts[0], parts[1:]) if parts[0] in ("fail", "hold") else ("", parts)
    keys = sorted(k.to_user_string() for k in asset_keys)
    if len(rest) != 2 or rest[0] not in ("after_intent", "mid_load") or rest[1] not in keys:
        raise UsageError(f"--inject-fault {fault!r}: expected [fail:|hold:]after_intent|mid_load:<asset>, the asset "
                         f"one of {', '.join(keys)} (e.g. fail:mid_load:{keys[0]}); nothing was run")
    return fault
