"""How the CLI tells errors (no database): input errors name file, line and field; an error nobody anticipated is
one line plus the log file holding its traceback; a database that does not answer says where, without the
password. Exit codes as documented: 1 the work ran and failed, 2 bad usage or unreadable input."""

from __future__ import annotations

import pickle

import pytest
from typer.testing import CliRunner

from dagster_project.cli import app
from legacy.errors import InputError, UsageError, load_yaml, parse_yaml


def invoke(args, home):
    result = CliRunner().invoke(app, args, env={"DATA_MASH_HOME": str(home), "COLUMNS": "200"})
    assert "Traceback" not in result.output
    return result.exit_code, " ".join(result.output.split())


def test_an_input_error_says_file_line_column_field_expected_and_hint():
    error = InputError("is 'X'", file="a.yaml", line=3, column=7, field="rules[0].target", expected="a target",
                       hint="see docs/routing.md")
    assert str(error) == "a.yaml line 3, column 7: rules[0].target: is 'X' (expected a target); see docs/routing.md"
    assert isinstance(error, ValueError) and error.exit_code == 2
    again = pickle.loads(pickle.dumps(error))  # Dagster and multiprocessing pickle errors
    assert str(again) == str(error) and again.line == 3 and again.field == "rules[0].target"


def test_yaml_is_read_safely_with_lines(tmp_path):
    doc = parse_yaml("a:\n  b:\n    - x\n    - y: 1\n", "f.yaml")
    assert doc.line("a", "b", 1, "y") == 4 and doc.line("a", "nope") == 1
    with pytest.raises(InputError, match=r"f.yaml line 1, column 4: .*python/object.*refused"):
        parse_yaml("a: !!python/object:os.system {}", "f.yaml")
    with pytest.raises(InputError, match=r"f.yaml line 2, column 1: not valid YAML"):
        parse_yaml("a: [1,\n", "f.yaml")
    path = tmp_path / "latin.yaml"
    path.write_bytes(b"a: 1\nb: caf\xe9\n")
    with pytest.raises(InputError, match=r"latin.yaml line 2, column 7: not UTF-8 text: byte 0xe9"):
        load_yaml(path)
    with pytest.raises(InputError, match="cannot read"):
        load_yaml(tmp_path / "missing.yaml")


def test_an_error_nobody_anticipated_is_one_line_and_a_log_with_the_traceback(tmp_path, monkeypatch):
    import routing.rules

    def broken(path):
        raise ZeroDivisionError("division by zero in a rule")

    monkeypatch.setattr(routing.rules, "load_rule_set", broken)
    code, out = invoke(["validate-rules", "routing/rules/default.yaml"], tmp_path / "home")
    assert code == 1
    assert "error: unexpected ZeroDivisionError: division by zero in a rule" in out
    logs = list((tmp_path / "home" / "logs").glob("data-mash-error-*.log"))
    assert len(logs) == 1 and str(logs[0]) in out
    text = logs[0].read_text()
    assert "Traceback (most recent call last)" in text and "ZeroDivisionError" in text and "validate-rules" in text


def test_a_usage_error_raised_anywhere_is_exit_2(tmp_path, monkeypatch):
    import routing.rules

    def refused(path):
        raise UsageError("no such thing: try `data-mash sources`")

    monkeypatch.setattr(routing.rules, "load_rule_set", refused)
    assert invoke(["validate-rules", "routing/rules/default.yaml"], tmp_path / "home") == (
        2, "error: no such thing: try `data-mash sources`")


def test_a_connection_that_fails_is_told_with_where_and_never_the_password(monkeypatch):
    import psycopg
    from sqlalchemy.exc import OperationalError

    from dagster_project.cli.common import database_unreachable

    monkeypatch.setenv("DATA_MASH_DATABASE_URL", "postgresql://app:hunter2@db.example:6543/book")
    error = OperationalError("SELECT 1", {}, psycopg.OperationalError(
        'connection to server at "db.example", port 6543 failed: password authentication failed for "app"'))
    message, code = database_unreachable(error)
    assert code == 2 and "db.example:6543/book" in message and "Nothing was changed" in message
    assert "hunter2" not in message
    statement = OperationalError("SELECT 1", {}, psycopg.errors.DeadlockDetected("deadlock detected"))
    assert database_unreachable(statement) is None  # a statement that failed: not a connection problem
    assert database_unreachable(ValueError("x")) is None


def test_decode_needs_a_copybook_or_a_source(tmp_path):
    data = tmp_path / "x.dat"
    data.write_bytes(b"")
    code, out = invoke(["decode", "--data", str(data)], tmp_path / "home")
    assert code == 2 and "--copybook FILE" in out and "--source NAME" in out
    code, out = invoke(["decode", "--source", "pc_csv", "--data", str(data)], tmp_path / "home")
    assert code == 2 and "x.dat: matches no file pattern of pc_csv" in out
