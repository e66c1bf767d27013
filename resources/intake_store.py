"""Staging and quarantine in PostgreSQL: how a parsed legacy file is stored, and proven complete.

Each source file kind has one staging table `staging.<source>__<kind>`, LIST-partitioned by drop.
Loading a drop replaces its partition and its quarantine rows in ONE transaction, streamed with
COPY block by block, so a rerun never duplicates and memory does not grow with the file. The
`intake.files` row carries read = parsed + quarantined, enforced by a CHECK constraint.

`intake.drops` holds each drop's integrity check (`legacy.integrity`): `verified` (its files may be
staged), `refused` (nothing of it was staged) or `undone` (a file failed while it was staged, and
what the drop's other files had staged was removed: a drop is taken whole or not at all).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from psycopg import sql
from sqlalchemy import Engine, text

from resources.database import psycopg_cursor
from resources.sqlnames import pg_type, sql_name  # noqa: F401  (re-exported: the store's naming rules)

QUARANTINE_COLUMNS = ("record_no", "offset", "field", "reason", "detail", "raw")


def staging_table_name(source: str, kind: str) -> str:
    return f"{sql_name(source)}__{sql_name(kind)}"


def partition_name(table: str, drop_id: str) -> str:
    digest = hashlib.sha256(drop_id.encode()).hexdigest()[:12]
    return f"{table}__d{digest}"


class DropNotTaken(RuntimeError):
    """The drop was refused or undone: none of its files may be staged."""


@dataclass(frozen=True)
class DropState:
    status: str  # registered | verified | refused | undone
    error: str | None
    manifest: dict | None


@dataclass
class FileLoad:
    """What one file load stored: the counts that prove nothing was lost."""

    source: str
    drop_id: str
    kind: str
    file_name: str
    staging_table: str
    records_parsed: int = 0
    records_quarantined: int = 0
    quarantine_by_reason: dict[str, int] = field(default_factory=dict)

    @property
    def records_read(self) -> int:
        return self.records_parsed + self.records_quarantined


def replace_partition(cur, schema: str, parent: str, part: str, value: str) -> None:
    """Drop and recreate one LIST partition, inside the caller's transaction (readers see the old one until commit)."""
    cur.execute(sql.SQL("DROP TABLE IF EXISTS {}.{}").format(sql.Identifier(schema), sql.Identifier(part)))
    cur.execute(sql.SQL("CREATE TABLE {}.{} PARTITION OF {}.{} FOR VALUES IN ({})").format(
        sql.Identifier(schema), sql.Identifier(part), sql.Identifier(schema), sql.Identifier(parent), sql.Literal(value)))
    guard_table(cur, schema, part)


def guard_table(cur, schema: str, table: str) -> None:
    """Put the WAL write guard on a table made at run time (resources/guard.py)."""
    cur.execute("SELECT data_mash.guard(%s::regclass)", (sql.Identifier(schema, table).as_string(cur),))


def copy_arrow(cur, schema: str, table: str, frame: pa.Table) -> None:
    """COPY an Arrow table into `schema.table`, columns by name (decimals stay exact: Arrow writes them as text)."""
    if not frame.num_rows:
        return
    statement = sql.SQL("COPY {}.{} ({}) FROM STDIN (FORMAT csv)").format(
        sql.Identifier(schema), sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(n) for n in frame.column_names))
    buffer = io.BytesIO()
    pacsv.write_csv(frame, buffer, write_options=pacsv.WriteOptions(include_header=False))
    with cur.copy(statement) as copy:
        copy.write(buffer.getvalue())


def copy_to_arrow(cur, query, columns: list[tuple[str, pa.DataType]]) -> pa.Table:
    """Run `COPY (SELECT ...) TO STDOUT (FORMAT csv)` and read the rows as Arrow with these names and types.

    Exact both ways: decimals parse from their text, an unquoted empty field is NULL and a quoted empty
    string stays an empty string.
    """
    buffer = io.BytesIO()
    with cur.copy(query) as copy:
        for chunk in copy:
            buffer.write(chunk)
    if not buffer.tell():
        return pa.schema(columns).empty_table()
    size = buffer.tell()
    convert = pacsv.ConvertOptions(column_types=dict(columns), strings_can_be_null=True,
                                   quoted_strings_can_be_null=False, true_values=["t"], false_values=["f"])
    names = [name for name, _ in columns]
    buffer.seek(0)
    try:
        return pacsv.read_csv(buffer, read_options=pacsv.ReadOptions(column_names=names), convert_options=convert)
    except pa.ArrowInvalid as error:
        if "straddling" not in str(error):
            raise
    buffer.seek(0)  # a row longer than Arrow's 1 MiB block: read the rows as one block
    return pacsv.read_csv(buffer, read_options=pacsv.ReadOptions(column_names=names, block_size=size + 1),
                          convert_options=convert)


def iter_copy_blocks(engine, select, columns: list[tuple[str, pa.DataType]], key: str, after, block: int):
    """Stream a query's rows as Arrow blocks of `block` rows, paging on `key` (keyset: `key > last` each time).

    `select(last)` returns the SELECT (a psycopg `sql.Composable`) for the rows after `last`, ordered by `key`.
    One read transaction, so every block sees the same state.
    """
    with psycopg_cursor(engine) as cur:
        last = after
        while True:
            query = sql.SQL("COPY ({} LIMIT {}) TO STDOUT (FORMAT csv)").format(select(last), sql.Literal(block))
            table = copy_to_arrow(cur, query, columns)
            if not table.num_rows:
                return
            yield table
            if table.num_rows < block:
                return
            last = table.column(key)[-1].as_py()


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _nul_rows(table: pa.Table) -> pa.Array | None:
    """Rows with a NUL character in a text column: PostgreSQL text cannot hold them."""
    mask = None
    for name in table.column_names:
        column = table.column(name)
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            hit = pc.fill_null(pc.match_substring(column, "\x00"), False)
            mask = hit if mask is None else pc.or_(mask, hit)
    if mask is None or not pc.any(mask).as_py():
        return None
    return mask


class IntakeStore:
    """Reads and writes the intake schema. Every statement is parameterized; identifiers are quoted."""

    def __init__(self, engine: Engine):
        self.engine = engine

    # -- drops ---------------------------------------------------------------------------
    def record_drop_check(self, *, source: str, drop_id: str, content_hash: str, path: Path, files: dict[str, str],
                          status: str, manifest: dict | None, error: str | None, wal_id: int) -> None:
        """Register a drop with the verdict of its integrity check (inside the check's WAL intent)."""
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    """
                    INSERT INTO intake.drops (source, drop_id, content_hash, path, files, status, manifest, error,
                                              checked_at, wal_id)
                    VALUES (:source, :drop_id, :hash, :path, CAST(:files AS jsonb), :status,
                            CAST(:manifest AS jsonb), :error, now(), :wal_id)
                    ON CONFLICT (source, drop_id) DO UPDATE
                       SET content_hash = EXCLUDED.content_hash, path = EXCLUDED.path, files = EXCLUDED.files,
                           registered_at = now(), status = EXCLUDED.status, manifest = EXCLUDED.manifest,
                           error = EXCLUDED.error, checked_at = EXCLUDED.checked_at, wal_id = EXCLUDED.wal_id
                    """
                ),
                {"source": source, "drop_id": drop_id, "hash": content_hash, "path": str(path),
                 "files": json.dumps(files), "status": status,
                 "manifest": json.dumps(manifest) if manifest is not None else None, "error": error,
                 "wal_id": wal_id},
            )

    def drop_state(self, source: str, drop_id: str) -> DropState | None:
        with self.engine.connect() as conn:
            row = conn.execute(text("SELECT status, error, manifest FROM intake.drops WHERE source = :s AND drop_id = :d"),
                               {"s": source, "d": drop_id}).one_or_none()
        return DropState(*row) if row else None

    def undo_drop(self, source: str, drop_id: str, kinds: list[str], error: str, wal_id: int) -> dict[str, int]:
        """Remove everything of the drop that is staged (every kind's partition, its quarantine and file rows) and
        mark it undone, in one transaction (inside the undo's WAL intent). The rows removed, by what they were."""
        removed: dict[str, int] = {}
        with psycopg_cursor(self.engine) as cur:
            # waits for a load of the drop still in its transaction (it holds the row FOR SHARE), then undoes it too
            cur.execute("SELECT status FROM intake.drops WHERE source = %s AND drop_id = %s FOR UPDATE",
                        (source, drop_id))
            for kind in kinds:
                part = partition_name(staging_table_name(source, kind), drop_id)
                cur.execute("SELECT to_regclass(%s)", (sql.Identifier("staging", part).as_string(cur),))
                if cur.fetchone()[0] is None:
                    continue
                cur.execute(sql.SQL("SELECT count(*) FROM staging.{}").format(sql.Identifier(part)))
                removed[f"staging.{staging_table_name(source, kind)}"] = cur.fetchone()[0]
                cur.execute(sql.SQL("DROP TABLE staging.{}").format(sql.Identifier(part)))
            cur.execute("DELETE FROM intake.quarantine WHERE source = %s AND drop_id = %s", (source, drop_id))
            removed["intake.quarantine"] = cur.rowcount
            cur.execute("DELETE FROM intake.files WHERE source = %s AND drop_id = %s", (source, drop_id))
            removed["intake.files"] = cur.rowcount
            cur.execute("UPDATE intake.drops SET status = 'undone', error = %s, wal_id = %s, checked_at = now() "
                        "WHERE source = %s AND drop_id = %s", (error, wal_id, source, drop_id))
        return removed

    def drop_stage_intents(self, source: str, drop_id: str, kinds: list[str]) -> list[tuple[int, str, str]]:
        """(id, key, status) of the WAL intents that staged a file of this drop and are not settled yet."""
        prefixes = [f"intake:{source}:{kind}:{drop_id}:" for kind in kinds]
        with self.engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT id, idempotency_key, status FROM wal.intents WHERE namespace = 'intake' "
                "AND operation = 'stage_file' AND status IN ('pending', 'failed', 'committed') "
                "AND idempotency_key ^@ ANY(CAST(:p AS text[])) ORDER BY id"), {"p": prefixes}).all()
        return [tuple(r) for r in rows]

    def drops(self) -> list[tuple[str, str]]:
        """(source, drop id) of every drop taken in, in the order they were registered."""
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(
                "SELECT source, drop_id FROM intake.drops ORDER BY registered_at")).all()]

    def drop_with_hash(self, source: str, content_hash: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(
                text("SELECT drop_id FROM intake.drops WHERE source = :s AND content_hash = :h "
                     "AND status NOT IN ('refused', 'undone') ORDER BY registered_at LIMIT 1"),
                {"s": source, "h": content_hash},
            ).scalar_one_or_none()

    # -- loading -------------------------------------------------------------------------
    def load_file(
        self,
        *,
        source: str,
        kind: str,
        drop_id: str,
        path: Path,
        columns: list[tuple[str, pa.DataType]],
        blocks: Iterable,
        wal_id: int | None = None,
        sha256: str | None = None,
        on_block=None,
    ) -> FileLoad:
        """Replace this drop's rows for `kind` with the decoded `blocks`, atomically.

        `wal_id` is the WAL intent this load carries out: every staged and quarantined row, and the
        `intake.files` row (a foreign key, so the load cannot commit before its intent), hold it.
        """
        table = staging_table_name(source, kind)
        part = partition_name(table, drop_id)
        names = [sql_name(name) for name, _ in columns]
        if len(set(names)) != len(names):
            dupes = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"source {source} file {kind}: columns {dupes} collide as SQL names")
        load = FileLoad(source, drop_id, kind, path.name, f"staging.{table}")
        sha = sha256 or file_sha256(path)
        with psycopg_cursor(self.engine) as cur:
            # one transaction: partition, quarantine and counts together; the drop must not be refused or undone
            # (the row stays shared-locked, so an undo of the drop waits for this load, then removes it too)
            cur.execute("SELECT status, error FROM intake.drops WHERE source = %s AND drop_id = %s FOR SHARE",
                        (source, drop_id))
            state = cur.fetchone()
            if state is not None and state[0] in ("refused", "undone"):
                raise DropNotTaken(f"{source} drop {drop_id} was {state[0]}, so its {kind} file is not staged: "
                                   f"{state[1] or 'see data-mash status'}")
            self._ensure_table(cur, source, kind, table, names, columns)
            replace_partition(cur, "staging", table, part, drop_id)
            cur.execute(
                "DELETE FROM intake.quarantine WHERE source = %s AND drop_id = %s AND kind = %s",
                (source, drop_id, kind),
            )
            for result in blocks:
                good, bad = self._split_nul_rows(result.table, result.quarantine, columns)
                if good.num_rows:
                    ordered = good.select(["record_no", *[name for name, _ in columns]]).rename_columns(
                        ["record_no", *names])
                    ordered = ordered.add_column(0, "wal_id", pa.array([wal_id] * good.num_rows, pa.int64()))
                    ordered = ordered.add_column(0, "drop_id", pa.array([drop_id] * good.num_rows, pa.string()))
                    copy_arrow(cur, "staging", part, ordered)
                if bad.num_rows:
                    self._copy_quarantine(cur, source, drop_id, kind, path.name, bad, load, wal_id)
                load.records_parsed += good.num_rows
                if on_block is not None:
                    on_block(load)
            cur.execute(
                """
                INSERT INTO intake.files (source, drop_id, kind, file_name, file_sha256, file_bytes,
                                          records_read, records_parsed, records_quarantined, staging_table, wal_id)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (source, drop_id, kind) DO UPDATE SET
                    file_name = EXCLUDED.file_name, file_sha256 = EXCLUDED.file_sha256,
                    file_bytes = EXCLUDED.file_bytes, records_read = EXCLUDED.records_read,
                    records_parsed = EXCLUDED.records_parsed,
                    records_quarantined = EXCLUDED.records_quarantined,
                    staging_table = EXCLUDED.staging_table, wal_id = EXCLUDED.wal_id, loaded_at = now()
                """,
                (source, drop_id, kind, path.name, sha, path.stat().st_size, load.records_read,
                 load.records_parsed, load.records_quarantined, load.staging_table, wal_id),
            )
        return load

    @staticmethod
    def _split_nul_rows(good: pa.Table, bad: pa.Table, columns) -> tuple[pa.Table, pa.Table]:
        """Move rows whose text holds NUL (which PostgreSQL text cannot store) to the quarantine."""
        mask = _nul_rows(good)
        if mask is None:
            return good, bad
        hits = good.filter(mask)
        first_field = []
        for i in range(hits.num_rows):  # only the rare bad rows are looped over
            name = next(
                n for n, t in columns
                if pa.types.is_string(t) and "\x00" in (hits.column(n)[i].as_py() or "")
            )
            first_field.append(name)
        extra = pa.table(
            {
                "record_no": hits.column("record_no").cast(pa.int64()),
                "offset": pa.nulls(hits.num_rows, pa.int64()),
                "field": pa.array(first_field, pa.string()),
                "reason": pa.array(["invalid_text"] * hits.num_rows, pa.string()),
                "detail": pa.array(["text contains a NUL character, which PostgreSQL cannot store"] * hits.num_rows),
                "raw": pa.nulls(hits.num_rows, pa.binary()),
            }
        )
        bad = pa.concat_tables([bad.select(list(QUARANTINE_COLUMNS)).cast(extra.schema), extra]) if bad.num_rows else extra
        return good.filter(pc.invert(mask)), bad

    def _copy_quarantine(self, cur, source, drop_id, kind, file_name, bad: pa.Table, load: FileLoad, wal_id) -> None:
        with cur.copy(
            "COPY intake.quarantine (source, drop_id, kind, file_name, record_no, byte_offset, field, reason, detail, "
            "raw, wal_id) FROM STDIN"
        ) as copy:
            for row in bad.select(list(QUARANTINE_COLUMNS)).to_pylist():
                copy.write_row(
                    (source, drop_id, kind, file_name, row["record_no"], row["offset"], row["field"],
                     row["reason"], row["detail"], row["raw"], wal_id)
                )
                load.quarantine_by_reason[row["reason"]] = load.quarantine_by_reason.get(row["reason"], 0) + 1
        load.records_quarantined += bad.num_rows

    def _ensure_table(self, cur, source, kind, table, names, columns) -> None:
        """Create the staging table for this layout, or add columns a newer layout brings."""
        cur.execute("SELECT columns FROM intake.staging_tables WHERE table_name = %s FOR UPDATE", (table,))
        row = cur.fetchone()
        wanted = {n: pg_type(t) for n, (_, t) in zip(names, columns)}
        if row is None:
            cur.execute(
                sql.SQL("CREATE TABLE IF NOT EXISTS staging.{} (drop_id text NOT NULL, wal_id bigint, "
                        "record_no bigint NOT NULL, {}, "
                        "PRIMARY KEY (drop_id, record_no)) PARTITION BY LIST (drop_id)").format(
                    sql.Identifier(table),
                    sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in wanted.items()),
                )
            )
            guard_table(cur, "staging", table)
            cur.execute(
                "INSERT INTO intake.staging_tables (table_name, source, kind, columns) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (table_name) DO NOTHING",
                (table, source, kind, json.dumps(wanted)),
            )
            return
        existing: dict[str, str] = row[0]
        for name, type_ in wanted.items():
            if name not in existing:
                cur.execute(sql.SQL("ALTER TABLE staging.{} ADD COLUMN {} {}").format(
                    sql.Identifier(table), sql.Identifier(name), sql.SQL(type_)))
            elif existing[name] != type_:
                raise ValueError(
                    f"staging.{table}.{name} is {existing[name]} but the layout of {source}/{kind} now says {type_}; "
                    "a layout that changes a column's type needs a new source name or a migration"
                )
        if any(n not in existing for n in wanted):
            cur.execute("UPDATE intake.staging_tables SET columns = %s WHERE table_name = %s",
                        (json.dumps({**existing, **wanted}), table))

    # -- proof -----------------------------------------------------------------------------
    def accounting(self, source: str, kind: str, drop_id: str) -> dict[str, int]:
        """Recount from the database: staged + quarantined rows, and whether record numbers are 1..N exactly."""
        table = staging_table_name(source, kind)
        part = partition_name(table, drop_id)
        with self.engine.connect() as conn:
            recorded = conn.execute(
                text("SELECT records_read, records_parsed, records_quarantined FROM intake.files "
                     "WHERE source = :s AND drop_id = :d AND kind = :k"),
                {"s": source, "d": drop_id, "k": kind},
            ).one_or_none()
            if recorded is None:
                return {"recorded_read": -1, "staged": 0, "quarantined": 0, "distinct_records": 0, "max_record_no": 0}
            ident = f'staging."{part}"'
            row = conn.execute(
                text(
                    f"""
                    WITH seen AS (
                        SELECT record_no FROM {ident}
                        UNION ALL
                        SELECT record_no FROM intake.quarantine WHERE source = :s AND drop_id = :d AND kind = :k
                    )
                    SELECT (SELECT count(*) FROM {ident}),
                           (SELECT count(*) FROM intake.quarantine WHERE source = :s AND drop_id = :d AND kind = :k),
                           count(DISTINCT record_no), coalesce(max(record_no), 0)
                    FROM seen
                    """
                ),
                {"s": source, "d": drop_id, "k": kind},
            ).one()
        return {
            "recorded_read": recorded[0],
            "staged": row[0],
            "quarantined": row[1],
            "distinct_records": row[2],
            "max_record_no": row[3],
        }

    def quarantine_examples(self, source: str, kind: str, drop_id: str, limit: int = 5) -> list[dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT record_no, field, reason, detail FROM intake.quarantine "
                     "WHERE source = :s AND drop_id = :d AND kind = :k ORDER BY record_no LIMIT :n"),
                {"s": source, "d": drop_id, "k": kind, "n": limit},
            ).mappings().all()
        return [dict(r) for r in rows]

    def column_stats(self, source: str, kind: str, drop_id: str, columns: list[tuple[str, pa.DataType]]) -> dict[str, dict]:
        """Null count, distinct count, min and max per column, in one scan of the drop's partition."""
        part = partition_name(staging_table_name(source, kind), drop_id)
        names = [sql_name(n) for n, _ in columns]
        select = [sql.SQL("count(*)")]
        for n in names:
            ident = sql.Identifier(n)
            select += [sql.SQL("count({})").format(ident), sql.SQL("count(DISTINCT {})").format(ident),
                       # min and max cut to what a profile keeps (legacy.profile.VALUE_CAP, one more to tell)
                       sql.SQL("left(min({})::text, 65)").format(ident), sql.SQL("left(max({})::text, 65)").format(ident)]
        query = sql.SQL("SELECT {} FROM staging.{}").format(sql.SQL(", ").join(select), sql.Identifier(part))
        with psycopg_cursor(self.engine) as cur:
            cur.execute(query)
            row = cur.fetchone()
        total = row[0]
        stats = {}
        for i, (name, _) in enumerate(columns):
            non_null, distinct, lo, hi = row[1 + 4 * i: 5 + 4 * i]
            stats[name] = {"rows": total, "nulls": total - non_null, "distinct": distinct, "min": lo, "max": hi}
        return stats
