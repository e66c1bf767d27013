"""`data-mash wal ...` and `data-mash audit-trail`: the write-ahead log."""

from __future__ import annotations

import sys
from pathlib import Path
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
def wal_verify(
    checkpoint: list[Path] = typer.Option([], "--checkpoint", exists=True, dir_okay=False,
                                          help="A checkpoint exported by `wal checkpoint` (repeatable): the chain must "
                                               "still hold the entries it signed."),
    public_key: Optional[str] = typer.Option(None, "--public-key",
                                             help="The key checkpoints must be signed with (hex) [default: this WAL's]."),
) -> None:
    """Check every entry's keyed hash, place and replay order, every column of every intent, the write guard on every
    product table, and any exported checkpoints; exit 1 naming the first bad entry and what differs."""
    import json

    checkpoints = []
    for path in checkpoint:
        try:
            checkpoints.append(json.loads(path.read_text()))
        except (OSError, ValueError) as error:
            fail(f"{path}: not a WAL checkpoint ({error})")
    report = open_wal().verify(checkpoints, public_key)
    if report.ok:
        out.print(f"WAL intact: {report.entries:,} entries in {report.chains} chain(s), {report.intents:,} intents"
                  + (f", {report.checkpoints} checkpoint(s) still hold" if checkpoints else "") + ".", highlight=False)
        if report.unkeyed:
            out.print(f"note: {report.unkeyed:,} entries were written before keyed hashing (a plain hash that anyone "
                      "with database access could recompute): `data-mash wal checkpoint --output FILE` pins them.",
                      highlight=False)
        return
    out.print(f"[red]WAL altered[/]: first problem: {report.problems[0]}", highlight=False)
    for problem in report.problems[1:20]:
        out.print(f"  also: {problem}", highlight=False)
    if len(report.problems) > 20:
        out.print(f"  and {len(report.problems) - 20:,} more", highlight=False)
    raise typer.Exit(1)


@wal_app.command("checkpoint")
def wal_checkpoint(
    output: Optional[Path] = typer.Option(None, "--output", dir_okay=False,
                                          help="Write the signed checkpoint here (JSON) as well: keep it off this host."),
) -> None:
    """Sign the chain heads now (Ed25519, with the WAL's key) and keep the checkpoint in the database; exported, it
    proves later (`wal verify --checkpoint FILE`) that no entry up to here was rewritten."""
    from dagster_project.environment import resources_for_environment

    if output is not None and not output.parent.is_dir():
        fail(f"--output {output}: the folder {output.parent} does not exist")
    database = resources_for_environment(resolved=True)["database"]
    checkpoint = open_wal().checkpoint(database.describe())
    if output is not None:
        output.write_text(dumps_exact(checkpoint) + "\n")
    heads = ", ".join(f"{h['namespace']} at {h['chain_pos']}" for h in checkpoint["heads"])
    out.print(f"Checkpoint of {len(checkpoint['heads'])} chain(s) ({heads}) taken at {checkpoint['taken_at']}"
              + (f", written to {output}" if output else "") + ".", highlight=False)
    out.print(f"Signed with public key {checkpoint['public_key']} (key id {checkpoint['key_id']}); an auditor checks "
              "it with that key alone.", highlight=False)


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
