"""The canonical book: the latest version of each policy, and the changes each drop brings.

A legacy system sends a full extract first and deltas after it (new, changed, cancelled policies,
each whole). `canonical.current` points each policy at the drop holding its latest version, with a
content hash over all its canonical rows (every table, business columns only: not record numbers,
WAL ids or scores). Applying a mapped drop, in the order the drops landed, compares hashes:

- a policy never seen is `new`; one whose hash differs is `changed` (or `cancelled` when its status
  became cancelled or lapsed); an equal hash is unchanged (its pointer moves to the newer drop);
- each change is a row in `canonical.changes` (version, hashes before and after, WAL entry);
- a drop mapped again (a backfill after a mapping change) is applied again: what the new mapping
  changes shows as changes, never as silent overwrites; an older drop never replaces a newer version.

Everything that reads "the book" (routing, waves, targets, reconciliation) joins `canonical.current`.
"""

from dataclasses import dataclass

from psycopg import sql
from sqlalchemy import Engine, text

from canonical.tables import V1_TABLES
from resources.database import psycopg_cursor

ENDED = ("cancelled", "lapsed")  # statuses that make a change a cancellation


def in_book(alias: str) -> sql.Composable:
    """SQL: the canonical row `alias` is of its policy's current version."""
    return sql.SQL("EXISTS (SELECT 1 FROM canonical.current k WHERE k.policy_id = {a}.policy_id "
                   "AND k.drop_key = {a}.drop_key)").format(a=sql.Identifier(alias))


@dataclass
class DropApplied:
    drop_key: str
    policies: int
    new: int
    changed: int
    cancelled: int
    unchanged: int


def policy_hashes(drop_key: str) -> sql.Composable:
    """SQL: (policy_id, hash) over every canonical table's rows of one drop, business columns only."""
    parts = []
    for table in V1_TABLES.values():
        columns = sql.SQL(", ").join(sql.Identifier(c) for c in table.names)
        parts.append(sql.SQL(
            "SELECT policy_id, {t} AS t, md5(string_agg(r, E'\\n' ORDER BY r)) AS h FROM "
            "(SELECT policy_id, ROW({c})::text AS r FROM canonical.{tab} WHERE drop_key = {d}) x GROUP BY policy_id").format(
            t=sql.Literal(table.name), c=columns, tab=sql.Identifier(table.name), d=sql.Literal(drop_key)))
    return sql.SQL("SELECT policy_id, md5(string_agg(t || ':' || h, '|' ORDER BY t)) AS hash FROM ({}) y "
                   "GROUP BY policy_id").format(sql.SQL(" UNION ALL ").join(parts))


class BookStore:
    def __init__(self, engine: Engine):
        self.engine = engine

    def pending(self) -> list[dict]:
        """Mapped drops not applied to the book as they are now (new, or mapped again), in landing order (a drop
        loaded without landing, like the benchmark's, by its mapping time)."""
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(text("""
                SELECT l.source, l.drop_id, l.source || ':' || l.drop_id AS drop_key, l.mapping_hash, l.wal_id,
                       (extract(epoch FROM coalesce(d.registered_at, l.loaded_at)) * 1000000)::bigint AS drop_seq
                FROM canonical.loads l LEFT JOIN intake.drops d USING (source, drop_id)
                WHERE l.table_name = 'policies' AND NOT EXISTS (
                    SELECT 1 FROM canonical.book_drops b WHERE b.drop_key = l.source || ':' || l.drop_id
                      AND b.mapping_hash = l.mapping_hash AND b.load_wal_id IS NOT DISTINCT FROM l.wal_id)
                ORDER BY drop_seq, l.source""")).mappings()]

    def apply(self, drop: dict, wal_id: int | None) -> DropApplied:
        """Compare one mapped drop with the book by content hash; record the changes; move the book's pointers."""
        key, seq = drop["drop_key"], drop["drop_seq"]
        params = {"key": key, "seq": seq, "source": drop["source"], "wal": wal_id, "ended": list(ENDED)}
        with psycopg_cursor(self.engine) as cur:
            cur.execute("CREATE TEMP TABLE incoming (policy_id text PRIMARY KEY, hash text, status text) ON COMMIT DROP")
            cur.execute(sql.SQL("INSERT INTO incoming SELECT h.policy_id, h.hash, p.status FROM ({}) h "
                                "JOIN canonical.policies p ON p.policy_id = h.policy_id AND p.drop_key = {}").format(
                policy_hashes(key), sql.Literal(key)))
            policies = cur.rowcount
            cur.execute("""
                INSERT INTO canonical.changes (policy_id, source, drop_key, change, version, from_drop_key, from_hash,
                                               to_hash, detected_at, wal_id)
                SELECT i.policy_id, %(source)s, %(key)s,
                       CASE WHEN c.policy_id IS NULL THEN 'new'
                            WHEN i.status = ANY(%(ended)s) AND c.status IS DISTINCT FROM i.status THEN 'cancelled'
                            ELSE 'changed' END,
                       coalesce(c.version, 0) + 1, c.drop_key, c.content_hash, i.hash, now(), %(wal)s
                FROM incoming i LEFT JOIN canonical.current c USING (policy_id)
                WHERE c.policy_id IS NULL OR (c.content_hash <> i.hash AND c.drop_seq <= %(seq)s)
                RETURNING change""", params)
            counts = {"new": 0, "changed": 0, "cancelled": 0}
            for (change,) in cur.fetchall():
                counts[change] += 1
            cur.execute("""
                INSERT INTO canonical.current AS c (policy_id, source, drop_key, drop_seq, content_hash, status, version,
                                                    since, wal_id)
                SELECT policy_id, %(source)s, %(key)s, %(seq)s, hash, status, 1, now(), %(wal)s FROM incoming
                ON CONFLICT (policy_id) DO UPDATE SET drop_key = EXCLUDED.drop_key, drop_seq = EXCLUDED.drop_seq,
                    status = EXCLUDED.status, content_hash = EXCLUDED.content_hash,
                    version = c.version + CASE WHEN c.content_hash <> EXCLUDED.content_hash THEN 1 ELSE 0 END,
                    since = CASE WHEN c.content_hash <> EXCLUDED.content_hash THEN EXCLUDED.since ELSE c.since END,
                    wal_id = CASE WHEN c.content_hash <> EXCLUDED.content_hash THEN EXCLUDED.wal_id ELSE c.wal_id END
                WHERE c.drop_seq <= EXCLUDED.drop_seq""", params)
            cur.execute("ANALYZE canonical.current")
            unchanged = policies - sum(counts.values())
            cur.execute("""
                INSERT INTO canonical.book_drops (drop_key, source, drop_id, drop_seq, load_wal_id, mapping_hash, policies,
                                                  new, changed, cancelled, unchanged, applied_at, wal_id)
                VALUES (%(key)s, %(source)s, %(drop_id)s, %(seq)s, %(load)s, %(mapping)s, %(n)s, %(new)s, %(changed)s,
                        %(cancelled)s, %(unchanged)s, now(), %(wal)s)
                ON CONFLICT (drop_key) DO UPDATE SET load_wal_id = EXCLUDED.load_wal_id, mapping_hash = EXCLUDED.mapping_hash,
                    policies = EXCLUDED.policies, new = EXCLUDED.new, changed = EXCLUDED.changed,
                    cancelled = EXCLUDED.cancelled, unchanged = EXCLUDED.unchanged, applied_at = EXCLUDED.applied_at,
                    wal_id = EXCLUDED.wal_id""",
                        {**params, "drop_id": drop["drop_id"], "load": drop["wal_id"], "mapping": drop["mapping_hash"],
                         "n": policies, "unchanged": unchanged, **counts})
        return DropApplied(key, policies, counts["new"], counts["changed"], counts["cancelled"], unchanged)

    def applied(self) -> list[dict]:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(text("SELECT * FROM canonical.book_drops ORDER BY drop_seq, drop_key"))
                    .mappings()]

    def changes_by_owner(self, drop_key: str) -> dict[tuple[str, str], int]:
        """(change, system of record now) -> policies: which of a drop's changes touch policies a wave has already
        moved (those reach the new platform by sync, never by rewriting what a wave loaded)."""
        with self.engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT c.change, coalesce(r.system_of_record, 'not routed yet'), count(DISTINCT c.policy_id) "
                "FROM canonical.changes c LEFT JOIN coexistence.registry r USING (policy_id) WHERE c.drop_key = :k "
                "GROUP BY 1, 2 ORDER BY 1, 2"), {"k": drop_key}).all()
        return {(change, owner): n for change, owner, n in rows}

    def size(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM canonical.current")).scalar_one()

    def changes(self, drop_key: str) -> dict[str, list[str]]:
        """The policies a drop changed, by kind of change."""
        with self.engine.connect() as conn:
            rows = conn.execute(text("SELECT change, policy_id FROM canonical.changes WHERE drop_key = :k ORDER BY 2"),
                                {"k": drop_key}).all()
        found: dict[str, list[str]] = {"new": [], "changed": [], "cancelled": []}
        for change, policy_id in rows:
            found[change].append(policy_id)
        return found
