"""The `data-mash` CLI end to end, as an operator runs it: real processes, real files, real PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal

import pytest

from tests.book import manifest

CLI = [sys.executable, "-m", "dagster_project.cli"]


@pytest.fixture
def run_cli(database_url, tmp_path):
    """The CLI in its own process, as an operator runs it: the first command that runs work starts this project's
    Dagster (webserver, daemon, code server) and later ones submit to it; it is stopped after the test."""
    env = {**os.environ, "DATA_MASH_DATABASE_URL": database_url, "DATA_MASH_HOME": str(tmp_path / "home"),
           "DAGSTER_HOME": str(tmp_path / "home" / "dagster_home"), "COLUMNS": "200", "DATA_MASH_UI_PORT": "0"}
    for name in ("DATA_MASH_LANDING", "DATA_MASH_OUTBOUND", "DATA_MASH_DAGSTER_URL"):
        env.pop(name, None)

    def run(*args: str, expect: int = 0) -> subprocess.CompletedProcess:
        proc = subprocess.run([*CLI, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == expect, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        return proc

    try:
        yield run
    finally:
        subprocess.run([*CLI, "services", "stop"], cwd=tmp_path, env=env, capture_output=True, timeout=120)


@pytest.mark.daemon  # the CLI starts this project's Dagster
def test_generate_ingest_status_profile(run_cli, tmp_path):
    book = tmp_path / "book"
    run_cli("generate-sample", "--policies", "300", "--seed", "5", "--out", str(book))
    facts = manifest(book)
    assert facts["policies"] == 300

    ingested = run_cli("ingest", str(book / "pc_csv"), "--source", "pc_csv", "--drop-id", "d1")
    assert "succeeded" in ingested.stdout and "policies.csv" in ingested.stdout
    run_cli("ingest", str(book / "mainframe_life"), "--source", "mainframe_life", "--drop-id", "d1")

    status = run_cli("status")
    assert "POLMAST.dat" in status.stdout and "coverages.csv" in status.stdout
    # each drop as Dagster left it: its latest ingest run, the same as `ingest` said
    run_id = ingested.stdout.split("pc_csv drop d1: Dagster run ")[1].split()[0]
    assert f"pc_csv drop d1: Dagster run {run_id} succeeded" in status.stdout

    report = tmp_path / "report.json"
    run_cli("profile", "--source", "mainframe_life", "--drop", "d1", "--output", str(report))
    profile = json.loads(report.read_text())
    policies = next(f for f in profile["files"] if f["kind"] == "policies")
    assert policies["records_parsed"] + policies["records_quarantined"] == policies["records_read"]
    by_name = {c["name"]: c for c in policies["columns"]}
    assert by_name["INS_TAX_ID"]["pii"] and by_name["INS_TAX_ID"]["min"] == "***"
    assert by_name["POL_NUMBER"]["min"].startswith("L") and by_name["POL_NUMBER"]["distinct"] > 0
    assert by_name["ISSUE_DATE"]["top_patterns"][0][0] == "99999999"


def test_decode_prints_exact_json_and_names_bad_records(run_cli, tmp_path):
    from tests.book import sample_book

    book = sample_book()
    proc = run_cli("decode", "--copybook", str(book / "mainframe_life" / "POLMAST.cpy"),
                   "--data", str(book / "mainframe_life" / "POLMAST.dat"), expect=1)
    lines = proc.stdout.splitlines()
    first = json.loads(lines[0], parse_float=Decimal)
    assert first["POL_NUMBER"].startswith("L")
    assert isinstance(first["MODAL_PREMIUM"], Decimal) and first["MODAL_PREMIUM"].as_tuple().exponent == -2
    bad = [d for d in manifest(book)["defects"] if d["file"] == "POLMAST.dat" and d["stage"] == "intake"]
    assert bad and f"record {bad[0]['record']}:" in proc.stderr and bad[0]["reason"] in proc.stderr


def test_decode_limit_and_malformed_copybook(run_cli, tmp_path):
    from tests.book import sample_book

    book = sample_book()
    src = book / "mainframe_life"
    clean = tmp_path / "clean.dat"
    cpy = src / "CORRIDX.cpy"
    # the first 3 records of a fixed-length file, copied byte for byte
    from legacy.copybook import parse_copybook

    width = parse_copybook(cpy.read_text(encoding="latin-1")).record_length
    clean.write_bytes((src / "CORRIDX.dat").read_bytes()[: 3 * width])
    proc = run_cli("decode", "--copybook", str(cpy), "--data", str(clean), "--limit", "2")
    assert len(proc.stdout.splitlines()) == 2

    broken = tmp_path / "broken.cpy"
    text = cpy.read_text(encoding="latin-1").replace("PIC X", "PIC Q", 1)
    broken.write_text(text, encoding="latin-1")
    bad_line = next(i for i, line in enumerate(text.splitlines(), 1) if "PIC Q" in line)
    proc = run_cli("decode", "--copybook", str(broken), "--data", str(clean), expect=2)
    assert "broken.cpy" in proc.stderr and f"line {bad_line}" in proc.stderr


def test_ingest_of_a_missing_path_is_a_usage_error(run_cli, tmp_path):
    proc = run_cli("ingest", str(tmp_path / "nope"), "--source", "pc_csv", expect=2)
    assert "nope" in proc.stderr


@pytest.mark.daemon  # the CLI starts this project's Dagster
def test_a_wave_and_a_delta_through_the_cli(run_cli, tmp_path):
    book = tmp_path / "book"
    run_cli("generate-sample", "--policies", "300", "--seed", "5", "--out", str(book))
    for source in ("mainframe_life", "pc_csv"):
        run_cli("ingest", str(book / source), "--source", source, "--drop-id", "day-1")
    run_cli("route")
    plan = run_cli("generate-plan", "--size-cap", "100", "--start", "2026-01-01T02:00", "--output", str(tmp_path / "p.yaml"))
    assert "p1-w00" in plan.stdout and (tmp_path / "p.yaml").exists()
    run_cli("wave", "approve", "p1-w01", "--by", "tester")
    executed = run_cli("wave", "execute", "p1-w01")
    assert "succeeded" in executed.stdout and "content_hash matches" in executed.stdout
    report = run_cli("wave", "report", "p1-w01", "--by-state")
    assert "file_read_back" in report.stdout and "in-force premium before" in report.stdout
    run_cli("wave", "rollback", "p1-w01", "--reason", "test")
    status = run_cli("wave", "status", "p1-w01", expect=1)  # rolled back: exit 1 for scripts
    assert "rolled_back" in status.stdout
    again = run_cli("wave", "rollback", "p1-w01")
    assert "succeeded" in again.stdout and "rolled_back" in again.stdout
    run_cli("wave", "approve", "p1-w01", "--by", "tester")  # a rolled-back wave can be approved and run again
    assert "succeeded" in run_cli("wave", "execute", "p1-w01").stdout

    run_cli("generate-sample", "--delta-of", str(book), "--day", "2", "--out", str(tmp_path / "day-2"))
    delta = json.loads((tmp_path / "day-2" / "delta.json").read_text())
    for source in ("mainframe_life", "pc_csv"):
        run_cli("ingest", str(tmp_path / "day-2" / source), "--source", source, "--drop-id", "day-2")
    run_cli("route")
    changes = run_cli("changes", "--drop", "pc_csv:day-2", "--limit", "1000")
    assert "pc_csv:day-2" in changes.stdout
    for policy in delta["sources"]["pc_csv"]["new"]:
        assert policy in changes.stdout
    run_cli("changes", "--drop", "nope:day-9", expect=1)


@pytest.mark.parametrize("defect,reason", [("truncated", "truncated"), ("empty", "empty"), ("garbage", "unreadable")])
def test_ingest_of_a_bad_master_file_is_refused_with_exit_2_and_nothing_staged(run_cli, tmp_path, database_url,
                                                                               defect, reason):
    import shutil

    from sqlalchemy import create_engine, text

    from resources.database import sqlalchemy_url
    from tests.book import sample_book

    drop = tmp_path / "drop"
    shutil.copytree(sample_book() / "mainframe_life", drop)
    master = drop / "POLMAST.dat"
    data = master.read_bytes()
    master.write_bytes({"truncated": data[: len(data) // 3], "empty": b"", "garbage": os.urandom(len(data))}[defect])
    proc = run_cli("ingest", str(drop), "--source", "mainframe_life", "--drop-id", "bad", expect=2)
    said = " ".join(proc.stderr.split())
    assert "mainframe_life drop bad refused; nothing of it is staged" in said
    assert "POLMAST.dat" in said and f": {reason}: " in said and "byte offset" in said and "ask the sender" in said
    assert "Traceback" not in proc.stderr + proc.stdout
    engine = create_engine(sqlalchemy_url(database_url))
    try:
        with engine.connect() as conn:
            for table in ("intake.drops", "intake.files", "intake.quarantine"):
                assert conn.execute(text(f"SELECT count(*) FROM {table} WHERE drop_id = 'bad'")).scalar_one() == 0
            assert conn.execute(text("SELECT count(*) FROM pg_tables WHERE schemaname = 'staging'")).scalar_one() == 0
    finally:
        engine.dispose()
    assert not (tmp_path / "home" / "landing" / "mainframe_life" / "bad").exists()  # not even landed
