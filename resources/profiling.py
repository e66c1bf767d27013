"""Profile a drop that is already staged, from the database alone (`data-mash profile`)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
from psycopg import sql
from sqlalchemy import text

from legacy.profile import FileProfile, PatternSampler, build_profile
from legacy.sources import SourceConfig, output_columns
from resources.database import psycopg_cursor
from resources.intake_store import IntakeStore, copy_to_arrow, partition_name, sql_name, staging_table_name


def profile_staged_drop(store: IntakeStore, source: SourceConfig, drop_id: str, sample_rows: int = 100_000) -> list[FileProfile]:
    with store.engine.connect() as conn:
        drop_path = conn.execute(
            text("SELECT path FROM intake.drops WHERE source = :s AND drop_id = :d"), {"s": source.name, "d": drop_id}
        ).scalar_one_or_none()
        files = conn.execute(
            text("SELECT kind, file_name, records_read, records_parsed, records_quarantined FROM intake.files "
                 "WHERE source = :s AND drop_id = :d ORDER BY kind"),
            {"s": source.name, "d": drop_id},
        ).all()
    if drop_path is None or not files:
        raise LookupError(f"drop {drop_id!r} of source {source.name} has not been ingested (see `data-mash status`)")
    specs = {spec.kind: spec for spec in source.files}
    profiles = []
    for kind, file_name, read, parsed, quarantined in files:
        columns = output_columns(source, specs[kind], Path(drop_path))
        sampler = PatternSampler(sample_rows=sample_rows)
        sampler.add(_sample(store, source.name, kind, drop_id, columns, sample_rows))
        profiles.append(
            build_profile(
                source=source.name, drop_id=drop_id, kind=kind, file_name=file_name, columns=columns,
                sql_names=[sql_name(n) for n, _ in columns],
                stats=store.column_stats(source.name, kind, drop_id, columns), sampler=sampler,
                pii=set(source.pii), records_read=read, records_parsed=parsed, records_quarantined=quarantined,
            )
        )
    return profiles


def _sample(store: IntakeStore, source: str, kind: str, drop_id: str, columns, limit: int) -> pa.Table:
    part = partition_name(staging_table_name(source, kind), drop_id)
    names = [sql_name(n) for n, _ in columns]
    query = sql.SQL("COPY (SELECT {} FROM staging.{} ORDER BY record_no LIMIT {}) TO STDOUT (FORMAT csv)").format(
        sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(n)) for n in names),
        sql.Identifier(part), sql.Literal(limit),
    )
    with psycopg_cursor(store.engine) as cur:
        return copy_to_arrow(cur, query, [(name, pa.string()) for name, _ in columns])
