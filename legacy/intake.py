"""Take in one file of a legacy drop: decode in blocks, stage, quarantine, profile.

No Dagster here: the `legacy/<source>/<kind>` assets, the CLI and the benchmark all call
`ingest_file`, which streams the file block by block into the store (memory stays flat) and
returns what was stored and its profile. Given the file's check from the drop's manifest
(`legacy.integrity.FileCheck`), it also proves what the cheap checks could not (a variable-length
file's record count, a trailer's money total): a mismatch raises `DropRefused` inside the load,
so nothing of the file is stored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from legacy.integrity import ControlTally, FileCheck
from legacy.profile import FileProfile, PatternSampler, build_profile
from legacy.sources import FileSpec, SourceConfig, find_drop_files, output_columns, read_source_file


@dataclass
class IngestedFile:
    load: object  # resources.intake_store.FileLoad
    profile: FileProfile
    path: Path
    columns: list
    controls: dict | None = None  # what the control totals declared and what was read (ControlTally.finish)


def file_spec(source: SourceConfig, kind: str) -> FileSpec:
    for spec in source.files:
        if spec.kind == kind:
            return spec
    raise KeyError(f"source {source.name} has no file kind {kind!r}; it has {[s.kind for s in source.files]}")


def locate_file(source: SourceConfig, kind: str, drop_dir: Path) -> Path | None:
    """The drop's file of this kind; None when an optional file is absent (a required one raises)."""
    file_spec(source, kind)
    return find_drop_files(source, drop_dir).get(kind)


def ingest_file(
    store,
    source: SourceConfig,
    kind: str,
    drop_id: str,
    drop_dir: Path,
    *,
    path: Path | None = None,
    sha256: str | None = None,
    wal_id: int | None = None,
    block_records: int = 50_000,
    on_block: Callable | None = None,
    check: FileCheck | None = None,
) -> IngestedFile | None:
    """Stage one file kind of a drop. Returns None when an optional file is absent from the drop."""
    from resources.intake_store import sql_name  # the SQL naming rule lives with the store

    spec = file_spec(source, kind)
    path = path or locate_file(source, kind, drop_dir)
    if path is None:
        return None
    columns = output_columns(source, spec, drop_dir)
    sampler = PatternSampler()
    tally = ControlTally(source.name, drop_id, check) if check is not None else None
    controls: dict | None = None

    def blocks():
        nonlocal controls
        for result in read_source_file(source, spec, path, drop_dir=drop_dir, block_records=block_records):
            sampler.add(result.table)
            if tally is not None:
                tally.add(result.table, result.quarantine)
            yield result
        if tally is not None:  # still inside the load's transaction: a mismatch stores nothing of the file
            controls = tally.finish()

    load = store.load_file(
        source=source.name, kind=kind, drop_id=drop_id, path=path, columns=columns, blocks=blocks(),
        wal_id=wal_id, sha256=sha256, on_block=on_block,
    )
    stats = store.column_stats(source.name, kind, drop_id, columns)
    profile = build_profile(
        source=source.name,
        drop_id=drop_id,
        kind=kind,
        file_name=path.name,
        columns=columns,
        sql_names=[sql_name(n) for n, _ in columns],
        stats=stats,
        sampler=sampler,
        pii=set(source.pii),
        records_read=load.records_read,
        records_parsed=load.records_parsed,
        records_quarantined=load.records_quarantined,
    )
    return IngestedFile(load=load, profile=profile, path=path, columns=columns, controls=controls)
