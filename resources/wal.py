"""The write-ahead log: every change to stored state is an intent, committed, before it happens.

Two tables. `wal.intents` holds one row per idempotency key: what is to be done, to what, its
lifecycle and its current status. `wal.log` is append-only: every event of every intent (intent,
retry, committed, failed, compensated, dead_lettered), hash-chained per namespace, each entry
holding the hash of its predecessor, with the chain's head in `wal.chain_heads`. `verify` walks
the chains and cross-checks the intents against their events, so an edited, inserted or deleted
entry is found and named.

While an intent's work runs, its process holds a PostgreSQL session advisory lock on the
intent's key. If the process dies, PostgreSQL releases the lock: a pending intent whose lock is
free has lost its owner, and recovery re-launches it. This is how "the run is no longer alive" is
known without guessing from timestamps.
"""


import hashlib
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone

import dagster as dg
from sqlalchemy import Engine, text

from resources.database import DatabaseResource

GENESIS = "0" * 64
HOLD_SECONDS = 10  # long enough for a drill to kill the worker there; a retried run holds again, then goes on
_LOCK_CLASS = 0x5741  # advisory lock class for intent ownership ("WA")
_CHAIN_CLASS = 0x574C  # advisory lock class serialising appends to one namespace's chain ("WL")
STATUSES = ("pending", "committed", "failed", "compensated", "dead_lettered")


@dataclass(frozen=True)
class Lifecycle:
    """How an intent is retried: attempts allowed after the first, delay, backoff, and time to live."""

    max_retries: int = 3
    retry_delay_seconds: float = 30.0
    backoff: float = 2.0
    ttl_seconds: int = 7 * 24 * 3600

    def delay_after(self, attempts: int) -> float:
        return self.retry_delay_seconds * self.backoff ** max(attempts - 1, 0)


@dataclass
class Intent:
    id: int
    namespace: str
    operation: str
    target: str
    idempotency_key: str
    attempts: int
    status: str = "pending"
    result: dict = field(default_factory=dict)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def entry_hash(namespace: str, chain_pos: int, intent_id: int, event: str, at: datetime, body: dict, prev_hash: str) -> str:
    """The hash of one log entry: its content and its predecessor's hash."""
    content = {
        "namespace": namespace, "chain_pos": chain_pos, "intent_id": intent_id, "event": event,
        "at": at.astimezone(timezone.utc).isoformat(), "body": body, "prev_hash": prev_hash,
    }
    return hashlib.sha256(_canonical(content).encode()).hexdigest()


class IntentBusyError(RuntimeError):
    """Another live process is working on the same intent."""


@dataclass
class VerifyReport:
    entries: int
    chains: int
    intents: int
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class RecoveryAction:
    intent_id: int
    action: str  # relaunch | dead_letter | wait
    reason: str
    job_name: str | None
    asset_key: str | None
    partition_key: str | None
    attempts: int


class WalStore:
    """The WAL over one PostgreSQL database. Every statement is parameterized."""

    def __init__(self, engine: Engine):
        self.engine = engine

    # -- writing -------------------------------------------------------------------------
    def _append(self, conn, namespace: str, intent_id: int, event: str, body: dict, at: datetime) -> int:
        conn.execute(text("SELECT pg_advisory_xact_lock(:c, hashtext(:ns))"), {"c": _CHAIN_CLASS, "ns": namespace})
        head = conn.execute(
            text("SELECT chain_pos, hash FROM wal.chain_heads WHERE namespace = :ns FOR UPDATE"), {"ns": namespace}
        ).one_or_none()
        pos, prev = (head[0] + 1, head[1]) if head else (1, GENESIS)
        digest = entry_hash(namespace, pos, intent_id, event, at, body, prev)
        seq = conn.execute(
            text("INSERT INTO wal.log (namespace, chain_pos, intent_id, event, at, body, prev_hash, hash) "
                 "VALUES (:ns, :pos, :id, :event, :at, CAST(:body AS jsonb), :prev, :hash) RETURNING seq"),
            {"ns": namespace, "pos": pos, "id": intent_id, "event": event, "at": at, "body": _canonical(body),
             "prev": prev, "hash": digest},
        ).scalar_one()
        conn.execute(
            text("INSERT INTO wal.chain_heads (namespace, chain_pos, hash) VALUES (:ns, :pos, :hash) "
                 "ON CONFLICT (namespace) DO UPDATE SET chain_pos = EXCLUDED.chain_pos, hash = EXCLUDED.hash"),
            {"ns": namespace, "pos": pos, "hash": digest},
        )
        return seq

    def begin(
        self,
        *,
        namespace: str,
        operation: str,
        target: str,
        key: str,
        payload: dict,
        lifecycle: Lifecycle = Lifecycle(),
        run_id: str | None = None,
        job_name: str | None = None,
        asset_key: str | None = None,
        partition_key: str | None = None,
        wave: str | None = None,
    ) -> Intent:
        """Write (or, for a known idempotency key, reuse) an intent as pending, and commit it."""
        at = _now()
        context = {"run_id": run_id, "job_name": job_name, "asset_key": asset_key, "partition_key": partition_key, "wave": wave}
        with self.engine.begin() as c:
            row = c.execute(
                text("SELECT id, namespace, operation, target, attempts, status FROM wal.intents "
                     "WHERE idempotency_key = :k FOR UPDATE"), {"k": key}
            ).one_or_none()
            if row is None:
                intent_id = c.execute(
                    text("""
                        INSERT INTO wal.intents (namespace, operation, target, idempotency_key, payload, max_retries,
                            retry_delay_seconds, backoff, ttl_seconds, run_id, job_name, asset_key, partition_key, wave,
                            status, attempts, created_at, updated_at)
                        VALUES (:ns, :op, :target, :k, CAST(:payload AS jsonb), :mr, :rd, :bo, :ttl, :run_id, :job_name,
                            :asset_key, :partition_key, :wave, 'pending', 1, :at, :at)
                        RETURNING id"""),
                    {"ns": namespace, "op": operation, "target": target, "k": key, "payload": _canonical(payload),
                     "mr": lifecycle.max_retries, "rd": lifecycle.retry_delay_seconds, "bo": lifecycle.backoff,
                     "ttl": lifecycle.ttl_seconds, "at": at, **context},
                ).scalar_one()
                body = {"status": "pending", "attempts": 1, "operation": operation, "target": target,
                        "idempotency_key": key, "payload": payload, "lifecycle": asdict(lifecycle), **context}
                self._append(c, namespace, intent_id, "intent", body, at)
                return Intent(intent_id, namespace, operation, target, key, 1)
            intent_id, namespace, operation, target, attempts, previous = row
            attempts += 1
            c.execute(
                text("UPDATE wal.intents SET status = 'pending', attempts = :a, error = NULL, updated_at = :at, "
                     "run_id = :run_id, job_name = coalesce(:job_name, job_name), next_attempt_at = NULL "
                     "WHERE id = :id"),
                {"a": attempts, "at": at, "id": intent_id, "run_id": run_id, "job_name": job_name},
            )
            self._append(c, namespace, intent_id, "retry",
                         {"status": "pending", "attempts": attempts, "previous_status": previous, "run_id": run_id}, at)
            return Intent(intent_id, namespace, operation, target, key, attempts)

    def _transition(self, intent_id: int, event: str, status: str, extra: dict, set_sql: str = "", params: dict | None = None) -> None:
        at = _now()
        with self.engine.begin() as conn:
            row = conn.execute(text("SELECT namespace, attempts FROM wal.intents WHERE id = :id FOR UPDATE"),
                               {"id": intent_id}).one()
            conn.execute(
                text(f"UPDATE wal.intents SET status = :status, updated_at = :at{set_sql} WHERE id = :id"),
                {"status": status, "at": at, "id": intent_id, **(params or {})},
            )
            self._append(conn, row[0], intent_id, event, {"status": status, "attempts": row[1], **extra}, at)

    def commit(self, intent: Intent, result: dict | None = None) -> None:
        result = result or {}
        self._transition(intent.id, "committed", "committed", {"result": result},
                         ", result = CAST(:result AS jsonb)", {"result": _canonical(result)})
        intent.status = "committed"

    def fail(self, intent: Intent, error: str) -> None:
        with self.engine.connect() as conn:
            delay, backoff = conn.execute(
                text("SELECT retry_delay_seconds, backoff FROM wal.intents WHERE id = :id"), {"id": intent.id}).one()
        due = _now() + timedelta(seconds=delay * backoff ** max(intent.attempts - 1, 0))
        self._transition(intent.id, "failed", "failed", {"error": error[:2000]},
                         ", error = :error, next_attempt_at = :due", {"error": error[:2000], "due": due})
        intent.status = "failed"

    def dead_letter(self, intent_id: int, reason: str) -> None:
        self._transition(intent_id, "dead_lettered", "dead_lettered", {"reason": reason},
                         ", error = :error", {"error": reason})

    def compensated(self, intent_id: int, detail: dict) -> None:
        self._transition(intent_id, "compensated", "compensated", {"detail": detail})

    # -- ownership -----------------------------------------------------------------------
    @contextmanager
    def owned(self, key: str) -> Iterator[None]:
        """Hold the intent's ownership lock for the duration of its work (released if we die)."""
        conn = self.engine.connect()
        try:
            got = conn.execute(text("SELECT pg_try_advisory_lock(:c, hashtext(:k))"), {"c": _LOCK_CLASS, "k": key}).scalar_one()
            conn.commit()
            if not got:
                raise IntentBusyError(f"another live run is working on WAL intent {key!r}; wait for it or cancel it")
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:c, hashtext(:k))"), {"c": _LOCK_CLASS, "k": key})
                conn.commit()
        finally:
            conn.close()

    def owner_alive(self, key: str) -> bool:
        with self.engine.connect() as conn:
            got = conn.execute(text("SELECT pg_try_advisory_lock(:c, hashtext(:k))"), {"c": _LOCK_CLASS, "k": key}).scalar_one()
            if got:
                conn.execute(text("SELECT pg_advisory_unlock(:c, hashtext(:k))"), {"c": _LOCK_CLASS, "k": key})
            conn.commit()
        return not got

    # -- reading -------------------------------------------------------------------------
    def get(self, intent_id: int) -> dict | None:
        with self.engine.connect() as conn:
            row = conn.execute(text("SELECT * FROM wal.intents WHERE id = :id"), {"id": intent_id}).mappings().one_or_none()
        return dict(row) if row else None

    def events(self, intent_id: int) -> list[dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(text("SELECT seq, namespace, chain_pos, event, at, body, hash FROM wal.log "
                                     "WHERE intent_id = :id ORDER BY seq"), {"id": intent_id}).mappings().all()
        return [dict(r) for r in rows]

    def replay(self, namespace: str | None = None, since: datetime | None = None, until: datetime | None = None) -> Iterator[dict]:
        """Log entries in the order they were written, optionally by namespace and time range [since, until)."""
        query = ("SELECT l.seq, l.namespace, l.chain_pos, l.intent_id, l.event, l.at, l.body, l.hash, "
                 "i.operation, i.target, i.idempotency_key, i.asset_key, i.partition_key, i.run_id "
                 "FROM wal.log l JOIN wal.intents i ON i.id = l.intent_id WHERE true")
        params: dict = {}
        if namespace:
            query += " AND l.namespace = :ns"
            params["ns"] = namespace
        if since:
            query += " AND l.at >= :since"
            params["since"] = since
        if until:
            query += " AND l.at < :until"
            params["until"] = until
        with self.engine.connect() as conn:
            for row in conn.execute(text(query + " ORDER BY l.seq"), params).mappings():
                yield dict(row)

    def verify(self) -> VerifyReport:
        """Walk every chain and cross-check the intents; name each entry that was altered."""
        problems: list[str] = []
        entries = 0
        last_event: dict[int, dict] = {}
        first_event: dict[int, dict] = {}
        with self.engine.connect() as conn:
            heads = {r[0]: (r[1], r[2]) for r in conn.execute(text("SELECT namespace, chain_pos, hash FROM wal.chain_heads"))}
            namespaces = sorted(set(heads) | {r[0] for r in conn.execute(text("SELECT DISTINCT namespace FROM wal.log"))})
            for ns in namespaces:
                expected_pos, prev = 1, GENESIS
                rows = conn.execute(
                    text("SELECT seq, chain_pos, intent_id, event, at, body, prev_hash, hash FROM wal.log "
                         "WHERE namespace = :ns ORDER BY chain_pos"), {"ns": ns})
                for seq, pos, intent_id, event, at, body, prev_hash, digest in rows:
                    entries += 1
                    where = f"wal.log seq {seq} (namespace {ns}, position {pos}, intent {intent_id}, {event})"
                    if pos != expected_pos:
                        problems.append(f"{where}: expected position {expected_pos}; entries before it were deleted")
                    if prev_hash != prev:
                        problems.append(f"{where}: its predecessor hash does not match the entry before it")
                    if entry_hash(ns, pos, intent_id, event, at, body, prev_hash) != digest:
                        problems.append(f"{where}: content does not match its hash (the entry was edited)")
                    expected_pos, prev = pos + 1, digest
                    first_event.setdefault(intent_id, {"event": event, "body": body, "where": where})
                    last_event[intent_id] = {"event": event, "body": body, "where": where}
                head = heads.get(ns)
                if head is None or head != (expected_pos - 1, prev):
                    problems.append(
                        f"chain {ns}: ends at position {expected_pos - 1} but its head says "
                        f"{head[0] if head else 'nothing'}: entries were deleted from its end or the head was altered")
            intents = conn.execute(
                text("SELECT id, namespace, operation, target, idempotency_key, payload, status, attempts FROM wal.intents ORDER BY id")
            ).mappings().all()
        for intent in intents:
            first, last = first_event.get(intent["id"]), last_event.get(intent["id"])
            if first is None or first["event"] != "intent":
                problems.append(f"intent {intent['id']}: its 'intent' entry is missing from the log")
                continue
            recorded = first["body"]
            for column in ("operation", "target", "idempotency_key", "payload"):
                if recorded.get(column) != intent[column]:
                    problems.append(f"intent {intent['id']}: {column} in wal.intents differs from {first['where']}")
            if (last["body"].get("status"), last["body"].get("attempts")) != (intent["status"], intent["attempts"]):
                problems.append(
                    f"intent {intent['id']}: wal.intents says {intent['status']} after {intent['attempts']} attempt(s) "
                    f"but the log's last entry {last['where']} says {last['body'].get('status')} after "
                    f"{last['body'].get('attempts')}")
        return VerifyReport(entries=entries, chains=len(namespaces), intents=len(intents), problems=problems)

    # -- recovery ------------------------------------------------------------------------
    def recovery_plan(self, now: datetime | None = None) -> list[RecoveryAction]:
        """What to do with every intent not done: relaunch, dead-letter, or wait for its delay."""
        now = now or _now()
        with self.engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT id, idempotency_key, status, attempts, max_retries, retry_delay_seconds, backoff, ttl_seconds, "
                "created_at, updated_at, next_attempt_at, job_name, asset_key, partition_key "
                # a wave's intents are settled by compensation (rollback_wave_job), never relaunched one by one
                "FROM wal.intents WHERE status IN ('pending', 'failed') AND wave IS NULL ORDER BY id")).mappings().all()
        plan = []
        for r in rows:
            base = dict(intent_id=r["id"], job_name=r["job_name"], asset_key=r["asset_key"],
                        partition_key=r["partition_key"], attempts=r["attempts"])
            if r["status"] == "pending" and self.owner_alive(r["idempotency_key"]):
                continue  # its run is alive and working
            if r["created_at"] + timedelta(seconds=r["ttl_seconds"]) < now:
                plan.append(RecoveryAction(action="dead_letter", reason=f"expired: older than its ttl of {r['ttl_seconds']} s", **base))
            elif r["attempts"] > r["max_retries"]:
                plan.append(RecoveryAction(action="dead_letter",
                                           reason=f"{r['attempts']} attempts made, {r['max_retries']} retries allowed", **base))
            else:
                delay = r["retry_delay_seconds"] * r["backoff"] ** max(r["attempts"] - 1, 0)
                due = r["next_attempt_at"] or (r["updated_at"] + timedelta(seconds=delay))
                why = "its run died with the intent pending" if r["status"] == "pending" else "it failed"
                if due <= now:
                    plan.append(RecoveryAction(action="relaunch", reason=f"{why}; attempt {r['attempts'] + 1}", **base))
                else:
                    plan.append(RecoveryAction(action="wait", reason=f"{why}; next attempt after {due.isoformat()}", **base))
        return plan

    def wave_entries(self, wave_id: str, operations: tuple[str, ...], statuses: tuple[str, ...]) -> list[dict]:
        """A wave's intents of these operations and statuses, latest first (by the last event each wrote):
        the order compensation undoes them in."""
        with self.engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT i.id, i.operation, i.target, i.status, i.attempts, i.idempotency_key, i.run_id, "
                "(SELECT max(seq) FROM wal.log l WHERE l.intent_id = i.id) AS last_seq FROM wal.intents i "
                "WHERE i.wave = :w AND i.operation = ANY(:ops) AND i.status = ANY(:st) ORDER BY last_seq DESC"),
                {"w": wave_id, "ops": list(operations), "st": list(statuses)}).mappings().all()
        return [dict(r) for r in rows]

    def status_of(self, key: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(text("SELECT status FROM wal.intents WHERE idempotency_key = :k"), {"k": key}).scalar()

    # -- audit ---------------------------------------------------------------------------
    def audit_trail(self, policy_id: str, key_columns: dict[str, str]) -> list[dict]:
        """Every WAL event of every intent that wrote a row of this policy, in order.

        `key_columns` maps a staging table (schema.table) to its policy-id column.
        """
        intent_ids: dict[int, set[str]] = {}
        with self.engine.connect() as conn:
            for table, column in key_columns.items():
                schema, name = table.split(".", 1)
                ident = f'"{schema}"."{name}"'
                for (wal_id,) in conn.execute(
                    text(f'SELECT DISTINCT wal_id FROM {ident} WHERE "{column}" = :p AND wal_id IS NOT NULL'),
                    {"p": policy_id},
                ):
                    intent_ids.setdefault(wal_id, set()).add(table)
            if not intent_ids:
                return []
            rows = conn.execute(
                text("SELECT l.seq, l.at, l.event, l.intent_id, l.body ->> 'status' AS status, i.operation, i.target, "
                     "i.asset_key, i.partition_key, i.run_id FROM wal.log l JOIN wal.intents i ON i.id = l.intent_id "
                     "WHERE l.intent_id = ANY(:ids) ORDER BY l.seq"),
                {"ids": list(intent_ids)},
            ).mappings().all()
        return [{**dict(r), "tables": sorted(intent_ids[r["intent_id"]])} for r in rows]


class InjectedFault(RuntimeError):
    """A failure injected by configuration (`WriteAheadLog.fault`), for demos and tests of compensation."""


class WriteAheadLog(dg.ConfigurableResource):
    """Write through the WAL: `with wal.intent(context, ...) as intent:` around any change to stored state.

    `fault` injects a failure for tests and demos: `<point>:<asset key>` with point `after_intent` or
    `mid_load` makes the process exit at once there, as a killed worker would; `fail:<point>:<asset key>`
    raises `InjectedFault` there instead, as a load that errors partway would (its step and run fail);
    `hold:<point>:<asset key>` stops there for a while, for a drill that kills the worker from outside.
    """

    database: dg.ResourceDependency[DatabaseResource]
    fault: str = ""

    def store(self) -> WalStore:
        return WalStore(self.database.engine())

    def maybe_crash(self, point: str, asset_key: str) -> None:
        if self.fault and self.fault == f"{point}:{asset_key}":
            os._exit(137)
        if self.fault and self.fault == f"hold:{point}:{asset_key}":
            time.sleep(HOLD_SECONDS)  # a worker stuck there: drills kill it from outside (SIGKILL, a restart)
        if self.fault and self.fault == f"fail:{point}:{asset_key}":
            raise InjectedFault(f"fault injected at {point} of {asset_key} (the wal resource's fault setting)")

    @contextmanager
    def intent(
        self,
        context: dg.AssetExecutionContext,
        *,
        namespace: str,
        operation: str,
        target: str,
        key: str,
        payload: dict,
        lifecycle: Lifecycle = Lifecycle(),
        wave: str | None = None,
        partition_key: str | None = None,
    ) -> Iterator[Intent]:
        """Commit a pending intent, yield it for the work, then mark it committed, or failed with the error.

        `partition_key` is the partition the work is for when the run covers a range of them (a single-run
        backfill), so that recovery relaunches just that one; by default, the run's partition."""
        store = self.store()
        asset_key = context.asset_key.to_user_string() if context.has_assets_def else None  # ops have no asset
        with store.owned(key):
            intent = store.begin(
                namespace=namespace, operation=operation, target=target, key=key, payload=payload, lifecycle=lifecycle,
                run_id=context.run.run_id, job_name=context.run.job_name, asset_key=asset_key,
                partition_key=partition_key or (context.partition_key if context.has_partition_key else None), wave=wave,
            )
            self.maybe_crash("after_intent", asset_key)
            try:
                yield intent
            except BaseException as error:
                store.fail(intent, f"{type(error).__name__}: {error}")
                raise
            store.commit(intent, intent.result)
