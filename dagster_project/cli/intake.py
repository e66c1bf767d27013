"""`data-mash` intake: sample books, decoding, ingesting drops, their status and profiles."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from dagster_project.cli.common import app, console, dumps_exact, fail, out, staged_drop_or_fail, writable_folder, writable_output
from dagster_project.cli.mappings import print_canonical

DROP_NOT_TAKEN = {
    "refused": "its check failed before anything was staged; nothing of it is staged",
    "undone": "a file failed while it was staged, so the drop's staged files were removed; nothing of it is staged",
}


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
    writable_folder(out_dir, "--out")
    summary = generate_book(out_dir, policies, seed, defect_rate)
    print_sample_summary(summary, out_dir)


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


def generate_book(out_dir: Path, policies: int, seed: int, defect_rate: float):
    from legacy.sample import generate_sample

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,}"),
                  TimeElapsedColumn(), console=console) as progress:
        tasks: dict[str, int] = {}

        def report(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=total)
            progress.update(tasks[stage], completed=done, total=total)

        return generate_sample(out_dir, policies=policies, seed=seed, defect_rate=defect_rate, progress=report)


def print_sample_summary(summary, out_dir: Path) -> None:
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
    copybook: Optional[Path] = typer.Option(None, "--copybook", exists=True, dir_okay=False,
                                            help="COBOL copybook (.cpy) of a mainframe file."),
    data: Path = typer.Option(..., "--data", exists=True, dir_okay=False,
                              help="The legacy file: fixed-width records, or a CSV export with --source."),
    source: Optional[str] = typer.Option(None, "--source", help="Instead of --copybook: a source (see `data-mash "
                                         "sources`) whose configuration says how to read the file (CSV or copybook)."),
    kind: Optional[str] = typer.Option(None, "--kind", help="With --source: the file kind (default: the kind whose "
                                       "file pattern the file's name matches)."),
    encoding: Optional[str] = typer.Option(None, "--encoding", help="With --copybook: cp037 (default), cp500, "
                                           "cp1140, cp273, ascii, latin-1 ..."),
    record_format: str = typer.Option("auto", "--record-format", help="With --copybook: F (fixed), V (RDW), or auto: "
                                      "V if the copybook has OCCURS DEPENDING ON."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Stop after this many records."),
) -> None:
    """Print one JSON object per record of a legacy file, without a database or a Dagster run; bad records go to
    stderr with record, field and reason (exit 1 if any). A file that cannot be read at all exits 2."""
    from legacy.copybook import parse_copybook

    if (copybook is None) == (source is None):
        fail("name how to read --data: --copybook FILE (a mainframe file) or --source NAME (a configured source)")
    if copybook is not None:
        try:
            text = copybook.read_text(encoding="latin-1")
        except OSError as error:
            fail(f"{copybook}: cannot read: {error.strerror or error}")
        layout = parse_copybook(text, source=str(copybook))  # a CopybookError names file, line and column
        fmt = record_format.upper()
        if fmt == "AUTO":
            fmt = "V" if layout.is_variable else "F"
        if fmt not in ("F", "V"):
            fail(f"--record-format must be F, V or auto, not {record_format!r}")
        blocks, as_json = _decode_copybook_file(data, layout, fmt, encoding or "cp037")
    else:
        if encoding is not None or record_format != "auto":
            fail("--encoding and --record-format go with --copybook; with --source its configuration says them")
        blocks, as_json = _decode_source_file(data, source, kind)
    printed = bad = 0
    for result in blocks:
        for row in result.quarantine.select(["record_no", "field", "reason", "detail"]).to_pylist():
            bad += 1
            console.print(f"{data.name} record {row['record_no']}: field {row['field'] or '-'}: {row['reason']}: "
                          f"{row['detail']}", highlight=False, markup=False, soft_wrap=True)
        for record in as_json(result.table):
            if limit is not None and printed >= limit:
                break
            sys.stdout.write(dumps_exact(record) + "\n")
            printed += 1
        if limit is not None and printed >= limit:
            break
    console.print(f"{printed:,} records printed, {bad:,} quarantined", highlight=False)
    if bad:
        raise typer.Exit(1)


def _readable(data: Path) -> None:
    try:
        with data.open("rb"):
            pass
    except OSError as error:
        fail(f"{data}: cannot read: {error.strerror or error}")


def _decode_copybook_file(data: Path, layout, record_format: str, encoding: str):
    from legacy.copybook import decode_file, to_json_records

    _readable(data)
    blocks = decode_file(data, layout, record_format=record_format, encoding=encoding, block_records=10_000)
    return blocks, lambda table: to_json_records(layout, table)


def _decode_source_file(data: Path, source_name: str, kind: Optional[str]):
    """A file of a configured source, read as intake reads it (a CSV header that does not match exits 2)."""
    import fnmatch

    from legacy.copybook import to_json_records
    from legacy.sources import load_copybook, load_source, read_source_file

    source = load_source(source_name)
    kinds = {spec.kind: spec for spec in source.files}
    if kind is None:
        matching = [spec.kind for spec in source.files if fnmatch.fnmatchcase(data.name, spec.pattern)]
        if not matching:
            fail(f"{data}: matches no file pattern of {source.name} (" + ", ".join(
                f"{spec.kind}: {spec.pattern}" for spec in source.files) + "); name its kind with --kind")
        kind = matching[0]
    if kind not in kinds:
        fail(f"--kind {kind!r}: {source.name} has no such file kind; it has {', '.join(kinds)}")
    spec = kinds[kind]
    _readable(data)
    blocks = read_source_file(source, spec, data, drop_dir=data.parent, block_records=10_000)
    if source.format == "csv":
        return blocks, lambda table: ({k: v for k, v in row.items() if k != "record_no"} for row in table.to_pylist())
    layout = load_copybook(source, spec, data.parent, data)
    return blocks, lambda table: to_json_records(layout, table)


@app.command()
def ingest(
    path: Path = typer.Argument(..., exists=True, help="A drop: a folder of files (or one file) from a legacy system."),
    source: str = typer.Option(..., "--source", help="Source name, e.g. mainframe_life or pc_csv (see `data-mash sources`)."),
    drop_id: Optional[str] = typer.Option(None, "--drop-id", help="Partition name for this drop; default: folder name + content hash."),
) -> None:
    """Check a drop, put it in the landing folder and materialize its intake assets through Dagster. A drop that is
    incomplete or unreadable (empty, truncated, random bytes, a control total that does not match) is refused with
    exit code 2, naming each file, offset and reason, before anything is landed or staged."""
    outcome = ingest_drop(path, source, drop_id)
    print_ingest([outcome])
    if not outcome.success:
        raise typer.Exit(1)


def ingest_drop(path: Path, source: str, drop_id: str | None):
    from dagster_project.runner import ingest as run_ingest

    try:
        with console.status(f"Ingesting {path.name} as {source} through Dagster…"):
            return run_ingest(path, source, drop_id)
    except (OSError, KeyError, ValueError) as error:  # a refused drop (DropRefused) too: unreadable input
        fail(escape(str(error)))


def print_ingest(outcomes) -> None:
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

        print_canonical([SimpleNamespace(source=o.source, tables=o.canonical, error=None) for o in mapped])
        out.print("Mapping quarantines what cannot become canonical (impossible dates, unknown codes, duplicate "
                  "ids, orphans of held-back policies); what maps but breaks a rule (negative premium, optional "
                  "zero dates) is kept and scored down (mean DQ, 0-100).", highlight=False)
    for outcome in outcomes:
        status = "[green]succeeded[/]" if outcome.success else "[red]FAILED[/]"
        out.print(f"{outcome.source} drop {outcome.drop_id}: Dagster run {outcome.run_id} {status}")
        for check in outcome.failed_checks:
            out.print(f"  [red]check failed[/] {check}")
        drop_status = getattr(outcome, "drop_status", None)
        if drop_status in DROP_NOT_TAKEN:
            out.print(f"  [red]drop {drop_status}[/]: {DROP_NOT_TAKEN[drop_status]}")
        error = getattr(outcome, "drop_error", None) if drop_status in DROP_NOT_TAKEN else outcome.error
        if error:
            out.print(f"  [red]{escape(error)}[/]")


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

    config = load_source(source)  # an unknown source, drop or an output that cannot be written: exit 2, first
    writable_output(output)
    resources = resources_for_environment(resolved=True)
    store = IntakeStore(resources["database"].engine())
    staged_drop_or_fail(store.engine, config.name, drop)
    profiles = profile_staged_drop(store, config, drop)
    output.write_text(json.dumps({"source": source, "drop": drop, "files": [p.model_dump() for p in profiles]},
                                 indent=2, default=str))
    for p in profiles:
        out.print(f"[bold]{p.kind}[/] ({p.file_name}): {p.records_parsed:,} parsed, {p.records_quarantined:,} quarantined")
    out.print(f"report written to {output}")


@app.command()
def status() -> None:
    """Drops taken in so far, with their counts, and where the database is."""
    from dagster_project.environment import resources_for_environment
    from dagster_project.instance import open_instance
    from dagster_project.jobs import ingest_job_name
    from dagster_project.launcher import latest_run
    from dagster_project.runner import IngestOutcome, file_outcomes
    from resources.intake_store import IntakeStore

    resources = resources_for_environment(resolved=True)
    database = resources["database"]
    console.print(f"database: {database.describe()}", highlight=False)
    store = IntakeStore(database.engine())
    drops = store.drops()
    if not drops:
        out.print("No drop taken in yet: try `data-mash ingest PATH --source NAME` or `make demo`.")
        return
    instance = open_instance(database)
    outcomes = []
    for source, drop in drops:  # each drop as its latest ingest run on Dagster left it
        run = latest_run(instance, {"data_mash/source": source, "dagster/partition": drop}, ingest_job_name(source))
        state = store.drop_state(source, drop)
        outcomes.append(IngestOutcome(source, drop, run.run_id if run else "-", bool(run and run.success),
                                      file_outcomes(store, source, drop), run.failed_checks if run else [],
                                      (run.error if run else "no ingest run of this drop on this Dagster instance"),
                                      drop_status=state.status if state else None,
                                      drop_error=state.error if state else None))
    print_ingest(outcomes)


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
