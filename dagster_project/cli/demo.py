"""`data-mash demo`: the demo migration, every step a Dagster run."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.table import Table

from dagster_project.cli.common import app, console, out
from dagster_project.cli.intake import (
    generate_book,
    ingest_drop,
    print_ingest,
    print_sample_summary,
)
from dagster_project.cli.registry import open_coexistence, print_route
from dagster_project.cli.sync import open_sync, print_sync_report
from dagster_project.cli.waves import open_waves, print_wave_outcome, print_waves


@app.command()
def demo(
    policies: int = typer.Option(100_000, "--policies", min=1),
    seed: int = typer.Option(42, "--seed"),
) -> None:
    """The demo migration: generate a sample book; ingest, map and route both legacy systems; plan waves; run one
    through, one its gates stop, and one whose load fails and is rolled back; all through Dagster."""
    from dagster_project.environment import resources_for_environment
    from resources.database import data_mash_home

    started = time.perf_counter()
    resources = resources_for_environment(resolved=True)
    with console.status("Starting the database…"):
        resources["database"].engine()
    console.print(f"database: {resources['database'].describe()}", highlight=False)
    book = data_mash_home() / "samples" / f"book-{policies}-{seed}"
    if not (book / "manifest.json").exists():
        console.print(f"Generating a sample book of {policies:,} policies (seed {seed}) in {book}", highlight=False)
        summary = generate_book(book, policies, seed, 0.02)
        print_sample_summary(summary, book)
    else:
        console.print(f"Reusing the sample book in {book}", highlight=False)
    outcomes = [ingest_drop(book / name, name, f"book-{policies}-{seed}") for name in ("mainframe_life", "pc_csv")]
    print_ingest(outcomes)
    from dagster_project.runner import route as run_route

    with console.status("Routing the canonical book through Dagster…"):
        routed = run_route()
    print_route(routed)
    wave_ok = _demo_wave(max(1000, policies // 10))
    sync_ok = _demo_night(book, f"book-{policies}-{seed}", seed, max(100, policies // 200))
    report = resources["wal"].store().verify()
    state = "[green]intact[/]" if report.ok else f"[red]ALTERED[/]: {report.problems[0]}"
    out.print(f"WAL: every change above (files staged, tables mapped, book routed, waves loaded and undone, the night "
              f"synced) was a "
              f"committed intent first; {report.intents:,} intents, {report.entries:,} entries in {report.chains} hash chains, "
              f"{state}. Try `data-mash wal replay --namespace compensation`, `data-mash wave report <wave>` or "
              f"`data-mash where <policy id>`.")
    from dagster_project import services

    running = services.current()
    where = f"at {running.url}, still running for this project" if running else "with `make ui`"
    out.print(f"Done in {time.perf_counter() - started:.1f} s. Every step above was a Dagster run, launched by the "
              f"daemon into a run worker of its own: see the runs, lineage, partitions and checks in the Dagster UI "
              f"{where} (`data-mash services stop` ends it).")
    if not all(o.success for o in outcomes) or not routed.success or not wave_ok or not sync_ok:
        raise typer.Exit(1)


def _demo_night(book: Path, drop: str, seed: int, activity: int) -> bool:
    """The next day: a legacy delta and business on the new platform, then one night of sync through Dagster."""
    from dagster_project.environment import resources_for_environment
    from dagster_project.runner import route as run_route
    from dagster_project.runner import sync_night, tonight
    from legacy.delta import write_delta
    from resources.platform_activity import simulate_activity

    out.rule("The next day: both systems change policies; one night of sync")
    delta_dir = book.parent / f"{book.name}-day-2"
    if not (delta_dir / "delta.json").exists():
        write_delta(book, delta_dir, day=2, seed=seed)
    outcomes = [ingest_drop(delta_dir / name, name, f"{drop}-day-2") for name in ("mainframe_life", "pc_csv")]
    for o in outcomes:  # the tables above say what each column means; one line per source here
        read = sum(f.records_read for f in o.files)
        staged = sum(f.records_parsed for f in o.files)
        held = sum(t.records_quarantined for t in o.canonical)
        out.print(f"legacy delta {o.drop_id} from {o.source}: {read:,} records read = {staged:,} staged + "
                  f"{read - staged:,} quarantined; mapping quarantined {held:,} with a reason; Dagster run "
                  f"{o.run_id} " + ("[green]succeeded[/]" if o.success else f"[red]FAILED[/]: {o.error}"), highlight=False)
    with console.status("Applying the delta to the book and routing through Dagster…"):
        routed = run_route()
    engine = resources_for_environment(resolved=True)["database"].engine()
    done = simulate_activity(engine, activity, seed=seed)
    out.print(f"On the new platform, its users changed {done.policies:,} policies: "
              + ", ".join(f"{n:,} {kind}" for kind, n in sorted(done.by_kind.items()))
              + " (`data-mash simulate-activity`).", highlight=False)
    night = tonight()
    with console.status(f"Syncing the night of {night} through Dagster…"):
        run = sync_night(night)
    record = open_sync().night(night) or {}
    out.print(f"sync {night}: run {run.run_id} " + ("[green]succeeded[/]" if run.success else f"[red]FAILED[/]: {run.error}"),
              highlight=False)
    if record.get("report"):
        print_sync_report(record["report"])
    out.print("Conflicts and their resolution: `data-mash sync conflicts`; the rules per line of business: "
              "routing/rules/sync.yaml; the schedule (02:00 in the configured zone) is `nightly_sync_schedule`.")
    return all(o.success for o in outcomes) and routed.success and run.success


def _demo_wave(size_cap: int) -> bool:
    """Plan waves over the routed book, then: wave 0 and a mixed wave all the way through; a wave its gates stop; a
    wave whose load fails partway and is rolled back automatically. Prints the reconciliation and the registry split."""
    from datetime import datetime, timezone

    from dagster_project.environment import resources_for_environment
    from dagster_project.runner import run_wave

    store = open_waves()
    plan_id, ids = store.plan("demo plan", "demo", start=datetime.now(timezone.utc), size_cap=size_cap)
    print_waves(store.waves(plan_id), f"Plan {plan_id}: proposed waves (size cap {size_cap:,})")
    out.print("Wave 0 takes only policies routed to the new platform; a `routed` wave sends each of its policies to "
              "its own routed target (new platform, bridge, legacy batch or DQ queue).", highlight=False)
    for wave_id in ids[:4]:
        store.set_status(wave_id, "approved", allowed_from=("draft",), approved_by="demo")

    results = []
    for wave_id, what in ((ids[0], "straight to the new platform"),
                          (ids[1], "each policy to its routed target: new platform, bridge, legacy batch, DQ queue")):
        out.rule(f"{wave_id}: {what}")
        with console.status(f"Running wave {wave_id} through Dagster…"):
            results.append(run_wave(wave_id))
        print_wave_outcome(wave_id, results[-1])
    batch = resources_for_environment(resolved=True)["targets"].store().batch_path(ids[1])
    if batch.exists():
        out.print(f"  legacy batch file (mainframe layout, EBCDIC): {batch}", highlight=False)

    out.rule(f"{ids[2]}: stopped by a gate")
    store.set_gates(ids[2], {"min_dq_score": 100.0})
    out.print(f"The operator asks every policy {ids[2]} moves to score 100, without a single data-quality finding "
              f"(`data-mash wave gates {ids[2]} --set min_dq_score=100`).", highlight=False)
    with console.status(f"Running wave {ids[2]} through Dagster…"):
        gated = run_wave(ids[2])
    print_wave_outcome(ids[2], gated)
    gated_rows = _loaded_rows(ids[2])
    out.print(f"  rows loaded by {ids[2]}: {gated_rows:,}" + (" (its gates stopped it before any load)"
                                                               if not gated.success else ""), highlight=False)

    out.rule(f"{ids[3]}: its load fails partway and is compensated")
    before = _target_counts()
    fault = "fail:mid_load:targets/coexistence_bridge"
    out.print(f"Fault injected for this run only: {fault} (the bridge load fails after the new platform and the "
              "legacy batch are written).", highlight=False)
    with console.status(f"Running wave {ids[3]} through Dagster…"):
        broken = run_wave(ids[3], fault=fault)
    print_wave_outcome(ids[3], broken)
    after = _target_counts()
    same = "[green]identical[/]" if after == before else "[red]DIFFERENT[/]"
    out.print(f"  targets and registry after the rollback vs before the wave: {same} "
              f"({', '.join(f'{k} {v:,}' for k, v in after.items())})")

    out.rule("Registry split")
    _print_registry_split()
    return (all(r.success for r in results) and not gated.success and gated_rows == 0 and not broken.success
            and [r.success for r in broken.rollbacks] == [True] and after == before)


def _loaded_rows(wave_id: str) -> int:
    return open_waves().loaded_rows(wave_id)


def _target_counts() -> dict[str, int]:
    return open_waves().target_counts()


def _print_registry_split() -> None:
    rows = open_coexistence().split()
    table = Table(title="Coexistence registry: who owns each policy now")
    for col in ("system of record", "planned target", "wave", "policies"):
        table.add_column(col, justify="right" if col == "policies" else "left")
    for sor, target, wave, n in rows:
        table.add_row(sor, target, wave, f"{n:,}")
    out.print(table)
