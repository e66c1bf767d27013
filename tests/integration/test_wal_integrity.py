"""Integrity you can prove, on a real PostgreSQL: the database refuses a change outside a WAL intent, and `wal verify`
catches every edit of an entry or an intent, a change of the replay order, a chain rewritten with recomputed hashes
(by someone without the key, and, through an exported checkpoint, by someone with it), and a disabled guard."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone

import pytest
from sqlalchemy import text

from resources.guard import GUARDED_SCHEMAS
from resources.wal import GENESIS, INTENT_COLUMNS, WalStore, canonical, entry_fields, entry_hash
from resources.wal_seal import Seal, current_seal
from tests.book import as_intent, tampered

pytestmark = pytest.mark.postgres


def history(engine, n: int = 4) -> WalStore:
    """A few intents through the WAL: committed, failed, retried, with results and errors."""
    store = WalStore(engine)
    for i in range(n):
        with store.owned(f"k{i}"):
            intent = store.begin(namespace="test", operation="write", target="test.thing", key=f"k{i}",
                                 payload={"n": i}, run_id=f"run-{i}", job_name="some_job", asset_key="some/asset",
                                 partition_key=f"p{i}", wave=f"w{i}")
            if i == 1:
                store.fail(intent, "boom")
                intent = store.begin(namespace="test", operation="write", target="test.thing", key=f"k{i}",
                                     payload={"n": i}, run_id=f"run-{i}b", job_name="some_job")
            store.commit(intent, {"written": i})
    assert store.verify().ok, store.verify().problems
    return store


def product_tables(engine) -> list[str]:
    with engine.connect() as conn:
        return conn.execute(text(
            "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = ANY(:s) AND c.relkind IN ('r', 'p') ORDER BY 1"), {"s": list(GUARDED_SCHEMAS)}).scalars().all()


# --------------------------------------------------------------------------- the write guard
def test_every_product_table_refuses_a_write_outside_an_intent_and_takes_one_inside(routed_book, engine):
    tables = product_tables(engine)
    # every guarded schema has tables, including the ones made at run time (staging partitions of the drops)
    assert {t.split(".")[0] for t in tables} == set(GUARDED_SCHEMAS)
    assert any(t.startswith("staging.") and "__" in t for t in tables)
    statements = ["INSERT INTO {t} SELECT * FROM {t} WHERE false", "UPDATE {t} SET {c} = {c} WHERE false",
                  "DELETE FROM {t} WHERE false", "TRUNCATE {t} CASCADE"]
    refused = []
    for table in tables:
        schema, name = table.split(".")
        with engine.connect() as conn:
            column = conn.execute(text("SELECT column_name FROM information_schema.columns WHERE table_schema = :s "
                                       "AND table_name = :t ORDER BY ordinal_position LIMIT 1"),
                                  {"s": schema, "t": name}).scalar_one()
        for statement in statements:
            sql = statement.format(t=f'"{schema}"."{name}"', c=f'"{column}"')
            with engine.connect() as conn:
                try:
                    conn.execute(text(sql))
                except Exception as error:  # noqa: BLE001 - the guard's refusal is what is tested
                    assert "refused: no WAL intent is open in this transaction" in str(error), (sql, error)
                    refused.append(sql)
                conn.rollback()
    assert len(refused) == len(tables) * len(statements)
    # the same statements inside an intent go through (TRUNCATE aside: it would empty the table)
    with as_intent(engine, "guard test"), engine.begin() as conn:
        for table in tables:
            conn.execute(text(f'DELETE FROM {table} WHERE false'))


def test_the_guard_refuses_an_intent_that_is_not_pending_and_lets_only_the_platform_s_own_users_in(engine):
    store = WalStore(engine)
    with as_intent(engine) as intent:
        pass
    assert store.get(intent.id)["status"] == "committed"
    with engine.connect() as conn, pytest.raises(Exception, match=f"WAL intent {intent.id} is not pending"):
        conn.execute(text("SELECT set_config('data_mash.intent', :i, true)"), {"i": str(intent.id)})
        conn.execute(text("DELETE FROM waves.waves WHERE false"))
    # the new platform's own users change its tables outside Data Mash, and say so; nowhere else
    with engine.begin() as conn:
        conn.execute(text("SELECT set_config('data_mash.external_writer', 'platform users', true)"))
        conn.execute(text("DELETE FROM new_platform.policy WHERE false"))
    with engine.connect() as conn, pytest.raises(Exception, match="refused: no WAL intent"):
        conn.execute(text("SELECT set_config('data_mash.external_writer', 'platform users', true)"))
        conn.execute(text("DELETE FROM coexistence.registry WHERE false"))


def test_operator_actions_are_intents_with_their_principal(routed_book, engine, monkeypatch):
    from resources.coexistence_store import CoexistenceStore
    from resources.wave_store import WaveStore
    from routing.waves import ROUTED, WaveSpec

    monkeypatch.setenv("DATA_MASH_PRINCIPAL", "alice@insurer")
    with engine.connect() as conn:
        before = conn.execute(text("SELECT max(id) FROM wal.intents")).scalar_one()
    waves = WaveStore(engine)
    _, (wave,) = waves.save_plan("plan", [WaveSpec(0, "all", ROUTED, True, 10, datetime.now(timezone.utc))], "alice")
    waves.set_gates(wave, {"min_dq_score": 90.0})
    waves.set_status(wave, "approved", allowed_from=("draft",), approved_by="bob")
    with engine.connect() as conn:
        policy = conn.execute(text("SELECT min(policy_id) FROM coexistence.registry")).scalar_one()
    CoexistenceStore(engine).override(policy, "dq_queue", "claims team holds it", "alice")
    with engine.connect() as conn:
        actions = conn.execute(text("SELECT operation, status, principal FROM wal.intents WHERE id > :b ORDER BY id"),
                               {"b": before}).all()
    assert [tuple(a) for a in actions] == [("save_plan", "committed", "alice@insurer"),
                                           ("set_gates", "committed", "alice@insurer"),
                                           ("approve", "committed", "alice@insurer"),
                                           ("manual_override", "committed", "alice@insurer")]
    # a refused action writes nothing but its failed intent, which says why
    with pytest.raises(Exception, match="must be draft"):
        waves.set_status(wave, "approved", allowed_from=("draft",), approved_by="bob")
    with engine.connect() as conn:
        last = conn.execute(text("SELECT operation, status, error FROM wal.intents ORDER BY id DESC LIMIT 1")).one()
    assert last.operation == "approve" and last.status == "failed" and "must be draft" in last.error
    assert WalStore(engine).verify().ok


def test_the_log_is_append_only(engine):
    history(engine, 1)
    for statement in ("UPDATE wal.log SET event = 'x'", "DELETE FROM wal.log", "TRUNCATE wal.log CASCADE"):
        with engine.connect() as conn, pytest.raises(Exception, match="the WAL is append-only"):
            conn.execute(text(statement))


# --------------------------------------------------------------------------- verify: every column, the order
TAMPERED_VALUES = {"payload": "'{\"n\": 99}'", "result": "'{\"written\": 99}'", "max_retries": "9",
                   "retry_delay_seconds": "1.5", "backoff": "9", "ttl_seconds": "1", "status": "'dead_lettered'",
                   "attempts": "7", "error": "'edited'", "created_at": "created_at - interval '1 day'",
                   "updated_at": "updated_at + interval '1 second'", "next_attempt_at": "now()"}


@pytest.mark.parametrize("column", INTENT_COLUMNS)
def test_verify_catches_an_edit_of_any_intent_column_and_names_it(engine, column):
    store = history(engine)
    value = TAMPERED_VALUES.get(column, "'mallory'")
    with tampered(engine) as conn:
        conn.execute(text(f"UPDATE wal.intents SET {column} = {value} WHERE id = 3"))
    report = store.verify()
    assert not report.ok
    assert any(p.startswith(f"intent 3: {column} is ") for p in report.problems), report.problems


@pytest.mark.parametrize("column, value", [
    ("body", "jsonb_set(body, '{state,principal}', '\"mallory\"')"), ("event", "'committed'"),
    ("at", "at + interval '1 second'"), ("intent_id", "intent_id + 1"), ("prev_hash", f"'{'1' * 64}'"),
    ("hash", f"'{'2' * 64}'"), ("key_id", "'0000000000000000'"), ("chain_pos", "chain_pos + 100"),
])
def test_verify_catches_an_edit_of_any_entry_column(engine, column, value):
    store = history(engine)
    with engine.connect() as conn:
        seq = conn.execute(text("SELECT seq FROM wal.log ORDER BY seq OFFSET 3 LIMIT 1")).scalar_one()
    with tampered(engine) as conn:
        conn.execute(text(f"UPDATE wal.log SET {column} = {value} WHERE seq = :s"), {"s": seq})
    report = store.verify()
    assert not report.ok
    assert f"seq {seq} " in report.problems[0] or f"wal.log seq {seq}" in " ".join(report.problems), report.problems


def test_verify_catches_two_entries_that_swap_places_in_the_replay_order(engine):
    store = history(engine)
    with engine.connect() as conn:
        a, b = conn.execute(text("SELECT seq FROM wal.log ORDER BY seq OFFSET 2 LIMIT 2")).scalars()
    replayed = [e["seq"] for e in store.replay()]
    with tampered(engine) as conn:
        conn.execute(text("UPDATE wal.log SET seq = -1 WHERE seq = :a"), {"a": a})
        conn.execute(text("UPDATE wal.log SET seq = :a WHERE seq = :b"), {"a": a, "b": b})
        conn.execute(text("UPDATE wal.log SET seq = :b WHERE seq = -1"), {"b": b})
    assert [e["seq"] for e in store.replay()] == replayed  # same numbers, other entries at them
    report = store.verify()
    assert not report.ok
    assert f"wal.log seq {a} " in report.problems[0], report.problems


def _rewrite_chain(engine, *, seal: Seal | None, principal: str = "mallory") -> None:
    """What someone with database access does to hide an edit: change an intent's principal everywhere and recompute
    every hash of its chain after it (a plain sha256 without the key; with the key, its MACs)."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT seq, namespace, chain_pos, intent_id, event, at, body FROM wal.log "
                                 "WHERE namespace = 'test' ORDER BY chain_pos")).mappings().all()
    prev = GENESIS
    with tampered(engine) as conn:
        conn.execute(text("UPDATE wal.intents SET principal = :p WHERE id = 2"), {"p": principal})
        for r in rows:
            body = dict(r["body"])
            if r["intent_id"] == 2:
                body["state"] = {**body["state"], "principal": principal}
            if seal is None:
                digest, version, key = entry_hash(r["namespace"], r["chain_pos"], r["intent_id"], r["event"], r["at"],
                                                  body, prev), 1, None
            else:
                digest = seal.mac(entry_fields(r["seq"], r["namespace"], r["chain_pos"], r["intent_id"], r["event"],
                                               r["at"], body, prev, seal.key_id))
                version, key = 2, seal.key_id
            conn.execute(text("UPDATE wal.log SET body = CAST(:b AS jsonb), prev_hash = :p, hash = :h, "
                              "hash_version = :v, key_id = :k WHERE seq = :s"),
                         {"b": canonical(body), "p": prev, "h": digest, "v": version, "k": key, "s": r["seq"]})
            prev = digest
        conn.execute(text("UPDATE wal.chain_heads SET hash = :h WHERE namespace = 'test'"), {"h": prev})


def test_a_chain_rewritten_with_recomputed_hashes_is_caught_without_the_key(engine):
    store = history(engine)
    _rewrite_chain(engine, seal=None)  # plain sha256, as version 1 entries were hashed
    report = store.verify()
    assert not report.ok
    assert "keyed" in report.problems[0] or "after keyed entries" in report.problems[0], report.problems
    _rewrite_chain(engine, seal=Seal(b"a key somebody made up, 32 chars or more", "guess"))
    report = store.verify()
    assert not report.ok and "not this WAL's key" in report.problems[0], report.problems


def test_a_chain_rewritten_with_the_key_is_caught_by_an_exported_checkpoint(engine, tmp_path):
    store = history(engine)
    checkpoint = store.checkpoint("test database")
    exported = tmp_path / "checkpoint.json"
    exported.write_text(json.dumps(checkpoint))
    assert store.verify([json.loads(exported.read_text())]).ok
    _rewrite_chain(engine, seal=current_seal())  # an insider who holds the key
    assert store.verify().ok  # the MACs alone cannot tell: the key was used
    report = store.verify([json.loads(exported.read_text())])
    assert not report.ok
    assert "chain test position" in report.problems[0] and "rewritten" in report.problems[0], report.problems
    # an altered checkpoint, or one signed by another key, is no proof
    forged = {**checkpoint, "taken_at": "2020-01-01T00:00:00+00:00"}
    assert "signature does not match" in store.verify([forged]).problems[-1]
    other = Seal(b"another installation's key, long enough", "x")
    foreign = {**checkpoint, "public_key": other.public_key}
    foreign["signature"] = other.sign({k: v for k, v in foreign.items() if k != "signature"})
    assert "not the expected" in store.verify([foreign]).problems[-1]


def test_verify_catches_a_disabled_or_missing_guard(engine):
    store = history(engine, 1)
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE waves.waves DISABLE TRIGGER data_mash_wal_guard"))
        conn.execute(text("DROP TRIGGER data_mash_wal_guard ON coexistence.registry"))
    problems = store.verify().problems
    assert "table coexistence.registry: has no write guard (changes to it need not go through the WAL)" in problems
    assert "table waves.waves: its write guard is disabled (changes to it need not go through the WAL)" in problems


def test_wal_verify_and_checkpoint_on_the_cli(engine, database_url, tmp_path):
    history(engine)
    env = {**os.environ, "DATA_MASH_DATABASE_URL": database_url, "DATA_MASH_HOME": str(tmp_path)}
    cli = [sys.executable, "-m", "dagster_project.cli", "wal"]
    taken = subprocess.run([*cli, "checkpoint", "--output", str(tmp_path / "cp.json")], env=env, capture_output=True,
                           text=True)
    assert taken.returncode == 0, taken.stderr
    assert "public key" in taken.stdout
    ok = subprocess.run([*cli, "verify", "--checkpoint", str(tmp_path / "cp.json")], env=env, capture_output=True,
                        text=True)
    assert ok.returncode == 0 and "WAL intact" in ok.stdout and "1 checkpoint" in ok.stdout, ok.stdout
    _rewrite_chain(engine, seal=current_seal())
    bad = subprocess.run([*cli, "verify", "--checkpoint", str(tmp_path / "cp.json")], env=env, capture_output=True,
                         text=True)
    assert bad.returncode == 1 and "rewritten" in bad.stdout, bad.stdout
    assert "Traceback" not in bad.stdout + bad.stderr
