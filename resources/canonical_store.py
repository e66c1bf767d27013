"""Canonical tables in PostgreSQL: reading staged blocks, writing mapped ones, proving the counts.

`canonical.<table>` is LIST-partitioned by drop (`<source>:<drop_id>`). Mapping a drop replaces its
partition and its quarantine rows in one transaction, so a rerun (or a backfill after a mapping
change) never duplicates. Duplicate keys and orphans (rows whose policy is not among the drop's
canonical policies) are found set-wise in SQL after the COPY and moved to `canonical.quarantine`.
`canonical.loads` records in = mapped + quarantined, enforced by a CHECK constraint.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import pyarrow as pa
from psycopg import sql
from sqlalchemy import Engine, text

from canonical.tables import V1_TABLES
from resources.database import psycopg_cursor
from resources.wal import WalStore
from resources.intake_store import (copy_arrow, copy_to_arrow, iter_copy_blocks, partition_name, replace_partition,
                                    sql_name, staging_table_name)


def drop_key(source: str, drop_id: str) -> str:
    return f"{source}:{drop_id}"


@dataclass
class CanonicalLoad:
    source: str
    drop_id: str
    table: str
    records_in: int = 0
    records_mapped: int = 0
    records_quarantined: int = 0
    quarantine_by_reason: dict[str, int] = field(default_factory=dict)
    mean_dq_score: float | None = None


class CanonicalStore:
    def __init__(self, engine: Engine):
        self.engine = engine

    def read_staged(self, source: str, kind: str, drop_id: str, columns: list[tuple[str, pa.DataType]],
                    block: int = 100_000) -> Iterator[pa.Table]:
        """A drop's staged rows in record order, as Arrow blocks with the source's own column names."""
        part = partition_name(staging_table_name(source, kind), drop_id)
        names = [sql_name(n) for n, _ in columns]
        fields = sql.SQL(", ").join(sql.Identifier(n) for n in names)
        return iter_copy_blocks(
            self.engine,
            lambda last: sql.SQL("SELECT record_no, {} FROM staging.{} WHERE record_no > {} ORDER BY record_no").format(
                fields, sql.Identifier(part), sql.Literal(last)),
            [("record_no", pa.int64()), *columns], "record_no", 0, block)

    def record_mapping(self, mapping) -> str:
        """Register the model version and store the mapping file in the registry; returns the model's schema hash."""
        import json

        from canonical.registry import ModelRegistry

        wal = WalStore(self.engine)
        registry = ModelRegistry(self.engine, record=lambda operation, payload: wal.action(
            namespace="canonical", operation=operation, target="canonical_registry.model_versions", payload=payload))
        registry.register_all()
        with self.engine.connect() as conn:
            known = conn.execute(text("SELECT 1 FROM canonical_registry.mappings WHERE mapping_hash = :h"),
                                 {"h": mapping.hash}).first()
        if known:
            return registry.schema_hash(mapping.spec.model_version)
        with wal.action(namespace="canonical", operation="record_mapping", target="canonical_registry.mappings",
                        payload={"mapping": mapping.name, "version": mapping.version, "hash": mapping.hash,
                                 "source": mapping.spec.source}), self.engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO canonical_registry.mappings (mapping_hash, mapping, version, source, model_version, content) "
                "VALUES (:h, :m, :v, :s, :mv, CAST(:c AS jsonb)) ON CONFLICT (mapping_hash) DO NOTHING"),
                {"h": mapping.hash, "m": mapping.name, "v": mapping.version, "s": mapping.spec.source,
                 "mv": mapping.spec.model_version, "c": json.dumps(mapping.spec.model_dump(by_alias=True))})
        return registry.schema_hash(mapping.spec.model_version)

    def lookup_table(self, source: str, drop_id: str, spec: tuple[str, str, str, str],
                     columns: list[tuple[str, pa.DataType]]) -> pa.Table:
        """A satellite aggregate for `lookup()`: (key, value) per key, computed in SQL on the drop's staged rows."""
        kind, key_col, value_col, agg = spec
        dtype = dict(columns)[value_col]
        if agg == "count":
            out_type, expr = pa.int64(), sql.SQL("count({})")
        elif pa.types.is_decimal(dtype):
            out_type = pa.decimal128(38, dtype.scale)
            expr = sql.SQL("sum({})") if agg == "sum" else None
        else:
            out_type, expr = dtype, None
        if expr is None:
            expr = {"sum": sql.SQL("sum({})"), "min": sql.SQL("min({})"), "max": sql.SQL("max({})"),
                    "first": sql.SQL("(array_agg({} ORDER BY record_no))[1]")}[agg]
        part = partition_name(staging_table_name(source, kind), drop_id)
        query = sql.SQL("COPY (SELECT trim({key}::text), {agg} FROM staging.{part} WHERE {key} IS NOT NULL GROUP BY 1) "
                        "TO STDOUT (FORMAT csv)").format(
            key=sql.Identifier(sql_name(key_col)), agg=expr.format(sql.Identifier(sql_name(value_col))),
            part=sql.Identifier(part))
        with psycopg_cursor(self.engine) as cur:
            return copy_to_arrow(cur, query, [("key", pa.string()), ("value", out_type)])

    def load_table(self, *, source: str, drop_id: str, table: str, mapping, blocks: Iterable,
                   wal_id: int | None) -> CanonicalLoad:
        """Replace the drop's partition of `canonical.<table>` with the mapped blocks, then settle keys and orphans."""
        canonical = V1_TABLES[table]
        key = drop_key(source, drop_id)
        part = partition_name(table, key)
        load = CanonicalLoad(source, drop_id, table)
        with psycopg_cursor(self.engine) as cur:
            # one transaction: partition, quarantine, keys, orphans and counts together
            replace_partition(cur, "canonical", table, part, key)
            cur.execute("DELETE FROM canonical.quarantine WHERE source = %s AND drop_id = %s AND table_name = %s",
                        (source, drop_id, table))
            for block in blocks:
                rows = block.table.select(["source_record_no", "occurrence", *canonical.names, "dq_score", "dq_findings"])
                n = rows.num_rows
                rows = rows.add_column(0, "mapping_version", pa.repeat(pa.scalar(mapping.version), n))
                rows = rows.add_column(0, "wal_id", pa.array([wal_id] * n, pa.int64()))
                rows = rows.add_column(0, "drop_key", pa.repeat(pa.scalar(key), n))
                copy_arrow(cur, "canonical", part, rows)
                bad = block.quarantine
                if bad.num_rows:
                    q = bad.select(["source_record_no", "policy_id", "field", "reason", "detail"])
                    m = q.num_rows
                    for name, value in (("table_name", table), ("drop_id", drop_id), ("source", source)):
                        q = q.add_column(0, name, pa.repeat(pa.scalar(value), m))
                    q = q.append_column("wal_id", pa.array([wal_id] * m, pa.int64()))
                    copy_arrow(cur, "canonical", "quarantine", q)
                load.records_in += n + bad.num_rows
            self._settle_duplicates(cur, canonical, part, source, drop_id, wal_id)
            if table != "policies":
                self._settle_orphans(cur, part, key, source, drop_id, table, wal_id)
            # fresh statistics now: every later read of the book joins this partition by policy id
            cur.execute(sql.SQL("ANALYZE canonical.{}").format(sql.Identifier(part)))
            cur.execute(sql.SQL("SELECT count(*), avg(dq_score) FROM canonical.{}").format(sql.Identifier(part)))
            load.records_mapped, mean = cur.fetchone()
            load.mean_dq_score = float(mean) if mean is not None else None
            cur.execute("SELECT reason, count(*) FROM canonical.quarantine WHERE source = %s AND drop_id = %s "
                        "AND table_name = %s GROUP BY reason ORDER BY reason", (source, drop_id, table))
            load.quarantine_by_reason = dict(cur.fetchall())
            load.records_quarantined = sum(load.quarantine_by_reason.values())
            cur.execute(
                """
                INSERT INTO canonical.loads (source, drop_id, table_name, mapping, mapping_version, mapping_hash,
                    records_in, records_mapped, records_quarantined, mean_dq_score, wal_id)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (source, drop_id, table_name) DO UPDATE SET mapping = EXCLUDED.mapping,
                    mapping_version = EXCLUDED.mapping_version, mapping_hash = EXCLUDED.mapping_hash,
                    records_in = EXCLUDED.records_in, records_mapped = EXCLUDED.records_mapped,
                    records_quarantined = EXCLUDED.records_quarantined, mean_dq_score = EXCLUDED.mean_dq_score,
                    wal_id = EXCLUDED.wal_id, loaded_at = now()
                """,
                (source, drop_id, table, mapping.name, mapping.version, mapping.hash, load.records_in,
                 load.records_mapped, load.records_quarantined, load.mean_dq_score, wal_id),
            )
        return load

    @staticmethod
    def _settle_duplicates(cur, canonical, part, source, drop_id, wal_id) -> None:
        """Keep the first record of each key; quarantine the later ones, naming the record they repeat."""
        reason = "duplicate_policy_id" if canonical.name == "policies" else "duplicate_key"
        keys = sql.SQL(", ").join(sql.Identifier(k) for k in canonical.key)
        cur.execute(sql.SQL("""
            WITH ranked AS (
                SELECT source_record_no, occurrence,
                       row_number() OVER (PARTITION BY {keys} ORDER BY source_record_no, occurrence) AS rn,
                       first_value(source_record_no) OVER (PARTITION BY {keys} ORDER BY source_record_no, occurrence)
                           AS first_no
                FROM canonical.{part}
            ), gone AS (
                DELETE FROM canonical.{part} p USING ranked r
                WHERE p.source_record_no = r.source_record_no AND p.occurrence = r.occurrence AND r.rn > 1
                RETURNING p.source_record_no, p.policy_id, r.first_no
            )
            INSERT INTO canonical.quarantine (source, drop_id, table_name, source_record_no, policy_id, field, reason,
                                              detail, wal_id)
            SELECT %s, %s, %s, source_record_no, policy_id, {field}, %s,
                   'same key as record ' || first_no || ' of this drop', %s
            FROM gone
            """).format(keys=keys, part=sql.Identifier(part), field=sql.Literal(canonical.key[-1])),
            (source, drop_id, canonical.name, reason, wal_id))

    @staticmethod
    def _settle_orphans(cur, part, key, source, drop_id, table, wal_id) -> None:
        """Rows whose policy is not among this drop's canonical policies go to quarantine as orphans."""
        cur.execute(sql.SQL("""
            WITH gone AS (
                DELETE FROM canonical.{part} c
                WHERE NOT EXISTS (SELECT 1 FROM canonical.policies p WHERE p.drop_key = %s AND p.policy_id = c.policy_id)
                RETURNING c.source_record_no, c.policy_id
            )
            INSERT INTO canonical.quarantine (source, drop_id, table_name, source_record_no, policy_id, field, reason,
                                              detail, wal_id)
            SELECT %s, %s, %s, source_record_no, policy_id, 'policy_id', 'orphan',
                   'no canonical policy with this id in the drop (missing, quarantined or unmapped)', %s
            FROM gone
            """).format(part=sql.Identifier(part)), (key, source, drop_id, table, wal_id))

    def accounting(self, source: str, drop_id: str, table: str, staged_kind: str,
                   present_columns: list[str] | None = None) -> dict[str, int]:
        """Recount from the database: rows in (staged records, or present occurrences), canonical, quarantined."""
        part = partition_name(table, drop_key(source, drop_id))
        if present_columns:
            staged_part = partition_name(staging_table_name(source, staged_kind), drop_id)
            present = " + ".join(f"(nullif(trim({sql_name(c)}::text), '') IS NOT NULL)::int" for c in present_columns)
            with self.engine.connect() as conn:
                occurrences = conn.execute(text(f'SELECT coalesce(sum({present}), 0) FROM staging."{staged_part}"')).scalar_one()
        with self.engine.connect() as conn:
            recorded = conn.execute(text("SELECT records_in FROM canonical.loads WHERE source = :s AND drop_id = :d "
                                         "AND table_name = :t"), {"s": source, "d": drop_id, "t": table}).scalar_one_or_none()
            staged = conn.execute(text("SELECT records_parsed FROM intake.files WHERE source = :s AND drop_id = :d "
                                       "AND kind = :k"), {"s": source, "d": drop_id, "k": staged_kind}).scalar_one_or_none()
            mapped = conn.execute(text(f'SELECT count(*) FROM canonical."{part}"')).scalar_one() if recorded is not None else 0
            quarantined = conn.execute(text("SELECT count(*) FROM canonical.quarantine WHERE source = :s AND drop_id = :d "
                                            "AND table_name = :t"), {"s": source, "d": drop_id, "t": table}).scalar_one()
        if present_columns:
            staged = occurrences
        return {"staged": staged if staged is not None else -1, "recorded_in": recorded if recorded is not None else -1,
                "mapped": mapped, "quarantined": quarantined}
