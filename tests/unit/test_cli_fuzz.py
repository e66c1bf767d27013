"""Fuzz the CLI with what people hand it: copybooks, fixed-width record files, CSV exports, routing rule sets and
mapping files. Whatever the input, the command ends with exit 0, 1 (decode: records quarantined, and it says how
many) or 2 with a message naming the file; never a traceback, never the last-resort "unexpected" error.

Inputs are mutations of the real files (the shipped copybooks, mappings and rules, a small generated book) so that
they get past the first parse and into the deep code, mixed with random bytes. No database, no Dagster: `decode`,
`validate-mapping` and `validate-rules` need neither. Deterministic (derandomized) and quick.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import tempfile
from functools import lru_cache
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from dagster_project.cli import app

REPO = Path(__file__).resolve().parents[2]
COPYBOOKS = [p for p in sorted((REPO / "legacy" / "sources" / "mainframe_life").glob("*.cpy"))
             if p.stem != "POLTRLR"]  # the master file's trailer record: a layout with no file of its own
MAPPINGS = sorted((REPO / "canonical" / "mappings").glob("*.yaml"))
MAPPINGS = [p for p in MAPPINGS if p.stem != "new_platform"]  # source -> canonical mappings (validate-mapping's)
RULES = REPO / "routing" / "rules" / "default.yaml"

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
RUNNER = CliRunner()
LAST_RESORT = "a case Data Mash does not handle yet"  # what the CLI says of an exception no code anticipated


@lru_cache(maxsize=1)
def book() -> Path:
    """A small generated sample book (both sources, with defects), made once per test process."""
    from legacy.sample import generate_sample

    out = Path(tempfile.mkdtemp(prefix="dm-fuzz-book-")) / "book"
    generate_sample(out, policies=40, seed=3, defect_rate=0.1)
    return out


def run(args: list[str], home: Path) -> tuple[int, str]:
    """The CLI in process; its exit code and everything it printed. An exception that escaped the CLI is a failure."""
    result = RUNNER.invoke(app, args, env={"DATA_MASH_HOME": str(home), "COLUMNS": "200"}, catch_exceptions=True)
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{args}: {type(result.exception).__name__} escaped the CLI: {result.exception}")
    output = result.output
    assert "Traceback" not in output, f"{args}: a traceback reached the user:\n{output}"
    assert LAST_RESORT not in output, f"{args}: an error nobody anticipated (the last-resort handler):\n{output}"
    return result.exit_code, output


def assert_clean(args: list[str], home: Path, *, may_quarantine: bool = False) -> int:
    code, output = run(args, home)
    allowed = {0, 1, 2} if may_quarantine else {0, 2}
    assert code in allowed, f"{args}: exit {code}\n{output}"
    if code == 1:
        assert " quarantined" in output and "error:" not in output, f"{args}: exit 1 without quarantined records\n{output}"
    if code == 2:
        assert "error:" in output or "Usage:" in output, f"{args}: exit 2 without a message\n{output}"
    return code


# --------------------------------------------------------------------------- text and byte mutations


@st.composite
def mutated_text(draw, base: str, vocabulary: list[str]) -> str:
    """`base` with a few edits: a span deleted, duplicated or replaced by random or meaningful text, lines dropped
    or repeated, the end cut off."""
    text = base
    for _ in range(draw(st.integers(1, 4))):
        if not text:
            text = draw(st.text(max_size=40))
            continue
        lines = text.split("\n")
        edit = draw(st.sampled_from(["replace", "insert", "delete", "drop_line", "repeat_line", "swap_lines", "cut"]))
        at = draw(st.integers(0, len(text)))
        if edit == "replace":
            end = min(len(text), at + draw(st.integers(1, 12)))
            new = draw(st.one_of(st.sampled_from(vocabulary), st.text(max_size=12)))
            text = text[:at] + new + text[end:]
        elif edit == "insert":
            text = text[:at] + draw(st.one_of(st.sampled_from(vocabulary), st.text(max_size=8))) + text[at:]
        elif edit == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 30)):]
        elif edit == "cut":
            text = text[:at]
        else:
            i = draw(st.integers(0, len(lines) - 1))
            if edit == "drop_line":
                del lines[i]
            elif edit == "repeat_line":
                lines.insert(i, lines[i])
            else:
                j = draw(st.integers(0, len(lines) - 1))
                lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
    return text


@st.composite
def mutated_bytes(draw, base: bytes) -> bytes:
    """`base` with a few bytes flipped, a span removed or repeated, garbage appended, or the end cut off."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        edit = draw(st.sampled_from(["flip", "flip", "delete", "repeat", "append", "cut", "insert"]))
        at = draw(st.integers(0, len(data)))
        if edit == "flip" and data:
            for _ in range(draw(st.integers(1, 8))):
                data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        elif edit == "delete":
            del data[at:at + draw(st.integers(1, 64))]
        elif edit == "repeat":
            data[at:at] = data[at:at + draw(st.integers(1, 64))]
        elif edit == "append":
            data += draw(st.binary(max_size=64))
        elif edit == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        else:
            del data[at:]
    return bytes(data)


# --------------------------------------------------------------------------- YAML structure mutations


def _values(vocabulary: list[str]):
    scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**15), st.floats(allow_nan=True),
                        st.text(max_size=16), st.sampled_from(vocabulary))
    return st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                          st.dictionaries(st.sampled_from(vocabulary), inner,
                                                                          max_size=3)), max_leaves=6)


@st.composite
def mutated_document(draw, base, vocabulary: list[str]):
    """A YAML document (parsed) with a few changes deep inside: a value replaced, a key removed or renamed, an item
    repeated, something added; then dumped again, sometimes with a text edit on top (a syntax error, a tag)."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        parent, key = None, None
        node = doc
        for _ in range(draw(st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 8, 8, 8]))):  # walk down to a random place
            keys = sorted(node, key=str) if isinstance(node, dict) else list(range(len(node))) \
                if isinstance(node, list) else []
            if not keys:
                break
            deeper = [k for k in keys if isinstance(node[k], (dict, list)) and node[k]]
            k = draw(st.sampled_from(deeper if deeper and draw(st.integers(0, 3)) else keys))  # mostly go deeper
            parent, key, node = node, k, node[k]
        edit = draw(st.sampled_from(["replace", "replace", "delete", "rename", "repeat", "add"]))
        if parent is None:
            if edit == "replace" and draw(st.integers(0, 9)) == 0:
                doc = draw(_values(vocabulary))
            continue
        if edit == "replace":
            parent[key] = draw(_values(vocabulary))
        elif edit == "delete":
            del parent[key]
        elif edit == "rename" and isinstance(parent, dict):
            parent[draw(st.sampled_from(vocabulary))] = parent.pop(key)
        elif edit == "repeat" and isinstance(parent, list):
            parent.insert(key, copy.deepcopy(parent[key]))
        elif edit == "add" and isinstance(node, dict):
            node[draw(st.sampled_from(vocabulary))] = draw(_values(vocabulary))
        elif isinstance(node, str):  # an expression or a name: edit its text
            parent[key] = draw(mutated_text(node, vocabulary))
    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    if draw(st.integers(0, 4)) == 0:
        text = draw(mutated_text(text, vocabulary + ["!!python/object:os.system {}", "!!binary", "&a", "*a", ": [",
                                                     "\t", "{", "- -", "? "]))
    return text


# --------------------------------------------------------------------------- the properties


@st.composite
def mutated_copybook(draw, base: str, vocabulary: list[str]) -> str:
    """A copybook with clause-level edits inside its entries (columns 8-72 of a data line): a word replaced,
    removed or added, keeping the fixed format, so that the parser gets past the form into the clauses and the
    layout; sometimes followed by free text edits."""
    import re

    lines = base.split("\n")
    data_lines = [i for i, line in enumerate(lines) if len(line) > 7 and line[6] == " " and line[7:72].strip()]
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.sampled_from(data_lines))
        line = lines[i].ljust(80)
        area = line[7:72]
        words = [m.span() for m in re.finditer(r"\S+", area)]
        start, end = draw(st.sampled_from(words))
        edit = draw(st.sampled_from(["replace", "replace", "delete", "insert"]))
        new = draw(st.sampled_from(vocabulary))
        if edit == "replace":
            area = area[:start] + new + area[end:]
        elif edit == "delete":
            area = area[:start] + area[end:]
        else:
            area = area[:end] + " " + new + area[end:]
        lines[i] = (line[:7] + area.ljust(65)[:65] + line[72:]).rstrip()
    text = "\n".join(lines)
    if draw(st.integers(0, 3)) == 0:
        text = draw(mutated_text(text, vocabulary))
    return text


COPYBOOK_WORDS = ["PIC", "PIC X(10)", "X(3).", "9(5).", "S9(3)V9(2)", "COMP-3.", "9(4)", "X(0).", "9(0)",
                  "OCCURS", "3", "0", "TIMES.", "DEPENDING", "ON", "TO", "POL-NUMBER", "X", "99", "PIC X(10).", "PIC S9(7)V99 COMP-3", "PIC 9(8)", "COMP-3", "COMP", "COMP-1", "OCCURS 3 TIMES",
                  "OCCURS 1 TO 5 TIMES DEPENDING ON", "REDEFINES", "FILLER", "VALUE", ".", "01", "05", "10", "49",
                  "66", "77", "88", "(", ")", "'", '"', "V", "S", "P", "9(40)", "X(0)", "-", "*", "\n      *", "\t",
                  "SIGN LEADING SEPARATE", "BLANK WHEN ZERO", "Z,ZZ9.99", "$$$9.99CR", "USAGE", "INDEXED BY I"]


@FUZZ
@given(data=st.data())
def test_decode_never_shows_a_traceback_for_any_copybook_or_record_file(data, tmp_path):
    """Mutated (or random) copybooks against real record files, and real copybooks against mutated records."""
    real = data.draw(st.sampled_from(COPYBOOKS), label="copybook")
    records = (book() / "mainframe_life" / real.with_suffix(".dat").name).read_bytes()
    which = data.draw(st.sampled_from(["copybook", "records", "both", "random"]), label="mutate")
    text = real.read_text(encoding="latin-1")
    if which in ("copybook", "both"):
        text = data.draw(st.one_of(mutated_copybook(text, COPYBOOK_WORDS), mutated_text(text, COPYBOOK_WORDS)),
                         label="copybook text")
    if which in ("records", "both"):
        records = data.draw(mutated_bytes(records), label="records")
    if which == "random":
        text = data.draw(st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("latin-1"))))
        records = data.draw(st.binary(max_size=400), label="random records")
    cpy, dat = tmp_path / "FUZZ.cpy", tmp_path / "FUZZ.dat"
    cpy.write_bytes(text.encode("utf-8", "replace"))
    dat.write_bytes(records)
    args = ["decode", "--copybook", str(cpy), "--data", str(dat)]
    args += data.draw(st.sampled_from([[], ["--record-format", "F"], ["--record-format", "V"], ["--encoding", "ascii"],
                                       ["--encoding", "cp500"], ["--limit", "3"]]), label="options")
    assert_clean(args, tmp_path / "home", may_quarantine=True)


CSV_WORDS = ["PolicyNo", "LOB", "AnnualPrem", ",", '"', '""', "\r\n", "\n", "$1,234.56", "(12.00)", "-", "\x00",
             "é", "\ufeff", ";", "\t", "PC10000001"]


@FUZZ
@given(data=st.data())
def test_decode_of_a_csv_export_never_shows_a_traceback(data, tmp_path):
    """Mutated CSV files of the P&C source (header, quoting, encodings, lengths), and random bytes."""
    name = data.draw(st.sampled_from(["policies.csv", "coverages.csv"]), label="file")
    raw = (book() / "pc_csv" / name).read_bytes()
    how = data.draw(st.sampled_from(["text", "bytes", "random", "empty", "header only"]), label="mutate")
    if how == "text":
        raw = data.draw(mutated_text(raw.decode("utf-8"), CSV_WORDS), label="csv text").encode(
            data.draw(st.sampled_from(["utf-8", "latin-1", "utf-16"]), label="written as"), errors="replace")
    elif how == "bytes":
        raw = data.draw(mutated_bytes(raw), label="csv bytes")
    elif how == "random":
        raw = data.draw(st.binary(max_size=300), label="random bytes")
    elif how == "empty":
        raw = b""
    else:
        raw = raw.split(b"\n", 1)[0] + data.draw(st.sampled_from([b"", b"\n", b"\r\n", b"\n\n"]))
    path = tmp_path / name
    path.write_bytes(raw)
    args = ["decode", "--source", "pc_csv", "--data", str(path)]
    args += data.draw(st.sampled_from([[], ["--limit", "2"], ["--kind", "coverages"], ["--kind", "nope"]]))
    assert_clean(args, tmp_path / "home", may_quarantine=True)


def _rule_words() -> list[str]:
    from routing.rules import OPERATORS, ROUTING_FIELDS, TARGETS

    return [*ROUTING_FIELDS, *OPERATORS, *TARGETS, "rules", "name", "priority", "condition", "target", "field",
            "operator", "value", "all", "any", "not", "rule_set", "version", "true", "in_force", "lapsed", "TERM*",
            "[a-z", "1.0.0", "2026-01-01", "2026-13-45T00:00", "description"]


def _conditions(words: list[str]):
    """Rule conditions: mostly well-formed tests on real fields with odd values, nested in all / any / not."""
    from routing.rules import OPERATORS, ROUTING_FIELDS

    value = st.one_of(st.none(), st.booleans(), st.integers(-10, 10**6), st.floats(allow_nan=True),
                      st.sampled_from(words), st.text(max_size=8),
                      st.lists(st.one_of(st.integers(-5, 200), st.sampled_from(words), st.none()), max_size=3))
    test = st.fixed_dictionaries({"field": st.one_of(st.sampled_from(sorted(ROUTING_FIELDS)), st.sampled_from(words)),
                                  "operator": st.one_of(st.sampled_from(OPERATORS), st.sampled_from(words))},
                                 optional={"value": value})
    return st.recursive(st.one_of(test, st.just(True)), lambda inner: st.one_of(
        st.fixed_dictionaries({"all": st.lists(inner, max_size=3)}),
        st.fixed_dictionaries({"any": st.lists(inner, max_size=3)}),
        st.fixed_dictionaries({"not": inner})), max_leaves=4)


@st.composite
def edited_rules(draw, base: dict, words: list[str]) -> str:
    """The shipped rule set with a rule's condition, priority or target changed, or a rule repeated or removed."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        rules = doc["rules"]
        i = draw(st.integers(0, len(rules) - 1))
        edit = draw(st.sampled_from(["condition", "condition", "condition", "priority", "target", "repeat", "drop"]))
        if edit == "condition":
            rules[i]["condition"] = draw(_conditions(words))
        elif edit == "priority":
            rules[i]["priority"] = draw(st.one_of(st.sampled_from([r["priority"] for r in rules]),
                                                  st.integers(-1, 10**6)))
        elif edit == "target":
            rules[i]["target"] = draw(st.sampled_from(words))
        elif edit == "repeat":
            rules.insert(i, copy.deepcopy(rules[i]))
        elif len(rules) > 1:
            del rules[i]
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


@FUZZ
@given(data=st.data())
def test_validate_rules_never_shows_a_traceback(data, tmp_path):
    """Mutations of the shipped rule set: fields, operators, values, priorities, shapes; YAML syntax and tags."""
    words = _rule_words()
    base = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    how = data.draw(st.sampled_from(["rules", "rules", "rules", "document", "document", "random"]), label="how")
    if how == "random":
        text = data.draw(st.text(max_size=200), label="random text")
    elif how == "rules":
        text = data.draw(edited_rules(base, words), label="rules")
    else:
        text = data.draw(mutated_document(base, words), label="document")
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8", errors="replace")
    code = assert_clean(["validate-rules", str(path)], tmp_path / "home")
    if code == 2:
        _, output = run(["validate-rules", str(path)], tmp_path / "home")
        assert "rules.yaml" in output  # the message names the file


def _mapping_words() -> list[str]:
    from canonical.mapping import FUNCTIONS
    from canonical.tables import V1_TABLES

    columns = sorted({c.name for t in V1_TABLES.values() for c in t.columns})
    return [*V1_TABLES, *columns[:40], *FUNCTIONS, "from", "fields", "expr", "confidence", "occurs", "present",
            "code_tables", "mapping", "version", "source", "draft", "pc_csv", "mainframe_life", "nope",
            "col('PolicyNo')", "col('NOPE')", "date(col('EffDate'), '%m/%d/%Y')", "money(col('AnnualPrem'))",
            "code(col('LOB'), 'lob')", "lookup('coverages', 'PolicyNo', 'Limit', 'sum', col('PolicyNo'))",
            "when(eq(col('LOB'), 'HO3'), lit('home'), lit('auto'))", "__import__('os')", "lambda: 1", "col(",
            "1 +", "{n}", "BEN_NAME_{n}", "0.95", "-1", "2"]


@st.composite
def edited_mapping(draw, base: dict, words: list[str]) -> str:
    """A shipped mapping with a field's expression edited or replaced (functions, columns, arity, syntax), or a
    table's `from`, `occurs`, `present` or a confidence changed."""
    from canonical.mapping import FUNCTIONS

    doc = copy.deepcopy(base)
    calls = [f"{name}({', '.join(['col(' + chr(39) + 'X' + chr(39) + ')'] * n)})" for name, (n, _) in FUNCTIONS.items()]
    for _ in range(draw(st.integers(1, 3))):
        table = doc["tables"][draw(st.sampled_from(sorted(doc["tables"])))]
        name = draw(st.sampled_from(sorted(table["fields"])))
        field = table["fields"][name]
        edit = draw(st.sampled_from(["expr", "expr", "expr", "expr", "confidence", "from", "occurs", "present"]))
        if edit == "expr":
            field["expr"] = draw(st.one_of(mutated_text(field["expr"], words + calls), st.sampled_from(words + calls)))
        elif edit == "confidence":
            field["confidence"] = draw(st.one_of(st.floats(allow_nan=True), st.integers(-2, 2), st.text(max_size=4)))
        elif edit == "from":
            table["from"] = draw(st.sampled_from(words))
        elif edit == "occurs":
            table["occurs"] = draw(st.one_of(st.integers(-1, 120), st.sampled_from(words)))
        else:
            table["present"] = draw(st.one_of(st.none(), st.sampled_from(words)))
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


@settings(FUZZ, max_examples=50)
@given(data=st.data())
def test_validate_mapping_never_shows_a_traceback(data, tmp_path):
    """Mutations of the shipped mappings: expressions, functions, columns, tables, confidences, occurs; YAML syntax."""
    words = _mapping_words()
    real = data.draw(st.sampled_from(MAPPINGS), label="mapping")
    base = yaml.safe_load(real.read_text(encoding="utf-8"))
    how = data.draw(st.sampled_from(["mapping", "mapping", "mapping", "document", "document", "random"]), label="how")
    if how == "random":
        text = data.draw(st.text(max_size=200), label="random text")
    elif how == "mapping":
        text = data.draw(edited_mapping(base, words), label="mapping")
    else:
        text = data.draw(mutated_document(base, words), label="document")
    path = tmp_path / "mapping.yaml"
    path.write_text(text, encoding="utf-8", errors="replace")
    code, output = run(["validate-mapping", str(path)], tmp_path / "home")
    assert code in (0, 2), output
    if code == 2:
        assert "mapping.yaml" in output  # the message names the file


def test_random_bytes_as_yaml_are_a_clean_error(tmp_path):
    """Bytes that are not UTF-8, and a Python tag, in a mapping and a rule file: exit 2, file and line named."""
    for body in (b"\xff\xfe\x00garbage", b"mapping: x\nsource: !!python/object/apply:os.system [echo]\n"):
        for command, name in (("validate-mapping", "m.yaml"), ("validate-rules", "r.yaml")):
            path = tmp_path / name
            path.write_bytes(body)
            code, output = run([command, str(path)], tmp_path / "home")
            assert code == 2 and name in output and "line" in output, output


def test_a_tagged_mapping_in_a_real_process_is_exit_2_without_a_traceback(tmp_path):
    """The console script itself (not the in-process runner): what an operator sees in a terminal."""
    path = tmp_path / "tagged.yaml"
    path.write_text("mapping: x\nsource: pc_csv\nversion: !!python/object:os.system {}\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "dagster_project.cli", "validate-mapping", str(path)], cwd=tmp_path,
                          env={**os.environ, "DATA_MASH_HOME": str(tmp_path / "home"), "COLUMNS": "200"},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "tagged.yaml line 3, column 10" in proc.stderr and "python/object" in proc.stderr
