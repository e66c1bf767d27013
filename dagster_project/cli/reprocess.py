"""`data-mash reprocess`: map past drops again after a mapping change, as a Dagster backfill, and say what changed.

Registered on the main CLI by `register(app)` (dagster_project/cli/__init__.py). Exit codes as there: 0 done, 1 the
backfill or the book failed (or the operator said no), 2 bad input (an invalid or draft mapping, a bad date,
nothing to reprocess).
"""

from __future__ import annotations

import os
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from dagster_project.cli.common import console, fail, out


def register(app: typer.Typer) -> None:
    app.command("reprocess")(reprocess_cmd)


def reprocess_cmd(
    mapping: Path = typer.Option(..., "--mapping", exists=True, dir_okay=False,
                                 help="The changed mapping YAML (validated; a draft is refused)."),
    since: str = typer.Option(..., "--since", help="Reprocess the drops landed on or after this date (YYYY-MM-DD, "
                                                   "or an ISO time; UTC if no zone)."),
    source: Optional[str] = typer.Option(None, "--source", help="Source name (default: the mapping's source)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before installing the mapping."),
    actor: str = typer.Option(os.environ.get("USER", "operator"), "--actor", help="Who changes it (default: $USER)."),
) -> None:
    """Install a changed mapping and map the drops landed since a date again, as a Dagster backfill; then apply them
    to the book and report what changed, per drop and by system of record."""
    from canonical.mapping import MappingError
    from dagster_project.environment import resources_for_environment
    from dagster_project.reprocess import ReprocessError, plan_reprocess, preview_impact

    since_at = _since(since)
    new = _load_mapping(mapping)
    resources = resources_for_environment(resolved=True)
    engine = resources["database"].engine()
    try:
        plan = plan_reprocess(new, since_at, engine=engine, source=source)
    except (ReprocessError, MappingError) as error:
        fail(str(error))
    _print_plan(plan)
    preview = None
    if not plan.resume:  # resuming, the drops left were mapped with whatever came before: no one old mapping
        with console.status(f"Comparing {plan.active.version} and {plan.mapping.version} on the drops' staged records…"):
            preview = preview_impact(plan, engine=engine, landing=resources["landing"])
        _print_impact(preview, f"Expected impact of {plan.active.name} {plan.active.version} → {plan.mapping.version} "
                               f"(staged records mapped with both)")
    if not yes and not typer.confirm(
            f"Install {plan.mapping.name} {plan.mapping.version} as the active {plan.source} mapping and reprocess "
            f"{len(plan.drops)} drop(s)?" if not plan.resume else
            f"Reprocess the {len(plan.drops)} drop(s) not yet mapped with {plan.mapping.version}?", err=True):
        fail("not confirmed: nothing was changed", 1)
    outcome = _run(plan, actor, engine)
    _print_outcome(outcome, preview)
    if not outcome.success:
        raise typer.Exit(1)


def _since(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        fail(f"--since {value!r} is not a date (YYYY-MM-DD) or an ISO time (e.g. 2026-11-01T02:00:00+00:00)")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _load_mapping(path: Path):
    """The mapping, validated against its source's columns exactly as `validate-mapping` does; a file that cannot be
    used is a `MappingError` (exit 2) naming file, line and field."""
    from dagster_project.cli.mappings import load_checked_mapping

    return load_checked_mapping(path)[0]


def _print_plan(plan) -> None:
    table = Table(title=f"{plan.source} drops landed since {plan.since:%Y-%m-%d %H:%M} UTC, to map again with "
                        f"{plan.mapping.name} {plan.mapping.version}")
    for col, justify in [("drop", "left"), ("landed", "left"), ("mapped now with", "left")]:
        table.add_column(col, justify=justify)
    for d in plan.drops:
        table.add_row(d.drop_id, f"{d.registered_at:%Y-%m-%d %H:%M:%S}", d.mapped_with or "not mapped")
    out.print(table)
    if plan.resume:
        out.print(f"{plan.mapping.name} {plan.mapping.version} is the active mapping already (an earlier reprocess "
                  f"stopped): only the {len(plan.drops)} drop(s) still mapped otherwise are reprocessed.",
                  highlight=False)
    else:
        out.print(f"active now: {plan.active.name} {plan.active.version} (hash {plan.active.hash[:12]}, "
                  f"{plan.active.path}); new: {plan.mapping.version} (hash {plan.mapping.hash[:12]})", highlight=False)


def _print_impact(preview, title: str) -> None:
    table = Table(title=title)
    for col in ("table", "records", "changed", "policies", "by field", "newly quarantined", "released"):
        table.add_column(col, justify="left" if col in ("table", "by field", "newly quarantined") else "right")
    for i in preview.tables:
        table.add_row(i.table, f"{i.records:,}", f"{i.changed_records:,}", f"{len(i.changed_policies):,}",
                      ", ".join(f"{f} {n:,}" for f, n in i.changed_by_field.most_common()) or "-",
                      ", ".join(f"{r} {n:,}" for r, n in i.newly_quarantined.most_common()) or "-", f"{i.released:,}")
    out.print(table)
    for name, why in preview.not_compared.items():
        out.print(f"  {name}: not compared ({why})", highlight=False)


def _run(plan, actor: str, engine):
    from canonical.mapping import MappingError
    from dagster_project.reprocess import reprocess
    from dagster_project.runner import canonical_outcomes
    from resources.wal import IntentBusyError

    tables = list(plan.mapping.spec.tables)
    done: Counter = Counter()
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} tables"),
                  TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task(f"Backfill: {plan.source}, {len(plan.drops)} drop(s)", total=len(plan.drops) * len(tables))

        def installed(install) -> None:
            progress.console.print(
                f"installed {install.path} ({install.old_version} → {install.new_version}, WAL intent "
                f"{install.wal_id}); the replaced mapping is kept as {install.backup}", highlight=False)

        def mapped(drop_id: str, table: str) -> None:
            progress.advance(task)
            done[drop_id] += 1
            if done[drop_id] == len(tables):
                p = next((t for t in canonical_outcomes(engine, plan.source, drop_id) if t.table == "policies"), None)
                progress.console.print(
                    f"  {drop_id} mapped with {plan.mapping.version}" + (
                        f": policies {p.records_in:,} in, {p.records_mapped:,} mapped, {p.records_quarantined:,} "
                        "quarantined" if p else ""), highlight=False)

        try:
            return reprocess(plan, actor=actor, on_installed=installed, on_mapped=mapped)
        except (MappingError, IntentBusyError, OSError) as error:
            fail(str(error), 1)


def _print_outcome(outcome, preview) -> None:
    backfill = outcome.backfill
    colour = "green" if backfill.success else "red"
    runs = [r for r in backfill.runs if r.run_id]
    out.print(f"Dagster backfill {backfill.backfill_id}: [{colour}]{backfill.status}[/] ({len(runs)} run(s) "
              "launched by the daemon; see the UI's backfills page)")
    for run in backfill.runs:
        if run.run_id:
            span = run.drops[0] if len(run.drops) == 1 else f"{run.drops[0]} … {run.drops[-1]} ({len(run.drops)} drops)"
            state = "[green]succeeded[/]" if run.success else "[red]FAILED[/]"
            out.print(f"  run {run.run_id} {span} {state}")
        for check in run.failed_checks:
            out.print(f"    [red]check failed[/] {check}")
        if run.error:
            out.print(f"    [red]{escape(run.error)}[/]")
    if not backfill.success:
        out.print("The mapping stays installed; drops mapped already keep it. Run the same `data-mash reprocess` "
                  "again to finish: only the drops not yet mapped with it are taken.", highlight=False)
        return
    book = outcome.book_run
    if not book.success:
        out.print(f"[red]applying the drops to the book failed[/] (route_book_job run {book.run_id}): "
                  f"{escape(book.error or '')}. `data-mash route` applies them (and routes).", highlight=False)
        return
    report = outcome.report
    table = Table(title=f"Change impact on the book (canonical/book, run {book.run_id})")
    for col in ("drop", "records in", "mapped", "quarantined", "policies", "new", "changed", "cancelled", "unchanged"):
        table.add_column(col, justify="left" if col == "drop" else "right")
    for d in report.drops:
        book_cells = [f"{v:,}" for v in (d.policies, d.new, d.changed, d.cancelled, d.unchanged)] \
            if d.policies is not None else ["not applied"] + [""] * 4
        table.add_row(d.drop_id, f"{d.records_in:,}", f"{d.records_mapped:,}", f"{d.records_quarantined:,}", *book_cells)
    out.print(table)
    owners = Table(title="Policies changed by this reprocess, by their system of record now")
    for col in ("change", "system of record", "policies"):
        owners.add_column(col, justify="right" if col == "policies" else "left")
    for (change, owner), n in report.by_owner.items():
        owners.add_row(change, owner, f"{n:,}")
    if report.by_owner:
        out.print(owners)
    out.print(f"{len(report.changed_policies):,} policies changed; every other policy of the book kept its content "
              "hash." + (f" (The preview, row by row per drop before duplicates and newer versions are settled, "
                         f"expected {len(preview.policies):,}.)" if preview else ""), highlight=False)
    migrated = report.migrated
    out.print(f"{report.migrated_total:,} of them already migrated ({migrated['new_platform']:,} owned by the new "
              f"platform, {migrated['coexistence_bridge']:,} in the coexistence bridge): reprocessing does not rewrite "
              "what a wave loaded. The nightly sync takes these changes (`data-mash sync run`, docs/sync.md): a bridge "
              "policy's go to the platform, a platform-owned policy's by its line's conflict rule.", highlight=False)
    if report.gone:
        out.print(f"[yellow]{report.gone:,} policies of the book are no longer mapped from these drops[/] (the new "
                  "mapping quarantines them, see canonical.quarantine): the book keeps their former version.",
                  highlight=False)
    out.print("Routing is as it was: `data-mash route --dry-run` shows what the changes would move, `data-mash route` "
              "re-routes; `data-mash changes --drop <source>:<drop>` lists the changed policies.", highlight=False)
