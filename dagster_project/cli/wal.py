"""`data-mash wal ...` and `data-mash audit-trail`: the write-ahead log."""

from __future__ import annotations

import sys
from typing import Optional

import typer
from rich.table import Table

from dagster_project.cli.common import app, console, dumps_exact, fail, out, when_option

wal_app = typer.Typer(help="The write-ahead log: replay, verify, recover, show.", no_args_is_help=True)


app.add_typer(wal_app, name="wal")


def open_wal():
    from dagster_project.environment import resources_for_environment

    return resources_for_environment(resolved=True)["wal"].store()


@wal_app.command("replay")
def wal_replay(
    namespace: Optional[str] = typer.Option(None, "--namespace", help="e.g. intake"),
    since: Optional[str] = typer.Option(None, "--since", help="ISO time, inclusive (UTC if no zone)."),
    until: Optional[str] = typer.Option(None, "--until", help="ISO time, exclusive."),
) -> None:
    """Print WAL entries in the order they were written, one JSON object per line."""
    count = 0
    for entry in open_wal().replay(namespace, when_option(since, "--since"), when_option(until, "--until")):
        entry["at"] = entry["at"].isoformat()
        sys.stdout.write(dumps_exact(entry) + "\n")
        count += 1
    console.print(f"{count:,} entries", highlight=False)


@wal_app.command("verify")
def wal_verify() -> None:
    """Walk every hash chain and cross-check the intents; exit 1 naming the first altered entry."""
    report = open_wal().verify()
    if report.ok:
        out.print(f"WAL intact: {report.entries:,} entries in {report.chains} chain(s), {report.intents:,} intents.")
        return
    out.print(f"[red]WAL altered[/]: first problem: {report.problems[0]}", highlight=False)
    for problem in report.problems[1:20]:
        out.print(f"  also: {problem}", highlight=False)
    raise typer.Exit(1)


@wal_app.command("recover")
def wal_recover() -> None:
    """Relaunch intents left pending by dead runs (or failed) whose delay has passed; dead-letter spent ones."""
    from dagster_project.runner import recover

    with console.status("Recovering WAL intents through Dagster…"):
        outcomes = recover()
    if not outcomes:
        out.print("Nothing to recover: every intent is committed, compensated, dead-lettered or owned by a live run.")
        return
    table = Table(title="WAL recovery")
    for col in ("intent", "action", "why", "run", "result"):
        table.add_column(col)
    for o in outcomes:
        result = "" if o.success is None else ("[green]succeeded[/]" if o.success else "[red]failed[/]")
        table.add_row(str(o.intent_id), o.action, o.reason, o.run_id or "", result)
    out.print(table)
    if any(o.success is False for o in outcomes):
        raise typer.Exit(1)


@wal_app.command("show")
def wal_show(intent_id: int = typer.Argument(..., help="WAL intent id (the wal_entry_id in asset metadata).")) -> None:
    """One intent: what, to what, its lifecycle and status, and every event in its chain."""
    store = open_wal()
    intent = store.get(intent_id)
    if intent is None:
        fail(f"no WAL intent {intent_id}")
    table = Table(title=f"WAL intent {intent_id}", show_header=False)
    for key in ("namespace", "operation", "target", "idempotency_key", "status", "attempts", "error", "asset_key",
                "partition_key", "run_id", "wave", "max_retries", "retry_delay_seconds", "backoff", "ttl_seconds",
                "created_at", "updated_at"):
        table.add_row(key, "" if intent[key] is None else str(intent[key]))
    table.add_row("payload", dumps_exact(intent["payload"]))
    table.add_row("result", dumps_exact(intent["result"]))
    out.print(table)
    events = Table(title="events")
    for col in ("seq", "at", "event", "status", "hash"):
        events.add_column(col)
    for e in store.events(intent_id):
        events.add_row(str(e["seq"]), e["at"].isoformat(), e["event"], str(e["body"].get("status")), e["hash"][:16])
    out.print(events)


@app.command("audit-trail")
def audit_trail(policy: str = typer.Argument(..., help="Policy id, e.g. L100000005 or PC10000003.")) -> None:
    """Every WAL event of every write that touched this policy's rows, in order."""
    from dagster_project.environment import resources_for_environment
    from dagster_project.runner import audit_key_columns
    from resources.intake_store import IntakeStore

    resources = resources_for_environment(resolved=True)
    store = resources["wal"].store()
    trail = store.audit_trail(policy, audit_key_columns(IntakeStore(resources["database"].engine())))
    if not trail:
        fail(f"no row of policy {policy} was written through the WAL")
    table = Table(title=f"Audit trail of policy {policy}")
    for col in ("seq", "at", "event", "status", "intent", "operation", "target", "partition", "run"):
        table.add_column(col)
    for e in trail:
        table.add_row(str(e["seq"]), e["at"].isoformat(timespec="seconds"), e["event"], e["status"] or "",
                      str(e["intent_id"]), e["operation"], e["target"], e["partition_key"] or "", (e["run_id"] or "")[:8])
    out.print(table)
