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
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone

import dagster as dg
from sqlalchemy import Engine, text

from resources.database import DatabaseResource
from resources.guard import GUARDED_SCHEMAS, acting_for, as_principal, current_intent, current_principal
from resources.wal_seal import canonical, current_seal, signature_valid

GENESIS = "0" * 64
HASH_VERSION = 2  # 1: sha256 over the entry (before migration 13); 2: HMAC keyed outside the database, seq and state
HOLD_SECONDS = 10  # long enough for a drill to kill the worker there; a retried run holds again, then goes on
_LOCK_CLASS = 0x5741  # advisory lock class for intent ownership ("WA")
_CHAIN_CLASS = 0x574C  # advisory lock class serialising appends to one namespace's chain ("WL")
STATUSES = ("pending", "committed", "failed", "compensated", "dead_lettered")
# every column of wal.intents but its id: each log entry (v2) carries them all as they are after the entry
INTENT_COLUMNS = ("namespace", "operation", "target", "idempotency_key", "payload", "result", "max_retries",
                  "retry_delay_seconds", "backoff", "ttl_seconds", "run_id", "job_name", "asset_key", "partition_key",
                  "wave", "status", "attempts", "error", "created_at", "updated_at", "next_attempt_at", "principal")


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
    return canonical(value)


def _utc(at: datetime) -> str:
    return at.astimezone(timezone.utc).isoformat()


def entry_hash(namespace: str, chain_pos: int, intent_id: int, event: str, at: datetime, body: dict, prev_hash: str) -> str:
    """The hash of a version-1 entry (written before migration 13): its content and its predecessor's hash."""
    content = {
        "namespace": namespace, "chain_pos": chain_pos, "intent_id": intent_id, "event": event,
        "at": _utc(at), "body": body, "prev_hash": prev_hash,
    }
    return hashlib.sha256(_canonical(content).encode()).hexdigest()


def entry_fields(seq: int, namespace: str, chain_pos: int, intent_id: int, event: str, at: datetime, body: dict,
                 prev_hash: str, key_id: str) -> dict:
    """What a version-2 entry's MAC covers: every column of the entry, its place in the replay order included."""
    return {"v": HASH_VERSION, "seq": seq, "namespace": namespace, "chain_pos": chain_pos, "intent_id": intent_id,
            "event": event, "at": _utc(at), "body": body, "prev_hash": prev_hash, "key_id": key_id}


def intent_state(row) -> dict:
    """An intents row as the log records it: every column but the id, times in UTC ISO form, JSON as parsed."""
    state = {}
    for column in INTENT_COLUMNS:
        value = row[column]
        state[column] = _utc(value) if isinstance(value, datetime) else value
    return json.loads(_canonical(state))  # the form it has after a round trip through jsonb


class IntentBusyError(RuntimeError):
    """Another live process is working on the same intent."""


@dataclass
class VerifyReport:
    entries: int
    chains: int
    intents: int
    problems: list[str]
    unkeyed: int = 0  # version-1 entries (plain sha256, written before keyed hashing): checked, but forgeable
    checkpoints: int = 0  # checkpoints whose chain heads were found unchanged

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
    def _append(self, conn, intent_id: int, event: str, body: dict, at: datetime, state_row) -> int:
        """Append one entry to its namespace's chain: the event, and the intent's whole state after it, keyed."""
        namespace = state_row["namespace"]
        seal = current_seal()
        body = {**body, "state": intent_state(state_row)}
        conn.execute(text("SELECT pg_advisory_xact_lock(:c, hashtext(:ns))"), {"c": _CHAIN_CLASS, "ns": namespace})
        head = conn.execute(
            text("SELECT chain_pos, hash FROM wal.chain_heads WHERE namespace = :ns FOR UPDATE"), {"ns": namespace}
        ).one_or_none()
        pos, prev = (head[0] + 1, head[1]) if head else (1, GENESIS)
        seq = conn.execute(text("SELECT nextval(pg_get_serial_sequence('wal.log', 'seq'))")).scalar_one()
        body = json.loads(_canonical(body))  # hash what jsonb will give back
        digest = seal.mac(entry_fields(seq, namespace, pos, intent_id, event, at, body, prev, seal.key_id))
        conn.execute(
            text("INSERT INTO wal.log (seq, namespace, chain_pos, intent_id, event, at, body, prev_hash, hash, "
                 "hash_version, key_id) VALUES (:seq, :ns, :pos, :id, :event, :at, CAST(:body AS jsonb), :prev, :hash, "
                 ":v, :key)"),
            {"seq": seq, "ns": namespace, "pos": pos, "id": intent_id, "event": event, "at": at,
             "body": _canonical(body), "prev": prev, "hash": digest, "v": HASH_VERSION, "key": seal.key_id},
        )
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
        principal: str | None = None,
    ) -> Intent:
        """Write (or, for a known idempotency key, reuse) an intent as pending, and commit it."""
        at = _now()
        principal = principal or current_principal()
        context = {"run_id": run_id, "job_name": job_name, "asset_key": asset_key, "partition_key": partition_key,
                   "wave": wave}
        with self.engine.begin() as c:
            row = c.execute(
                text("SELECT id, namespace, operation, target, attempts, status FROM wal.intents "
                     "WHERE idempotency_key = :k FOR UPDATE"), {"k": key}
            ).one_or_none()
            if row is None:
                state = c.execute(
                    text("""
                        INSERT INTO wal.intents (namespace, operation, target, idempotency_key, payload, max_retries,
                            retry_delay_seconds, backoff, ttl_seconds, run_id, job_name, asset_key, partition_key, wave,
                            status, attempts, created_at, updated_at, principal)
                        VALUES (:ns, :op, :target, :k, CAST(:payload AS jsonb), :mr, :rd, :bo, :ttl, :run_id, :job_name,
                            :asset_key, :partition_key, :wave, 'pending', 1, :at, :at, :principal)
                        RETURNING *"""),
                    {"ns": namespace, "op": operation, "target": target, "k": key, "payload": _canonical(payload),
                     "mr": lifecycle.max_retries, "rd": lifecycle.retry_delay_seconds, "bo": lifecycle.backoff,
                     "ttl": lifecycle.ttl_seconds, "at": at, "principal": principal, **context},
                ).mappings().one()
                self._append(c, state["id"], "intent", {"status": "pending", "attempts": 1}, at, state)
                return Intent(state["id"], namespace, operation, target, key, 1)
            intent_id, namespace, operation, target, attempts, previous = row
            attempts += 1
            state = c.execute(
                text("UPDATE wal.intents SET status = 'pending', attempts = :a, error = NULL, updated_at = :at, "
                     "run_id = :run_id, job_name = coalesce(:job_name, job_name), next_attempt_at = NULL, "
                     "principal = :principal WHERE id = :id RETURNING *"),
                {"a": attempts, "at": at, "id": intent_id, "run_id": run_id, "job_name": job_name,
                 "principal": principal},
            ).mappings().one()
            self._append(c, intent_id, "retry", {"status": "pending", "attempts": attempts, "previous_status": previous},
                         at, state)
            return Intent(intent_id, namespace, operation, target, key, attempts)

    def _transition(self, intent_id: int, event: str, status: str, extra: dict, set_sql: str = "",
                    params: dict | None = None) -> None:
        at = _now()
        with self.engine.begin() as conn:
            conn.execute(text("SELECT 1 FROM wal.intents WHERE id = :id FOR UPDATE"), {"id": intent_id}).one()
            state = conn.execute(
                text(f"UPDATE wal.intents SET status = :status, updated_at = :at{set_sql} WHERE id = :id RETURNING *"),
                {"status": status, "at": at, "id": intent_id, **(params or {})},
            ).mappings().one()
            self._append(conn, intent_id, event, {"status": status, "attempts": state["attempts"], **extra}, at, state)

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

    @contextmanager
    def action(self, *, namespace: str, operation: str, target: str, payload: dict, key: str | None = None,
               wave: str | None = None, principal: str | None = None) -> Iterator[Intent]:
        """A change outside an asset's own intent (an operator's approval, a plan, a status): its own intent,
        committed first, then the work (its transactions carry the intent), then marked committed or failed.
        Inside an open intent, the change is part of that intent's work, and no second intent is written."""
        enclosing = current_intent()
        if enclosing is not None:  # the result stays the enclosing intent's own
            yield Intent(enclosing.id, enclosing.namespace, enclosing.operation, enclosing.target,
                         enclosing.idempotency_key, enclosing.attempts, enclosing.status)
            return
        key = key or f"{namespace}:{operation}:{uuid.uuid4()}"
        with self.owned(key):
            intent = self.begin(namespace=namespace, operation=operation, target=target, key=key, payload=payload,
                                wave=wave, principal=principal, lifecycle=Lifecycle(max_retries=0))
            try:
                with acting_for(intent):
                    yield intent
            except BaseException as error:
                self.fail(intent, f"{type(error).__name__}: {error}")
                raise
            self.commit(intent, intent.result)

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
                 "i.operation, i.target, i.idempotency_key, i.asset_key, i.partition_key, i.run_id, i.principal "
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

    # -- verifying -----------------------------------------------------------------------
    def verify(self, checkpoints: list[dict] | None = None, public_key: str | None = None) -> VerifyReport:
        """Walk every chain, check every entry's MAC (its content, its place in the chain and in the replay order),
        compare every column of every intent with the state its last entry recorded, check that the write guard is
        on every product table, and (given exported checkpoints) that the chain still holds the entries they
        signed. Each problem names the entry and what differs; the first is the first bad entry in replay order."""
        seal = current_seal()
        problems: list[tuple[int, str]] = []  # (seq or a large number, message): sorted into replay order
        entries = unkeyed = 0
        last_event: dict[int, dict] = {}
        first_event: dict[int, dict] = {}
        at_position: dict[tuple[str, int], tuple[int, str]] = {}
        with self.engine.connect() as conn:
            keyed_from = int(conn.execute(text("SELECT value FROM wal.meta WHERE key = 'keyed_from_seq'")).scalar_one())
            heads = {r[0]: (r[1], r[2]) for r in conn.execute(text("SELECT namespace, chain_pos, hash FROM wal.chain_heads"))}
            namespaces = sorted(set(heads) | {r[0] for r in conn.execute(text("SELECT DISTINCT namespace FROM wal.log"))})
            for ns in namespaces:
                expected_pos, prev, prev_seq = 1, GENESIS, 0
                rows = conn.execute(
                    text("SELECT seq, chain_pos, intent_id, event, at, body, prev_hash, hash, hash_version, key_id "
                         "FROM wal.log WHERE namespace = :ns ORDER BY chain_pos"), {"ns": ns})
                for seq, pos, intent_id, event, at, body, prev_hash, digest, version, key_id in rows:
                    entries += 1
                    where = f"wal.log seq {seq} (namespace {ns}, position {pos}, intent {intent_id}, {event})"
                    if pos != expected_pos:
                        problems.append((seq, f"{where}: expected position {expected_pos}; entries before it were "
                                              "deleted"))
                    if prev_hash != prev:
                        problems.append((seq, f"{where}: its predecessor hash does not match the entry before it"))
                    if seq <= prev_seq:
                        problems.append((seq, f"{where}: its seq is not after the entry before it (seq {prev_seq}): "
                                              "the replay order was changed"))
                    if version == 1 and seq >= keyed_from:
                        problems.append((seq, f"{where}: a plain (unkeyed) hash on an entry written after keyed "
                                              f"hashing began at seq {keyed_from}: the chain was rewritten by someone "
                                              "without the key"))
                    elif version == 1:
                        unkeyed += 1
                        if entry_hash(ns, pos, intent_id, event, at, body, prev_hash) != digest:
                            problems.append((seq, f"{where}: content does not match its hash (the entry was edited)"))
                    elif key_id != seal.key_id:
                        problems.append((seq, f"{where}: sealed with key {key_id}, not this WAL's key {seal.key_id} "
                                              f"({seal.source}): rewritten, or verified with the wrong key"))
                    elif seal.mac(entry_fields(seq, ns, pos, intent_id, event, at, body, prev_hash, key_id)) != digest:
                        problems.append((seq, f"{where}: its content, position or seq does not match its keyed hash "
                                              "(the entry was edited or moved)"))
                    expected_pos, prev, prev_seq = pos + 1, digest, seq
                    at_position[(ns, pos)] = (seq, digest)
                    entry = {"event": event, "body": body, "where": where, "seq": seq, "version": version}
                    first_event.setdefault(intent_id, entry)
                    last_event[intent_id] = entry
                head = heads.get(ns)
                if head is None or head != (expected_pos - 1, prev):
                    problems.append((1 << 62, f"chain {ns}: ends at position {expected_pos - 1} but its head says "
                                              f"{head[0] if head else 'nothing'}: entries were deleted from its end or "
                                              "the head was altered"))
            intents = conn.execute(text("SELECT * FROM wal.intents ORDER BY id")).mappings().all()
            problems += [(1 << 62, p) for p in self._guard_problems(conn)]
        for intent in intents:
            first, last = first_event.get(intent["id"]), last_event.get(intent["id"])
            if first is None or first["event"] != "intent":
                problems.append((1 << 61, f"intent {intent['id']}: its 'intent' entry is missing from the log"))
                continue
            if last["version"] >= 2:
                recorded, now = last["body"].get("state", {}), intent_state(intent)
                for column in INTENT_COLUMNS:
                    if _canonical(recorded.get(column)) != _canonical(now[column]):
                        problems.append((last["seq"], f"intent {intent['id']}: {column} is {_short(now[column])} in "
                                                      f"wal.intents but {_short(recorded.get(column))} in its last "
                                                      f"entry, {last['where']}"))
                continue
            recorded = first["body"]  # written before migration 13: what version 1 recorded
            for column in ("operation", "target", "idempotency_key", "payload"):
                if recorded.get(column) != intent[column]:
                    problems.append((first["seq"], f"intent {intent['id']}: {column} in wal.intents differs from "
                                                   f"{first['where']}"))
            if (last["body"].get("status"), last["body"].get("attempts")) != (intent["status"], intent["attempts"]):
                problems.append((last["seq"],
                    f"intent {intent['id']}: wal.intents says {intent['status']} after {intent['attempts']} attempt(s) "
                    f"but the log's last entry {last['where']} says {last['body'].get('status')} after "
                    f"{last['body'].get('attempts')}"))
        matched = 0
        for checkpoint in checkpoints or []:
            found = checkpoint_problems(checkpoint, at_position, public_key or seal.public_key)
            problems += [(1 << 60, p) for p in found]
            matched += not found
        problems.sort(key=lambda p: p[0])
        return VerifyReport(entries=entries, chains=len(namespaces), intents=len(intents),
                            problems=[p for _, p in problems], unkeyed=unkeyed, checkpoints=matched)

    @staticmethod
    def _guard_problems(conn) -> list[str]:
        """Product tables without the write guard, or with it disabled; the log without its append-only trigger."""
        rows = conn.execute(text("""
            SELECT n.nspname || '.' || c.relname, t.tgenabled
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            LEFT JOIN pg_trigger t ON t.tgrelid = c.oid AND t.tgname = 'data_mash_wal_guard'
            WHERE n.nspname = ANY(:schemas) AND c.relkind IN ('r', 'p')
            UNION ALL
            SELECT 'wal.' || c.relname, t.tgenabled FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            LEFT JOIN pg_trigger t ON t.tgrelid = c.oid AND t.tgname = 'wal_append_only'
            WHERE n.nspname = 'wal' AND c.relname IN ('log', 'checkpoints', 'meta')
            ORDER BY 1"""), {"schemas": list(GUARDED_SCHEMAS)}).all()
        return [f"table {table}: " + (("has no write guard" if enabled is None else "its write guard is disabled")
                                      + " (changes to it need not go through the WAL)" if not table.startswith("wal.")
                                      else ("is not append-only" if enabled is None else "its append-only rule is "
                                            "disabled")) for table, enabled in rows if enabled != "O"]

    # -- checkpoints ---------------------------------------------------------------------
    def checkpoint(self, database: str = "") -> dict:
        """The chain heads now, signed with the WAL's checkpoint key, and kept in `wal.checkpoints`: export it
        (`data-mash wal checkpoint --output FILE`) to prove later that no entry up to here was rewritten."""
        seal = current_seal()
        with self.engine.begin() as conn:
            heads = conn.execute(text(
                "SELECT h.namespace, h.chain_pos, l.seq, h.hash FROM wal.chain_heads h JOIN wal.log l "
                "ON l.namespace = h.namespace AND l.chain_pos = h.chain_pos ORDER BY h.namespace")).mappings().all()
            body = {"kind": "data-mash WAL checkpoint", "taken_at": _utc(_now()), "database": database,
                    "key_id": seal.key_id, "public_key": seal.public_key,
                    "heads": [dict(h) for h in heads]}
            signature = seal.sign(body)
            conn.execute(text("INSERT INTO wal.checkpoints (taken_at, body, signature) VALUES (:at, CAST(:b AS jsonb), "
                              ":s)"), {"at": body["taken_at"], "b": _canonical(body), "s": signature})
        return {**body, "signature": signature}

    def stored_checkpoints(self) -> list[dict]:
        with self.engine.connect() as conn:
            return [{**r[0], "signature": r[1]} for r in conn.execute(text(
                "SELECT body, signature FROM wal.checkpoints ORDER BY id"))]
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
            if r["job_name"] is None:  # an operator's change (`action`): never relaunched
                if r["status"] == "pending":
                    plan.append(RecoveryAction(action="dead_letter", reason="the process making this change died "
                                               "before recording its outcome; its transaction either committed or "
                                               "not (check the target)", **base))
                continue  # a failed one was refused, and says why in its error
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
        asset_key: str | None = None,
    ) -> Iterator[Intent]:
        """Commit a pending intent, yield it for the work, then mark it committed, or failed with the error.

        `partition_key` is the partition the work is for when the run covers a range of them (a single-run
        backfill), so that recovery relaunches just that one; by default, the run's partition. An asset check
        names the asset it writes for in `asset_key`."""
        store = self.store()
        op = getattr(context, "op_execution_context", context)  # an asset check's context wraps its op's
        if asset_key is None and op.has_assets_def and op.assets_def.keys:  # ops and checks have no asset
            asset_key = op.asset_key.to_user_string()
        if partition_key is None and op.has_partition_key:
            partition_key = op.partition_key
        with store.owned(key):
            intent = store.begin(
                namespace=namespace, operation=operation, target=target, key=key, payload=payload, lifecycle=lifecycle,
                run_id=op.run.run_id, job_name=op.run.job_name, asset_key=asset_key, partition_key=partition_key,
                wave=wave, principal=run_principal(op.run.tags),
            )
            self.maybe_crash("after_intent", asset_key)
            try:
                with acting_for(intent), as_principal(run_principal(op.run.tags)):
                    yield intent
            except BaseException as error:
                store.fail(intent, f"{type(error).__name__}: {error}")
                raise
            store.commit(intent, intent.result)


PRINCIPAL_TAG = "data_mash/principal"  # who asked for a run: the CLI (and the API) tag the runs they submit


def run_principal(tags) -> str:
    """Who a run works for: the principal that submitted it, else the sensor or schedule that launched it."""
    if tags.get(PRINCIPAL_TAG):
        return tags[PRINCIPAL_TAG]
    for tag, kind in (("dagster/sensor_name", "sensor"), ("dagster/schedule_name", "schedule")):
        if tags.get(tag):
            return f"dagster:{kind}/{tags[tag]}"
    return "dagster:unattributed (launched from the Dagster UI or another client)"


def _short(value) -> str:
    text_ = _canonical(value)
    return text_ if len(text_) <= 80 else text_[:77] + "..."


def checkpoint_problems(checkpoint: dict, at_position: dict, public_key: str) -> list[str]:
    """Why a checkpoint does not hold: not signed by the expected key, or an entry it signed is not there now."""
    body = {k: v for k, v in checkpoint.items() if k != "signature"}
    taken = f"checkpoint of {checkpoint.get('taken_at', '?')}"
    if checkpoint.get("public_key") != public_key:
        return [f"{taken}: signed by key {str(checkpoint.get('public_key'))[:16]}…, not the expected "
                f"{public_key[:16]}…"]
    if not signature_valid(body, checkpoint.get("signature", ""), public_key):
        return [f"{taken}: its signature does not match its content (the checkpoint was altered)"]
    problems = []
    for head in checkpoint.get("heads", []):
        now = at_position.get((head["namespace"], head["chain_pos"]))
        if now is None:
            problems.append(f"{taken}: chain {head['namespace']} has no entry at position {head['chain_pos']} any "
                            "more (entries were deleted)")
        elif now != (head["seq"], head["hash"]):
            problems.append(f"{taken}: chain {head['namespace']} position {head['chain_pos']} is now seq {now[0]}, "
                            f"hash {now[1][:16]}…; the checkpoint signed seq {head['seq']}, hash {head['hash'][:16]}… "
                            "(the chain was rewritten)")
    return problems
