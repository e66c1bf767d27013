"""Routing decisions and the coexistence registry in PostgreSQL: who owns each policy, why, since when.

Set-based throughout: decisions arrive by COPY into a temporary table and every change is one SQL
statement over the whole book. Nothing is rewritten that did not change, so running the same
rules on the same book twice leaves decisions, registry and history exactly as they were.

- `routing.decisions`: the latest decision per policy; `routing.decision_history`: each change
  (a reversal shows as a change back).
- `coexistence.registry`: per policy its system of record (its legacy source until a wave moves
  it), planned target, wave, rule and since when; `coexistence.history`: every change, who, why,
  which WAL entry. A policy that is pinned by a manual override or already on the new platform is
  never moved by routing: a disagreement is recorded in `coexistence.conflicts` instead.
"""

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pyarrow as pa
from psycopg import sql
from sqlalchemy import Engine, text

from canonical.tables import POLICIES
from resources.intake_store import copy_arrow, iter_copy_blocks
from resources.database import psycopg_cursor

NEW_PLATFORM = "new_platform"
TARGETS = ("new_platform", "legacy_batch", "dq_queue", "coexistence_bridge")
BOOK_COLUMNS = [(c.name, c.type) for c in POLICIES.columns] + [
    ("dq_score", pa.decimal128(5, 2)), ("dq_findings", pa.string())]
DECISION_COLUMNS = ["policy_id", "source_system", "target", "rule_name", "rule_set", "rule_set_version", "rule_set_hash"]


@dataclass
class RoutingResult:
    decisions: int = 0
    changed: int = 0
    by_target: dict[str, int] = field(default_factory=dict)
    by_rule: dict[str, int] = field(default_factory=dict)


@dataclass
class RegistryResult:
    added: int = 0
    moved: int = 0
    new_conflicts: int = 0
    open_conflicts: int = 0
    by_system: dict[str, int] = field(default_factory=dict)
    by_target: dict[str, int] = field(default_factory=dict)


class CoexistenceStore:
    def __init__(self, engine: Engine):
        self.engine = engine

    # -- the book to route ----------------------------------------------------------------
    def book_drops(self) -> list[str]:
        """The drops that hold the current version of some policy of the book (`canonical.current`)."""
        with self.engine.connect() as conn:
            return conn.execute(text("SELECT DISTINCT drop_key FROM canonical.current ORDER BY 1")).scalars().all()

    def book_fingerprint(self) -> str:
        """Which drops, mapped how, make up the book now (changes when a drop is applied or mapped again)."""
        with self.engine.connect() as conn:
            rows = conn.execute(text("SELECT drop_key, mapping_hash, load_wal_id FROM canonical.book_drops "
                                     "ORDER BY drop_key")).all()
        return hashlib.sha256(repr([tuple(map(str, r)) for r in rows]).encode()).hexdigest()

    def read_book(self, block: int = 200_000, columns: Iterable[str] | None = None) -> Iterator[pa.Table]:
        """The current version of every policy of the book, in policy id order, as Arrow blocks (all book columns,
        or `columns` and the policy id)."""
        wanted = None if columns is None else {"policy_id", *columns}
        book_columns = [(n, t) for n, t in BOOK_COLUMNS if wanted is None or n in wanted]
        fields = sql.SQL(", ").join(sql.SQL("p.{}").format(sql.Identifier(n)) for n, _ in book_columns)
        yield from iter_copy_blocks(
            self.engine,
            lambda last: sql.SQL("SELECT {} FROM canonical.policies p JOIN canonical.current k ON k.policy_id = "
                                 "p.policy_id AND k.drop_key = p.drop_key WHERE p.policy_id > {} "
                                 "ORDER BY p.policy_id").format(fields, sql.Literal(last)),
            book_columns, "policy_id", "", block)

    def current_decisions(self) -> pa.Table:
        with self.engine.connect() as conn:
            rows = conn.execute(text("SELECT policy_id, target, rule_name FROM routing.decisions ORDER BY policy_id")).all()
        return pa.table({"policy_id": pa.array([r[0] for r in rows], pa.string()),
                         "target": pa.array([r[1] for r in rows], pa.string()),
                         "rule_name": pa.array([r[2] for r in rows], pa.string())})

    # -- decisions ------------------------------------------------------------------------
    def apply_decisions(self, blocks: Iterable[pa.Table], wal_id: int | None) -> RoutingResult:
        """Store the decisions of a routing run; record each one that changed."""
        now = datetime.now(timezone.utc)
        result = RoutingResult()
        with psycopg_cursor(self.engine) as cur:
            cur.execute("CREATE TEMP TABLE incoming (policy_id text PRIMARY KEY, source_system text, target text, "
                        "rule_name text, rule_set text, rule_set_version text, rule_set_hash text) ON COMMIT DROP")
            for block in blocks:
                copy_arrow(cur, "pg_temp", "incoming", block.select(DECISION_COLUMNS))
                result.decisions += block.num_rows
            cur.execute("""
                INSERT INTO routing.decision_history (policy_id, from_target, to_target, from_rule, to_rule,
                                                      rule_set_version, decided_at, wal_id)
                SELECT i.policy_id, d.target, i.target, d.rule_name, i.rule_name, i.rule_set_version, %s, %s
                FROM incoming i LEFT JOIN routing.decisions d USING (policy_id)
                WHERE d.policy_id IS NULL OR d.target <> i.target OR d.rule_name <> i.rule_name
                """, (now, wal_id))
            result.changed = cur.rowcount
            cur.execute("""
                INSERT INTO routing.decisions AS d (policy_id, source_system, target, rule_name, rule_set,
                                                    rule_set_version, rule_set_hash, decided_at, wal_id)
                SELECT policy_id, source_system, target, rule_name, rule_set, rule_set_version, rule_set_hash, %s, %s
                FROM incoming
                ON CONFLICT (policy_id) DO UPDATE SET source_system = EXCLUDED.source_system, target = EXCLUDED.target,
                    rule_name = EXCLUDED.rule_name, rule_set = EXCLUDED.rule_set,
                    rule_set_version = EXCLUDED.rule_set_version, rule_set_hash = EXCLUDED.rule_set_hash,
                    decided_at = EXCLUDED.decided_at, wal_id = EXCLUDED.wal_id
                WHERE d.target <> EXCLUDED.target OR d.rule_name <> EXCLUDED.rule_name
                   OR d.rule_set_hash <> EXCLUDED.rule_set_hash
                """, (now, wal_id))
            cur.execute("SELECT target, count(*) FROM routing.decisions GROUP BY 1 ORDER BY 1")
            result.by_target = dict(cur.fetchall())
            cur.execute("SELECT rule_name, count(*) FROM routing.decisions GROUP BY 1 ORDER BY 2 DESC")
            result.by_rule = dict(cur.fetchall())
        return result

    # -- the registry -----------------------------------------------------------------------
    def update_registry(self, wal_id: int | None, actor: str = "routing") -> RegistryResult:
        """Bring the registry in line with the decisions: add new policies, move unpinned legacy ones,
        record conflicts for pinned or migrated ones. One transaction."""
        now = datetime.now(timezone.utc)
        result = RegistryResult()
        with psycopg_cursor(self.engine) as cur:
            cur.execute("""
                WITH added AS (
                    INSERT INTO coexistence.registry (policy_id, source_system, system_of_record, planned_target,
                        routing_rule, rule_set_version, since, updated_at, wal_id)
                    SELECT d.policy_id, d.source_system, d.source_system, d.target, d.rule_name, d.rule_set_version,
                           %(now)s, %(now)s, %(wal)s
                    FROM routing.decisions d
                    WHERE NOT EXISTS (SELECT 1 FROM coexistence.registry r WHERE r.policy_id = d.policy_id)
                    RETURNING policy_id, system_of_record, planned_target, routing_rule, rule_set_version
                )
                INSERT INTO coexistence.history (policy_id, at, change, from_system, to_system, from_target, to_target,
                                                 rule, rule_set_version, reason, actor, wal_id)
                SELECT policy_id, %(now)s, 'routing', NULL, system_of_record, NULL, planned_target, routing_rule,
                       rule_set_version, 'first routed', %(actor)s, %(wal)s
                FROM added
                """, {"now": now, "wal": wal_id, "actor": actor})
            result.added = cur.rowcount
            cur.execute("""
                WITH moving AS (
                    SELECT r.policy_id, r.system_of_record, r.planned_target AS from_target, d.target AS to_target,
                           d.rule_name, d.rule_set_version
                    FROM coexistence.registry r JOIN routing.decisions d USING (policy_id)
                    WHERE NOT r.pinned AND r.system_of_record <> %(new)s AND r.planned_target <> d.target
                ), moved AS (
                    UPDATE coexistence.registry r SET planned_target = m.to_target, routing_rule = m.rule_name,
                        rule_set_version = m.rule_set_version, updated_at = %(now)s, wal_id = %(wal)s
                    FROM moving m WHERE r.policy_id = m.policy_id
                )
                INSERT INTO coexistence.history (policy_id, at, change, from_system, to_system, from_target, to_target,
                                                 rule, rule_set_version, reason, actor, wal_id)
                SELECT policy_id, %(now)s, 'routing', system_of_record, system_of_record, from_target, to_target,
                       rule_name, rule_set_version, 'routing decision changed', %(actor)s, %(wal)s
                FROM moving
                """, {"now": now, "wal": wal_id, "actor": actor, "new": NEW_PLATFORM})
            result.moved = cur.rowcount
            cur.execute("""
                INSERT INTO coexistence.conflicts (policy_id, system_of_record, planned_target, routed_target, rule,
                                                   rule_set_version, why, detected_at, wal_id)
                SELECT r.policy_id, r.system_of_record, r.planned_target, d.target, d.rule_name, d.rule_set_version,
                       CASE WHEN r.system_of_record = %(new)s THEN 'already migrated to the new platform'
                            ELSE 'pinned by a manual override' END,
                       %(now)s, %(wal)s
                FROM coexistence.registry r JOIN routing.decisions d USING (policy_id)
                WHERE (r.pinned OR r.system_of_record = %(new)s) AND r.planned_target <> d.target
                ON CONFLICT (policy_id, routed_target, rule_set_version) DO NOTHING
                """, {"now": now, "wal": wal_id, "new": NEW_PLATFORM})
            result.new_conflicts = cur.rowcount
            cur.execute("SELECT count(*) FROM coexistence.conflicts WHERE resolved_at IS NULL")
            result.open_conflicts = cur.fetchone()[0]
            cur.execute("SELECT system_of_record, count(*) FROM coexistence.registry GROUP BY 1 ORDER BY 1")
            result.by_system = dict(cur.fetchall())
            cur.execute("SELECT planned_target, count(*) FROM coexistence.registry GROUP BY 1 ORDER BY 1")
            result.by_target = dict(cur.fetchall())
        return result

    def override(self, policy_id: str, target: str, reason: str, actor: str) -> dict:
        """Pin a policy to a target by hand, through the WAL (`manual_override`); routing will record conflicts
        rather than move it. Returns the change and its WAL intent (`wal_id`)."""
        from resources.wal import WalStore

        if target not in TARGETS:
            raise ValueError(f"target {target!r} is not one of {TARGETS}")
        with WalStore(self.engine).action(namespace="coexistence", operation="manual_override",
                                          target="coexistence.registry",
                                          payload={"policy_id": policy_id, "to": target, "reason": reason,
                                                   "actor": actor}) as intent:
            change = self._override(policy_id, target, reason, actor, intent.id)
            intent.result = change
        return {**change, "wal_id": intent.id}

    def _override(self, policy_id: str, target: str, reason: str, actor: str, wal_id: int) -> dict:
        now = datetime.now(timezone.utc)
        with psycopg_cursor(self.engine) as cur:
            cur.execute("SELECT system_of_record, planned_target FROM coexistence.registry WHERE policy_id = %s FOR UPDATE",
                        (policy_id,))
            row = cur.fetchone()
            if row is None:
                raise LookupError(f"policy {policy_id} is not in the coexistence registry (route the book first)")
            cur.execute("UPDATE coexistence.registry SET planned_target = %s, pinned = true, updated_at = %s, wal_id = %s "
                        "WHERE policy_id = %s", (target, now, wal_id, policy_id))
            cur.execute("""
                INSERT INTO coexistence.history (policy_id, at, change, from_system, to_system, from_target, to_target,
                                                 rule, rule_set_version, reason, actor, wal_id)
                VALUES (%s, %s, 'manual_override', %s, %s, %s, %s, NULL, NULL, %s, %s, %s)
                """, (policy_id, now, row[0], row[0], row[1], target, reason, actor, wal_id))
        return {"policy_id": policy_id, "from_target": row[1], "to_target": target}

    def split(self) -> list[tuple[str, str, str, int]]:
        """(system of record, planned target, wave or '-', policies): who owns the book now."""
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(
                "SELECT system_of_record, planned_target, coalesce(wave, '-'), count(*) FROM coexistence.registry "
                "GROUP BY 1, 2, 3 ORDER BY 1, 2, 3")).all()]

    def where(self, policy_id: str, last: int = 5) -> dict | None:
        """The registry row of one policy and its last changes: two primary-key/index lookups."""
        with self.engine.connect() as conn:
            row = conn.execute(text("SELECT * FROM coexistence.registry WHERE policy_id = :p"),
                               {"p": policy_id}).mappings().one_or_none()
            if row is None:
                return None
            changes = conn.execute(text("SELECT * FROM coexistence.history WHERE policy_id = :p ORDER BY id DESC LIMIT :n"),
                                   {"p": policy_id, "n": last}).mappings().all()
            conflicts = conn.execute(text("SELECT * FROM coexistence.conflicts WHERE policy_id = :p AND resolved_at IS NULL"),
                                     {"p": policy_id}).mappings().all()
        return {**dict(row), "last_changes": [dict(c) for c in changes], "open_conflicts": [dict(c) for c in conflicts]}

    def history(self, policy_id: str) -> list[dict]:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(text(
                "SELECT * FROM coexistence.history WHERE policy_id = :p ORDER BY id"), {"p": policy_id}).mappings()]

    def conflicts(self, limit: int = 100) -> list[dict]:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(text(
                "SELECT * FROM coexistence.conflicts WHERE resolved_at IS NULL ORDER BY id LIMIT :n"), {"n": limit}).mappings()]
