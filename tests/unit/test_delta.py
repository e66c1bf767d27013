"""Day-N delta drops of a sample book: readable by intake, whole policies, exact changes, deterministic."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from legacy.copybook import QUARANTINE_SCHEMA, DecodeResult
from legacy.delta import MF_CANCELLED, PC_CANCELLED, write_delta
from legacy.sources import find_drop_files, load_copybook, load_source, read_source_file
from tests.book import manifest, sample_book

SOURCES = ("mainframe_life", "pc_csv")
STATUS = {"mainframe_life": "POL_STATUS", "pc_csv": "PolStatus"}
CANCELLED = {"mainframe_life": MF_CANCELLED, "pc_csv": PC_CANCELLED}


def _decode(drop_root: Path, source: str) -> dict[str, tuple[pa.Table, pa.Table]]:
    """kind -> (parsed table without record_no, quarantine), read the way intake reads a drop."""
    src = load_source(source)
    drop = drop_root / source
    found = find_drop_files(src, drop)
    out = {}
    for spec in src.files:
        blocks = list(read_source_file(src, spec, found[spec.kind], drop_dir=drop))
        if not blocks:  # the copybook decoder yields nothing for an empty file
            blocks = [DecodeResult(table=load_copybook(src, spec, drop).schema.empty_table(),
                                   quarantine=QUARANTINE_SCHEMA.empty_table())]
        table = pa.concat_tables([b.table for b in blocks])
        out[spec.kind] = (table.drop_columns(["record_no"]), pa.concat_tables([b.quarantine for b in blocks]))
    return out


def _rows_by_id(table: pa.Table, key: str) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {}
    for row in table.to_pylist():
        rows.setdefault((row[key] or "").strip(), []).append(row)
    return rows


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def book() -> Path:
    return sample_book(policies=400, seed=11, defect_rate=0.0)


@pytest.fixture(scope="module")
def delta(book, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("delta") / "day2"
    write_delta(book, out, day=2, seed=11, change_rate=0.15, new_rate=0.02, cancel_rate=0.02)
    return out


@pytest.fixture(scope="module")
def doc(delta) -> dict:
    return json.loads((delta / "delta.json").read_text())


@pytest.fixture(scope="module")
def decoded(book, delta) -> dict[str, tuple[dict, dict]]:
    return {s: (_decode(book, s), _decode(delta, s)) for s in SOURCES}


def test_delta_json_names_day_book_and_three_disjoint_sets(book, doc):
    assert doc["day"] == 2 and doc["of"] == str(book.resolve())
    for source in SOURCES:
        d = doc["sources"][source]
        changed, cancelled, new = set(d["changed"]), set(d["cancelled"]), set(d["new"])
        assert changed and cancelled and new, source
        assert not (changed & cancelled) and not (changed & new) and not (cancelled & new)
        assert all(d["changed"].values()), "every changed policy names at least one field"


def test_delta_files_decode_with_the_source_readers_and_hold_exactly_the_named_policies(decoded, doc):
    for source in SOURCES:
        key = load_source(source).key
        _, drop = decoded[source]
        d = doc["sources"][source]
        named = set(d["changed"]) | set(d["cancelled"]) | set(d["new"])
        for kind, (table, quarantine) in drop.items():
            assert quarantine.num_rows == 0, (source, kind, quarantine.to_pylist()[:1])
            ids = set(pc.utf8_trim_whitespace(table.column(key)).to_pylist())
            if kind == "policies":
                assert ids == named, source
                assert table.num_rows == len(named), "one master record per policy"
            else:
                assert ids <= named, (source, kind)


def test_new_policies_use_ids_never_seen_in_the_book_and_arrive_pending(decoded, doc):
    for source in SOURCES:
        key = load_source(source).key
        book, drop = decoded[source]
        used = set()
        for table, _ in book.values():
            used |= set(pc.utf8_trim_whitespace(table.column(key)).to_pylist())
        new = doc["sources"][source]["new"]
        assert not set(new) & used
        rows = _rows_by_id(drop["policies"][0], key)
        assert {rows[i][0][STATUS[source]] for i in new} == {"PE" if source == "mainframe_life" else "PND"}
        coverages = _rows_by_id(drop["coverages"][0], key)
        assert all(coverages.get(i) for i in new), "a new policy comes with its coverages"
    mf_new = doc["sources"]["mainframe_life"]["new"]
    assert all(len(i) == 10 and i[0] == "L" and i[1:].isdigit() for i in mf_new)
    assert all(len(i) == 10 and i[:2] == "PC" and i[2:].isdigit() for i in doc["sources"]["pc_csv"]["new"])


def test_changed_policies_differ_in_the_named_fields_and_nowhere_else(decoded, doc):
    kinds_seen: Counter = Counter()
    for source in SOURCES:
        key = load_source(source).key
        book, drop = decoded[source]
        for policy_id, fields in doc["sources"][source]["changed"].items():
            kinds_seen.update(fields)
            for kind in book:
                before = _rows_by_id(book[kind][0], key).get(policy_id, [])
                after = _rows_by_id(drop[kind][0], key).get(policy_id, [])
                if kind == "policies":
                    (b,), (a,) = before, after
                    differing = {f for f in b if b[f] != a[f]}
                    named = {f for f in fields if "." not in f and f != "endorsements"}
                    assert differing == named, (policy_id, differing, named)
                    continue
                if kind == "endorsements" and "endorsements" in fields:
                    assert len(after) > len(before) and after[: len(before)] == before
                    added = after[len(before):]
                    assert [r["END_SEQ"] for r in added] == list(range(len(before) + 1, len(after) + 1))
                    continue
                assert len(after) == len(before), (policy_id, kind)
                changed_here = {f.split(".", 1)[1] for f in fields if f.startswith(kind + ".")}
                differing = {f for b, a in zip(before, after) for f in b if b[f] != a[f]}
                assert differing == changed_here, (policy_id, kind, differing, changed_here)
    for expected in ("MODAL_PREMIUM", "INS_ADDR_LINE1", "BILLING_MODE", "endorsements", "coverages.COV_PREMIUM",
                     "AnnualPrem", "MailAddr", "PayPlan", "coverages.CovPrem"):
        assert kinds_seen[expected], f"no change of {expected} in the delta"


def test_coverage_premiums_still_add_up_after_a_premium_change(decoded, doc):
    """The change in a policy's premium is the change in its coverages' premiums (riders 4 and 5 of a
    life policy have no coverage record of their own)."""
    for source, master, cov in (("mainframe_life", "MODAL_PREMIUM", "COV_PREMIUM"), ("pc_csv", "AnnualPrem", "CovPrem")):
        key = load_source(source).key
        book, drop = decoded[source]
        for policy_id in doc["sources"][source]["changed"]:
            (a,) = _rows_by_id(drop["policies"][0], key)[policy_id]
            (b,) = _rows_by_id(book["policies"][0], key)[policy_id]
            cov_after = _rows_by_id(drop["coverages"][0], key)[policy_id]
            cov_before = _rows_by_id(book["coverages"][0], key)[policy_id]
            expected = a[master] - b[master]
            if source == "mainframe_life":
                for j in range(len(cov_before), 6):  # rider slots without a coverage record
                    expected -= (a[f"RIDER_PREMIUM_{j}"] or 0) - (b[f"RIDER_PREMIUM_{j}"] or 0)
            assert sum(r[cov] for r in cov_after) - sum(r[cov] for r in cov_before) == expected, (source, policy_id)


def test_cancelled_policies_have_the_cancelled_status_and_are_otherwise_unchanged(decoded, doc):
    for source in SOURCES:
        key = load_source(source).key
        book, drop = decoded[source]
        for policy_id in doc["sources"][source]["cancelled"]:
            for kind in book:
                before = _rows_by_id(book[kind][0], key).get(policy_id, [])
                after = _rows_by_id(drop[kind][0], key).get(policy_id, [])
                if kind == "policies":
                    assert before[0][STATUS[source]] != CANCELLED[source]
                    assert after[0][STATUS[source]] == CANCELLED[source]
                    assert {**after[0], STATUS[source]: None} == {**before[0], STATUS[source]: None}
                else:
                    assert after == before, (policy_id, kind)


def test_every_satellite_record_of_an_included_mainframe_policy_is_in_the_delta(decoded, doc):
    book, drop = decoded["mainframe_life"]
    d = doc["sources"]["mainframe_life"]
    included = set(d["changed"]) | set(d["cancelled"])
    for kind in book:
        before = Counter(r["POL_NUMBER"] for r in book[kind][0].select(["POL_NUMBER"]).to_pylist())
        after = Counter(r["POL_NUMBER"] for r in drop[kind][0].select(["POL_NUMBER"]).to_pylist())
        for policy_id in included:
            added = after[policy_id] - before[policy_id]
            if kind == "endorsements" and "endorsements" in d["changed"].get(policy_id, []):
                assert added >= 1
            else:
                assert added == 0, (kind, policy_id)


def test_untouched_csv_lines_are_byte_identical_to_the_book(book, delta, doc):
    book_lines = set((book / "pc_csv" / "coverages.csv").read_bytes().splitlines())
    cancelled = set(doc["sources"]["pc_csv"]["cancelled"])
    lines = (delta / "pc_csv" / "coverages.csv").read_bytes().splitlines()
    assert lines[0] == (book / "pc_csv" / "coverages.csv").read_bytes().splitlines()[0]
    of_cancelled = [ln for ln in lines[1:] if ln.split(b",", 1)[0].decode() in cancelled]
    assert of_cancelled and all(ln in book_lines for ln in of_cancelled)
    policy_lines = set((book / "pc_csv" / "policies.csv").read_bytes().splitlines())
    for ln in (delta / "pc_csv" / "policies.csv").read_bytes().splitlines()[1:]:
        if ln.split(b",", 1)[0].decode() in cancelled:
            assert ln.replace(b",CAN,", b",ACT,", 1) in policy_lines


def test_same_book_day_and_seed_give_identical_bytes(book, delta, tmp_path):
    again = tmp_path / "again"
    write_delta(book, again, day=2, seed=11, change_rate=0.15, new_rate=0.02, cancel_rate=0.02)
    assert _files(again) == _files(delta)


def test_another_day_picks_other_policies_and_other_new_ids(book, doc, tmp_path):
    write_delta(book, tmp_path / "day3", day=3, seed=11, change_rate=0.15, new_rate=0.02, cancel_rate=0.02)
    day3 = json.loads((tmp_path / "day3" / "delta.json").read_text())
    assert day3["day"] == 3
    for source in SOURCES:
        a, b = doc["sources"][source], day3["sources"][source]
        assert set(a["changed"]) != set(b["changed"])
        assert not set(a["new"]) & set(b["new"]), "each day numbers its new business in its own block"


def test_default_rates_pick_a_few_of_each(book, tmp_path):
    summary = write_delta(book, tmp_path / "d", day=2)
    for source in SOURCES:
        s = summary.sources[source]
        assert (len(s.changed), len(s.cancelled), len(s.new)) == (4, 1, 1)  # 200 policies: 2%, 0.3%, 0.5%, rounded up


def test_policies_with_quarantined_records_are_never_picked(tmp_path):
    book = sample_book(policies=600, seed=11, defect_rate=0.05)
    out = tmp_path / "delta"
    summary = write_delta(book, out, day=2, seed=5, change_rate=0.3, cancel_rate=0.05)
    bad = {d["policy_id"] for d in manifest(book)["defects"]
           if d["stage"] == "intake" or d["kind"] == "duplicate_policy_id"}
    for source in SOURCES:
        s = summary.sources[source]
        assert not (set(s.changed) | set(s.cancelled)) & bad
        for kind, (_, quarantine) in _decode(out, source).items():
            assert quarantine.num_rows == 0, (source, kind)


def test_a_missing_book_or_file_and_a_bad_day_are_clear_errors(book, tmp_path):
    with pytest.raises(FileNotFoundError, match="sample book .*nowhere does not exist"):
        write_delta(tmp_path / "nowhere", tmp_path / "out", day=2)
    partial = tmp_path / "partial"
    (partial / "mainframe_life").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"POLMAST\*\.dat"):
        write_delta(partial, tmp_path / "out", day=2)
    (partial / "mainframe_life" / "POLMAST.dat").write_bytes(b"")
    (partial / "mainframe_life" / "COVERAGE.dat").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="pc_csv"):
        write_delta(partial, tmp_path / "out", day=2)
    with pytest.raises(ValueError, match="day must be"):
        write_delta(book, tmp_path / "out", day=1)
    with pytest.raises(ValueError, match="sample book"):
        write_delta(book, book, day=2)


def test_cli_writes_a_delta_and_prints_the_counts(book, tmp_path):
    from typer.testing import CliRunner

    from dagster_project.cli import app

    out = tmp_path / "cli-delta"
    result = CliRunner().invoke(app, ["generate-sample", "--delta-of", str(book), "--day", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "delta.json").read_text())
    assert doc["day"] == 4
    assert "pc_csv" in result.output and "cancelled" in result.output
    missing = CliRunner().invoke(app, ["generate-sample", "--delta-of", str(tmp_path / "nope"), "--out", str(out)])
    assert missing.exit_code == 2 and "does not exist" in " ".join(missing.output.split())
