"""`data-mash` mappings: suggest, validate, impact, map again."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from dagster_project.cli.common import app, console, fail, out, staged_drop_or_fail, writable_output


def _source_columns(source_name: str, drop_dir: Path | None = None) -> dict[str, set[str]]:
    from legacy.sources import load_source, output_columns

    source = load_source(source_name)
    return {spec.kind: {n for n, _ in output_columns(source, spec, drop_dir)} for spec in source.files}


def load_checked_mapping(path: Path, drop_dir: Path | None = None):
    """A mapping file validated against the model and its source's columns, and those columns; a file that cannot
    be used raises `MappingError` (exit 2) naming file, line and field. `validate-mapping`, `mapping-impact` and
    `reprocess` read mappings this one way, so they agree on what is valid."""
    from canonical.mapping import MappingError, parse_mapping
    from legacy.errors import load_yaml
    from legacy.sources import SourceConfigError

    document = load_yaml(path, error=MappingError)
    source = document.data.get("source") if isinstance(document.data, dict) else None
    columns = None
    if isinstance(source, str):  # otherwise the model's validation names the field
        try:
            columns = _source_columns(source, drop_dir)
        except SourceConfigError as error:
            raise MappingError(str(error), file=path, line=document.line("source"), field="source") from None
    return parse_mapping(document.data, path, columns, document=document), columns


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

    config = load_source(source)
    output = writable_output(output or Path(f"{config.name}.draft.yaml"))
    if drop is None:
        landing = resources_for_environment(resolved=True)["landing"]
        drops = landing.ready_drops(config.name)
        if not drops:
            fail(f"no drop of {config.name} in the landing folder: name one with --drop FOLDER")
        drop = max(drops, key=lambda d: d.path.stat().st_mtime).path
    with console.status(f"Sampling {rows:,} records per file of {drop}…"):
        suggestion = suggest_mapping(config, sample_source_files(config, drop, rows=rows))
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

    mapping, columns = load_checked_mapping(file)
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

    (a, _), (b, _) = load_checked_mapping(old), load_checked_mapping(new)
    if a.spec.source != b.spec.source:
        fail(f"{old} maps {a.spec.source} but {new} maps {b.spec.source}")
    source = load_source(a.spec.source)
    engine = resources_for_environment(resolved=True)["database"].engine()
    staged_drop_or_fail(engine, source.name, drop)
    store = CanonicalStore(engine)
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
    from dagster_project.environment import resources_for_environment
    from dagster_project.runner import remap
    from legacy.sources import load_source

    source = load_source(source).name  # an unknown source or drop is refused before a run is submitted
    staged_drop_or_fail(resources_for_environment(resolved=True)["database"].engine(), source, drop)
    with console.status(f"Mapping {source} drop {drop} through Dagster…"):
        outcome = remap(source, drop)
    print_canonical([outcome])
    if not outcome.success:
        raise typer.Exit(1)


def print_canonical(outcomes) -> None:
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
