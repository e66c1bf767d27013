"""Wave plans, waves and their candidates in PostgreSQL (`waves` schema)."""

import json
from collections.abc import Iterable
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import yaml
from psycopg import sql
from sqlalchemy import Engine, text

from legacy.errors import DataMashError, UsageError
from resources.book_store import BookStore, in_book
from resources.coexistence_store import CoexistenceStore
from resources.database import psycopg_cursor
from resources.intake_store import copy_arrow, copy_to_arrow
from resources.wal import WalStore
from routing.rules import condition_fields, selection_mask
from routing.waves import ROUTED, WaveSpec


# how a wave's status reason starts when it failed after loading something (compensation looks for these)
LOAD_FAILED = "load failed"
RECONCILIATION_FAILED = "reconciliation failed"


class WaveError(DataMashError, ValueError):
    """A wave operation that cannot be done (unknown wave, wrong status); the message says what to do."""


class UnknownWaveError(WaveError, UsageError):
    """No wave by that id (exit 2 at the CLI: bad usage, nothing done)."""

    def __init__(self, wave_id: str) -> None:
        self.wave_id = wave_id
        super().__init__(f"no wave {wave_id!r}: see `data-mash wave list`")


class WaveStore:
    def __init__(self, engine: Engine):
        self.engine = engine

    def routed_book(self, columns: Iterable[str] | None = None) -> pa.Table:
        """The canonical book (all columns, or `columns`) with each policy's planned target (`target`): the
        registry's, so routing decisions and manual overrides (a remediated policy sent on by hand) both count."""
        coexistence = CoexistenceStore(self.engine)
        pending = BookStore(self.engine).pending()
        if pending:  # e.g. a delta mapped since the last routing, or a database just upgraded to the book
            raise WaveError(f"{len(pending)} mapped drop(s) are not in the book yet ({pending[0]['drop_key']}…): "
                            "run `data-mash route` first, so waves see the latest version of every policy")
        with psycopg_cursor(self.engine) as cur:
            planned = copy_to_arrow(cur, "COPY (SELECT policy_id, planned_target FROM coexistence.registry) TO STDOUT "
                                         "(FORMAT csv)", [("policy_id", pa.string()), ("target", pa.string())])
        blocks = list(coexistence.read_book(columns=columns))
        if not blocks or not planned.num_rows:
            raise WaveError("nothing to plan: ingest, map and route the book first (`data-mash demo` or `data-mash route`)")
        book = pa.concat_tables(blocks)
        routed = book.join(planned, "policy_id", join_type="inner")
        return routed.sort_by("policy_id")  # planning and selection both go in policy id order

    def plan(self, name: str, created_by: str, *, start: datetime, size_cap: int = 50_000,
             cadence_days: int = 7) -> tuple[int, list[str]]:
        """Propose waves over the routed book (`routing.waves.propose_plan`) and save them as a draft plan."""
        from routing.waves import propose_plan

        waves = propose_plan(self.routed_book(), start=start, cadence_days=cadence_days, size_cap=size_cap)
        return self.save_plan(name, waves, created_by)

    def save_plan(self, name: str, waves: list[WaveSpec], created_by: str) -> tuple[int, list[str]]:
        """Save proposed waves as a draft plan, through the WAL (namespace `waves`, operation `save_plan`)."""
        with WalStore(self.engine).action(namespace="waves", operation="save_plan", target="waves.plans",
                                          payload={"name": name, "created_by": created_by, "waves": len(waves)}
                                          ) as intent:
            plan_id, ids = self._save_plan(name, waves, created_by)
            intent.result = {"plan": plan_id, "waves": ids}
        return plan_id, ids

    def _save_plan(self, name: str, waves: list[WaveSpec], created_by: str) -> tuple[int, list[str]]:
        with self.engine.begin() as conn:
            book = json.dumps(CoexistenceStore(self.engine).book_drops())
            plan_id = conn.execute(text("INSERT INTO waves.plans (name, created_by, book) VALUES (:n, :b, :book) "
                                        "RETURNING plan_id"), {"n": name, "b": created_by, "book": book}).scalar_one()
            ids = []
            for w in waves:
                wave_id = f"p{plan_id}-w{w.number:02d}"
                conn.execute(text(
                    "INSERT INTO waves.waves (wave_id, plan_id, number, name, target, criteria, size_cap, scheduled_start, "
                    "gates, estimated) VALUES (:id, :plan, :num, :name, :target, CAST(:criteria AS jsonb), :cap, :start, "
                    "CAST(:gates AS jsonb), :est)"),
                    {"id": wave_id, "plan": plan_id, "num": w.number, "name": w.name, "target": w.target,
                     "criteria": json.dumps(w.criteria), "cap": w.size_cap, "start": w.scheduled_start,
                     "gates": json.dumps(w.gates), "est": w.estimated})
                ids.append(wave_id)
        return plan_id, ids

    def waves(self, plan_id: int | None = None) -> list[dict]:
        query = "SELECT * FROM waves.waves" + (" WHERE plan_id = :p" if plan_id else "") + " ORDER BY plan_id, number"
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(text(query), {"p": plan_id}).mappings()]

    def loaded_rows(self, wave_id: str) -> int:
        """Rows the wave has on the new platform, in the DQ queue and on the bridge."""
        with self.engine.connect() as conn:
            return conn.execute(text("SELECT (SELECT count(*) FROM new_platform.policy WHERE wave_id = :w) + "
                                     "(SELECT count(*) FROM targets.dq_queue WHERE wave_id = :w) + "
                                     "(SELECT count(*) FROM targets.coexistence_bridge WHERE wave_id = :w)"),
                                {"w": wave_id}).scalar_one()

    def target_counts(self) -> dict[str, int]:
        """Rows in every target and the registry's wave assignments: what a rollback must put back."""
        queries = {
            "new-platform rows": "SELECT " + " + ".join(f"(SELECT count(*) FROM new_platform.{t})" for t in (
                "policy", "party", "coverage", "rating", "payment", "endorsement", "document", "claim_link")),
            "delivered batch records": "SELECT count(*) FROM targets.outbound_records r JOIN targets.outbound_files f "
                                       "USING (file_id) WHERE f.status = 'delivered' AND r.withdrawn_at IS NULL",
            "queued": "SELECT count(*) FROM targets.dq_queue",
            "bridged": "SELECT count(*) FROM targets.coexistence_bridge",
            "registry rows in a wave": "SELECT count(*) FROM coexistence.registry WHERE wave IS NOT NULL",
            "on the new platform": "SELECT count(*) FROM coexistence.registry WHERE system_of_record = 'new_platform'",
        }
        with self.engine.connect() as conn:
            return {name: conn.execute(text(q)).scalar_one() for name, q in queries.items()}

    def wave(self, wave_id: str) -> dict:
        with self.engine.connect() as conn:
            row = conn.execute(text("SELECT * FROM waves.waves WHERE wave_id = :w"), {"w": wave_id}).mappings().one_or_none()
            if row is None:
                raise UnknownWaveError(wave_id)
            count = conn.execute(text("SELECT count(*) FROM waves.candidates WHERE wave_id = :w"), {"w": wave_id}).scalar_one()
        return {**dict(row), "candidates": count}

    def export_yaml(self, plan_id: int) -> str:
        waves = [{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in w.items()
                  if k in ("wave_id", "number", "name", "target", "criteria", "size_cap", "scheduled_start", "gates",
                           "estimated", "status")} for w in self.waves(plan_id)]
        return yaml.safe_dump({"plan": plan_id, "waves": waves}, sort_keys=False, allow_unicode=True)

    def set_status(self, wave_id: str, status: str, *, allowed_from: tuple[str, ...], reason: str | None = None,
                   approved_by: str | None = None) -> dict:
        """Move a wave to `status` (from one of `allowed_from`), through the WAL: an approval is operation
        `approve`, any other change `set_status` (part of the enclosing intent when one is open)."""
        self.wave(wave_id)  # an unknown wave is refused before anything is written
        operation = "approve" if approved_by else "set_status"
        with WalStore(self.engine).action(namespace="waves", operation=operation, target="waves.waves", wave=wave_id,
                                          payload={"wave": wave_id, "status": status, "reason": reason,
                                                   "approved_by": approved_by}) as intent:
            self._set_status(wave_id, status, allowed_from, reason, approved_by)
            intent.result = {"status": status}
        return {**self.wave(wave_id), "status_wal_id": intent.id}

    def _set_status(self, wave_id: str, status: str, allowed_from: tuple[str, ...], reason: str | None,
                    approved_by: str | None) -> None:
        now = datetime.now(timezone.utc)
        with self.engine.begin() as conn:
            row = conn.execute(text("SELECT status FROM waves.waves WHERE wave_id = :w FOR UPDATE"), {"w": wave_id}).one_or_none()
            if row is None:
                raise UnknownWaveError(wave_id)
            if row[0] not in allowed_from:
                raise WaveError(f"wave {wave_id} is {row[0]}; it must be {' or '.join(allowed_from)} to become {status}")
            conn.execute(text(
                "UPDATE waves.waves SET status = :s, status_reason = :r, updated_at = :now, "
                "approved_by = coalesce(:by, approved_by), approved_at = CASE WHEN :by IS NULL THEN approved_at ELSE :now END, "
                "attempts = attempts + CASE WHEN :s = 'running' THEN 1 ELSE 0 END WHERE wave_id = :w"),
                {"s": status, "r": reason, "now": now, "by": approved_by, "w": wave_id})

    def due(self, now: datetime | None = None) -> list[dict]:
        """Approved waves whose scheduled start has come."""
        now = now or datetime.now(timezone.utc)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(text(
                "SELECT wave_id, attempts FROM waves.waves WHERE status = 'approved' AND scheduled_start <= :now "
                "ORDER BY scheduled_start, wave_id"), {"now": now}).mappings()]

    def set_gates(self, wave_id: str, changes: dict[str, float]) -> dict:
        """Change gate thresholds of a wave that is not running or done (draft, approved, failed, rolled back)."""
        from routing.waves import DEFAULT_GATES

        unknown = sorted(set(changes) - set(DEFAULT_GATES))
        if unknown:
            raise WaveError(f"no gate threshold {', '.join(unknown)}; thresholds are {', '.join(DEFAULT_GATES)}")
        before = self.wave(wave_id)["gates"]
        with WalStore(self.engine).action(namespace="waves", operation="set_gates", target="waves.waves", wave=wave_id,
                                          payload={"wave": wave_id, "changes": changes, "before": before}) as intent:
            self._set_gates(wave_id, changes)
            wave = self.wave(wave_id)
            intent.result = {"gates": wave["gates"]}
        return wave

    def _set_gates(self, wave_id: str, changes: dict[str, float]) -> None:
        with self.engine.begin() as conn:
            row = conn.execute(text("SELECT status, gates FROM waves.waves WHERE wave_id = :w FOR UPDATE"),
                               {"w": wave_id}).one_or_none()
            if row is None:
                raise UnknownWaveError(wave_id)
            if row[0] in ("running", "completed"):
                raise WaveError(f"wave {wave_id} is {row[0]}; its gates can change only before it runs")
            conn.execute(text("UPDATE waves.waves SET gates = CAST(:g AS jsonb), updated_at = now() WHERE wave_id = :w"),
                         {"g": json.dumps({**row[1], **changes}), "w": wave_id})

    def save_report(self, wave_id: str, report: list[dict]) -> None:
        with self.engine.begin() as conn:
            conn.execute(text("UPDATE waves.waves SET report = CAST(:r AS jsonb) WHERE wave_id = :w"),
                         {"r": json.dumps(report), "w": wave_id})

    def candidate_records(self, wave_id: str, block: int = 100_000):
        """The canonical policies and coverages of the wave's candidates that will move (pandas), for its gates, in
        blocks of `block` policies by policy id range (all rows of a policy in one block), read by COPY. Policies
        routing holds back for the DQ queue are not gated: holding them back is the point."""
        from canonical.tables import COVERAGES, POLICIES

        policy_columns = [(c.name, c.type) for c in POLICIES.columns] + [("dq_score", pa.decimal128(5, 2))]
        coverage_columns = [(c.name, c.type) for c in COVERAGES.columns]
        with self.engine.connect() as conn:
            ids = conn.execute(text("SELECT policy_id FROM waves.candidates WHERE wave_id = :w AND target <> 'dq_queue' "
                                    "ORDER BY policy_id"), {"w": wave_id}).scalars().all()
        with psycopg_cursor(self.engine) as cur:
            for i in range(0, len(ids), block):
                lo, hi = (ids[i - 1] if i else ""), ids[min(i + block, len(ids)) - 1]
                frames = []
                for table, columns in (("policies", policy_columns), ("coverages", coverage_columns)):
                    query = sql.SQL(
                        "COPY (SELECT {} FROM waves.candidates c JOIN canonical.{} x ON x.policy_id = c.policy_id "
                        "AND {} WHERE c.wave_id = {} AND c.target <> 'dq_queue' AND c.policy_id > {} "
                        "AND c.policy_id <= {} ORDER BY x.policy_id) TO STDOUT (FORMAT csv)").format(
                        sql.SQL(", ").join(sql.SQL("x.{}").format(sql.Identifier(n)) for n, _ in columns),
                        sql.Identifier(table), in_book("x"), sql.Literal(wave_id), sql.Literal(lo), sql.Literal(hi))
                    frames.append(copy_to_arrow(cur, query, columns).to_pandas())
                yield frames[0], frames[1]

    def select_candidates(self, wave_id: str, wal_id: int | None) -> int:
        """Choose the wave's policies: routed to its target, still on their legacy system and in no other wave,
        matching its criteria, up to its size cap (by policy id). Replaces an earlier selection of the wave."""
        wave = self.wave(wave_id)
        book = self.routed_book(columns=["source_system", "dq_score", *condition_fields(wave["criteria"])])
        mask = selection_mask(wave["criteria"], book, f"wave {wave_id} criteria")
        if wave["target"] != ROUTED:  # a wave for one target takes only the policies routed there
            mask &= np.asarray(pc.fill_null(pc.equal(book.column("target"), wave["target"]), False))
        chosen = book.filter(pa.array(mask))
        now = datetime.now(timezone.utc)
        with psycopg_cursor(self.engine) as cur:
            # selections run one at a time (waves may run in parallel): two waves never take the same policy
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('waves.select_candidates'))")
            cur.execute("DELETE FROM waves.candidates WHERE wave_id = %s", (wave_id,))
            cur.execute("CREATE TEMP TABLE chosen (policy_id text PRIMARY KEY, source_system text, dq_score numeric(5,2), "
                        "target text) ON COMMIT DROP")
            copy_arrow(cur, "pg_temp", "chosen", chosen.select(["policy_id", "source_system", "dq_score", "target"]))
            # a policy belongs to one live wave: not yet moved by another wave, and not a candidate of another wave
            # that is approved, running or completed (a policy another wave queued re-enters once remediated)
            cur.execute("""
                INSERT INTO waves.candidates (wave_id, policy_id, source_system, dq_score, target, selected_at, wal_id)
                SELECT %(w)s, c.policy_id, c.source_system, c.dq_score, c.target, %(now)s, %(wal)s
                FROM chosen c JOIN coexistence.registry r USING (policy_id)
                WHERE ((r.wave IS NULL AND r.system_of_record <> 'new_platform') OR r.wave = %(w)s)
                  AND NOT EXISTS (SELECT 1 FROM waves.candidates o JOIN waves.waves ow USING (wave_id)
                                  WHERE o.policy_id = c.policy_id AND o.wave_id <> %(w)s
                                    AND (o.target <> 'dq_queue' OR c.target = 'dq_queue')
                                    AND ow.status IN ('approved', 'running', 'completed'))
                ORDER BY c.policy_id LIMIT %(cap)s
                """, {"w": wave_id, "now": now, "wal": wal_id, "cap": wave["size_cap"]})
            selected = cur.rowcount
            cur.execute("ANALYZE waves.candidates")
            return selected

    def policy_in_wave(self, wave_id: str, policy_id: str) -> str | None:
        """Whether a policy is part of a wave: `candidate` (selected, so a rollback can undo it), `rolled_back` (a
        rollback of this policy from this wave ran before: running it again changes nothing), or None."""
        with self.engine.connect() as conn:
            if conn.execute(text("SELECT 1 FROM waves.candidates WHERE wave_id = :w AND policy_id = :p"),
                            {"w": wave_id, "p": policy_id}).first():
                return "candidate"
            if conn.execute(text("SELECT 1 FROM wal.intents WHERE namespace = 'compensation' AND wave = :w "
                                 "AND payload->>'policy' = :p LIMIT 1"), {"w": wave_id, "p": policy_id}).first():
                return "rolled_back"
        return None

    def candidate_sources(self, wave_id: str) -> list[str]:
        with self.engine.connect() as conn:
            return conn.execute(text("SELECT DISTINCT source_system FROM waves.candidates WHERE wave_id = :w ORDER BY 1"),
                                {"w": wave_id}).scalars().all()

    def candidate_targets(self, wave_id: str) -> dict[str, int]:
        with self.engine.connect() as conn:
            return dict(conn.execute(text("SELECT target, count(*) FROM waves.candidates WHERE wave_id = :w "
                                          "GROUP BY 1 ORDER BY 1"), {"w": wave_id}).all())
