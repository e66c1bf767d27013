"""The targets of a wave in PostgreSQL and on disk, their reconciliation, and their compensation.

Each candidate of a wave goes where routing sends it:

| routed target        | new platform tables | legacy batch file | DQ queue | bridge | system of record after |
|----------------------|:-------------------:|:-----------------:|:--------:|:------:|------------------------|
| `new_platform`       | yes                 |                   |          |        | `new_platform`         |
| `coexistence_bridge` | yes                 | yes               |          | yes    | its legacy system      |
| `legacy_batch`       |                     | yes               |          |        | its legacy system      |
| `dq_queue`           |                     |                   | yes      |        | unchanged, no wave     |

Every load is one transaction that also updates the coexistence registry for the policies it
owns, after saving their registry rows (`targets.registry_saved`, by WAL entry), so that
compensation can put back exactly what was there. Rows carry their wave and WAL entry id; a
rerun of the same wave upserts and changes nothing. Compensation deletes by WAL entry id.
"""

import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql
from sqlalchemy import Engine, text

from canonical.tables import MONEY, V1_TABLES
from canonical.targets import TargetMapping, expected_select, load_target_mapping
from legacy import outbound
from resources.book_store import in_book
from resources.database import DatabaseResource, data_mash_home, psycopg_cursor
from resources.intake_store import copy_arrow, copy_to_arrow, file_sha256

# which routed targets each target asset takes from a wave's candidates
SCOPE = {
    "new_platform": ("new_platform", "coexistence_bridge"),
    "legacy_batch": ("legacy_batch", "coexistence_bridge"),
    "dq_queue": ("dq_queue",),
    "coexistence_bridge": ("coexistence_bridge",),
}
# whose registry rows each target asset moves (the policies it is the final destination of)
OWNS = {"new_platform": ("new_platform",), "legacy_batch": ("legacy_batch",), "dq_queue": (),
        "coexistence_bridge": ("coexistence_bridge",)}
REGISTRY_COLUMNS = ["policy_id", "source_system", "system_of_record", "planned_target", "wave", "routing_rule",
                    "rule_set_version", "pinned", "since", "updated_at", "wal_id"]


class TargetError(RuntimeError):
    """A load that must not go on (a policy already loaded by another wave, a wave still loading)."""


@dataclass
class LoadResult:
    policies: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    inserted: dict[str, int] = field(default_factory=dict)
    updated: dict[str, int] = field(default_factory=dict)
    removed: dict[str, int] = field(default_factory=dict)
    registry_moved: int = 0
    detail: dict = field(default_factory=dict)

    @property
    def changed(self) -> int:
        return sum(self.inserted.values()) + sum(self.updated.values()) + sum(self.removed.values())


def per_policy_hash(queries: dict[str, sql.Composable]) -> sql.Composable:
    """SQL (pn, h): one md5 per policy over the rows `(pn, r)` that each table's query gives (`r`: a row as text)."""
    per_table = sql.SQL(" UNION ALL ").join(
        sql.SQL("SELECT pn, {t} AS t, md5(string_agg(r, E'\\n' ORDER BY r)) AS h FROM ({q}) q GROUP BY pn").format(
            t=sql.Literal(name), q=query) for name, query in queries.items())
    return sql.SQL("SELECT pn, md5(string_agg(t || ':' || h, '|' ORDER BY t)) AS h FROM ({}) x GROUP BY pn").format(
        per_table)


def platform_rows(t, wave_id: str | None = None) -> sql.Composable:
    """SQL (pn, r): the new platform's rows of table `t` for the policies in temp table `scope` (of one wave)."""
    return sql.SQL("SELECT x.policy_number AS pn, ROW({})::text AS r FROM new_platform.{} x JOIN scope "
                   "ON scope.policy_id = x.policy_number{}").format(
        sql.SQL(", ").join(sql.SQL("x.{}").format(sql.Identifier(c)) for c in t.columns), sql.Identifier(t.name),
        sql.SQL(" WHERE x.wave_id = {}").format(sql.Literal(wave_id)) if wave_id else sql.SQL(""))


def image_rows(t, scope: str = "scope") -> sql.Composable:
    """SQL (pn, r, columns...): the rows the mapping makes of the book's current version of the policies of temp
    table `scope`: what the new platform holds when it agrees with legacy (the same text as `platform_rows`)."""
    parts = []
    for source in t.sources:
        exprs = expected_select(t, source, "c")
        parts.append(sql.SQL("SELECT c.policy_id AS pn, ROW({})::text AS r, {} FROM canonical.{} c JOIN {} "
                             "USING (policy_id) WHERE {}").format(
            sql.SQL(", ".join(exprs)),
            sql.SQL(", ").join(sql.SQL(e + " AS {}").format(sql.Identifier(c)) for e, c in zip(exprs, t.columns)),
            sql.Identifier(source.table), sql.Identifier(scope), in_book("c")))
    return sql.SQL(" UNION ALL ").join(parts)


def platform_hashes(mapping: TargetMapping, wave_id: str | None = None) -> sql.Composable:
    """SQL (pn, h): each `scope` policy's content hash on the new platform."""
    return per_policy_hash({t.name: platform_rows(t, wave_id) for t in mapping.tables.values()})


def platform_written_at(mapping: TargetMapping, scope: str = "scope") -> sql.Composable:
    """SQL (pn, at): when the platform last wrote a row of each policy of temp table `scope` (its rows' `loaded_at`:
    set by a wave, the sync, or the platform's own writes)."""
    return sql.SQL("SELECT pn, max(at) AS at FROM ({}) w GROUP BY pn").format(sql.SQL(" UNION ALL ").join(
        sql.SQL("SELECT x.policy_number AS pn, max(x.loaded_at) AS at FROM new_platform.{} x JOIN {} s "
                "ON s.policy_id = x.policy_number GROUP BY 1").format(sql.Identifier(t), sql.Identifier(scope))
        for t in mapping.tables))


def image_hashes(mapping: TargetMapping, scope: str = "scope") -> sql.Composable:
    """SQL (pn, h): each policy's content hash as the mapping makes it of the book (legacy's version), for the
    policies of temp table `scope`."""
    return per_policy_hash({t.name: sql.SQL("SELECT pn, r FROM ({}) i").format(image_rows(t, scope))
                            for t in mapping.tables.values()})


def _scope(cur, wave_id: str, targets: tuple[str, ...], policy_id: str | None = None) -> int:
    """A temp table `scope` of the wave's candidates routed to these targets."""
    cur.execute("DROP TABLE IF EXISTS pg_temp.scope")
    cur.execute("CREATE TEMP TABLE scope (policy_id text PRIMARY KEY, target text) ON COMMIT DROP")
    cur.execute("INSERT INTO scope SELECT policy_id, target FROM waves.candidates WHERE wave_id = %s AND target = ANY(%s)"
                + (" AND policy_id = %s" if policy_id else ""), (wave_id, list(targets), *([policy_id] if policy_id else [])))
    count = cur.rowcount
    cur.execute("ANALYZE scope")
    return count


def _scope_ranges(cur, block: int) -> list[tuple[str, str]]:
    """Policy id ranges (lo, hi] of `block` policies each over the temp table `scope`."""
    cur.execute("SELECT policy_id FROM scope ORDER BY policy_id")
    ids = [r[0] for r in cur.fetchall()]
    return [(ids[i - 1] if i else "", ids[min(i + block, len(ids)) - 1]) for i in range(0, len(ids), block)]


def _move_registry(cur, wave_id: str, wal_id: int, owned: tuple[str, ...], to_system: str | None, now: datetime,
                   actor: str) -> int:
    """Point the registry of the wave's policies routed to `owned` at this wave (and `to_system`), saving each row
    first. Only rows that change are touched, so a rerun changes nothing."""
    if not owned:
        return 0
    moving = ("FROM waves.candidates c WHERE c.wave_id = %(w)s AND c.target = ANY(%(owned)s) "
              "AND c.policy_id = r.policy_id AND (r.system_of_record, r.wave) IS DISTINCT FROM "
              "(coalesce(%(to)s, r.system_of_record), %(w)s)")
    params = {"w": wave_id, "owned": list(owned), "to": to_system, "wal": wal_id, "now": now, "actor": actor}
    cur.execute("INSERT INTO targets.registry_saved SELECT %(wal)s, r.* FROM coexistence.registry r WHERE EXISTS "
                "(SELECT 1 " + moving + ") ON CONFLICT DO NOTHING", params)
    cur.execute(
        "INSERT INTO coexistence.history (policy_id, at, change, from_system, to_system, from_target, to_target, rule, "
        "rule_set_version, reason, actor, wal_id) SELECT r.policy_id, %(now)s, 'wave_load', r.system_of_record, "
        "coalesce(%(to)s, r.system_of_record), r.planned_target, c.target, r.routing_rule, r.rule_set_version, "
        "'wave ' || %(w)s || ' loaded it for ' || c.target, %(actor)s, %(wal)s FROM coexistence.registry r, "
        "waves.candidates c WHERE c.wave_id = %(w)s AND c.target = ANY(%(owned)s) AND c.policy_id = r.policy_id "
        "AND (r.system_of_record, r.wave) IS DISTINCT FROM (coalesce(%(to)s, r.system_of_record), %(w)s)", params)
    cur.execute("UPDATE coexistence.registry r SET system_of_record = coalesce(%(to)s, r.system_of_record), "
                "wave = %(w)s, since = %(now)s, updated_at = %(now)s, wal_id = %(wal)s " + moving, params)
    return cur.rowcount


def _restore_registry(cur, wal_id: int, policy_id: str | None, now: datetime, actor: str, reason: str) -> int:
    """Put back the registry rows a load replaced (saved under its WAL entry), and record it in the history."""
    only = " AND s.policy_id = %(p)s" if policy_id else ""
    params = {"wal": wal_id, "p": policy_id, "now": now, "actor": actor, "reason": reason}
    cur.execute(
        "INSERT INTO coexistence.history (policy_id, at, change, from_system, to_system, from_target, to_target, rule, "
        "rule_set_version, reason, actor, wal_id) SELECT r.policy_id, %(now)s, 'rollback', r.system_of_record, "
        "s.system_of_record, r.planned_target, s.planned_target, s.routing_rule, s.rule_set_version, %(reason)s, "
        "%(actor)s, %(wal)s FROM coexistence.registry r JOIN targets.registry_saved s USING (policy_id) "
        "WHERE s.saved_by_wal = %(wal)s" + only, params)
    assignments = ", ".join(f"{c} = s.{c}" for c in REGISTRY_COLUMNS if c != "policy_id")
    cur.execute(f"UPDATE coexistence.registry r SET {assignments} FROM targets.registry_saved s "
                "WHERE s.policy_id = r.policy_id AND s.saved_by_wal = %(wal)s" + only, params)
    restored = cur.rowcount
    cur.execute("DELETE FROM targets.registry_saved s WHERE s.saved_by_wal = %(wal)s" + only, params)
    return restored


def _fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class TargetStore:
    def __init__(self, engine: Engine, outbound_dir: Path, mapping: TargetMapping | None = None):
        self.engine = engine
        self.outbound_dir = Path(outbound_dir)
        self.mapping = mapping or load_target_mapping()
        self.before_publish = None  # drills: called between recording a batch and moving it into the pickup folder

    # -- readiness ------------------------------------------------------------------------
    def readiness(self) -> dict:
        """Is the new platform's schema there at the mapping's version, the connection alive, the outbound
        folder writable? Returns observed facts and a list of problems (empty when ready)."""
        problems, observed = [], {"mapping_version": self.mapping.version}
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SET LOCAL statement_timeout = 5000"))
                conn.execute(text("SELECT 1"))
                row = conn.execute(text("SELECT version FROM targets.schema_versions WHERE target = :t"),
                                   {"t": self.mapping.target}).one_or_none()
                columns = conn.execute(text(
                    "SELECT table_name, array_agg(column_name::text ORDER BY ordinal_position) FROM information_schema.columns "
                    "WHERE table_schema = :s GROUP BY 1"), {"s": self.mapping.target}).all()
        except Exception as error:  # the gate reports it; the wave must not load
            return {"observed": {**observed, "connection": f"failed: {type(error).__name__}"},
                    "problems": [f"target database unreachable: {type(error).__name__}: {error}"[:300]]}
        observed["connection"] = "alive"
        observed["schema_version"] = row[0] if row else None
        if row is None or row[0] != self.mapping.version:
            problems.append(f"{self.mapping.target} schema is at version {row[0] if row else 'none'}, "
                            f"the mapping needs {self.mapping.version}")
        present = dict(columns)
        for t in self.mapping.tables.values():
            want = [*t.columns, "wave_id", "wal_id", "loaded_at"]
            if present.get(t.name) != want:
                problems.append(f"{self.mapping.target}.{t.name} is missing or has other columns than the mapping's")
        observed["tables"] = len(present)
        try:
            self.outbound_dir.mkdir(parents=True, exist_ok=True)
            probe = self.outbound_dir / f".ready-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
            observed["outbound_folder"] = "writable"
        except OSError as error:
            problems.append(f"legacy batch folder {self.outbound_dir} is not writable: {error.strerror}")
            observed["outbound_folder"] = "not writable"
        return {"observed": observed, "problems": problems}

    # -- new platform ---------------------------------------------------------------------
    def load_new_platform(self, wave_id: str, wal_id: int, *, actor: str, on_block=None) -> LoadResult:
        """Map the wave's policies to the new platform's tables where they are, in SQL (the mapping's `strict`
        select), straight into the tables on a first load, or through staging and an upsert when an earlier
        attempt of the wave left rows; move the registry. `on_block` is called after each table (drills)."""
        result = LoadResult()
        now = datetime.now(timezone.utc)
        with psycopg_cursor(self.engine) as cur:
            result.policies = _scope(cur, wave_id, SCOPE["new_platform"])
            cur.execute("SELECT count(*) FILTER (WHERE x.wave_id <> %s), count(*) FILTER (WHERE x.wave_id = %s) "
                        "FROM new_platform.policy x JOIN scope ON scope.policy_id = x.policy_number",
                        (wave_id, wave_id))
            taken, earlier = cur.fetchone()
            if taken:
                raise TargetError(f"{taken} policies of wave {wave_id} are already on the new platform from another wave")
            started = time.perf_counter()
            if earlier:  # an earlier attempt of this wave left rows: bring them to what the book says now
                self.stage_new_platform(cur, wave_id, wal_id, now, on_block=on_block)
                staged = time.perf_counter()
                self.upsert_new_platform(cur, result, wave_id)
            else:
                self.insert_new_platform(cur, result, wave_id, wal_id, now, on_block=on_block)
                staged = time.perf_counter()
            upserted = time.perf_counter()
            result.registry_moved = _move_registry(cur, wave_id, wal_id, OWNS["new_platform"], "new_platform", now, actor)
            result.detail.update({"path": "upsert" if earlier else "insert",
                                  "seconds_mapping": round(staged - started, 1),
                                  "seconds_upsert": round(upserted - staged, 1),
                                  "seconds_registry": round(time.perf_counter() - upserted, 1)})
            cur.execute("UPDATE targets.dq_queue q SET released_at = %s, released_by_wave = %s FROM scope "
                        "WHERE q.policy_id = scope.policy_id AND q.released_at IS NULL AND q.wave_id <> %s",
                        (now, wave_id, wave_id))
            result.detail["released_from_dq_queue"] = cur.rowcount
        return result

    def _mapped_rows(self, t, wave_id: str | None, wal_id: int, now: datetime) -> list[sql.Composable]:
        """SELECTs of the `scope` policies' current book version mapped to table `t` (one per canonical source),
        with the wave, this WAL entry and the load time: the columns of `new_platform.<t>` in order."""
        return [sql.SQL("SELECT {}, {}::text, {}::bigint, {}::timestamptz FROM canonical.{} c JOIN scope "
                        "USING (policy_id) WHERE {}").format(
            sql.SQL(", ".join(expected_select(t, source, "c", strict=True))), sql.Literal(wave_id),
            sql.Literal(wal_id), sql.Literal(now), sql.Identifier(source.table), in_book("c"))
            for source in t.sources]

    def insert_new_platform(self, cur, result: LoadResult, wave_id: str, wal_id: int, now: datetime, *,
                            on_block=None) -> None:
        """A first load: each table filled straight from the canonical tables, one statement per source."""
        for t in self.mapping.tables.values():
            target = sql.SQL("new_platform.{} ({})").format(sql.Identifier(t.name), sql.SQL(", ").join(
                sql.Identifier(c) for c in (*t.columns, "wave_id", "wal_id", "loaded_at")))
            inserted = 0
            for select in self._mapped_rows(t, wave_id, wal_id, now):
                cur.execute(sql.SQL("INSERT INTO {} {}").format(target, select))
                inserted += cur.rowcount
            result.inserted[t.name], result.updated[t.name], result.removed[t.name] = inserted, 0, 0
            result.rows[t.name] = inserted
            cur.execute(sql.SQL("ANALYZE new_platform.{}").format(sql.Identifier(t.name)))
            if on_block:
                on_block(t.name)

    def stage_new_platform(self, cur, wave_id: str | None, wal_id: int, now: datetime, *, on_block=None) -> None:
        """Temp tables `stage_<table>`: the `scope` policies' current book version mapped to the new platform, in
        SQL. Rows carry `wave_id` (None: the wave each policy is on the platform from) and this WAL entry."""
        for t in self.mapping.tables.values():
            stage = sql.Identifier(f"stage_{t.name}")
            cur.execute(sql.SQL("DROP TABLE IF EXISTS pg_temp.{}").format(stage))
            cur.execute(sql.SQL("CREATE TEMP TABLE {} (LIKE new_platform.{}) ON COMMIT DROP").format(
                stage, sql.Identifier(t.name)))
            if wave_id is None:  # filled in from the baseline once staged
                cur.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN wave_id DROP NOT NULL").format(stage))
            for select in self._mapped_rows(t, wave_id, wal_id, now):
                cur.execute(sql.SQL("INSERT INTO {} {}").format(stage, select))
            if wave_id is None:
                cur.execute(sql.SQL("UPDATE {} s SET wave_id = b.wave_id FROM sync.baseline b "
                                    "WHERE b.policy_id = s.policy_number").format(stage))
            if on_block:
                on_block(t.name)

    def upsert_new_platform(self, cur, result: LoadResult, wave_id: str | None) -> None:
        """Upsert each staged table into the new platform (rows that differ only) and delete the `scope` policies'
        rows the stage no longer has (of one wave, or, for None, whatever wave they came with)."""
        for t in self.mapping.tables.values():
            self._upsert(cur, t, wave_id, result)

    @staticmethod
    def _upsert(cur, t, wave_id: str | None, result: LoadResult) -> None:
        stage, target = sql.Identifier(f"stage_{t.name}"), sql.SQL("new_platform.{}").format(sql.Identifier(t.name))
        cols = [*t.columns, "wave_id", "wal_id"]
        ident = sql.SQL(", ").join(sql.Identifier(c) for c in cols)
        key = sql.SQL(", ").join(sql.Identifier(c) for c in t.key)
        excluded = sql.SQL(", ").join(sql.SQL("EXCLUDED.{}").format(sql.Identifier(c)) for c in cols)
        current = sql.SQL(", ").join(sql.SQL("x.{}").format(sql.Identifier(c)) for c in cols)
        # statistics first (staging is a fresh temp table, the target may have just grown or been emptied by a
        # rollback): without them the planner picks nested loops over millions of rows
        cur.execute(sql.SQL("ANALYZE {}").format(stage))
        cur.execute(sql.SQL(
            "WITH up AS (INSERT INTO {target} AS x ({ident}, loaded_at) SELECT {ident}, loaded_at FROM {stage} "
            "ON CONFLICT ({key}) DO UPDATE SET ({ident}, loaded_at) = ({excluded}, EXCLUDED.loaded_at) "
            "WHERE ({current}) IS DISTINCT FROM ({excluded}) RETURNING (xmax = 0) AS inserted) "
            "SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM up").format(
            target=target, ident=ident, stage=stage, key=key, excluded=excluded, current=current))
        result.inserted[t.name], result.updated[t.name] = cur.fetchone()
        cur.execute(sql.SQL("ANALYZE {}").format(target))
        # rows of this wave's policies that the book no longer has (a coverage removed since the last run)
        match = sql.SQL(" AND ").join(sql.SQL("s.{0} = x.{0}").format(sql.Identifier(c)) for c in t.key)
        cur.execute(sql.SQL("DELETE FROM {target} x USING scope WHERE x.policy_number = scope.policy_id "
                            "{w} AND NOT EXISTS (SELECT 1 FROM {stage} s WHERE {match})").format(
            target=target, w=sql.SQL("AND x.wave_id = {}").format(sql.Literal(wave_id)) if wave_id else sql.SQL(""),
            stage=stage, match=match))
        result.removed[t.name] = cur.rowcount
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(stage))
        result.rows[t.name] = cur.fetchone()[0]

    # -- legacy batch ---------------------------------------------------------------------
    def batch_path(self, wave_id: str) -> Path:
        """Where the mainframe picks the batch up."""
        return self.outbound_dir / "legacy_batch" / f"POLOUT-{wave_id}.dat"

    def pending_path(self, wave_id: str) -> Path:
        """Where the batch is written first: beside the pickup folder, not in it (same file system, for the rename)."""
        return self.outbound_dir / ".pending" / "legacy_batch" / f"POLOUT-{wave_id}.dat"

    def write_legacy_batch(self, wave_id: str, wal_id: int, *, actor: str, block: int = 100_000) -> LoadResult:
        """Write the wave's legacy-serviced policies as a POLOUT file, block by block, aside; record it; then, once
        the database has it, move it into the pickup folder."""
        now = datetime.now(timezone.utc)
        with psycopg_cursor(self.engine) as cur:
            policies = _scope(cur, wave_id, SCOPE["legacy_batch"])
            result = self.deliver_batch(cur, wave_id, wal_id, now,
                                        (self._batch_rows(cur, lo, hi) for lo, hi in _scope_ranges(cur, block)))
            result.policies = policies
            result.registry_moved = _move_registry(cur, wave_id, wal_id, OWNS["legacy_batch"], None, now, actor)
        self.publish(result)
        return result

    def publish(self, result: LoadResult) -> None:
        """After the transaction that recorded a batch as `written` committed: move it from beside the pickup folder
        into it, and record it `delivered`. A crash before this leaves a recorded file outside the pickup folder,
        which compensation withdraws (or a rerun writes again); never an unrecorded file where the mainframe looks."""
        publication = result.detail.pop("publish", None)
        if publication is None:
            return
        if self.before_publish is not None:
            self.before_publish()
        pending, path = Path(publication["pending"]), Path(publication["path"])
        os.replace(pending, path)
        _fsync_dir(path.parent)
        with psycopg_cursor(self.engine) as cur:
            cur.execute("UPDATE targets.outbound_files SET status = 'delivered' WHERE file_id = %s AND status = "
                        "'written'", (publication["file_id"],))

    def deliver_batch(self, cur, batch_id: str, wal_id: int, now: datetime, blocks, tag: str | None = None) -> LoadResult:
        """Write POLOUT-<batch_id>.dat from `blocks` of (canonical policy columns, coverage count and total limit),
        fsynced beside the pickup folder, and record it `written` with its records in the caller's transaction; the
        caller `publish`es it once that transaction committed (a rerun that writes the same bytes keeps the delivered
        file). Each record carries `tag` (default the batch id: a wave's id)."""
        result = LoadResult()
        path, pending = self.batch_path(batch_id), self.pending_path(batch_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        pending.parent.mkdir(parents=True, exist_ok=True)
        cur.execute("DROP TABLE IF EXISTS pg_temp.batch_records")
        cur.execute("CREATE TEMP TABLE batch_records (policy_id text, record_no bigint) ON COMMIT DROP")
        records, premium = 0, 0
        with open(pending, "wb") as f:
            for policies, summary in blocks:
                f.write(outbound.encode_policies(policies, summary.column("coverage_count"),
                                                 summary.column("total_limit"), tag or batch_id))
                copy_arrow(cur, "pg_temp", "batch_records", pa.table({
                    "policy_id": policies.column("policy_id"),
                    "record_no": pa.array(range(records + 1, records + policies.num_rows + 1), pa.int64())}))
                records += policies.num_rows
                premium += pc.sum(policies.column("annual_premium")).as_py() or 0
            f.flush()
            os.fsync(f.fileno())
        digest = file_sha256(pending)
        cur.execute("SELECT file_id, sha256, status FROM targets.outbound_files WHERE wave_id = %s "
                    "AND status IN ('written', 'delivered')", (batch_id,))
        existing = cur.fetchone()
        if existing and existing[1] == digest and existing[2] == "delivered" and path.exists():
            pending.unlink()
            result.detail = {"file": str(path), "sha256": digest, "unchanged": True}
        else:
            if existing:
                cur.execute("DELETE FROM targets.outbound_records WHERE file_id = %s", (existing[0],))
                cur.execute("DELETE FROM targets.outbound_files WHERE file_id = %s", (existing[0],))
            cur.execute("INSERT INTO targets.outbound_files (wave_id, path, records, sha256, annual_premium, status, "
                        "written_at, wal_id) VALUES (%s, %s, %s, %s, %s, 'written', %s, %s) RETURNING file_id",
                        (batch_id, str(path), records, digest, premium, now, wal_id))
            file_id = cur.fetchone()[0]
            cur.execute("INSERT INTO targets.outbound_records (file_id, policy_id, record_no) "
                        "SELECT %s, policy_id, record_no FROM batch_records", (file_id,))
            cur.execute("ANALYZE targets.outbound_records")
            result.inserted["records"] = records
            result.detail = {"file": str(path), "sha256": digest, "unchanged": False,
                             "publish": {"file_id": file_id, "pending": str(pending), "path": str(path)}}
        result.rows["records"] = records
        return result

    def _batch_rows(self, cur, lo: str = "", hi: str | None = None) -> tuple[pa.Table, pa.Table]:
        """Canonical rows of the `scope` policies in (lo, hi] for the batch file, and their coverage count and
        total limit, both in policy id order."""
        cols = [(n, V1_TABLES["policies"].column(n).type) for n in outbound.POLICY_COLUMNS]
        within = sql.SQL("s.policy_id > {}").format(sql.Literal(lo)) + (
            sql.SQL(" AND s.policy_id <= {}").format(sql.Literal(hi)) if hi is not None else sql.SQL(""))
        policies = copy_to_arrow(cur, sql.SQL(
            "COPY (SELECT {} FROM canonical.policies c JOIN scope s USING (policy_id) WHERE {} AND {} "
            "ORDER BY c.policy_id) TO STDOUT (FORMAT csv)").format(
            sql.SQL(", ").join(sql.SQL("c.{}").format(sql.Identifier(n)) for n, _ in cols), in_book("c"), within),
            cols)
        summary = copy_to_arrow(cur, sql.SQL(
            "COPY (SELECT s.policy_id, count(v.policy_id), coalesce(sum(v.limit_amount), 0) FROM scope s "
            "LEFT JOIN canonical.coverages v ON v.policy_id = s.policy_id AND {} WHERE {} "
            "GROUP BY s.policy_id ORDER BY s.policy_id) TO STDOUT (FORMAT csv)").format(in_book("v"), within),
            [("policy_id", pa.string()), ("coverage_count", pa.int64()), ("total_limit", MONEY)])
        order = pa.table({"policy_id": policies.column("policy_id"), "row": pa.array(range(policies.num_rows), pa.int64())})
        summary = order.join(summary, "policy_id", join_type="left outer").sort_by("row")  # joins do not keep order
        return policies, summary

    # -- DQ queue and bridge --------------------------------------------------------------
    def queue_held_back(self, wave_id: str, wal_id: int) -> LoadResult:
        """Queue the wave's policies that routing holds back, with the rule and the data-quality findings."""
        result = LoadResult()
        now = datetime.now(timezone.utc)
        with psycopg_cursor(self.engine) as cur:
            result.policies = _scope(cur, wave_id, SCOPE["dq_queue"])
            cur.execute(
                "INSERT INTO targets.dq_queue AS q (policy_id, wave_id, source_system, routing_rule, reasons, dq_score, "
                "queued_at, wal_id) SELECT s.policy_id, %(w)s, p.source_system, "
                "CASE WHEN r.pinned THEN 'manual override' ELSE coalesce(r.routing_rule, 'unknown') END, "
                "CASE WHEN r.pinned THEN 'held back by a manual override' ELSE 'routing rule ' || "
                "coalesce(r.routing_rule, 'unknown') END || coalesce('; findings: ' || nullif(p.dq_findings, ''), ''), "
                "p.dq_score, %(now)s, %(wal)s FROM scope s JOIN canonical.policies p ON p.policy_id = s.policy_id "
                "AND EXISTS (SELECT 1 FROM canonical.current k WHERE k.policy_id = p.policy_id AND k.drop_key = p.drop_key) "
                "JOIN coexistence.registry r ON r.policy_id = s.policy_id "
                "ON CONFLICT (policy_id, wave_id) DO UPDATE SET routing_rule = EXCLUDED.routing_rule, "
                "reasons = EXCLUDED.reasons, dq_score = EXCLUDED.dq_score, wal_id = EXCLUDED.wal_id "
                "WHERE (q.routing_rule, q.reasons, q.dq_score, q.wal_id) IS DISTINCT FROM "
                "(EXCLUDED.routing_rule, EXCLUDED.reasons, EXCLUDED.dq_score, EXCLUDED.wal_id)",
                {"w": wave_id, "now": now, "wal": wal_id})
            result.inserted["queued"] = cur.rowcount
            cur.execute("SELECT count(*) FROM targets.dq_queue WHERE wave_id = %s", (wave_id,))
            result.rows["queued"] = cur.fetchone()[0]
        return result

    def record_bridge(self, wave_id: str, wal_id: int, *, actor: str) -> LoadResult:
        """Record the wave's bridge policies (on the new platform and in the legacy batch), legacy authoritative."""
        result = LoadResult()
        now = datetime.now(timezone.utc)
        with psycopg_cursor(self.engine) as cur:
            result.policies = _scope(cur, wave_id, SCOPE["coexistence_bridge"])
            cur.execute("SELECT count(*) FROM scope s WHERE NOT EXISTS (SELECT 1 FROM new_platform.policy x "
                        "WHERE x.policy_number = s.policy_id AND x.wave_id = %s)", (wave_id,))
            missing = cur.fetchone()[0]
            if missing:
                raise TargetError(f"{missing} bridge policies of wave {wave_id} are not on the new platform yet")
            cur.execute(
                "INSERT INTO targets.coexistence_bridge AS b (policy_id, wave_id, authoritative_system, legacy_system, "
                "since, wal_id) SELECT s.policy_id, %(w)s, r.system_of_record, r.source_system, %(now)s, %(wal)s "
                "FROM scope s JOIN coexistence.registry r USING (policy_id) "
                "ON CONFLICT (policy_id) DO UPDATE SET wave_id = EXCLUDED.wave_id, "
                "authoritative_system = EXCLUDED.authoritative_system, wal_id = EXCLUDED.wal_id "
                "WHERE (b.wave_id, b.authoritative_system, b.wal_id) IS DISTINCT FROM "
                "(EXCLUDED.wave_id, EXCLUDED.authoritative_system, EXCLUDED.wal_id)",
                {"w": wave_id, "now": now, "wal": wal_id})
            result.inserted["bridged"] = cur.rowcount
            result.rows["bridged"] = result.policies
            result.registry_moved = _move_registry(cur, wave_id, wal_id, OWNS["coexistence_bridge"], None, now, actor)
        return result

    # -- compensation ---------------------------------------------------------------------
    def compensate(self, operation: str, wave_id: str, wal_id: int, *, policy_id: str | None = None,
                   actor: str) -> dict:
        """Undo what one WAL entry of a wave wrote (all of it, or one policy's part). Safe to repeat."""
        now = datetime.now(timezone.utc)
        reason = f"rollback of wave {wave_id}" + (f" for policy {policy_id}" if policy_id else "")
        only = " AND policy_number = %(p)s" if policy_id else ""
        params = {"wal": wal_id, "p": policy_id, "w": wave_id, "now": now}
        undone: dict = {}
        with psycopg_cursor(self.engine) as cur:
            if operation == "load_new_platform":
                # by wave, not WAL entry: the nightly sync may have rewritten the wave's rows since (under its own
                # entry); the wave's policies leave the platform, and the sync's baseline, whole
                for t in reversed(list(self.mapping.tables)):
                    cur.execute(sql.SQL("DELETE FROM new_platform.{} WHERE wave_id = %(w)s" + only).format(
                        sql.Identifier(t)), params)
                    undone[t] = cur.rowcount
                cur.execute("DELETE FROM sync.baseline WHERE wave_id = %(w)s"
                            + (" AND policy_id = %(p)s" if policy_id else ""), params)
                undone["sync_baseline"] = cur.rowcount
                cur.execute("UPDATE targets.dq_queue SET released_at = NULL, released_by_wave = NULL "
                            "WHERE released_by_wave = %(w)s" + (" AND policy_id = %(p)s" if policy_id else ""), params)
                undone["unreleased_from_dq_queue"] = cur.rowcount
            elif operation == "write_legacy_batch":
                undone.update(self._withdraw_batch(cur, wave_id, wal_id, policy_id, now))
            elif operation == "queue_held_back":
                cur.execute("DELETE FROM targets.dq_queue WHERE wal_id = %(wal)s" +
                            (" AND policy_id = %(p)s" if policy_id else ""), params)
                undone["dq_queue"] = cur.rowcount
            elif operation == "record_bridge":
                cur.execute("DELETE FROM targets.coexistence_bridge WHERE wal_id = %(wal)s" +
                            (" AND policy_id = %(p)s" if policy_id else ""), params)
                undone["coexistence_bridge"] = cur.rowcount
            elif operation == "select_candidates":
                cur.execute("DELETE FROM waves.candidates WHERE wave_id = %(w)s AND wal_id = %(wal)s" +
                            (" AND policy_id = %(p)s" if policy_id else ""), params)
                undone["candidates"] = cur.rowcount
            else:
                raise TargetError(f"no compensation for WAL operation {operation!r}")
            undone["registry_restored"] = _restore_registry(cur, wal_id, policy_id, now, actor, reason)
        return undone

    def _withdraw_batch(self, cur, wave_id: str, wal_id: int, policy_id: str | None, now: datetime) -> dict:
        path = self.batch_path(wave_id)
        if policy_id:  # the file stays; the policy goes on the wave's withdrawal list for the mainframe job
            cur.execute("UPDATE targets.outbound_records r SET withdrawn_at = %s FROM targets.outbound_files f "
                        "WHERE f.file_id = r.file_id AND f.wal_id = %s AND f.status = 'delivered' AND r.policy_id = %s "
                        "AND r.withdrawn_at IS NULL", (now, wal_id, policy_id))
            if cur.rowcount:
                with open(path.with_suffix(".withdrawn"), "a", encoding="ascii") as f:
                    f.write(f"{policy_id}\n")
            return {"outbound_records_withdrawn": cur.rowcount}
        # delivered, or recorded but not yet moved into the pickup folder (a crash between the two)
        cur.execute("UPDATE targets.outbound_files SET status = 'withdrawn', withdrawn_at = %s "
                    "WHERE wal_id = %s AND status IN ('delivered', 'written') RETURNING path", (now, wal_id))
        withdrawn = [Path(r[0]) for r in cur.fetchall()]
        folder = path.parent / "withdrawn"
        moved = 0
        for p in {*withdrawn, path}:
            # the file in the pickup folder, and the one beside it that a crash left unmoved (recorded or not)
            for found, suffix in ((p, ""), (self.outbound_dir / ".pending" / p.parent.name / p.name, ".unpublished")):
                if found.exists():
                    folder.mkdir(exist_ok=True)
                    os.replace(found, folder / f"{found.name}{suffix}.{now:%Y%m%dT%H%M%S}")
                    moved += 1
        return {"outbound_files_withdrawn": len(withdrawn), "files_moved": moved}

    # -- reconciliation -------------------------------------------------------------------
    def reconcile(self, wave_id: str, target: str, examples: int = 5) -> list["ReconCheck"]:
        """Compare source and one target for a wave. New platform: counts per table, money totals to the cent and a
        content hash per policy, against canonical mapped in SQL. Legacy batch: the delivered file read back. DQ queue
        and bridge: every policy there. The result is also stored in `targets.reconciliations`."""
        with psycopg_cursor(self.engine) as cur:
            if target == "new_platform":
                checks = self._reconcile_new_platform(cur, wave_id, examples)
            elif target == "legacy_batch":
                checks = [self._reconcile_batch(cur, wave_id, examples)]
            else:
                checks = [self._reconcile_listed(cur, wave_id, target, examples)]
            cur.execute("INSERT INTO targets.reconciliations (wave_id, target, reconciled_at, passed, checks) "
                        "VALUES (%s, %s, %s, %s, %s)",
                        (wave_id, target, datetime.now(timezone.utc), all(c.passed for c in checks),
                         json.dumps([c.__dict__ for c in checks], default=str)))
        return checks

    def _reconcile_new_platform(self, cur, wave_id: str, examples: int) -> list["ReconCheck"]:
        checks = []
        _scope(cur, wave_id, SCOPE["new_platform"])
        # each policy's hash on the platform, once: the content check compares it, and with the sync's baseline it
        # tells which policies changed on either side since the wave loaded them: those are the nightly sync's to
        # settle and reconcile (`SyncStore.check`), not differences of this load
        cur.execute(sql.SQL("CREATE TEMP TABLE actual_hash ON COMMIT DROP AS {}").format(
            platform_hashes(self.mapping, wave_id)))
        handed_to_sync = self._hand_to_sync(cur, wave_id)
        cur.execute("SELECT count(*) FROM scope")
        policies = cur.fetchone()[0]
        cur.execute("ANALYZE scope")
        counts, money = {}, {}
        for t in self.mapping.tables.values():
            sums = [sql.SQL("coalesce(sum({}), 0)").format(sql.Identifier(c)) for c in t.money_columns]
            for side, query in (("expected", image_rows(t)), ("actual", self._actual_full(t, wave_id))):
                cur.execute(sql.SQL("SELECT count(*){} FROM ({}) q").format(
                    sql.SQL("").join(sql.SQL(", ") + s for s in sums), query))
                row = cur.fetchone()
                counts.setdefault(t.name, {})[side] = row[0]
                for c, v in zip(t.money_columns, row[1:]):
                    money.setdefault(f"{t.name}.{c}", {})[side] = str(v)
        cur.execute("SELECT count(*) FILTER (WHERE c.target = 'new_platform'), count(*) FILTER (WHERE "
                    "c.target = 'new_platform' AND r.system_of_record = 'new_platform' AND r.wave = %s) "
                    "FROM waves.candidates c JOIN coexistence.registry r USING (policy_id) WHERE c.wave_id = %s",
                    (wave_id, wave_id))
        moved = cur.fetchone()
        counts["registry (system of record new_platform)"] = {"expected": moved[0], "actual": moved[1]}
        bad_counts = {k: v for k, v in counts.items() if v["expected"] != v["actual"]}
        observed = {"policies": policies, "handed_to_sync": handed_to_sync, "tables": counts}
        checks.append(ReconCheck("new_platform", "row_counts", not bad_counts, observed,
                                 [f"{k}: expected {v['expected']}, found {v['actual']}" for k, v in bad_counts.items()]))
        bad_money = {k: v for k, v in money.items() if v["expected"] != v["actual"]}
        checks.append(ReconCheck("new_platform", "money_totals", not bad_money, money,
                                 [f"{k}: expected {v['expected']}, found {v['actual']}" for k, v in bad_money.items()]))
        cur.execute(sql.SQL(
            "WITH e AS ({}), a AS (SELECT a.* FROM actual_hash a JOIN scope ON scope.policy_id = a.pn) "
            "SELECT count(*), count(*) FILTER (WHERE e.h IS DISTINCT FROM a.h), "
            "(array_agg(coalesce(e.pn, a.pn) ORDER BY coalesce(e.pn, a.pn)) FILTER (WHERE e.h IS DISTINCT FROM a.h))[1:{}] "
            "FROM e FULL JOIN a ON a.pn = e.pn").format(image_hashes(self.mapping), sql.Literal(examples)))
        compared, differing, ids = cur.fetchone()
        checks.append(ReconCheck("new_platform", "content_hash", differing == 0,
                                 {"policies_compared": compared, "policies_differing": differing,
                                  "handed_to_sync": handed_to_sync}, ids or [], failing=differing))
        if all(c.passed for c in checks):
            self._agree(cur, wave_id)
        return checks

    @staticmethod
    def _hand_to_sync(cur, wave_id: str) -> int:
        """Take out of `scope` the policies either side changed since they last agreed (the sync's baseline): the
        nightly sync settles and proves those. A platform change counts only if the platform wrote the policy since;
        a row that changed without being written, like a cent lost, stays a difference of this load."""
        cur.execute("SELECT EXISTS (SELECT 1 FROM sync.baseline WHERE wave_id = %s)", (wave_id,))
        if not cur.fetchone()[0]:  # the wave's first reconciliation: nothing agreed yet, nothing to hand over
            return 0
        cur.execute("DELETE FROM scope s USING sync.baseline b JOIN canonical.current k USING (policy_id) "
                    "WHERE b.policy_id = s.policy_id AND (b.night IS NOT NULL OR b.legacy_hash <> k.content_hash)")
        handed = cur.rowcount
        cur.execute("CREATE TEMP TABLE moved ON COMMIT DROP AS SELECT s.policy_id FROM scope s JOIN sync.baseline b "
                    "USING (policy_id) LEFT JOIN actual_hash a ON a.pn = s.policy_id "
                    "WHERE b.platform_hash IS DISTINCT FROM a.h")
        cur.execute(sql.SQL("DELETE FROM scope s USING sync.baseline b, ({}) w WHERE b.policy_id = s.policy_id "
                            "AND w.pn = s.policy_id AND w.at > b.agreed_at").format(
            platform_written_at(load_target_mapping(), "moved")))
        return handed + cur.rowcount

    @staticmethod
    def _agree(cur, wave_id: str) -> None:
        """Record what reconciliation just proved the two sides agree on, for the `scope` policies: the sync's
        baseline (legacy's and the platform's hash), under the WAL entry of the wave's load."""
        cur.execute(
            "INSERT INTO sync.baseline AS b (policy_id, wave_id, legacy_hash, platform_hash, agreed_at, wal_id) "
            "SELECT s.policy_id, %(w)s, k.content_hash, a.h, now(), x.wal_id FROM scope s "
            "JOIN canonical.current k USING (policy_id) JOIN actual_hash a ON a.pn = s.policy_id "
            "JOIN new_platform.policy x ON x.policy_number = s.policy_id "
            "ON CONFLICT (policy_id) DO UPDATE SET (wave_id, legacy_hash, platform_hash, agreed_at, wal_id) = "
            "(EXCLUDED.wave_id, EXCLUDED.legacy_hash, EXCLUDED.platform_hash, EXCLUDED.agreed_at, EXCLUDED.wal_id) "
            "WHERE b.night IS NULL AND (b.wave_id, b.legacy_hash, b.platform_hash) IS DISTINCT FROM "
            "(EXCLUDED.wave_id, EXCLUDED.legacy_hash, EXCLUDED.platform_hash)", {"w": wave_id})

    def _reconcile_listed(self, cur, wave_id: str, target: str, examples: int) -> "ReconCheck":
        table = {"dq_queue": "targets.dq_queue", "coexistence_bridge": "targets.coexistence_bridge"}[target]
        _scope(cur, wave_id, SCOPE[target])
        cur.execute(sql.SQL(
            "SELECT (SELECT count(*) FROM scope), (SELECT count(*) FROM {t} WHERE wave_id = {w}), "
            "(SELECT array_agg(policy_id ORDER BY policy_id) FROM (SELECT policy_id FROM scope EXCEPT "
            "SELECT policy_id FROM {t} WHERE wave_id = {w} ORDER BY 1 LIMIT {n}) m)").format(
            t=sql.SQL(table), w=sql.Literal(wave_id), n=sql.Literal(examples)))
        want, have, missing = cur.fetchone()
        return ReconCheck(target, "row_counts", want == have and not missing, {"expected": want, "actual": have},
                          missing or [], failing=len(missing or []))

    @staticmethod
    def _actual_full(t, wave_id: str) -> sql.Composable:
        return sql.SQL("SELECT x.* FROM new_platform.{} x JOIN scope ON scope.policy_id = x.policy_number "
                       "WHERE x.wave_id = {}").format(sql.Identifier(t.name), sql.Literal(wave_id))

    def _reconcile_batch(self, cur, wave_id: str, examples: int) -> "ReconCheck":
        _scope(cur, wave_id, SCOPE["legacy_batch"])
        # a policy whose legacy version changed since the file was written (a later delta) is compared no more:
        # the file holds the version of its day
        cur.execute("DELETE FROM scope s USING canonical.current k, targets.outbound_files f WHERE k.policy_id = "
                    "s.policy_id AND f.wave_id = %s AND f.status = 'delivered' AND k.since > f.written_at RETURNING "
                    "s.policy_id", (wave_id,))
        newer = pa.array([r[0] for r in cur.fetchall()], pa.string())
        expected, _ = self._batch_rows(cur)
        cur.execute("SELECT path, sha256, records FROM targets.outbound_files WHERE wave_id = %s AND status = 'delivered'",
                    (wave_id,))
        row = cur.fetchone()
        observed = {"expected_records": expected.num_rows, "changed_in_legacy_since": len(newer)}
        if row is None:
            ok = expected.num_rows == 0
            return ReconCheck("legacy_batch", "file_read_back", ok, {**observed, "file": None},
                              [] if ok else ["no delivered legacy batch file"])
        path = Path(row[0])
        if not path.exists() or file_sha256(path) != row[1]:
            return ReconCheck("legacy_batch", "file_read_back", False, {**observed, "file": str(path)},
                              [f"{path.name} is missing or not the file delivered (sha256 differs)"])
        back = outbound.read_policies(path)
        cur.execute("SELECT policy_id FROM targets.outbound_records r JOIN targets.outbound_files f USING (file_id) "
                    "WHERE f.wave_id = %s AND f.status = 'delivered' AND r.withdrawn_at IS NOT NULL", (wave_id,))
        withdrawn = pa.array([r[0] for r in cur.fetchall()], pa.string())
        back = back.filter(pc.invert(pc.is_in(back.column("policy_id"), value_set=pa.concat_arrays([withdrawn, newer]))))
        zero = pa.scalar(0, MONEY)
        compare = [c for c in outbound.POLICY_COLUMNS]
        want = expected.select(compare).set_column(
            compare.index("face_amount"), "face_amount", pc.fill_null(expected.column("face_amount"), zero))
        mine = back.select(compare).cast(want.schema)
        differing = _differing_keys(want, mine, "policy_id")
        premium_expected = pc.sum(want.column("annual_premium")).as_py() or 0
        premium_file = pc.sum(mine.column("annual_premium")).as_py() or 0
        observed.update({"file": path.name, "records": back.num_rows, "annual_premium_expected": str(premium_expected),
                         "annual_premium_in_file": str(premium_file), "policies_differing": len(differing)})
        ok = back.num_rows == expected.num_rows and premium_expected == premium_file and not differing
        return ReconCheck("legacy_batch", "file_read_back", ok, observed, differing[:examples], failing=len(differing))

    def report(self, wave_id: str) -> list[dict]:
        """Per line of business, state and target: policies and in-force annual premium, in the book and landed."""
        with psycopg_cursor(self.engine) as cur:
            return self._report(cur, wave_id)

    def _report(self, cur, wave_id: str) -> list[dict]:
        # the join of the book's policies with their current version is estimated at a fraction of its rows (two
        # correlated key columns): with the batch records joined by a filter, a nested loop would compare every
        # candidate with every record (hours on a million-policy wave); hash joins take seconds
        cur.execute("SET LOCAL enable_nestloop = off")
        cur.execute("""
            SELECT p.line_of_business, coalesce(p.insured_state, '--'), c.target, count(*),
                   coalesce(sum(p.annual_premium) FILTER (WHERE p.status = 'in_force'), 0),
                   count(x.policy_number) + count(f.policy_id) + count(q.policy_id),
                   coalesce(sum(g.annual_premium) FILTER (WHERE x.status = 'ACTIVE'), 0)
                   + coalesce(sum(p.annual_premium) FILTER (WHERE f.policy_id IS NOT NULL AND x.policy_number IS NULL
                                                             AND p.status = 'in_force'), 0)
            FROM waves.candidates c
            JOIN canonical.current k ON k.policy_id = c.policy_id
            JOIN canonical.policies p ON p.policy_id = c.policy_id AND p.drop_key = k.drop_key
            LEFT JOIN new_platform.policy x ON x.policy_number = c.policy_id AND x.wave_id = %(w)s
            LEFT JOIN new_platform.rating g ON g.policy_number = c.policy_id AND g.wave_id = %(w)s
            LEFT JOIN (SELECT r.policy_id FROM targets.outbound_records r JOIN targets.outbound_files o USING (file_id)
                       WHERE o.wave_id = %(w)s AND o.status = 'delivered' AND r.withdrawn_at IS NULL) f
                   ON f.policy_id = c.policy_id AND c.target = 'legacy_batch'
            LEFT JOIN targets.dq_queue q ON q.policy_id = c.policy_id AND q.wave_id = %(w)s
            WHERE c.wave_id = %(w)s
            GROUP BY 1, 2, 3 ORDER BY 1, 2, 3""", {"w": wave_id})
        return [{"line_of_business": r[0], "state": r[1], "target": r[2], "policies": r[3],
                 "in_force_premium_before": str(r[4]), "landed": r[5],
                 "in_force_premium_after": str(r[6]) if r[2] != "dq_queue" else "held back"} for r in cur.fetchall()]

    def latest_reconciliations(self, wave_id: str) -> dict[str, dict]:
        """The last reconciliation of each target of the wave."""
        with self.engine.connect() as conn:
            rows = conn.execute(text("SELECT DISTINCT ON (target) * FROM targets.reconciliations WHERE wave_id = :w "
                                     "ORDER BY target, id DESC"), {"w": wave_id}).mappings().all()
        return {r["target"]: dict(r) for r in rows}


@dataclass
class ReconCheck:
    target: str
    name: str
    passed: bool
    observed: dict
    examples: list[str] = field(default_factory=list)
    failing: int = 0

    @property
    def description(self) -> str:
        state = "matches" if self.passed else "DIFFERS"
        return f"{self.target} {self.name} {state}" + ("" if self.passed else f": {'; '.join(self.examples[:5])}")


def _differing_keys(a: pa.Table, b: pa.Table, key: str) -> list[str]:
    """Keys whose rows differ between two tables of the same schema (present in one only, or different values)."""
    joined = a.join(b, key, join_type="full outer", left_suffix="_a", right_suffix="_b", coalesce_keys=True)
    differs = pa.array([False] * joined.num_rows, pa.bool_())
    for name in a.column_names:
        if name == key:
            continue
        x, y = joined.column(f"{name}_a"), joined.column(f"{name}_b")
        same = pc.or_kleene(pc.equal(x, y), pc.and_(pc.is_null(x), pc.is_null(y)))
        differs = pc.or_(differs, pc.invert(pc.fill_null(same, False)))
    return sorted(joined.column(key).filter(differs).to_pylist())


class TargetsResource(dg.ConfigurableResource):
    """The wave targets: the new platform's schema (in the Data Mash database) and the legacy batch folder
    (`outbound`; empty means `$DATA_MASH_HOME/outbound`)."""

    database: dg.ResourceDependency[DatabaseResource]
    outbound: str = ""

    def outbound_dir(self) -> Path:
        return Path(self.outbound) if self.outbound else data_mash_home() / "outbound"

    def store(self) -> TargetStore:
        return TargetStore(self.database.engine(), self.outbound_dir())
