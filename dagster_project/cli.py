"""`data-mash`: the operator's command line. Work that changes stored state runs through Dagster.

Exit codes: 0 done; 1 the work ran and failed (a run, a check, a bad record file); 2 bad usage or
input that could not be read (with the file, line and field named).
"""

from __future__ import annotations

import json
import os
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import text as sql_text

app = typer.Typer(
    help="Data Mash: move an insurer's book of policies from legacy systems to a new platform, wave by wave.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out = Console()


def fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


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


@app.command("generate-sample")
def generate_sample_cmd(
    policies: int = typer.Option(100_000, "--policies", min=1, help="Policies in the book, across both sources."),
    seed: int = typer.Option(42, "--seed", help="Same seed, same bytes."),
    out_dir: Optional[Path] = typer.Option(
        None, "--out", help="Folder to write the drops and manifest.json into [default: sample-book; with "
        "--delta-of: <book>-day<N>]."),
    defect_rate: float = typer.Option(0.02, "--defect-rate", min=0.0, max=0.5, help="Share of records given a defect."),
    delta_of: Optional[Path] = typer.Option(
        None, "--delta-of", file_okay=False,
        help="An existing sample book: write its day-N delta drop (changed, cancelled and new policies, each "
        "whole, plus delta.json) instead of a new book."),
    day: int = typer.Option(2, "--day", min=2, help="With --delta-of: the day of the delta (day 1 is the book)."),
) -> None:
    """Write a deterministic sample book: a mainframe life system (EBCDIC, copybooks) and a P&C CSV export;
    with --delta-of, a later day's delta drop of such a book."""
    if delta_of is not None:
        _write_delta_drop(delta_of, out_dir or Path(f"{delta_of}-day{day}"), day, seed)
        return
    out_dir = out_dir or Path("sample-book")
    summary = _generate(out_dir, policies, seed, defect_rate)
    _print_sample_summary(summary, out_dir)


def _write_delta_drop(book: Path, out_dir: Path, day: int, seed: int) -> None:
    from legacy.delta import write_delta

    try:
        with console.status(f"Writing the day-{day} delta of {book}…"):
            summary = write_delta(book, out_dir, day=day, seed=seed)
    except (OSError, ValueError) as error:
        fail(str(error))
    out.print(f"Day-{day} delta of {book}: {out_dir}  (delta.json names every policy in it)", highlight=False)
    table = Table()
    for column in ("source", "changed", "cancelled", "new"):
        table.add_column(column, justify="left" if column == "source" else "right")
    for name, source in summary.sources.items():
        table.add_row(name, f"{len(source.changed):,}", f"{len(source.cancelled):,}", f"{len(source.new):,}")
    out.print(table)


def _generate(out_dir: Path, policies: int, seed: int, defect_rate: float):
    from legacy.sample import generate_sample

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,}"),
                  TimeElapsedColumn(), console=console) as progress:
        tasks: dict[str, int] = {}

        def report(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=total)
            progress.update(tasks[stage], completed=done, total=total)

        return generate_sample(out_dir, policies=policies, seed=seed, defect_rate=defect_rate, progress=report)


def _print_sample_summary(summary, out_dir: Path) -> None:
    manifest = json.loads((out_dir / "manifest.json").read_text())
    out.print(f"Sample book: {out_dir}  (manifest.json lists every injected defect)", highlight=False)
    table = Table()
    table.add_column("file")
    table.add_column("records", justify="right")
    for name, info in sorted(manifest["files"].items()):
        table.add_row(name, f"{info['records']:,}")
    out.print(table)
    kinds: dict[str, int] = {}
    for defect in manifest["defects"]:
        kinds[defect["kind"]] = kinds.get(defect["kind"], 0) + 1
    out.print("defects injected: " + ", ".join(f"{k} {v:,}" for k, v in sorted(kinds.items())), highlight=False)


@app.command()
def decode(
    copybook: Path = typer.Option(..., "--copybook", exists=True, dir_okay=False, help="COBOL copybook (.cpy)."),
    data: Path = typer.Option(..., "--data", exists=True, dir_okay=False, help="The mainframe data file."),
    encoding: str = typer.Option("cp037", "--encoding", help="cp037, cp500, cp1140, cp273, ascii, latin-1 ..."),
    record_format: str = typer.Option("auto", "--record-format", help="F (fixed), V (RDW), or auto: V if the copybook has OCCURS DEPENDING ON."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Stop after this many records."),
) -> None:
    """Print one JSON object per record of a mainframe file; bad records go to stderr with field and reason."""
    from legacy.copybook import CopybookError, decode_file, parse_copybook, to_json_records

    try:
        layout = parse_copybook(copybook.read_text(encoding="latin-1"), source=copybook.name)
    except CopybookError as error:
        fail(str(error))
    fmt = record_format.upper()
    if fmt == "AUTO":
        fmt = "V" if layout.is_variable else "F"
    if fmt not in ("F", "V"):
        fail(f"--record-format must be F, V or auto, not {record_format!r}")
    printed = bad = 0
    for result in decode_file(data, layout, record_format=fmt, encoding=encoding, block_records=10_000):
        for row in result.quarantine.select(["record_no", "field", "reason", "detail"]).to_pylist():
            bad += 1
            console.print(f"{data.name} record {row['record_no']}: field {row['field'] or '-'}: {row['reason']}: {row['detail']}",
                          highlight=False)
        records = to_json_records(layout, result.table)
        for record in records:
            if limit is not None and printed >= limit:
                break
            sys.stdout.write(dumps_exact(record) + "\n")
            printed += 1
        if limit is not None and printed >= limit:
            break
    console.print(f"{printed:,} records printed, {bad:,} quarantined", highlight=False)
    if bad:
        raise typer.Exit(1)


@app.command()
def ingest(
    path: Path = typer.Argument(..., exists=True, help="A drop: a folder of files (or one file) from a legacy system."),
    source: str = typer.Option(..., "--source", help="Source name, e.g. mainframe_life or pc_csv (see `data-mash sources`)."),
    drop_id: Optional[str] = typer.Option(None, "--drop-id", help="Partition name for this drop; default: folder name + content hash."),
) -> None:
    """Put a drop in the landing folder and materialize its intake assets through Dagster."""
    outcome = _ingest(path, source, drop_id)
    _print_ingest([outcome])
    if not outcome.success:
        raise typer.Exit(1)


def _ingest(path: Path, source: str, drop_id: str | None):
    from dagster_project.runner import ingest as run_ingest

    try:
        with console.status(f"Ingesting {path.name} as {source} through Dagster…"):
            return run_ingest(path, source, drop_id)
    except (FileNotFoundError, KeyError, ValueError) as error:
        fail(str(error))


def _print_ingest(outcomes) -> None:
    table = Table(title="Intake: every record read is parsed (staged) or quarantined with a reason")
    for col, justify in [("source", "left"), ("drop", "left"), ("file", "left"), ("read", "right"),
                         ("parsed", "right"), ("quarantined", "right"), ("reasons", "left")]:
        table.add_column(col, justify=justify)
    for outcome in outcomes:
        for f in outcome.files:
            reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(f.reasons.items()))
            table.add_row(outcome.source, outcome.drop_id, f.file_name, f"{f.records_read:,}", f"{f.records_parsed:,}",
                          f"{f.records_quarantined:,}", reasons)
    out.print(table)
    read = sum(f.records_read for o in outcomes for f in o.files)
    parsed = sum(f.records_parsed for o in outcomes for f in o.files)
    quarantined = sum(f.records_quarantined for o in outcomes for f in o.files)
    out.print(
        f"{read:,} records read = {parsed:,} staged + {quarantined:,} quarantined. Quarantined records are in "
        "intake.quarantine with file, record number, field, reason and raw bytes. Records that read fine but are "
        "wrong as insurance data (impossible dates, negative premiums, duplicates, orphans, unknown codes) are "
        "staged and caught at mapping.",
        highlight=False,
    )
    mapped = [o for o in outcomes if getattr(o, "canonical", None)]
    if mapped:
        from types import SimpleNamespace

        _print_canonical([SimpleNamespace(source=o.source, tables=o.canonical, error=None) for o in mapped])
        out.print("Mapping quarantines what cannot become canonical (impossible dates, unknown codes, duplicate "
                  "ids, orphans of held-back policies); what maps but breaks a rule (negative premium, optional "
                  "zero dates) is kept and scored down (mean DQ, 0-100).", highlight=False)
    for outcome in outcomes:
        status = "[green]succeeded[/]" if outcome.success else "[red]FAILED[/]"
        out.print(f"{outcome.source} drop {outcome.drop_id}: Dagster run {outcome.run_id} {status}")
        for check in outcome.failed_checks:
            out.print(f"  [red]check failed[/] {check}")
        if outcome.error:
            out.print(f"  [red]{outcome.error}[/]")


@app.command()
def profile(
    source: str = typer.Option(..., "--source"),
    drop: str = typer.Option(..., "--drop", help="Drop id (partition) to profile."),
    output: Path = typer.Option(Path("profile_report.json"), "--output", help="Where to write the JSON report."),
) -> None:
    """Profile a staged drop from the database: null rate, distinct, min/max, top patterns (PII masked)."""
    from dagster_project.environment import resources_for_environment
    from legacy.sources import load_source
    from resources.intake_store import IntakeStore
    from resources.profiling import profile_staged_drop

    resources = resources_for_environment(resolved=True)
    store = IntakeStore(resources["database"].engine())
    try:
        profiles = profile_staged_drop(store, load_source(source), drop)
    except LookupError as error:
        fail(str(error), 1)
    output.write_text(json.dumps({"source": source, "drop": drop, "files": [p.model_dump() for p in profiles]},
                                 indent=2, default=str))
    for p in profiles:
        out.print(f"[bold]{p.kind}[/] ({p.file_name}): {p.records_parsed:,} parsed, {p.records_quarantined:,} quarantined")
    out.print(f"report written to {output}")


@app.command()
def status() -> None:
    """Drops taken in so far, with their counts, and where the database is."""
    from dagster_project.environment import resources_for_environment
    from resources.intake_store import IntakeStore
    from dagster_project.runner import file_outcomes, IngestOutcome

    resources = resources_for_environment(resolved=True)
    database = resources["database"]
    console.print(f"database: {database.describe()}", highlight=False)
    store = IntakeStore(database.engine())
    from sqlalchemy import text

    with store.engine.connect() as conn:
        drops = conn.execute(text("SELECT source, drop_id FROM intake.drops ORDER BY registered_at")).all()
    if not drops:
        out.print("No drop taken in yet: try `data-mash ingest PATH --source NAME` or `make demo`.")
        return
    _print_ingest([IngestOutcome(s, d, "-", True, file_outcomes(store, s, d), []) for s, d in drops])


@app.command()
def sources() -> None:
    """The legacy sources Data Mash knows, and the files each drop holds."""
    from legacy.sources import list_sources

    table = Table(title="Legacy sources")
    for col in ("source", "format", "encoding", "files"):
        table.add_column(col)
    for s in list_sources():
        table.add_row(s.name, s.format, s.encoding, ", ".join(f"{f.kind} ({f.pattern})" for f in s.files))
    out.print(table)


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
        summary = _generate(book, policies, seed, 0.02)
        _print_sample_summary(summary, book)
    else:
        console.print(f"Reusing the sample book in {book}", highlight=False)
    outcomes = [_ingest(book / name, name, f"book-{policies}-{seed}") for name in ("mainframe_life", "pc_csv")]
    _print_ingest(outcomes)
    from dagster_project.runner import route as run_route

    with console.status("Routing the canonical book through Dagster…"):
        routed = run_route()
    _print_route(routed)
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
    outcomes = [_ingest(delta_dir / name, name, f"{drop}-day-2") for name in ("mainframe_life", "pc_csv")]
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
    record = _sync_store().night(night) or {}
    out.print(f"sync {night}: run {run.run_id} " + ("[green]succeeded[/]" if run.success else f"[red]FAILED[/]: {run.error}"),
              highlight=False)
    if record.get("report"):
        _print_sync_report(record["report"])
    out.print("Conflicts and their resolution: `data-mash sync conflicts`; the rules per line of business: "
              "routing/rules/sync.yaml; the schedule (02:00 in the configured zone) is `nightly_sync_schedule`.")
    return all(o.success for o in outcomes) and routed.success and run.success


def _demo_wave(size_cap: int) -> bool:
    """Plan waves over the routed book, then: wave 0 and a mixed wave all the way through; a wave its gates stop; a
    wave whose load fails partway and is rolled back automatically. Prints the reconciliation and the registry split."""
    from datetime import datetime, timezone

    from dagster_project.environment import resources_for_environment
    from dagster_project.runner import run_wave

    store = _waves()
    plan_id, ids = store.plan("demo plan", "demo", start=datetime.now(timezone.utc), size_cap=size_cap)
    _print_waves(store.waves(plan_id), f"Plan {plan_id}: proposed waves (size cap {size_cap:,})")
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
        _print_wave_outcome(wave_id, results[-1])
    batch = resources_for_environment(resolved=True)["targets"].store().batch_path(ids[1])
    if batch.exists():
        out.print(f"  legacy batch file (mainframe layout, EBCDIC): {batch}", highlight=False)

    out.rule(f"{ids[2]}: stopped by a gate")
    store.set_gates(ids[2], {"min_dq_score": 100.0})
    out.print(f"The operator asks every policy {ids[2]} moves to score 100, without a single data-quality finding "
              f"(`data-mash wave gates {ids[2]} --set min_dq_score=100`).", highlight=False)
    with console.status(f"Running wave {ids[2]} through Dagster…"):
        gated = run_wave(ids[2])
    _print_wave_outcome(ids[2], gated)
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
    _print_wave_outcome(ids[3], broken)
    after = _target_counts()
    same = "[green]identical[/]" if after == before else "[red]DIFFERENT[/]"
    out.print(f"  targets and registry after the rollback vs before the wave: {same} "
              f"({', '.join(f'{k} {v:,}' for k, v in after.items())})")

    out.rule("Registry split")
    _print_registry_split()
    return (all(r.success for r in results) and not gated.success and gated_rows == 0 and not broken.success
            and [r.success for r in broken.rollbacks] == [True] and after == before)


def _loaded_rows(wave_id: str) -> int:
    with _waves().engine.connect() as conn:
        return conn.execute(sql_text("SELECT (SELECT count(*) FROM new_platform.policy WHERE wave_id = :w) + "
                                     "(SELECT count(*) FROM targets.dq_queue WHERE wave_id = :w) + "
                                     "(SELECT count(*) FROM targets.coexistence_bridge WHERE wave_id = :w)"),
                            {"w": wave_id}).scalar_one()


def _target_counts() -> dict[str, int]:
    """Rows in every target and the registry's wave assignments: what a rollback must put back."""
    queries = {
        "new-platform rows": "SELECT " + " + ".join(f"(SELECT count(*) FROM new_platform.{t})" for t in (
            "policy", "party", "coverage", "rating", "payment", "endorsement", "document", "claim_link")),
        "delivered batch records": "SELECT count(*) FROM targets.outbound_records r JOIN targets.outbound_files f "
                                   "USING (file_id) WHERE f.status = 'delivered' AND r.withdrawn_at IS NULL",
        "queued": "SELECT count(*) FROM targets.dq_queue",
        "bridged": "SELECT count(*) FROM targets.coexistence_bridge",
        "registry rows in a wave": "SELECT count(*) FROM coexistence.registry WHERE wave IS NOT NULL",
        "on the new platform": "SELECT count(*) FROM coexistence.registry WHERE system_of_record = 'new_platform'",
    }
    with _waves().engine.connect() as conn:
        return {name: conn.execute(sql_text(q)).scalar_one() for name, q in queries.items()}


def _print_registry_split() -> None:
    with _waves().engine.connect() as conn:
        rows = conn.execute(sql_text(
            "SELECT system_of_record, planned_target, coalesce(wave, '-'), count(*) FROM coexistence.registry "
            "GROUP BY 1, 2, 3 ORDER BY 1, 2, 3")).all()
    table = Table(title="Coexistence registry: who owns each policy now")
    for col in ("system of record", "planned target", "wave", "policies"):
        table.add_column(col, justify="right" if col == "policies" else "left")
    for sor, target, wave, n in rows:
        table.add_row(sor, target, wave, f"{n:,}")
    out.print(table)


def _source_columns(source_name: str, drop_dir: Path | None = None) -> dict[str, set[str]]:
    from legacy.sources import load_source, output_columns

    source = load_source(source_name)
    return {spec.kind: {n for n, _ in output_columns(source, spec, drop_dir)} for spec in source.files}


def _load_mapping_or_fail(path: Path, drop_dir: Path | None = None):
    import yaml

    from canonical.mapping import MappingError, load_mapping

    try:
        source_name = (yaml.safe_load(path.read_text()) or {}).get("source")
        return load_mapping(path, _source_columns(source_name, drop_dir) if source_name else None)
    except (MappingError, KeyError, FileNotFoundError) as error:
        fail(str(error), 1)


@app.command("suggest-mapping")
def suggest_mapping_cmd(
    source: str = typer.Option(..., "--source", help="Source name (see `data-mash sources`) or the path of a source YAML."),
    drop: Optional[Path] = typer.Option(None, "--drop", exists=True, file_okay=False,
                                        help="A folder of the source's files; default: its latest drop in the landing folder."),
    output: Optional[Path] = typer.Option(None, "--output", help="Draft mapping file to write (default: <source>.draft.yaml)."),
    rows: int = typer.Option(5000, "--rows", min=10, help="Records sampled per file."),
) -> None:
    """Draft a mapping for a source never seen before, from column names, profiles and value patterns."""
    from canonical.suggest import sample_source_files, suggest_mapping
    from dagster_project.environment import resources_for_environment
    from legacy.sources import load_source

    try:
        config = load_source(source)
    except (ValueError, FileNotFoundError) as error:
        fail(str(error))
    if drop is None:
        landing = resources_for_environment(resolved=True)["landing"]
        drops = landing.ready_drops(config.name)
        if not drops:
            fail(f"no drop of {config.name} in the landing folder: name one with --drop FOLDER")
        drop = max(drops, key=lambda d: d.path.stat().st_mtime).path
    with console.status(f"Sampling {rows:,} records per file of {drop}…"):
        suggestion = suggest_mapping(config, sample_source_files(config, drop, rows=rows))
    output = output or Path(f"{config.name}.draft.yaml")
    output.write_text(suggestion.to_yaml())
    table = Table(title=f"Draft mapping for {config.name} (from {drop.name})")
    for col in ("canonical table", "from", "fields", "mean confidence", "to review"):
        table.add_column(col)
    for name, t in suggestion.tables.items():
        live = [f for f in t.fields.values() if f.live]
        mean = sum(f.confidence for f in live) / len(live) if live else 0.0
        table.add_row(name, t.kind, str(len(live)), f"{mean:.2f}", str(sum(1 for f in live if f.review)))
    out.print(table)
    if suggestion.unmapped_required:
        out.print("required canonical fields with no candidate: " + ", ".join(suggestion.unmapped_required),
                  highlight=False)
    out.print(f"written to {output}: review it, then `data-mash validate-mapping {output}`", highlight=False)


@app.command("validate-mapping")
def validate_mapping(file: Path = typer.Argument(..., exists=True, dir_okay=False, help="A mapping YAML file.")) -> None:
    """Check a mapping against its source and the canonical model: required fields, unused columns, low confidence."""
    import ast

    from canonical.tables import V1_TABLES

    mapping = _load_mapping_or_fail(file)
    columns = _source_columns(mapping.spec.source)
    table = Table(title=f"Mapping {mapping.name} {mapping.version} ({mapping.spec.source}), hash {mapping.hash[:12]}")
    for col in ("canonical table", "from", "required mapped", "required missing", "low confidence (< 0.8)",
                "source columns not used"):
        table.add_column(col)
    missing_any = False
    for name, tmap in mapping.spec.tables.items():
        canonical = V1_TABLES[name]
        required = [c.name for c in canonical.columns if c.required]
        missing = [c for c in required if c not in tmap.fields]
        missing_any |= bool(missing)
        low = [f"{f} {m.confidence:.2f}" for f, m in tmap.fields.items() if m.confidence < 0.8 or m.review]
        used = {n.value for node in mapping.compiled[name].values() for n in ast.walk(node)
                if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        unused = sorted(columns.get(tmap.from_, set()) - used)
        table.add_row(name, tmap.from_, f"{len(required) - len(missing)}/{len(required)}", ", ".join(missing) or "-",
                      ", ".join(low) or "-", ", ".join(unused) or "-")
    out.print(table)
    unmapped = sorted(set(V1_TABLES) - set(mapping.spec.tables))
    if unmapped:
        out.print(f"canonical tables this mapping does not fill: {', '.join(unmapped)}", highlight=False)
    out.print("mean confidence: " + ", ".join(f"{t} {mapping.confidence(t):.2f}" for t in mapping.spec.tables),
              highlight=False)
    if mapping.spec.draft:
        out.print("[yellow]draft[/]: review it and set `draft: false` before use")
    if missing_any:
        out.print("[yellow]required canonical fields unmapped[/]: their records will be scored down")


@app.command("mapping-impact")
def mapping_impact(
    old: Path = typer.Argument(..., exists=True, dir_okay=False, help="The mapping in use."),
    new: Path = typer.Argument(..., exists=True, dir_okay=False, help="The changed mapping."),
    drop: str = typer.Option(..., "--drop", help="A staged drop to compare on (see `data-mash status`)."),
) -> None:
    """Map a staged drop with both mappings and report which policies' canonical records change, field by field."""
    from canonical.impact import TableImpact, compare_block
    from dagster_project.environment import resources_for_environment
    from legacy.sources import load_source, output_columns
    from resources.canonical_store import CanonicalStore

    a, b = _load_mapping_or_fail(old), _load_mapping_or_fail(new)
    if a.spec.source != b.spec.source:
        fail(f"{old} maps {a.spec.source} but {new} maps {b.spec.source}")
    source = load_source(a.spec.source)
    store = CanonicalStore(resources_for_environment(resolved=True)["database"].engine())
    impacts = []
    for name in sorted(set(a.spec.tables) & set(b.spec.tables)):
        kind = b.spec.tables[name].from_
        impact = TableImpact(name)
        for block in store.read_staged(source.name, kind, drop, output_columns(source, source.file(kind))):
            compare_block(a, b, name, block, impact)
        impacts.append(impact)
    if not any(i.records for i in impacts):
        fail(f"drop {drop!r} of {source.name} has no staged records (see `data-mash status`)", 1)
    table = Table(title=f"Impact of {a.name} {a.version} → {b.name} {b.version} on drop {drop}")
    for col in ("table", "records", "changed", "policies changed", "by field", "newly quarantined", "released"):
        table.add_column(col)
    for i in impacts:
        table.add_row(i.table, f"{i.records:,}", f"{i.changed_records:,}", f"{len(i.changed_policies):,}",
                      ", ".join(f"{f} {n:,}" for f, n in i.changed_by_field.most_common()) or "-",
                      ", ".join(f"{r} {n:,}" for r, n in i.newly_quarantined.most_common()) or "-", f"{i.released:,}")
    out.print(table)
    for i in impacts:
        if i.examples:
            out.print(f"{i.table}, e.g.: " + ", ".join(f"{e['policy_id']} ({e['field']})" for e in i.examples[:10]),
                      highlight=False)


@app.command("map-to-canonical")
def map_to_canonical(
    source: str = typer.Option(..., "--source"),
    drop: str = typer.Option(..., "--drop", help="A staged drop (partition) to map again."),
) -> None:
    """Map a staged drop to the canonical model again (e.g. after a mapping change), through Dagster."""
    from dagster_project.runner import remap

    with console.status(f"Mapping {source} drop {drop} through Dagster…"):
        outcome = remap(source, drop)
    _print_canonical([outcome])
    if not outcome.success:
        raise typer.Exit(1)


def _print_canonical(outcomes) -> None:
    table = Table(title="Canonical: every staged record is mapped or quarantined with a reason")
    for col, justify in [("source", "left"), ("table", "left"), ("in", "right"), ("mapped", "right"),
                         ("quarantined", "right"), ("scored down", "right"), ("mean DQ", "right"), ("reasons", "left")]:
        table.add_column(col, justify=justify)
    for outcome in outcomes:
        for t in outcome.tables:
            table.add_row(outcome.source, t.table, f"{t.records_in:,}", f"{t.records_mapped:,}",
                          f"{t.records_quarantined:,}", f"{t.scored_down:,}",
                          f"{t.mean_dq_score:.2f}" if t.mean_dq_score is not None else "",
                          ", ".join(f"{k} {v:,}" for k, v in sorted(t.reasons.items())))
    out.print(table)
    for outcome in outcomes:
        if outcome.error:
            out.print(f"  [red]{outcome.source}: {outcome.error}[/]")


@app.command()
def route(
    rules: Optional[Path] = typer.Option(None, "--rules", exists=True, dir_okay=False,
                                         help="Rule set YAML (default: routing/rules/default.yaml)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only report what would move, from which target to which."),
) -> None:
    """Route the current canonical book (or, with --dry-run, show what a rule set would change: nothing is written)."""
    if dry_run:
        _route_what_if(rules)
        return
    from dagster_project.runner import route as run_route

    with console.status("Routing the book through Dagster…"):
        outcome = run_route(rules)
    _print_route(outcome)
    if not outcome.success:
        raise typer.Exit(1)


def _print_route(outcome) -> None:
    total = sum(outcome.by_target.values()) or 1
    table = Table(title="Routing: planned target of every policy in the canonical book")
    for col, justify in [("target", "left"), ("policies", "right"), ("share", "right")]:
        table.add_column(col, justify=justify)
    for target, n in sorted(outcome.by_target.items(), key=lambda kv: -kv[1]):
        table.add_row(target, f"{n:,}", f"{n / total:.1%}")
    out.print(table)
    out.print("system of record now: " + ", ".join(f"{k} {v:,}" for k, v in outcome.by_system.items())
              + f"; open conflicts: {outcome.open_conflicts:,}", highlight=False)
    status = "[green]succeeded[/]" if outcome.success else "[red]FAILED[/]"
    out.print(f"route_book_job run {outcome.run_id} {status}")
    if outcome.error:
        out.print(f"  [red]{outcome.error}[/]")


def _route_what_if(rules: Optional[Path]) -> None:
    import pyarrow as pa

    from assets.routing import default_rules_path
    from dagster_project.environment import resources_for_environment
    from resources.coexistence_store import CoexistenceStore
    from routing.rules import RuleSetError, compare, evaluate, load_rule_set

    try:
        candidate = load_rule_set(rules or default_rules_path())
    except RuleSetError as error:
        fail(str(error), 1)
    store = CoexistenceStore(resources_for_environment(resolved=True)["database"].engine())
    current = store.current_decisions()
    if not current.num_rows:
        fail("no routing decisions yet: run `data-mash route` once first", 1)
    with console.status("Evaluating the candidate rules over the book…"):
        proposed = pa.concat_tables([evaluate(candidate, block) for block in store.read_book()])
    what_if = compare(current, proposed)
    table = Table(title=f"What if {candidate.name} {candidate.version} were applied (nothing written)")
    rows = what_if.to_rows()
    for col in (rows[0].keys() if rows else ["result"]):
        table.add_column(str(col))
    for row in rows:
        table.add_row(*[f"{v:,}" if isinstance(v, int) else str(v) for v in row.values()])
    out.print(table)


def _coexistence():
    from dagster_project.environment import resources_for_environment
    from resources.coexistence_store import CoexistenceStore

    return CoexistenceStore(resources_for_environment(resolved=True)["database"].engine())


@app.command()
def where(policy: str = typer.Argument(..., help="Policy id.")) -> None:
    """Which system owns a policy, since when, its planned target, wave and rule, and its last changes."""
    store = _coexistence()
    started = time.perf_counter()
    found = store.where(policy)
    elapsed = (time.perf_counter() - started) * 1000
    if found is None:
        fail(f"policy {policy} is not in the coexistence registry", 1)
    table = Table(title=f"Policy {policy}", show_header=False)
    for key in ("system_of_record", "planned_target", "wave", "routing_rule", "rule_set_version", "pinned", "since",
                "updated_at", "source_system", "wal_id"):
        table.add_row(key, "" if found[key] is None else str(found[key]))
    out.print(table)
    for change in found["last_changes"]:
        out.print(f"  {change['at']:%Y-%m-%d %H:%M:%S} {change['change']}: {change['from_target'] or '-'} → "
                  f"{change['to_target']} ({change['reason']}, by {change['actor']}, WAL {change['wal_id']})", highlight=False)
    for conflict in found["open_conflicts"]:
        out.print(f"  [yellow]open conflict[/]: routed to {conflict['routed_target']} by {conflict['rule']} but "
                  f"{conflict['why']}", highlight=False)
    console.print(f"answered in {elapsed:.1f} ms", highlight=False)


@app.command()
def history(policy: str = typer.Argument(..., help="Policy id.")) -> None:
    """Every change of a policy's system of record or planned target: when, what, who, why, WAL entry."""
    changes = _coexistence().history(policy)
    if not changes:
        fail(f"policy {policy} has no coexistence history", 1)
    table = Table(title=f"History of policy {policy}")
    for col in ("at", "change", "system", "target", "rule", "rules", "why", "who", "WAL"):
        table.add_column(col)
    for c in changes:
        table.add_row(f"{c['at']:%Y-%m-%d %H:%M:%S}", c["change"], f"{c['from_system'] or '-'} → {c['to_system']}",
                      f"{c['from_target'] or '-'} → {c['to_target']}", c["rule"] or "", c["rule_set_version"] or "",
                      c["reason"], c["actor"], str(c["wal_id"] or ""))
    out.print(table)


@app.command()
def changes(
    drop: Optional[str] = typer.Option(None, "--drop", help="A drop key, e.g. pc_csv:day-2: list its changed policies."),
    limit: int = typer.Option(20, "--limit", min=1, help="Policies listed per kind of change."),
) -> None:
    """What each drop applied to the book brought: new, changed and cancelled policies, found by content hash."""
    from resources.book_store import BookStore

    store = BookStore(_waves().engine)
    drops = store.applied()
    if not drops:
        fail("no drop applied to the book yet: ingest one and `data-mash route`", 1)
    table = Table(title="Drops applied to the book, in landing order")
    for col in ("drop", "policies", "new", "changed", "cancelled", "unchanged", "applied"):
        table.add_column(col, justify="left" if col in ("drop", "applied") else "right")
    for d in drops:
        table.add_row(d["drop_key"], *(f"{d[k]:,}" for k in ("policies", "new", "changed", "cancelled", "unchanged")),
                      f"{d['applied_at']:%Y-%m-%d %H:%M:%S}")
    out.print(table)
    if drop:
        if drop not in {d["drop_key"] for d in drops}:
            fail(f"drop {drop!r} is not in the book: one of {', '.join(d['drop_key'] for d in drops)}", 1)
        owners = Table(title=f"{drop}: changes by the policy's system of record now")
        for col in ("change", "system of record", "policies"):
            owners.add_column(col, justify="right" if col == "policies" else "left")
        for (change, owner), n in store.changes_by_owner(drop).items():
            owners.add_row(change, owner, f"{n:,}")
        out.print(owners)
        out.print("Policies a wave already moved to the new platform keep what the wave loaded there: their legacy "
                  "changes are for the nightly sync to carry (not built yet), never a silent overwrite.",
                  highlight=False)
        for kind, ids in store.changes(drop).items():
            shown = ", ".join(ids[:limit]) + (f" … (+{len(ids) - limit:,})" if len(ids) > limit else "")
            out.print(f"{kind} ({len(ids):,}): {shown or '-'}", highlight=False)


@app.command()
def override(
    policy: str = typer.Argument(..., help="Policy id."),
    to: str = typer.Option(..., "--to", help="new_platform, legacy_batch, dq_queue or coexistence_bridge."),
    reason: str = typer.Option(..., "--reason", help="Why, for the audit trail."),
    actor: str = typer.Option(os.environ.get("USER", "operator"), "--actor", help="Who decides (default: $USER)."),
) -> None:
    """Pin a policy to a target by hand, through the WAL; routing then records conflicts instead of moving it."""
    from datetime import datetime, timezone

    from dagster_project.environment import resources_for_environment

    wal = resources_for_environment(resolved=True)["wal"].store()
    intent = wal.begin(namespace="coexistence", operation="manual_override", target="coexistence.registry",
                       key=f"override:{policy}:{to}:{datetime.now(timezone.utc).isoformat()}",
                       payload={"policy_id": policy, "to": to, "reason": reason, "actor": actor})
    try:
        change = _coexistence().override(policy, to, reason, actor, intent.id)
    except (LookupError, ValueError) as error:
        wal.fail(intent, str(error))
        fail(str(error), 1)
    wal.commit(intent, change)
    out.print(f"{policy}: {change['from_target']} → {change['to_target']}, pinned (WAL intent {intent.id})", highlight=False)


@app.command()
def conflicts() -> None:
    """Open conflicts: policies routing would move but that are pinned or already migrated."""
    rows = _coexistence().conflicts()
    if not rows:
        out.print("No open conflict.")
        return
    table = Table(title="Open routing conflicts")
    for col in ("policy", "system of record", "planned", "routed", "rule", "rules", "why", "since"):
        table.add_column(col)
    for c in rows:
        table.add_row(c["policy_id"], c["system_of_record"], c["planned_target"], c["routed_target"], c["rule"],
                      c["rule_set_version"], c["why"], f"{c['detected_at']:%Y-%m-%d %H:%M}")
    out.print(table)


wave_app = typer.Typer(help="Waves: list, show, approve, execute, reconcile, report, rollback, status.",
                       no_args_is_help=True)
app.add_typer(wave_app, name="wave")


def _waves():
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

    store = _waves()
    first = _when(start, "--start") if start else (datetime.now(timezone.utc) + timedelta(days=1)).replace(
        hour=2, minute=0, second=0, microsecond=0)
    try:
        plan_id, ids = store.plan(name, os.environ.get("USER", "operator"), start=first, size_cap=size_cap,
                                  cadence_days=cadence_days)
    except WaveError as error:
        fail(str(error), 1)
    _print_waves(store.waves(plan_id), f"Plan {plan_id}: {name} (drafts: approve each with `data-mash wave approve ID`)")
    if output:
        output.write_text(store.export_yaml(plan_id))
        out.print(f"written to {output}", highlight=False)


def _wave_or_fail(wave_id: str) -> dict:
    from resources.wave_store import WaveError

    try:
        return _waves().wave(wave_id)
    except WaveError as error:
        fail(str(error), 1)


def _print_waves(waves, title: str) -> None:
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
    waves = _waves().waves()
    if as_json:
        keys = ("wave_id", "plan_id", "number", "name", "target", "status", "status_reason", "estimated", "size_cap",
                "scheduled_start", "attempts")
        print(json.dumps([{k: (w[k].isoformat() if hasattr(w[k], "isoformat") else w[k]) for k in keys if k in w}
                          for w in waves], indent=2))
        return
    if not waves:
        out.print("No wave planned yet: `data-mash generate-plan`.")
        return
    _print_waves(waves, "Waves")


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
    from dagster_project.environment import resources_for_environment
    from resources.wave_store import WaveError

    wal = resources_for_environment(resolved=True)["wal"].store()
    attempt = _wave_or_fail(wave_id)["attempts"]
    intent = wal.begin(namespace="waves", operation="approve", target="waves.waves", key=f"waves:{wave_id}:approve:{attempt}",
                       payload={"wave": wave_id, "by": by}, wave=wave_id)
    try:
        w = _waves().set_status(wave_id, "approved", allowed_from=("draft", "failed", "rolled_back"), approved_by=by)
    except WaveError as error:
        wal.fail(intent, str(error))
        fail(str(error), 1)
    wal.commit(intent, {"status": "approved"})
    out.print(f"{wave_id} approved by {by}; starts {w['scheduled_start']:%Y-%m-%d %H:%M} UTC (WAL intent {intent.id})",
              highlight=False)


@wave_app.command("gates")
def wave_gates_cmd(
    wave_id: str = typer.Argument(...),
    set_: list[str] = typer.Option([], "--set", help="NAME=VALUE, e.g. mean_dq_score=99 (repeatable)."),
) -> None:
    """Show a wave's gate thresholds, or change them before it runs (through the WAL)."""
    from dagster_project.environment import resources_for_environment
    from resources.wave_store import WaveError

    w = _wave_or_fail(wave_id)
    if set_:
        changes = {}
        for item in set_:
            name, _, value = item.partition("=")
            try:
                changes[name.strip()] = float(value)
            except ValueError:
                fail(f"--set {item!r}: expected NAME=NUMBER, e.g. mean_dq_score=99")
        wal = resources_for_environment(resolved=True)["wal"].store()
        intent = wal.begin(namespace="waves", operation="set_gates", target="waves.waves",
                           key=f"waves:{wave_id}:gates:{dumps_exact(changes)}:{w['attempts']}",
                           payload={"wave": wave_id, "changes": changes, "before": w["gates"]}, wave=wave_id)
        try:
            w = _waves().set_gates(wave_id, changes)
        except WaveError as error:
            wal.fail(intent, str(error))
            fail(str(error), 1)
        wal.commit(intent, {"gates": w["gates"]})
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
    from dagster_project.runner import run_wave

    run = run_wave(wave_id, fault=fault)
    _print_wave_outcome(wave_id, run)
    if not run.success:
        raise typer.Exit(1)


def _print_wave_outcome(wave_id: str, run) -> None:
    from dagster_project.environment import resources_for_environment

    w = _waves().wave(wave_id)
    why = "stopped by its checks" if run.failed_checks and "AssetCheckFailed" in (run.error or "") else run.error
    out.print(f"wave {wave_id} ({w['name']}): run {run.run_id} " + ("[green]succeeded[/]" if run.success else
                                                                     f"[red]FAILED[/]: {why or 'see the checks'}"),
              highlight=False)
    if run.failed_checks:
        out.print("  failed checks: " + ", ".join(run.failed_checks), highlight=False)
    split = _waves().candidate_targets(wave_id)
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
    _print_wave_outcome(wave_id, run)
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
    w = _waves().wave(wave_id)
    out.print(f"rollback run {run.run_id} " + ("[green]succeeded[/]" if run.success else f"[red]FAILED[/]: {run.error}")
              + f"; wave {wave_id} is {w['status']}" + (f" ({w['status_reason']})" if w["status_reason"] else ""),
              highlight=False)
    if not run.success:
        raise typer.Exit(1)


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


def _sync_store():
    from dagster_project.environment import resources_for_environment
    from resources.sync_store import SyncStore
    from routing.sync import SyncRulesError, load_sync_rules

    targets = resources_for_environment(resolved=True)["targets"].store()
    try:
        rules = load_sync_rules()
    except SyncRulesError as error:
        fail(str(error))
    return SyncStore(targets, rules)


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
    from dagster_project.runner import sync_night

    day = _night_or_fail(night)
    with console.status(f"Syncing the night of {day} through Dagster…"):
        run = sync_night(day, fault=fault)
    store = _sync_store()
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
        _print_sync_report(record["report"])
    if not run.success:
        raise typer.Exit(1)


def _print_sync_report(report: dict) -> None:
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
    store = _sync_store()
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
    store = _sync_store()
    nights = store.nights()
    if not nights:
        fail("no night of sync yet: run one with `data-mash sync run`", 1)
    record = store.night(_night_or_fail(night)) if night else nights[-1]
    if not record:
        fail(f"no sync on the night of {night} (see `data-mash sync list`)", 1)
    out.print(f"status: {record['status']}" + (f" ({record['status_reason']})" if record["status_reason"] else ""),
              highlight=False)
    if record["report"]:
        _print_sync_report(record["report"])


@sync_app.command("conflicts")
def sync_conflicts(
    night: Optional[str] = typer.Option(None, "--night", help="YYYY-MM-DD (default: every night)."),
    policy: Optional[str] = typer.Option(None, "--policy"),
    limit: int = typer.Option(50, "--limit", min=1),
) -> None:
    """Recorded conflicts (or, with --policy, every sync decision for that policy): the rule and what it decided."""
    store = _sync_store()
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
    from dagster_project.environment import resources_for_environment

    if keep not in ("legacy", "new_platform"):
        fail(f"--keep: {keep!r} is neither legacy nor new_platform")
    store = _sync_store()
    wal = resources_for_environment(resolved=True)["wal"].store()
    intent = wal.begin(namespace="sync", operation="resolve_conflict", target="sync.decisions",
                       key=f"sync:resolve:{policy}:{time.time_ns()}",
                       payload={"policy": policy, "keep": keep, "reason": reason, "by": by})
    try:
        done = store.resolve(policy, keep, actor=by, reason=reason, wal_id=intent.id)
    except (LookupError, ValueError) as error:
        wal.fail(intent, f"{type(error).__name__}: {error}")
        fail(str(error), 1)
    wal.commit(intent, done)
    out.print(f"policy {policy}: conflict of the night of {done['night']} (decision {done['decision']}) settled: keep "
              f"{keep}; released from the DQ queue. The next night of sync carries it out.", highlight=False)


@sync_app.command("rollback")
def sync_rollback(
    night: str = typer.Argument(..., help="The night (YYYY-MM-DD)."),
    reason: str = typer.Option("requested by an operator", "--reason"),
) -> None:
    """Undo a night of sync through Dagster (`rollback_wave_job` on `sync-<night>`): platform rows restored, its
    legacy batch withdrawn, queue entries removed, decisions marked undone. Later nights must be undone first."""
    from dagster_project.runner import rollback_sync

    day = _night_or_fail(night)
    store = _sync_store()
    if not store.night(day):
        fail(f"no sync on the night of {day} (see `data-mash sync list`)", 1)
    with console.status(f"Rolling back the night of {day}…"):
        run = rollback_sync(day, reason=reason)
    record = store.night(day)
    out.print(f"rollback run {run.run_id} " + ("[green]succeeded[/]" if run.success else f"[red]FAILED[/]: {run.error}")
              + f"; the night of {day} is {record['status']}", highlight=False)
    if not run.success:
        raise typer.Exit(1)


wal_app = typer.Typer(help="The write-ahead log: replay, verify, recover, show.", no_args_is_help=True)
app.add_typer(wal_app, name="wal")


def _wal_store():
    from dagster_project.environment import resources_for_environment

    return resources_for_environment(resolved=True)["wal"].store()


def _when(value: Optional[str], option: str):
    from datetime import datetime, timezone

    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        fail(f"{option} {value!r} is not an ISO date or time (e.g. 2026-11-01 or 2026-11-01T02:00:00+00:00)")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


@wal_app.command("replay")
def wal_replay(
    namespace: Optional[str] = typer.Option(None, "--namespace", help="e.g. intake"),
    since: Optional[str] = typer.Option(None, "--since", help="ISO time, inclusive (UTC if no zone)."),
    until: Optional[str] = typer.Option(None, "--until", help="ISO time, exclusive."),
) -> None:
    """Print WAL entries in the order they were written, one JSON object per line."""
    count = 0
    for entry in _wal_store().replay(namespace, _when(since, "--since"), _when(until, "--until")):
        entry["at"] = entry["at"].isoformat()
        sys.stdout.write(dumps_exact(entry) + "\n")
        count += 1
    console.print(f"{count:,} entries", highlight=False)


@wal_app.command("verify")
def wal_verify() -> None:
    """Walk every hash chain and cross-check the intents; exit 1 naming the first altered entry."""
    report = _wal_store().verify()
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
    store = _wal_store()
    intent = store.get(intent_id)
    if intent is None:
        fail(f"no WAL intent {intent_id}", 1)
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
        fail(f"no row of policy {policy} was written through the WAL", 1)
    table = Table(title=f"Audit trail of policy {policy}")
    for col in ("seq", "at", "event", "status", "intent", "operation", "target", "partition", "run"):
        table.add_column(col)
    for e in trail:
        table.add_row(str(e["seq"]), e["at"].isoformat(timespec="seconds"), e["event"], e["status"] or "",
                      str(e["intent_id"]), e["operation"], e["target"], e["partition_key"] or "", (e["run_id"] or "")[:8])
    out.print(table)


from dagster_project.cli_reprocess import register as _register_reprocess  # noqa: E402

_register_reprocess(app)  # data-mash reprocess (its own module)


services_app = typer.Typer(help="The Dagster services runs go to: webserver, daemon, code server.", no_args_is_help=True)
app.add_typer(services_app, name="services")


@services_app.command("start")
def services_start() -> None:
    """Start this project's Dagster (unless it runs already) and print the UI's address."""
    from dagster_project import services

    running = services.ensure(say=lambda message: console.print(message))
    out.print(f"Dagster UI: {running.url}" + ("" if running.pid is None else f" (pid {running.pid})"))


@services_app.command("status")
def services_status() -> None:
    """Whether this project's Dagster runs, and where."""
    import os as _os

    from dagster_project import services

    if url := _os.environ.get(services.URL_ENV):
        loaded = services.location_loaded(url.rstrip("/"))
        out.print(f"Dagster at {url} ({services.URL_ENV}): {'answering' if loaded else 'NOT answering'}")
        raise typer.Exit(0 if loaded else 1)
    running = services.current()
    if running is None:
        out.print("Dagster is not running for this project; the next command that runs work starts it "
                  "(or `data-mash services start`).")
        raise typer.Exit(1)
    out.print(f"Dagster runs for this project at {running.url} (pid {running.pid}); logs in {running.log}")


@services_app.command("stop")
def services_stop() -> None:
    """Stop this project's Dagster (webserver, daemon, code server). Runs in progress end with it."""
    from dagster_project import services

    stopped = services.stop()
    out.print("Dagster was not running for this project." if stopped is None
              else f"Stopped Dagster (pid {stopped.pid}, {stopped.url}).")


def main() -> None:
    from dagster_project.launcher import LaunchError
    from dagster_project.services import ServicesError

    try:
        app()
    except (ServicesError, LaunchError) as error:
        console.print(f"[bold red]error:[/] {error}")
        sys.exit(1)


if __name__ == "__main__":
    main()
