"""`data-mash simulate-activity` and `data-mash sync ...`: the nightly sync."""

from __future__ import annotations

import os
import time
from typing import Optional

import typer
from rich.table import Table

from dagster_project.cli.common import app, console, fail, fault_option, out


@app.command("simulate-activity")
def simulate_activity_cmd(
    policies: int = typer.Option(1000, "--policies", min=1, help="How many in-force platform policies to change."),
    seed: int = typer.Option(7, "--seed"),
    at: Optional[str] = typer.Option(None, "--at", help="When the changes happen (ISO time; default now)."),
) -> None:
    """Business on the new platform, for demos and drills: endorse (premium +5%), cancel, or correct the address of
    policies the platform holds, as its own users would (not through Data Mash). The nightly sync finds them."""
    from datetime import datetime, timezone

    from dagster_project.environment import resources_for_environment
    from resources.platform_activity import simulate_activity

    when = None
    if at:
        try:
            when = datetime.fromisoformat(at)
        except ValueError:
            fail(f"--at: {at!r} is not an ISO time (e.g. 2026-11-21T15:30:00+00:00)")
        when = when if when.tzinfo else when.replace(tzinfo=timezone.utc)
    engine = resources_for_environment(resolved=True)["database"].engine()
    done = simulate_activity(engine, policies, seed=seed, at=when)
    if not done.policies:
        fail("no in-force policy on the new platform: run a wave first (`data-mash wave execute W`)", 1)
    out.print(f"changed {done.policies:,} policies on the new platform at {done.at:%Y-%m-%d %H:%M:%S %Z}: "
              + ", ".join(f"{n:,} {kind}" for kind, n in sorted(done.by_kind.items())), highlight=False)


sync_app = typer.Typer(help="The nightly sync between legacy and the new platform: run, list, report, conflicts, "
                            "rollback.", no_args_is_help=True)


app.add_typer(sync_app, name="sync")


def _night_or_fail(night: Optional[str]):
    from datetime import date

    from dagster_project.runner import tonight

    if night is None:
        return tonight()
    try:
        return date.fromisoformat(night)
    except ValueError:
        fail(f"--night: {night!r} is not a date (YYYY-MM-DD)")


def open_sync():
    from dagster_project.environment import resources_for_environment
    from resources.sync_store import SyncStore
    from routing.sync import load_sync_rules

    rules = load_sync_rules()  # a bad settings file is a SyncRulesError: exit 2 naming file, line and field
    return SyncStore(resources_for_environment(resolved=True)["targets"].store(), rules)


@sync_app.command("run")
def sync_run(
    night: Optional[str] = typer.Option(None, "--night", help="The night to sync (YYYY-MM-DD; default today in the "
                                                              "sync's zone)."),
    fault: Optional[str] = typer.Option(None, "--inject-fault", help="Drill: fail this run at `fail:<point>:<asset>`, "
                                        "e.g. fail:mid_load:sync/legacy_batch, and watch it roll back."),
) -> None:
    """Run one night of sync now, through Dagster (`nightly_sync_job`): apply new drops to the book, find both
    sides' changes, decide each (conflict rules per line), write each through the WAL, prove and report. A failed
    night is rolled back at once. What `nightly_sync_schedule` runs every night."""
    from assets.sync import SYNC_KEYS
    from dagster_project.runner import sync_night

    fault = fault_option(fault, SYNC_KEYS)
    day = _night_or_fail(night)
    store = open_sync()  # the sync settings are read (and a bad file refused) before a run is submitted
    with console.status(f"Syncing the night of {day} through Dagster…"):
        run = sync_night(day, fault=fault)
    record = store.night(day) or {}
    out.print(f"sync {day}: run {run.run_id} " + ("[green]succeeded[/]" if run.success else f"[red]FAILED[/]: {run.error}"),
              highlight=False)
    for rollback in run.rollbacks:
        out.print(f"  compensated automatically: rollback run {rollback.run_id} "
                  + ("[green]succeeded[/]" if rollback.success else f"[red]FAILED[/]: {rollback.error}"), highlight=False)
    if record:
        out.print(f"  status: {record['status']}" + (f" ({record['status_reason']})" if record["status_reason"] else ""),
                  highlight=False)
    if run.success and record.get("report"):
        print_sync_report(record["report"])
    if not run.success:
        raise typer.Exit(1)


def print_sync_report(report: dict) -> None:
    table = Table(title=f"Night of {report['night']}: {report['changed_policies']:,} policies changed")
    for col in ("", "policies"):
        table.add_column(col, justify="right" if col else "left")
    seen = report["seen"]
    for label, n in (("changed on legacy only", seen["legacy_only"]), ("changed on the new platform only",
                     seen["platform_only"]), ("changed on both", seen["both"]),
                     ("  of which migrated (system of record: new platform)", report["by_owner"]["migrated"]),
                     ("  of which bridge (legacy authoritative)", report["by_owner"]["bridge"]),
                     ("legacy's version written to the new platform", report["applied"]["to_new_platform"]),
                     ("platform's version written back to legacy (batch)", report["applied"]["written_back_to_legacy"]),
                     ("platform change accepted (legacy no longer services it)",
                      report["applied"]["accepted_on_platform"]),
                     ("legacy change kept out (the platform is the system of record)",
                      report["applied"]["legacy_change_kept_out"]),
                     ("conflicts", report["conflicts_total"]),
                     ("queued for manual review (DQ queue)", report["queued_for_manual_review"])):
        table.add_row(label, f"{n:,}")
    out.print(table)
    applied = report["applied"]
    out.print(f"  each changed policy got one action: {applied['to_new_platform']:,} + {applied['written_back_to_legacy']:,}"
              f" + {applied['accepted_on_platform']:,} + {applied['legacy_change_kept_out']:,} + "
              f"{report['queued_for_manual_review']:,} queued = {report['changed_policies']:,}", highlight=False)
    for rule, actions in sorted(report["conflicts"].items()):
        out.print(f"  conflicts settled by {rule}: " + ", ".join(f"{n:,} {a}" for a, n in sorted(actions.items())),
                  highlight=False)
    for f in report["files"]:
        out.print(f"  legacy batch: {f['file']} ({f['records']:,} records, sha256 {f['sha256'][:16]}…)", highlight=False)
    for c in report.get("checks", []):
        out.print(f"  {c['name']}: " + ("[green]proved[/]" if c["passed"] else f"[red]FAILED[/] {c['examples']}"),
                  highlight=False)


@sync_app.command("list")
def sync_list() -> None:
    """Every night of sync: status, changes, conflicts, queue additions; and when the schedule runs."""
    store = open_sync()
    schedule = store.rules.schedule
    table = Table(title=f"Nights of sync (nightly_sync_schedule: {schedule.time} {schedule.timezone}; turn it on in "
                        "the UI's Automation page)")
    for col in ("night", "status", "changed", "to platform", "back to legacy", "conflicts", "queued", "reason"):
        table.add_column(col)
    for n in store.nights():
        r = n["report"] or {}
        applied = r.get("applied", {})
        table.add_row(str(n["night"]), n["status"], f"{r.get('changed_policies', 0):,}",
                      f"{applied.get('to_new_platform', 0):,}", f"{applied.get('written_back_to_legacy', 0):,}",
                      f"{r.get('conflicts_total', 0):,}", f"{r.get('queued_for_manual_review', 0):,}",
                      (n["status_reason"] or "")[:60])
    out.print(table)


@sync_app.command("report")
def sync_report_cmd(night: Optional[str] = typer.Option(None, "--night", help="YYYY-MM-DD (default: the latest).")) -> None:
    """A night's report: changes per side, what was applied where, conflicts by rule, queue additions, proof."""
    store = open_sync()
    nights = store.nights()
    if not nights:
        fail("no night of sync yet: run one with `data-mash sync run`", 1)
    record = store.night(_night_or_fail(night)) if night else nights[-1]
    if not record:
        fail(f"no sync on the night of {night} (see `data-mash sync list`)")
    out.print(f"status: {record['status']}" + (f" ({record['status_reason']})" if record["status_reason"] else ""),
              highlight=False)
    if record["report"]:
        print_sync_report(record["report"])


@sync_app.command("conflicts")
def sync_conflicts(
    night: Optional[str] = typer.Option(None, "--night", help="YYYY-MM-DD (default: every night)."),
    policy: Optional[str] = typer.Option(None, "--policy"),
    limit: int = typer.Option(50, "--limit", min=1),
) -> None:
    """Recorded conflicts (or, with --policy, every sync decision for that policy): the rule and what it decided."""
    store = open_sync()
    rows = store.decisions(_night_or_fail(night) if night else None, policy_id=policy, conflicts_only=policy is None,
                           limit=limit)
    table = Table(title=("Sync decisions" if policy else "Sync conflicts") + " (why, in full: --policy P)")
    for col in ("night", "policy", "line", "owner", "changed on", "rule", "action", "state"):
        table.add_column(col)
    for d in rows:
        state = ("undone: " + (d["resolution"] or "")) if d["undone_at"] else (
            "applied" if d["applied_at"] and d["action"] != "queue" else
            ("settled: " + d["resolution"].split(":")[0]) if d["resolution"] else
            "queued" if d["applied_at"] else "pending")
        owner = "migrated" if d["system_of_record"] == "new_platform" and not d["bridge"] else "bridge"
        sides = "both" if d["legacy_changed"] and d["platform_changed"] else (
            "legacy" if d["legacy_changed"] else "platform")
        table.add_row(str(d["night"]), d["policy_id"], d["line_of_business"] or "", owner, sides, d["rule"] or "-",
                      d["action"], state)
    out.print(table)
    if policy:
        for d in rows:
            out.print(f"  decision {d['id']} ({d['night']}): {d['why']}"
                      + (f"; {d['resolution']}" if d["resolution"] else ""), highlight=False)


@sync_app.command("resolve")
def sync_resolve(
    policy: str = typer.Argument(..., help="A policy with a manual conflict in the DQ queue."),
    keep: str = typer.Option(..., "--keep", help="legacy or new_platform: whose version stands."),
    reason: str = typer.Option(..., "--reason", help="Why (kept on the decision and in the WAL)."),
    by: str = typer.Option(os.environ.get("USER", "operator"), "--by"),
) -> None:
    """Settle a manual conflict: keep legacy's version or the new platform's. The queue entry is released and the
    next night of sync carries the choice out (run `data-mash sync run` to do it now)."""
    if keep not in ("legacy", "new_platform"):
        fail(f"--keep: {keep!r} is neither legacy nor new_platform")
    store = open_sync()
    if store.waiting_conflict(policy) is None:  # refused before a WAL intent is written
        fail(f"policy {policy} has no manual conflict waiting in the DQ queue (see `data-mash sync conflicts`)")
    try:
        done = store.resolve(policy, keep, actor=by, reason=reason)
    except (LookupError, ValueError) as error:
        fail(str(error), 1)
    out.print(f"policy {policy}: conflict of the night of {done['night']} (decision {done['decision']}) settled: keep "
              f"{keep}; released from the DQ queue (WAL intent {done['wal_id']}). The next night of sync carries it "
              "out.", highlight=False)


@sync_app.command("rollback")
def sync_rollback(
    night: str = typer.Argument(..., help="The night (YYYY-MM-DD)."),
    reason: str = typer.Option("requested by an operator", "--reason"),
) -> None:
    """Undo a night of sync through Dagster (`rollback_wave_job` on `sync-<night>`): platform rows restored, its
    legacy batch withdrawn, queue entries removed, decisions marked undone. Later nights must be undone first."""
    from dagster_project.runner import rollback_sync

    day = _night_or_fail(night)
    store = open_sync()
    if not store.night(day):
        fail(f"no sync on the night of {day} (see `data-mash sync list`)")
    with console.status(f"Rolling back the night of {day}…"):
        run = rollback_sync(day, reason=reason)
    record = store.night(day)
    out.print(f"rollback run {run.run_id} " + ("[green]succeeded[/]" if run.success else f"[red]FAILED[/]: {run.error}")
              + f"; the night of {day} is {record['status']}", highlight=False)
    if not run.success:
        raise typer.Exit(1)
