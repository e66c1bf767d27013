"""The nightly sync between the legacy systems and the new platform, in PostgreSQL and on disk.

`sync.baseline` holds, for each policy on the new platform, the content hash of each side when both
last agreed: legacy's (`canonical.current`, per-policy hash over its canonical rows) and the
platform's (per-policy hash over its rows in the new platform's tables, the same text the wave's
reconciliation compares). A wave's reconciliation writes it when it proves the load; each night
of sync moves it. A side whose hash moved since changed the policy. One night (`sync-<date>`):

1. `detect`: find the changed policies, decide each (`routing.sync.decide`: the registry's system
   of record, the bridge, the line's conflict rule), record every decision and conflict in
   `sync.decisions`, and settle the ones that write nothing (a migrated policy's own platform
   change is accepted; a legacy change the rule rejects is kept out);
2. `apply_to_platform`: legacy's version of the `to_platform` policies onto the platform (the wave
   load's staging and upsert), saving the rows it replaces;
3. `write_back`: a POLOUT batch of the `to_legacy` policies, from the platform's rows, for the
   legacy system that still services them;
4. `queue_manual`: `manual` conflicts to the DQ queue, with both versions kept on the decision.

Each step is one WAL entry and one transaction; it saves the baseline rows it moves, so that
`compensate` can undo it (rows restored, batch withdrawn, queue rows deleted, decisions marked
undone). `check` proves a night: every decision settled and both sides back at the baseline.
"""

import json
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql
from sqlalchemy import text

from canonical.tables import MONEY, V1_TABLES
from legacy import outbound
from resources.wal import WalStore
from resources.database import psycopg_cursor
from resources.intake_store import copy_arrow, copy_to_arrow, file_sha256
from resources.target_store import (LoadResult, ReconCheck, TargetStore, _differing_keys, image_hashes,
                                    platform_hashes, platform_written_at)
from routing.sync import SyncRules, decide

PREFIX = "sync-"
# WAL operations of a night's steps, in the order they run (compensation undoes them latest first)
OPERATIONS = ("sync_detect", "sync_new_platform", "sync_legacy_batch", "sync_queue")
MANUAL_RULE = "sync conflict (manual)"


def sync_id(night: date) -> str:
    return f"{PREFIX}{night.isoformat()}"


def night_of(sync: str) -> date:
    if not sync.startswith(PREFIX):
        raise ValueError(f"{sync!r} is not a sync night (sync-YYYY-MM-DD)")
    return date.fromisoformat(sync[len(PREFIX):])


def _scope_of(cur, query: str, params: dict) -> int:
    """Temp table `scope` (policy_id) from a query returning policy ids."""
    cur.execute("DROP TABLE IF EXISTS pg_temp.scope")
    cur.execute("CREATE TEMP TABLE scope (policy_id text PRIMARY KEY) ON COMMIT DROP")
    cur.execute("INSERT INTO scope " + query + " ON CONFLICT DO NOTHING", params)
    count = cur.rowcount
    cur.execute("ANALYZE scope")
    return count


@dataclass
class Detected:
    adopted: int = 0
    on_platform: int = 0
    changed: int = 0
    decided: dict[str, int] = field(default_factory=dict)
    conflicts: int = 0
    settled: int = 0
    superseded: int = 0


class SyncStore:
    def __init__(self, targets: TargetStore, rules: SyncRules):
        self.engine = targets.engine
        self.targets = targets
        self.mapping = targets.mapping
        self.rules = rules

    # -- nights ---------------------------------------------------------------------------
    def start(self, night: date) -> None:
        with WalStore(self.engine).action(namespace="sync", operation="start_night", target="sync.nights",
                                          wave=sync_id(night), payload={"night": night.isoformat()}), \
                self.engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO sync.nights AS n (night, sync_id, status, started_at) VALUES (:n, :s, 'running', now()) "
                "ON CONFLICT (night) DO UPDATE SET status = 'running', started_at = now(), finished_at = NULL, "
                "status_reason = NULL"), {"n": night, "s": sync_id(night)})

    def set_status(self, night: date, status: str, reason: str | None = None, report: dict | None = None) -> None:
        with WalStore(self.engine).action(namespace="sync", operation="set_status", target="sync.nights",
                                          wave=sync_id(night), payload={"night": night.isoformat(), "status": status,
                                                                        "reason": reason}), \
                self.engine.begin() as conn:
            conn.execute(text(
                "UPDATE sync.nights SET status = :st, status_reason = :r, finished_at = now(), "
                "report = coalesce(CAST(:rep AS jsonb), report) WHERE night = :n"),
                {"st": status, "r": reason, "rep": json.dumps(report, default=str) if report else None, "n": night})

    def nights(self) -> list[dict]:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(text("SELECT * FROM sync.nights ORDER BY night")).mappings()]

    def night(self, night: date) -> dict | None:
        with self.engine.connect() as conn:
            row = conn.execute(text("SELECT * FROM sync.nights WHERE night = :n"), {"n": night}).mappings().one_or_none()
        return dict(row) if row else None

    def later_nights(self, night: date) -> list[str]:
        """Later nights that wrote something and are not rolled back (a night is undone latest first)."""
        with self.engine.connect() as conn:
            return [r[0] for r in conn.execute(text(
                "SELECT DISTINCT d.night::text FROM sync.decisions d WHERE d.night > :n AND d.undone_at IS NULL "
                "ORDER BY 1"), {"n": night})]

    def pending(self, night: date, action: str) -> list[int]:
        """Ids of the night's decisions with this action not applied yet (what a step has to do)."""
        with self.engine.connect() as conn:
            return [r[0] for r in conn.execute(text(
                "SELECT id FROM sync.decisions WHERE night = :n AND action = :a AND applied_at IS NULL "
                "AND undone_at IS NULL ORDER BY id"), {"n": night, "a": action})]

    # -- 1. detect and decide -------------------------------------------------------------
    def detect(self, night: date, wal_id: int) -> Detected:
        found = Detected()
        now = datetime.now(timezone.utc)
        params = {"n": night, "wal": wal_id, "now": now}
        with psycopg_cursor(self.engine) as cur:
            # platform policies without a baseline (loaded before the sync existed): their state now is agreed
            found.adopted = _scope_of(cur, "SELECT x.policy_number FROM new_platform.policy x WHERE NOT EXISTS "
                                           "(SELECT 1 FROM sync.baseline b WHERE b.policy_id = x.policy_number)", {})
            if found.adopted:
                cur.execute(sql.SQL(
                    "INSERT INTO sync.baseline (policy_id, wave_id, legacy_hash, platform_hash, agreed_at, wal_id) "
                    "SELECT x.policy_number, x.wave_id, k.content_hash, a.h, {now}, {wal} FROM new_platform.policy x "
                    "JOIN scope s ON s.policy_id = x.policy_number JOIN canonical.current k ON k.policy_id = s.policy_id "
                    "JOIN ({a}) a ON a.pn = s.policy_id").format(
                    now=sql.Literal(now), wal=sql.Literal(wal_id), a=platform_hashes(self.mapping)))
            found.on_platform = _scope_of(cur, "SELECT policy_id FROM sync.baseline", {})
            cur.execute(sql.SQL(
                "CREATE TEMP TABLE platform_now ON COMMIT DROP AS SELECT s.policy_id, h.h AS hash, w.at FROM scope s "
                "LEFT JOIN ({}) h ON h.pn = s.policy_id LEFT JOIN ({}) w ON w.pn = s.policy_id").format(
                platform_hashes(self.mapping), platform_written_at(self.mapping)))
            cur.execute("ALTER TABLE platform_now ADD PRIMARY KEY (policy_id)")
            columns = [("policy_id", pa.string()), ("line_of_business", pa.string()), ("system_of_record", pa.string()),
                       ("bridge", pa.bool_()), ("legacy_from", pa.string()), ("legacy_to", pa.string()),
                       ("platform_from", pa.string()), ("platform_to", pa.string()),
                       ("legacy_at", pa.int64()), ("platform_at", pa.int64())]  # microseconds since the epoch
            changed = copy_to_arrow(cur, sql.SQL("""
                COPY (SELECT b.policy_id, p.line_of_business, r.system_of_record, br.policy_id IS NOT NULL,
                             b.legacy_hash, k.content_hash, b.platform_hash, coalesce(n.hash, 'absent'),
                             (extract(epoch FROM k.since) * 1000000)::bigint, (extract(epoch FROM n.at) * 1000000)::bigint
                      FROM sync.baseline b
                      JOIN canonical.current k USING (policy_id)
                      JOIN canonical.policies p ON p.policy_id = k.policy_id AND p.drop_key = k.drop_key
                      JOIN coexistence.registry r ON r.policy_id = b.policy_id
                      LEFT JOIN targets.coexistence_bridge br ON br.policy_id = b.policy_id
                      LEFT JOIN platform_now n ON n.policy_id = b.policy_id
                      WHERE (k.content_hash <> b.legacy_hash OR coalesce(n.hash, 'absent') <> b.platform_hash)
                        AND NOT EXISTS (SELECT 1 FROM sync.decisions d WHERE d.policy_id = b.policy_id
                                        AND d.action = 'queue' AND d.resolved_at IS NULL AND d.undone_at IS NULL
                                        AND d.legacy_to = k.content_hash AND d.platform_to = coalesce(n.hash, 'absent'))
                      ORDER BY b.policy_id) TO STDOUT (FORMAT csv)"""), columns)
            found.changed = changed.num_rows
            if not found.changed:
                return found
            for name in ("legacy_at", "platform_at"):
                i = changed.column_names.index(name)
                changed = changed.set_column(i, name, changed.column(name).cast(pa.timestamp("us")))
            legacy_changed = pc.not_equal(changed.column("legacy_from"), changed.column("legacy_to"))
            platform_changed = pc.not_equal(changed.column("platform_from"), changed.column("platform_to"))
            decided = decide(
                self.rules,
                line_of_business=changed.column("line_of_business").to_numpy(zero_copy_only=False),
                system_of_record=changed.column("system_of_record").to_numpy(zero_copy_only=False),
                bridge=changed.column("bridge").to_numpy(zero_copy_only=False),
                legacy_changed=legacy_changed.to_numpy(zero_copy_only=False),
                platform_changed=platform_changed.to_numpy(zero_copy_only=False),
                legacy_at=changed.column("legacy_at").to_numpy(zero_copy_only=False),
                platform_at=changed.column("platform_at").to_numpy(zero_copy_only=False))
            rows = changed.append_column("legacy_changed", legacy_changed) \
                .append_column("platform_changed", platform_changed) \
                .append_column("conflict", pa.array(decided.conflict, pa.bool_())) \
                .append_column("rule", pa.array(decided.rule, pa.string())) \
                .append_column("action", pa.array(decided.action, pa.string())) \
                .append_column("why", pa.array(decided.why, pa.string()))
            cur.execute("CREATE TEMP TABLE decided (policy_id text, line_of_business text, system_of_record text, "
                        "bridge boolean, legacy_from text, legacy_to text, platform_from text, platform_to text, "
                        "legacy_at timestamp, platform_at timestamp, legacy_changed boolean, platform_changed boolean, "
                        "conflict boolean, rule text, action text, why text) ON COMMIT DROP")
            copy_arrow(cur, "pg_temp", "decided", rows)
            # a manual conflict someone settled (`resolve`), both sides as they were then: carry out their choice
            cur.execute("""
                UPDATE decided d SET action = CASE WHEN r.resolution LIKE 'keep legacy%%' THEN 'to_platform'
                                                   WHEN d.system_of_record = 'new_platform' AND NOT d.bridge
                                                   THEN 'keep_platform' ELSE 'to_legacy' END,
                                     why = d.why || '; settled by hand on decision ' || r.id || ': ' || r.resolution
                FROM sync.decisions r WHERE r.policy_id = d.policy_id AND r.action = 'queue' AND r.undone_at IS NULL
                  AND r.resolved_at IS NOT NULL AND r.resolution LIKE 'keep %%' AND r.legacy_to = d.legacy_to
                  AND r.platform_to = d.platform_to""")
            # a newer change replaces a decision not carried out yet, or a manual conflict still waiting
            cur.execute("UPDATE sync.decisions d SET undone_at = %(now)s, resolution = 'superseded by a newer change' "
                        "FROM decided n WHERE d.policy_id = n.policy_id AND d.undone_at IS NULL AND d.night <> %(n)s "
                        "AND (d.applied_at IS NULL OR (d.action = 'queue' AND d.resolved_at IS NULL))", params)
            found.superseded = cur.rowcount
            cur.execute("""
                INSERT INTO sync.decisions (night, policy_id, line_of_business, system_of_record, bridge, legacy_changed,
                    platform_changed, conflict, rule, action, why, legacy_from, legacy_to, platform_from, platform_to,
                    legacy_at, platform_at, decided_at, wal_id)
                SELECT %(n)s, policy_id, line_of_business, system_of_record, bridge, legacy_changed, platform_changed,
                       conflict, rule, action, why, legacy_from, legacy_to, platform_from, platform_to,
                       legacy_at AT TIME ZONE 'UTC', platform_at AT TIME ZONE 'UTC', %(now)s, %(wal)s FROM decided
                ON CONFLICT (night, policy_id, legacy_to, platform_to, action) WHERE undone_at IS NULL DO NOTHING""",
                        params)
            cur.execute("SELECT action, count(*), count(*) FILTER (WHERE conflict) FROM decided GROUP BY 1")
            for action, n, conflicts in cur.fetchall():
                found.decided[action] = n
                found.conflicts += conflicts
            # decisions that write nothing are settled now: both sides' versions become the agreed state
            _scope_of(cur, "SELECT policy_id FROM sync.decisions WHERE night = %(n)s AND action IN "
                           "('accept_platform', 'keep_platform') AND applied_at IS NULL AND undone_at IS NULL", params)
            found.settled = self._settle(cur, night, wal_id, now,  # nothing was written since the hashes above
                                         sql.SQL("SELECT policy_id AS pn, hash AS h FROM platform_now"))
        return found

    def _settle(self, cur, night: date, wal_id: int, now: datetime, platform: sql.Composable | None = None) -> int:
        """Move the baseline of the `scope` policies to both sides' current hashes (saving it first) and mark their
        decisions of the night applied. `platform`: SQL (pn, h) of the platform's hashes if already known."""
        cur.execute("INSERT INTO sync.baseline_saved SELECT %s, b.* FROM sync.baseline b JOIN scope USING (policy_id) "
                    "ON CONFLICT DO NOTHING", (wal_id,))
        cur.execute(sql.SQL(
            "UPDATE sync.baseline b SET legacy_hash = k.content_hash, platform_hash = coalesce(a.h, 'absent'), "
            "agreed_at = {now}, night = {n}, wal_id = {wal} FROM scope s JOIN canonical.current k USING (policy_id) "
            "LEFT JOIN ({a}) a ON a.pn = s.policy_id WHERE b.policy_id = s.policy_id").format(
            now=sql.Literal(now), n=sql.Literal(night), wal=sql.Literal(wal_id),
            a=platform or platform_hashes(self.mapping)))
        cur.execute("UPDATE sync.decisions d SET applied_at = %s, applied_wal = %s FROM scope s "
                    "WHERE d.policy_id = s.policy_id AND d.night = %s AND d.applied_at IS NULL AND d.undone_at IS NULL",
                    (now, wal_id, night))
        return cur.rowcount

    # -- 2. legacy's version onto the platform ----------------------------------------------
    def apply_to_platform(self, night: date, wal_id: int) -> LoadResult:
        result = LoadResult()
        now = datetime.now(timezone.utc)
        with psycopg_cursor(self.engine) as cur:
            result.policies = self._action_scope(cur, night, "to_platform")
            if not result.policies:
                return result
            cur.execute("INSERT INTO sync.saved_policies SELECT %s, policy_id FROM scope ON CONFLICT DO NOTHING",
                        (wal_id,))
            for t in self.mapping.tables:
                cur.execute(sql.SQL("INSERT INTO sync.saved_rows SELECT {wal}, {t}, x.policy_number, to_jsonb(x) "
                                    "FROM new_platform.{table} x JOIN scope s ON s.policy_id = x.policy_number").format(
                    wal=sql.Literal(wal_id), t=sql.Literal(t), table=sql.Identifier(t)))
            self.targets.stage_new_platform(cur, None, wal_id, now)
            self.targets.upsert_new_platform(cur, result, None)
            result.detail["decisions_applied"] = self._settle(cur, night, wal_id, now)
        return result

    def _action_scope(self, cur, night: date, action: str) -> int:
        return _scope_of(cur, "SELECT policy_id FROM sync.decisions WHERE night = %(n)s AND action = %(a)s "
                              "AND applied_at IS NULL AND undone_at IS NULL", {"n": night, "a": action})

    # -- 3. the platform's version back to legacy -------------------------------------------
    def batch_id(self, night: date, wal_id: int) -> str:
        return f"{sync_id(night)}-{wal_id}"

    def write_back(self, night: date, wal_id: int) -> LoadResult:
        now = datetime.now(timezone.utc)
        with psycopg_cursor(self.engine) as cur:
            policies = self._action_scope(cur, night, "to_legacy")
            if not policies:
                return LoadResult()
            result = self.targets.deliver_batch(cur, self.batch_id(night, wal_id), wal_id, now,
                                                iter([self._platform_batch_rows(cur)]),
                                                tag=f"SYNC{night:%Y%m%d}")  # the record's 16-byte batch field
            result.policies = policies
            result.detail["decisions_applied"] = self._settle(cur, night, wal_id, now)
        self.targets.publish(result)
        return result

    def _platform_columns(self) -> dict[str, tuple[str, str, dict]]:
        """canonical policy column -> (platform table, column, platform code -> canonical code) for what the legacy
        batch carries, from the target mapping read backwards."""
        found: dict[str, tuple[str, str, dict]] = {}
        for t in self.mapping.tables.values():
            for source in t.sources:
                if source.table != "policies":
                    continue
                for rule in source.columns:
                    if rule.source in outbound.POLICY_COLUMNS and rule.source not in found and t.name in ("policy", "rating"):
                        found[rule.source] = (t.name, rule.name, {p: c for c, p in (rule.codes or ())})
        missing = set(outbound.POLICY_COLUMNS) - set(found)
        if missing:
            raise ValueError(f"the new platform mapping has no policy or rating column for {sorted(missing)}")
        return found

    def _platform_batch_rows(self, cur) -> tuple[pa.Table, pa.Table]:
        """The `scope` policies as the legacy batch carries them, from the platform's rows (codes translated back),
        with their coverage count and total limit, in policy id order."""
        exprs, columns = [], self._platform_columns()
        for column in outbound.POLICY_COLUMNS:
            table, name, codes = columns[column]
            ref = sql.SQL("{}.{}").format(sql.Identifier(table), sql.Identifier(name))
            if codes:
                ref = sql.SQL("CASE {} {} END").format(ref, sql.SQL(" ").join(
                    sql.SQL("WHEN {} THEN {}").format(sql.Literal(p), sql.Literal(c)) for p, c in codes.items()))
            exprs.append(ref)
        types = [(n, V1_TABLES["policies"].column(n).type) for n in outbound.POLICY_COLUMNS]
        policies = copy_to_arrow(cur, sql.SQL(
            "COPY (SELECT {} FROM new_platform.policy policy JOIN scope s ON s.policy_id = policy.policy_number "
            "LEFT JOIN new_platform.rating rating ON rating.policy_number = policy.policy_number "
            "ORDER BY policy.policy_number) TO STDOUT (FORMAT csv)").format(sql.SQL(", ").join(exprs)), types)
        summary = copy_to_arrow(cur, sql.SQL(
            "COPY (SELECT s.policy_id, count(v.policy_number), coalesce(sum(v.limit_amount), 0) FROM scope s "
            "JOIN new_platform.policy p ON p.policy_number = s.policy_id "
            "LEFT JOIN new_platform.coverage v ON v.policy_number = s.policy_id "
            "GROUP BY s.policy_id ORDER BY s.policy_id) TO STDOUT (FORMAT csv)"),
            [("policy_id", pa.string()), ("coverage_count", pa.int64()), ("total_limit", MONEY)])
        return policies, summary

    # -- 4. manual conflicts to the DQ queue ------------------------------------------------
    def queue_manual(self, night: date, wal_id: int) -> LoadResult:
        result = LoadResult()
        now = datetime.now(timezone.utc)
        params = {"n": night, "wal": wal_id, "now": now, "sync": sync_id(night), "rule": MANUAL_RULE}
        with psycopg_cursor(self.engine) as cur:
            result.policies = self._action_scope(cur, night, "queue")
            if not result.policies:
                return result
            legacy = sql.SQL(", ").join(
                sql.SQL("{t}, (SELECT coalesce(jsonb_agg(to_jsonb(c) - 'drop_key' - 'wal_id' ORDER BY c.source_record_no), "
                        "'[]') FROM canonical.{table} c JOIN canonical.current k USING (policy_id, drop_key) "
                        "WHERE c.policy_id = s.policy_id)").format(t=sql.Literal(t), table=sql.Identifier(t))
                for t in V1_TABLES)
            platform = sql.SQL(", ").join(
                sql.SQL("{t}, (SELECT coalesce(jsonb_agg(to_jsonb(x) ORDER BY x::text), '[]') FROM new_platform.{table} x "
                        "WHERE x.policy_number = s.policy_id)").format(t=sql.Literal(t), table=sql.Identifier(t))
                for t in self.mapping.tables)
            cur.execute(sql.SQL(
                "UPDATE sync.decisions d SET versions = jsonb_build_object('legacy', jsonb_build_object({}), "
                "'new_platform', jsonb_build_object({})) FROM scope s WHERE d.policy_id = s.policy_id "
                "AND d.night = {n} AND d.action = 'queue' AND d.applied_at IS NULL AND d.undone_at IS NULL").format(
                legacy, platform, n=sql.Literal(night)))
            cur.execute("""
                INSERT INTO targets.dq_queue AS q (policy_id, wave_id, source_system, routing_rule, reasons, dq_score,
                                                  queued_at, wal_id)
                SELECT d.policy_id, %(sync)s, r.source_system, %(rule)s,
                       d.why || '; both versions are kept on sync decision ' || d.id, NULL, %(now)s, %(wal)s
                FROM sync.decisions d JOIN scope s USING (policy_id) JOIN coexistence.registry r USING (policy_id)
                WHERE d.night = %(n)s AND d.action = 'queue' AND d.applied_at IS NULL AND d.undone_at IS NULL
                ON CONFLICT (policy_id, wave_id) DO UPDATE SET reasons = EXCLUDED.reasons, wal_id = EXCLUDED.wal_id,
                    queued_at = EXCLUDED.queued_at""", params)
            result.inserted["queued"] = cur.rowcount
            result.rows["queued"] = cur.rowcount
            cur.execute("UPDATE sync.decisions d SET applied_at = %(now)s, applied_wal = %(wal)s FROM scope s "
                        "WHERE d.policy_id = s.policy_id AND d.night = %(n)s AND d.action = 'queue' "
                        "AND d.applied_at IS NULL AND d.undone_at IS NULL", params)
        return result

    def waiting_conflict(self, policy_id: str) -> dict | None:
        """The policy's manual conflict waiting in the DQ queue (decision id and night), if it has one."""
        with self.engine.connect() as conn:
            row = conn.execute(text(
                "SELECT id AS decision, night FROM sync.decisions WHERE policy_id = :p AND action = 'queue' "
                "AND applied_at IS NOT NULL AND resolved_at IS NULL AND undone_at IS NULL ORDER BY id DESC LIMIT 1"),
                {"p": policy_id}).mappings().one_or_none()
        return dict(row) if row else None

    def resolve(self, policy_id: str, keep: str, *, actor: str, reason: str) -> dict:
        """Settle a queued manual conflict by hand, through the WAL (`resolve_conflict`): keep `legacy`'s version or
        the `new_platform`'s. The choice is recorded on the decision, the queue entry released, and the next night
        carries it out (legacy's version onto the platform, or the platform's kept, and written back where legacy
        services the policy). Returns what was settled and its WAL intent (`wal_id`)."""
        if keep not in ("legacy", "new_platform"):
            raise ValueError(f"keep must be legacy or new_platform, not {keep!r}")
        with WalStore(self.engine).action(namespace="sync", operation="resolve_conflict", target="sync.decisions",
                                          payload={"policy": policy_id, "keep": keep, "reason": reason,
                                                   "by": actor}) as intent:
            done = self._resolve(policy_id, keep, actor, reason, intent.id)
            intent.result = done
        return {**done, "wal_id": intent.id}

    def _resolve(self, policy_id: str, keep: str, actor: str, reason: str, wal_id: int) -> dict:
        now = datetime.now(timezone.utc)
        with psycopg_cursor(self.engine) as cur:
            cur.execute("SELECT id, night FROM sync.decisions WHERE policy_id = %s AND action = 'queue' "
                        "AND applied_at IS NOT NULL AND resolved_at IS NULL AND undone_at IS NULL ORDER BY id DESC",
                        (policy_id,))
            row = cur.fetchone()
            if row is None:
                raise LookupError(f"policy {policy_id} has no manual conflict waiting in the DQ queue")
            decision, night = row
            cur.execute("UPDATE sync.decisions SET resolved_at = %s, resolution = %s WHERE id = %s",
                        (now, f"keep {keep}: {reason} (by {actor}, WAL entry {wal_id})", decision))
            cur.execute("UPDATE targets.dq_queue SET released_at = %s, released_by_wave = %s WHERE policy_id = %s "
                        "AND wave_id = %s AND released_at IS NULL", (now, "resolved by hand", policy_id, sync_id(night)))
        return {"decision": decision, "night": night.isoformat(), "keep": keep}

    # -- proof and report -------------------------------------------------------------------
    def check(self, night: date, examples: int = 5) -> list[ReconCheck]:
        """Prove a night: every decision settled; each settled policy's two sides back at the agreed state; legacy's
        version on the platform where it went there; the batch read back equal to the platform; manual conflicts
        queued."""
        checks = []
        params = {"n": night, "sync": sync_id(night), "k": examples}
        with psycopg_cursor(self.engine) as cur:
            cur.execute("SELECT count(*), count(*) FILTER (WHERE applied_at IS NULL), "
                        "(array_agg(policy_id ORDER BY policy_id) FILTER (WHERE applied_at IS NULL))[1:%(k)s] "
                        "FROM sync.decisions WHERE night = %(n)s AND undone_at IS NULL", params)
            decided, open_, ids = cur.fetchone()
            checks.append(ReconCheck("sync", "decisions_settled", open_ == 0, {"decisions": decided, "open": open_},
                                     ids or [], failing=open_))
            _scope_of(cur, "SELECT policy_id FROM sync.decisions WHERE night = %(n)s AND undone_at IS NULL "
                           "AND action <> 'queue'", params)
            # legacy's version, mapped, only where the night sent it to the platform
            cur.execute("CREATE TEMP TABLE sent ON COMMIT DROP AS SELECT DISTINCT policy_id FROM sync.decisions "
                        "WHERE night = %(n)s AND undone_at IS NULL AND action = 'to_platform'", params)
            cur.execute("ANALYZE sent")
            cur.execute(sql.SQL(
                "CREATE TEMP TABLE night_hash ON COMMIT DROP AS SELECT s.policy_id, a.h AS platform, e.h AS image "
                "FROM scope s LEFT JOIN ({}) a ON a.pn = s.policy_id LEFT JOIN ({}) e ON e.pn = s.policy_id").format(
                platform_hashes(self.mapping), image_hashes(self.mapping, "sent")))
            cur.execute("""
                SELECT count(*),
                       count(*) FILTER (WHERE b.legacy_hash IS DISTINCT FROM k.content_hash
                                          OR b.platform_hash IS DISTINCT FROM coalesce(h.platform, 'absent')),
                       (array_agg(h.policy_id ORDER BY h.policy_id) FILTER (
                            WHERE b.legacy_hash IS DISTINCT FROM k.content_hash
                               OR b.platform_hash IS DISTINCT FROM coalesce(h.platform, 'absent')))[1:%(k)s]
                FROM night_hash h LEFT JOIN sync.baseline b USING (policy_id)
                LEFT JOIN canonical.current k USING (policy_id)""", params)
            n, bad, ids = cur.fetchone()
            checks.append(ReconCheck("sync", "both_sides_agreed", bad == 0, {"policies": n, "differing": bad},
                                     ids or [], failing=bad))
            cur.execute("""
                SELECT count(*), count(*) FILTER (WHERE h.platform IS DISTINCT FROM h.image),
                       (array_agg(h.policy_id ORDER BY h.policy_id) FILTER (WHERE h.platform IS DISTINCT FROM h.image))[1:%(k)s]
                FROM night_hash h JOIN sent USING (policy_id)""", params)
            n, bad, ids = cur.fetchone()
            checks.append(ReconCheck("sync", "legacy_version_on_platform", bad == 0,
                                     {"policies": n, "differing": bad}, ids or [], failing=bad))
            checks.append(self._check_batches(cur, night, examples))
            cur.execute("""
                SELECT count(*), count(*) FILTER (WHERE q.policy_id IS NULL OR d.versions IS NULL),
                       (array_agg(d.policy_id ORDER BY d.policy_id) FILTER (WHERE q.policy_id IS NULL OR d.versions IS NULL))[1:%(k)s]
                FROM sync.decisions d LEFT JOIN targets.dq_queue q ON q.policy_id = d.policy_id AND q.wave_id = %(sync)s
                WHERE d.night = %(n)s AND d.undone_at IS NULL AND d.action = 'queue'""", params)
            n, bad, ids = cur.fetchone()
            checks.append(ReconCheck("sync", "manual_conflicts_queued", bad == 0, {"policies": n, "missing": bad},
                                     ids or [], failing=bad))
        return checks

    def _check_batches(self, cur, night: date, examples: int) -> ReconCheck:
        """Each delivered write-back batch of the night, read back, equals the platform's rows of its policies."""
        cur.execute("SELECT file_id, path, sha256 FROM targets.outbound_files WHERE wave_id LIKE %s "
                    "AND status = 'delivered' ORDER BY file_id", (sync_id(night) + "-%",))
        files = cur.fetchall()
        observed, problems, differing = {"files": len(files), "records": 0}, [], 0
        for file_id, path, digest in files:
            if not Path(path).exists() or file_sha256(Path(path)) != digest:
                problems.append(f"{Path(path).name} is missing or not the file delivered (sha256 differs)")
                continue
            back = outbound.read_policies(Path(path))
            _scope_of(cur, "SELECT policy_id FROM targets.outbound_records WHERE file_id = %(f)s", {"f": file_id})
            want, _ = self._platform_batch_rows(cur)
            zero = pa.scalar(0, MONEY)
            want = want.set_column(outbound.POLICY_COLUMNS.index("face_amount"), "face_amount",
                                   pc.fill_null(want.column("face_amount"), zero))
            keys = _differing_keys(want, back.select(outbound.POLICY_COLUMNS).cast(want.schema), "policy_id")
            observed["records"] += back.num_rows
            differing += len(keys)
            problems += keys[:examples]
        return ReconCheck("sync", "write_back_read_back", not problems, {**observed, "policies_differing": differing},
                          problems[:examples], failing=differing)

    def report(self, night: date) -> dict:
        """What the night saw and did: changes per side, actions, conflicts by rule, queue additions, files."""
        with self.engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT legacy_changed, platform_changed, bridge, system_of_record = 'new_platform' AND NOT bridge, "
                "conflict, coalesce(rule, '-'), action, count(*) FROM sync.decisions WHERE night = :n "
                "AND undone_at IS NULL GROUP BY 1, 2, 3, 4, 5, 6, 7"), {"n": night}).all()
            files = conn.execute(text(
                "SELECT path, records, sha256 FROM targets.outbound_files WHERE wave_id LIKE :s AND status = 'delivered' "
                "ORDER BY file_id"), {"s": sync_id(night) + "-%"}).all()
        seen = {"legacy_only": 0, "platform_only": 0, "both": 0}
        owners = {"migrated": 0, "bridge": 0}
        actions: dict[str, int] = {}
        conflicts: dict[str, dict[str, int]] = {}
        for legacy, platform, bridge, migrated, conflict, rule, action, n in rows:
            seen["both" if legacy and platform else "legacy_only" if legacy else "platform_only"] += n
            owners["migrated" if migrated else "bridge"] += n
            actions[action] = actions.get(action, 0) + n
            if conflict:
                conflicts.setdefault(rule, {})
                conflicts[rule][action] = conflicts[rule].get(action, 0) + n
        return {"night": night.isoformat(), "sync_id": sync_id(night), "changed_policies": sum(seen.values()),
                "seen": seen, "by_owner": owners, "actions": actions,
                "applied": {"to_new_platform": actions.get("to_platform", 0),
                            "written_back_to_legacy": actions.get("to_legacy", 0),
                            "accepted_on_platform": actions.get("accept_platform", 0),
                            "legacy_change_kept_out": actions.get("keep_platform", 0)},
                "conflicts": conflicts, "conflicts_total": sum(sum(v.values()) for v in conflicts.values()),
                "queued_for_manual_review": actions.get("queue", 0),
                "files": [{"file": p, "records": r, "sha256": h} for p, r, h in files]}

    def decisions(self, night: date | None = None, *, policy_id: str | None = None, conflicts_only: bool = False,
                  limit: int = 100) -> list[dict]:
        where, params = ["TRUE"], {"limit": limit}
        if night:
            where.append("night = :n")
            params["n"] = night
        if policy_id:
            where.append("policy_id = :p")
            params["p"] = policy_id
        if conflicts_only:
            where.append("conflict")
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(text(
                "SELECT id, night, policy_id, line_of_business, system_of_record, bridge, legacy_changed, "
                "platform_changed, conflict, rule, action, why, applied_at, resolution, undone_at FROM sync.decisions "
                f"WHERE {' AND '.join(where)} ORDER BY id LIMIT :limit"), params).mappings()]

    # -- compensation -----------------------------------------------------------------------
    def compensate(self, operation: str, night: date, wal_id: int, *, reason: str) -> dict:
        """Undo what one WAL entry of a night wrote. Safe to repeat. Policies a wave rollback has taken off the
        platform since are left alone."""
        now = datetime.now(timezone.utc)
        undone: dict = {}
        params = {"wal": wal_id, "now": now, "reason": reason}
        with psycopg_cursor(self.engine) as cur:
            if operation == "sync_new_platform":
                cur.execute("DROP TABLE IF EXISTS pg_temp.restore")
                cur.execute("CREATE TEMP TABLE restore ON COMMIT DROP AS SELECT p.policy_id FROM sync.saved_policies p "
                            "JOIN sync.baseline b USING (policy_id) WHERE p.saved_by_wal = %(wal)s", params)
                for t in reversed(list(self.mapping.tables)):
                    cur.execute(sql.SQL("DELETE FROM new_platform.{} x USING restore r "
                                        "WHERE x.policy_number = r.policy_id").format(sql.Identifier(t)))
                    cur.execute(sql.SQL(
                        "INSERT INTO new_platform.{table} SELECT (jsonb_populate_record(NULL::new_platform.{table}, "
                        "s.row)).* FROM sync.saved_rows s JOIN restore r USING (policy_id) "
                        "WHERE s.saved_by_wal = {wal} AND s.table_name = {t}").format(
                        table=sql.Identifier(t), wal=sql.Literal(wal_id), t=sql.Literal(t)))
                    undone[t] = cur.rowcount
                cur.execute("DELETE FROM sync.saved_rows WHERE saved_by_wal = %(wal)s", params)
                cur.execute("DELETE FROM sync.saved_policies WHERE saved_by_wal = %(wal)s", params)
            elif operation == "sync_legacy_batch":
                undone.update(self.targets._withdraw_batch(cur, self.batch_id(night, wal_id), wal_id, None, now))
            elif operation == "sync_queue":
                cur.execute("DELETE FROM targets.dq_queue WHERE wal_id = %(wal)s", params)
                undone["dq_queue"] = cur.rowcount
            elif operation == "sync_detect":
                cur.execute("UPDATE sync.decisions SET undone_at = %(now)s, resolution = %(reason)s "
                            "WHERE wal_id = %(wal)s AND undone_at IS NULL", params)
                undone["decisions_undone"] = cur.rowcount
                cur.execute("DELETE FROM sync.baseline b WHERE b.wal_id = %(wal)s AND b.night IS NULL "
                            "AND NOT EXISTS (SELECT 1 FROM sync.baseline_saved s WHERE s.saved_by_wal = %(wal)s "
                            "AND s.policy_id = b.policy_id)", params)  # adopted by this entry
                undone["baselines_unadopted"] = cur.rowcount
            else:
                raise ValueError(f"no compensation for sync operation {operation!r}")
            cur.execute("UPDATE sync.decisions SET applied_at = NULL, applied_wal = NULL WHERE applied_wal = %(wal)s",
                        params)
            undone["decisions_unapplied"] = cur.rowcount
            columns = "wave_id, legacy_hash, platform_hash, agreed_at, night, wal_id"
            cur.execute(f"UPDATE sync.baseline b SET ({columns}) = (s.wave_id, s.legacy_hash, s.platform_hash, "
                        "s.agreed_at, s.night, s.wal_id) FROM sync.baseline_saved s WHERE s.saved_by_wal = %(wal)s "
                        "AND s.policy_id = b.policy_id", params)
            undone["baselines_restored"] = cur.rowcount
            cur.execute("DELETE FROM sync.baseline_saved WHERE saved_by_wal = %(wal)s", params)
        return undone
