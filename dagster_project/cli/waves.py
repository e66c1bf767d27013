"""`data-mash generate-plan` and `data-mash wave ...`."""

from __future__ import annotations

import json
import os
from decimal import Decimal
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from dagster_project.cli.common import (app, console, dumps_exact, fail, fault_option, out, when_option,
                                        writable_output)

wave_app = typer.Typer(help="Waves: list, show, approve, execute, reconcile, report, rollback, status.",
                       no_args_is_help=True)


app.add_typer(wave_app, name="wave")


def open_waves():
    from dagster_project.environment import resources_for_environment
    from resources.wave_store import WaveStore

    return WaveStore(resources_for_environment(resolved=True)["database"].engine())


@app.command("generate-plan")
def generate_plan(
    name: str = typer.Option("migration plan", "--name"),
    size_cap: int = typer.Option(50_000, "--size-cap", min=1, help="Most policies in one wave."),
    cadence_days: int = typer.Option(7, "--cadence-days", min=1, help="Days between wave starts."),
    start: Optional[str] = typer.Option(None, "--start", help="First wave's start, ISO (default: tomorrow 02:00 UTC)."),
    output: Optional[Path] = typer.Option(None, "--output", help="Also write the plan as YAML."),
) -> None:
    """Propose waves from the routed book (wave 0: clean candidates; then by line of business and state); saved as drafts."""
    from datetime import datetime, timedelta, timezone

    from resources.wave_store import WaveError

    first = when_option(start, "--start") if start else (datetime.now(timezone.utc) + timedelta(days=1)).replace(
        hour=2, minute=0, second=0, microsecond=0)
    if output:
        writable_output(output)  # before the plan is saved: a plan whose file cannot be written is not saved
    store = open_waves()
    try:
        plan_id, ids = store.plan(name, os.environ.get("USER", "operator"), start=first, size_cap=size_cap,
                                  cadence_days=cadence_days)
    except WaveError as error:
        fail(str(error), 1)
    print_waves(store.waves(plan_id), f"Plan {plan_id}: {name} (drafts: approve each with `data-mash wave approve ID`)")
    if output:
        output.write_text(store.export_yaml(plan_id))
        out.print(f"written to {output}", highlight=False)


def _wave_or_fail(wave_id: str) -> dict:
    """The wave; an unknown id is refused (`UnknownWaveError`, exit 2) before anything else is done."""
    return open_waves().wave(wave_id)


def print_waves(waves, title: str) -> None:
    table = Table(title=title)
    for col in ("wave", "name", "target", "estimated", "cap", "starts", "status"):
        table.add_column(col)
    for w in waves:
        table.add_row(w["wave_id"], w["name"], w["target"], f"{w['estimated']:,}", f"{w['size_cap']:,}",
                      f"{w['scheduled_start']:%Y-%m-%d %H:%M}", w["status"] + (f" ({w['status_reason']})" if w["status_reason"] else ""))
    out.print(table)


@wave_app.command("list")
def wave_list(as_json: bool = typer.Option(False, "--json", help="One JSON object per wave, for scripts.")) -> None:
    """Every wave of every plan."""
    waves = open_waves().waves()
    if as_json:
        keys = ("wave_id", "plan_id", "number", "name", "target", "status", "status_reason", "estimated", "size_cap",
                "scheduled_start", "attempts")
        print(json.dumps([{k: (w[k].isoformat() if hasattr(w[k], "isoformat") else w[k]) for k in keys if k in w}
                          for w in waves], indent=2))
        return
    if not waves:
        out.print("No wave planned yet: `data-mash generate-plan`.")
        return
    print_waves(waves, "Waves")


@wave_app.command("show")
def wave_show(wave_id: str = typer.Argument(...)) -> None:
    """One wave: criteria, gates, schedule, status, candidates selected."""
    w = _wave_or_fail(wave_id)
    table = Table(title=f"Wave {wave_id}", show_header=False)
    for key in ("name", "target", "status", "status_reason", "estimated", "size_cap", "candidates", "scheduled_start",
                "approved_by", "approved_at", "attempts"):
        table.add_row(key, "" if w[key] is None else str(w[key]))
    table.add_row("criteria", dumps_exact(w["criteria"]))
    table.add_row("gates", dumps_exact(w["gates"]))
    out.print(table)


@wave_app.command("status")
def wave_status(wave_id: str = typer.Argument(...)) -> None:
    """A wave's status in one line (exit 1 if it failed or was rolled back)."""
    w = _wave_or_fail(wave_id)
    out.print(f"{wave_id} {w['status']}" + (f": {w['status_reason']}" if w["status_reason"] else "")
              + f" ({w['candidates']:,} candidates)", highlight=False)
    if w["status"] in ("failed", "rolled_back"):
        raise typer.Exit(1)


@wave_app.command("approve")
def wave_approve(
    wave_id: str = typer.Argument(...),
    by: str = typer.Option(os.environ.get("USER", "operator"), "--by", help="Who approves (default: $USER)."),
) -> None:
    """Approve a draft wave (or a failed or rolled-back one, to run it again), through the WAL;
    `wave_schedule_sensor` launches it when its start comes."""
    from resources.wave_store import WaveError

    allowed = ("draft", "failed", "rolled_back")
    w = _wave_or_fail(wave_id)
    if w["status"] not in allowed:  # refused before a WAL intent is written
        fail(f"wave {wave_id} is {w['status']}; it must be {' or '.join(allowed)} to be approved", 1)
    try:
        w = open_waves().set_status(wave_id, "approved", allowed_from=allowed, approved_by=by)
    except WaveError as error:
        fail(str(error), 1)
    out.print(f"{wave_id} approved by {by}; starts {w['scheduled_start']:%Y-%m-%d %H:%M} UTC (WAL intent "
              f"{w['status_wal_id']})",
              highlight=False)


@wave_app.command("gates")
def wave_gates_cmd(
    wave_id: str = typer.Argument(...),
    set_: list[str] = typer.Option([], "--set", help="NAME=VALUE, e.g. mean_dq_score=99 (repeatable)."),
) -> None:
    """Show a wave's gate thresholds, or change them before it runs (through the WAL)."""
    import math

    from resources.wave_store import WaveError
    from routing.waves import DEFAULT_GATES

    w = _wave_or_fail(wave_id)
    if set_:
        changes = {}
        for item in set_:  # every value checked before a WAL intent is written
            name, _, value = item.partition("=")
            try:
                changes[name.strip()] = float(value)
            except ValueError:
                fail(f"--set {item!r}: expected NAME=NUMBER, e.g. mean_dq_score=99")
            if name.strip() not in DEFAULT_GATES:
                fail(f"--set {item!r}: no gate threshold {name.strip()!r}; thresholds are {', '.join(DEFAULT_GATES)}")
            if not math.isfinite(changes[name.strip()]):
                fail(f"--set {item!r}: expected a finite number")
        if w["status"] in ("running", "completed"):
            fail(f"wave {wave_id} is {w['status']}; its gates can change only before it runs", 1)
        try:
            w = open_waves().set_gates(wave_id, changes)
        except WaveError as error:
            fail(str(error), 1)
    table = Table(title=f"Wave {wave_id}: gate thresholds")
    table.add_column("gate")
    table.add_column("threshold", justify="right")
    for name, value in w["gates"].items():
        table.add_row(name, str(value))
    out.print(table)


@wave_app.command("execute")
def wave_execute(
    wave_id: str = typer.Argument(...),
    fault: Optional[str] = typer.Option(None, "--inject-fault", help="Drill: fail this run at `fail:<point>:<asset key>`, "
                                        "e.g. fail:mid_load:targets/coexistence_bridge, and watch it roll back."),
) -> None:
    """Run an approved wave now, through Dagster: select, gate, load every target, reconcile, report. A failed run
    that loaded anything is rolled back by the daemon (`compensation_sensor`); this waits for it and reports it."""
    from dagster_project.compensation import wave_asset_keys
    from dagster_project.runner import run_wave

    _wave_or_fail(wave_id)  # an unknown wave is refused before a partition is added or a run submitted
    run = run_wave(wave_id, fault=fault_option(fault, wave_asset_keys(wave_id)[1]))
    print_wave_outcome(wave_id, run)
    if not run.success:
        raise typer.Exit(1)


def print_wave_outcome(wave_id: str, run) -> None:
    from dagster_project.environment import resources_for_environment

    w = open_waves().wave(wave_id)
    why = "stopped by its checks" if run.failed_checks and "AssetCheckFailed" in (run.error or "") else run.error
    out.print(f"wave {wave_id} ({w['name']}): run {run.run_id} " + ("[green]succeeded[/]" if run.success else
                                                                     f"[red]FAILED[/]: {why or 'see the checks'}"),
              highlight=False)
    if run.failed_checks:
        out.print("  failed checks: " + ", ".join(run.failed_checks), highlight=False)
    split = open_waves().candidate_targets(wave_id)
    out.print("  candidates by routed target: " + (", ".join(f"{n:,} {t}" for t, n in split.items()) if split else
                                                   "none (released by the rollback)" if run.rollbacks else "none"),
              highlight=False)
    latest = resources_for_environment(resolved=True)["targets"].store().latest_reconciliations(wave_id)
    if latest and w["status"] != "rolled_back":
        out.print("  reconciliation: " + "; ".join(
            f"{target} " + ", ".join(f"{c['name']} {'matches' if c['passed'] else 'DIFFERS'}" for c in rec["checks"])
            for target, rec in sorted(latest.items())), highlight=False)
    for rollback in getattr(run, "rollbacks", []):
        out.print(f"  compensated automatically: rollback run {rollback.run_id} "
                  + ("[green]succeeded[/]" if rollback.success else f"[red]FAILED[/]: {rollback.error}"), highlight=False)
    out.print(f"  status: {w['status']}" + (f" ({w['status_reason']})" if w["status_reason"] else ""), highlight=False)
    if w["status"] == "completed" and w["report"]:
        _print_report(wave_id, w["report"], by_state=False)


def _print_report(wave_id: str, report: list[dict], by_state: bool) -> None:
    """The report per line, (state,) and target: policies, landed, in-force premium in the book and landed."""
    rows: dict[tuple, list] = {}
    for r in report:
        key = (r["line_of_business"], r["state"] if by_state else "all", r["target"])
        acc = rows.setdefault(key, [0, 0, Decimal(0), Decimal(0), r["in_force_premium_after"] == "held back"])
        acc[0] += r["policies"]
        acc[1] += r["landed"]
        acc[2] += Decimal(r["in_force_premium_before"])
        acc[3] += Decimal(0) if acc[4] else Decimal(r["in_force_premium_after"])
    title = f"Wave {wave_id}: reconciliation report" + ("" if by_state else " (per state: `data-mash wave report "
                                                                            f"{wave_id} --by-state`)")
    table = Table(title=title)
    for col in ("line", "state", "target", "policies", "landed", "in-force premium before", "after"):
        table.add_column(col, justify="right" if col in ("policies", "landed", "in-force premium before", "after") else "left")
    for (line, state, target), (n, landed, before, after, held) in sorted(rows.items()):
        table.add_row(line, state, target, f"{n:,}", f"{landed:,}", f"{before:,.2f}", "held back" if held else f"{after:,.2f}")
    out.print(table)


@wave_app.command("reconcile")
def wave_reconcile(wave_id: str = typer.Argument(...)) -> None:
    """Reconcile a loaded wave again through Dagster (counts, money totals, per-policy content hashes, the legacy
    batch read back); a difference fails the wave and rolls it back. Exit 1 if it differs."""
    from dagster_project.runner import reconcile_wave

    _wave_or_fail(wave_id)
    with console.status(f"Reconciling wave {wave_id} through Dagster…"):
        run = reconcile_wave(wave_id)
    print_wave_outcome(wave_id, run)
    if not run.success:
        raise typer.Exit(1)


@wave_app.command("report")
def wave_report_cmd(wave_id: str = typer.Argument(...),
                    by_state: bool = typer.Option(False, "--by-state", help="One row per line, state and target.")) -> None:
    """The wave's last reconciliation, target by target, and its report per line of business, state and target."""
    from dagster_project.environment import resources_for_environment

    w = _wave_or_fail(wave_id)
    latest = resources_for_environment(resolved=True)["targets"].store().latest_reconciliations(wave_id)
    if not latest:
        fail(f"wave {wave_id} was never reconciled ({w['status']}): run it with `data-mash wave execute {wave_id}`", 1)
    table = Table(title=f"Wave {wave_id}: last reconciliation")
    for col in ("target", "check", "result", "observed", "examples"):
        table.add_column(col)
    for target, rec in sorted(latest.items()):
        for c in rec["checks"]:
            table.add_row(target, c["name"], "[green]matches[/]" if c["passed"] else "[red]DIFFERS[/]",
                          _observed_text(c["observed"]), ", ".join(map(str, c["examples"]))[:120])
    out.print(table)
    if w["report"]:
        _print_report(wave_id, w["report"], by_state)


def _observed_text(observed: dict) -> str:
    """A reconciliation check's figures in a line or two: found / expected per table or measure."""
    if "tables" in observed:
        return f"{observed['policies']:,} policies; " + ", ".join(
            f"{name} {v['actual']:,}/{v['expected']:,}" for name, v in observed["tables"].items())
    if all(isinstance(v, dict) and "actual" in v for v in observed.values()):
        return ", ".join(f"{name} {v['actual']}" + ("" if v["actual"] == v["expected"] else f" (expected {v['expected']})")
                         for name, v in observed.items())
    return ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in observed.items())


@wave_app.command("rollback")
def wave_rollback(
    wave_id: str = typer.Argument(...),
    policy: Optional[str] = typer.Option(None, "--policy", help="Undo only this policy's part of the wave."),
    reason: str = typer.Option("requested by an operator", "--reason"),
) -> None:
    """Undo a wave (or one policy of it) through Dagster (`rollback_wave_job`), in reverse order of its WAL entries.
    Running it again changes nothing."""
    from dagster_project.runner import rollback_wave

    _wave_or_fail(wave_id)
    with console.status(f"Rolling back wave {wave_id}" + (f" for policy {policy}" if policy else "") + "…"):
        run = rollback_wave(wave_id, policy_id=policy, reason=reason)
    w = open_waves().wave(wave_id)
    out.print(f"rollback run {run.run_id} " + ("[green]succeeded[/]" if run.success else f"[red]FAILED[/]: {run.error}")
              + f"; wave {wave_id} is {w['status']}" + (f" ({w['status_reason']})" if w["status_reason"] else ""),
              highlight=False)
    if not run.success:
        raise typer.Exit(1)
