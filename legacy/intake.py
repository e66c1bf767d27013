"""Take in one file of a legacy drop: decode in blocks, stage, quarantine, profile.

No Dagster here: the `legacy/<source>/<kind>` assets, the CLI and the benchmark all call
`ingest_file`, which streams the file block by block into the store (memory stays flat) and
returns what was stored and its profile.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from legacy.profile import FileProfile, PatternSampler, build_profile
from legacy.sources import FileSpec, SourceConfig, find_drop_files, output_columns, read_source_file


@dataclass
class IngestedFile:
    load: object  # resources.intake_store.FileLoad
    profile: FileProfile
    path: Path
    columns: list


def file_spec(source: SourceConfig, kind: str) -> FileSpec:
    for spec in source.files:
        if spec.kind == kind:
            return spec
    raise KeyError(f"source {source.name} has no file kind {kind!r}; it has {[s.kind for s in source.files]}")


def locate_file(source: SourceConfig, kind: str, drop_dir: Path) -> Path | None:
    """The drop's file of this kind; None when an optional file is absent (a required one raises)."""
    file_spec(source, kind)
    return find_drop_files(source, drop_dir).get(kind)


def check_drop(source: SourceConfig, path: Path) -> dict[str, Path]:
    """Read what makes a drop unreadable as a whole, before anything of it is landed: its required files (a folder)
    or which file kind it is (one file), each file's copybook, a CSV file's header line. Raises an `InputError`
    naming the file, the line and the field; a bad *record* is not a problem here (intake quarantines it)."""
    import fnmatch

    from legacy.errors import InputError

    path = Path(path)
    if path.is_dir():
        files = find_drop_files(source, path)
    else:
        kinds = [spec.kind for spec in source.files if fnmatch.fnmatchcase(path.name, spec.pattern)]
        if not kinds:
            raise InputError(f"matches no file of source {source.name}",
                             file=path, expected=" or ".join(f"{spec.pattern} ({spec.kind})" for spec in source.files))
        files = {kinds[0]: path}
    for kind, file in files.items():
        spec = file_spec(source, kind)
        blocks = read_source_file(source, spec, file, drop_dir=file.parent, block_records=1)
        next(iter(blocks), None)  # parses the copybook, or reads the CSV header (and the first record)
        close = getattr(blocks, "close", None)
        if close is not None:
            close()
    return files


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
) -> IngestedFile | None:
    """Stage one file kind of a drop. Returns None when an optional file is absent from the drop."""
    from resources.intake_store import sql_name  # the SQL naming rule lives with the store

    spec = file_spec(source, kind)
    path = path or locate_file(source, kind, drop_dir)
    if path is None:
        return None
    columns = output_columns(source, spec, drop_dir)
    sampler = PatternSampler()

    def blocks():
        for result in read_source_file(source, spec, path, drop_dir=drop_dir, block_records=block_records):
            sampler.add(result.table)
            yield result

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
    return IngestedFile(load=load, profile=profile, path=path, columns=columns)
