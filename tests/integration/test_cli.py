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
    run_cli("changes", "--drop", "nope:day-9", expect=2)  # an unknown drop: bad usage


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



# --------------------------------------------------------------------------- unreadable input, unknown names: exit 2
# Every case: exit 2, a message naming the file (line, field) or the unknown name, no traceback, nothing changed.


@pytest.fixture
def cli(database_url, home):
    """The CLI in process (Typer's runner), on the test's database and home; asserts the exit code and that no
    traceback reached the output. Work never starts here: these commands are refused before a run is submitted."""
    from typer.testing import CliRunner

    from dagster_project.cli import app

    env = {"DATA_MASH_DATABASE_URL": database_url, "DATA_MASH_HOME": str(home), "COLUMNS": "200",
           "DAGSTER_HOME": str(home / "dagster_home")}

    def invoke(*args: str, expect: int = 2) -> str:
        result = CliRunner().invoke(app, list(args), env=env)
        output = result.output
        assert result.exit_code == expect, f"exit {result.exit_code}\n{output}\n{result.exception!r}"
        assert "Traceback" not in output and "does not handle yet" not in output, output
        return " ".join(output.split())

    return invoke


def dagster_state(database_url: str) -> tuple[list[str], int]:
    """The project's Dagster instance (its storage in the test's database): wave partitions and how many runs."""
    from assets.waves import WAVES_PARTITIONS
    from dagster_project.instance import open_instance
    from resources.database import DatabaseResource

    instance = open_instance(DatabaseResource(url=database_url))
    return list(instance.get_dynamic_partitions(WAVES_PARTITIONS.name)), len(instance.get_runs())


def _count(engine, table: str) -> int:
    from sqlalchemy import text

    with engine.connect() as conn:
        return conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()


def test_a_drop_with_a_broken_copybook_is_refused_before_it_lands(cli, engine, home, tmp_path, database_url):
    import shutil

    from tests.book import sample_book

    drop = tmp_path / "mf"
    shutil.copytree(sample_book() / "mainframe_life", drop)
    cpy = drop / "COVERAGE.cpy"
    text = cpy.read_text(encoding="latin-1")
    bad_line = next(i for i, line in enumerate(text.splitlines(), 1) if " PIC " in line)
    lines = text.splitlines()
    lines[bad_line - 1] = lines[bad_line - 1].replace(" PIC ", " PIK ", 1)
    cpy.write_text("\n".join(lines) + "\n", encoding="latin-1")
    out = cli("ingest", str(drop), "--source", "mainframe_life", "--drop-id", "bad-cpy")
    assert "COVERAGE.cpy" in out and f"line {bad_line}" in out and "PIK" in out
    assert _count(engine, "intake.drops") == 0 and not (home / "landing" / "mainframe_life").exists()
    assert dagster_state(database_url)[1] == 0  # no run


@pytest.mark.parametrize("header, refused, expected", [
    (b"PolicyNo,LineOfBusiness,PolStatus", "policies.csv, line 1, byte offset 0: bad_header: header column 2 is "
     "'LineOfBusiness', expected 'LOB'", "line 1: header column 2 is 'LineOfBusiness', expected 'LOB'"),
    (b"", "policies.csv, byte offset 0: empty: the file has no bytes", "line 1: file is empty, expected a header line"),
])
def test_a_csv_whose_header_does_not_match_or_that_is_empty_is_exit_2(cli, engine, tmp_path, header, refused,
                                                                       expected):
    import shutil

    from tests.book import sample_book

    drop = tmp_path / "pc"
    shutil.copytree(sample_book() / "pc_csv", drop)
    policies = drop / "policies.csv"
    body = policies.read_bytes().split(b"\n", 1)[1]
    policies.write_bytes(header + b"\n" + body if header else b"")
    out = cli("ingest", str(drop), "--source", "pc_csv", "--drop-id", "bad-csv")  # the drop check: before landing
    assert refused in out
    assert _count(engine, "intake.drops") == 0
    out = cli("decode", "--source", "pc_csv", "--data", str(policies))  # the same file, read without a database
    assert "policies.csv" in out and expected in out


def test_a_bad_rule_file_is_exit_2_naming_file_line_and_rule(cli, tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text("rule_set: r\nversion: '1.0.0'\nrules:\n"
                     "  - name: lapsed\n    priority: 10\n    condition: {field: status, operator: equals, value: lapsd}\n"
                     "    target: dq_queue\n"
                     "  - name: default\n    priority: 99\n    condition: true\n    target: new_platform\n")
    for args in (["validate-rules", str(rules)], ["route", "--rules", str(rules)],
                 ["route", "--rules", str(rules), "--dry-run"]):
        out = cli(*args)
        assert "rules.yaml line 6: rule 'lapsed': value 'lapsd' is not a status code" in out, out
    assert "new_platform" in cli("validate-rules", "routing/rules/default.yaml", expect=0)


def test_validate_mapping_and_reprocess_agree_on_a_bad_mapping(cli, tmp_path):
    from canonical.mapping import mapping_for_source

    mapping = tmp_path / "pc.yaml"
    text = mapping_for_source("pc_csv").read_text()
    assert "col('LOB')" in text
    mapping.write_text(text.replace("col('LOB')", "col('LINE')", 1))
    line = next(i for i, row in enumerate(mapping.read_text().splitlines(), 1) if "col('LINE')" in row)
    said = [cli("validate-mapping", str(mapping)),
            cli("reprocess", "--mapping", str(mapping), "--since", "2026-01-01", "--yes")]
    for out in said:
        assert f"pc.yaml line {line}: tables.policies.fields." in out and "source has no column 'LINE'" in out
    assert said[0] == said[1]


def test_a_yaml_tag_in_a_mapping_is_exit_2_not_a_traceback(cli, tmp_path):
    mapping = tmp_path / "tagged.yaml"
    mapping.write_text("mapping: pc\nversion: '1'\nsource: pc_csv\ntables: !!python/object/apply:os.system [touch "
                       f"{tmp_path / 'pwned'}]\n")
    for args in (["validate-mapping", str(mapping)], ["reprocess", "--mapping", str(mapping), "--since", "2026-01-01"]):
        out = cli(*args)
        assert "tagged.yaml line 4, column 9" in out and "python/object/apply:os.system" in out
    assert not (tmp_path / "pwned").exists()


def test_an_unknown_wave_is_refused_before_a_partition_or_a_run(cli, database_url):
    partitions, runs = dagster_state(database_url)
    out = cli("wave", "execute", "p9-w99")
    assert "no wave 'p9-w99'" in out and "data-mash wave list" in out
    assert dagster_state(database_url) == (partitions, runs) and "p9-w99" not in partitions
    for command in (["wave", "rollback", "p9-w99"], ["wave", "reconcile", "p9-w99"], ["wave", "show", "p9-w99"],
                    ["wave", "approve", "p9-w99"], ["wave", "gates", "p9-w99", "--set", "mean_dq_score=1"]):
        assert "no wave 'p9-w99'" in cli(*command)
    assert dagster_state(database_url) == (partitions, runs)


def test_generate_plan_with_an_output_it_cannot_write_saves_no_plan(cli, routed_book, engine, tmp_path):
    for output in (tmp_path / "no-such-folder" / "plan.yaml", tmp_path):
        out = cli("generate-plan", "--output", str(output))
        assert f"--output {output}" in out
    assert _count(engine, "waves.plans") == 0 and _count(engine, "waves.waves") == 0
    assert "p1-w00" in cli("generate-plan", "--output", str(tmp_path / "plan.yaml"), expect=0)  # the book plans
    assert (tmp_path / "plan.yaml").exists()


def test_rollback_of_a_policy_not_in_the_wave_is_refused_naming_both(cli, routed_book, engine, database_url):
    cli("generate-plan", expect=0)
    runs = dagster_state(database_url)[1]
    out = cli("wave", "rollback", "p1-w00", "--policy", "NOPE0001")
    assert "--policy NOPE0001: not a policy of wave p1-w00" in out and "nothing was rolled back" in out
    assert dagster_state(database_url)[1] == runs


def test_unknown_sources_drops_and_targets_are_refused_before_anything(cli, engine, tmp_path):
    out = cli("map-to-canonical", "--source", "pc_csv", "--drop", "nope")
    assert "--drop 'nope': no drop of pc_csv by that id" in out
    assert "unknown source 'nowhere'" in cli("map-to-canonical", "--source", "nowhere", "--drop", "d1")
    assert "unknown source 'nowhere'" in cli("profile", "--source", "nowhere", "--drop", "d1")
    assert "does not exist" in cli("profile", "--source", "pc_csv", "--drop", "d1", "--output",
                                   str(tmp_path / "x" / "p.json"))
    assert "no drop of pc_csv by that id" in cli("profile", "--source", "pc_csv", "--drop", "d1")
    intents = _count(engine, "wal.intents")
    assert "--to 'moon'" in cli("override", "P1", "--to", "moon", "--reason", "test")
    assert "policy P1 is not in the coexistence registry" in cli("override", "P1", "--to", "dq_queue", "--reason", "t")
    assert "no manual conflict waiting" in cli("sync", "resolve", "P1", "--keep", "legacy", "--reason", "t")
    assert _count(engine, "wal.intents") == intents  # refused before a WAL intent was written


def test_a_database_that_does_not_answer_is_exit_2_naming_where_without_the_password(tmp_path):
    url = "postgresql://migrator:s3cret-pw@127.0.0.1:1/book"  # a closed port
    env = {**os.environ, "DATA_MASH_DATABASE_URL": url, "DATA_MASH_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    for args in (["wave", "list"], ["status"], ["where", "L100000005"]):
        proc = subprocess.run([*CLI, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        said = proc.stdout + proc.stderr
        assert proc.returncode == 2, said
        assert "Traceback" not in said and "s3cret-pw" not in said
        assert "127.0.0.1" in said and "port 1" in said and "database book" in said and "Nothing was changed" in said


def test_a_misspelt_drill_fault_is_refused_not_run_for_real(cli, routed_book, database_url):
    cli("generate-plan", expect=0)
    runs = dagster_state(database_url)[1]
    out = cli("wave", "execute", "p1-w00", "--inject-fault", "fail:midload:targets/new_platform")
    assert "--inject-fault 'fail:midload:targets/new_platform'" in out and "nothing was run" in out
    assert "--inject-fault" in cli("sync", "run", "--inject-fault", "fail:mid_load:targets/new_platform")
    assert dagster_state(database_url)[1] == runs
