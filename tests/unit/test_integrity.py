"""Drop checks (legacy.integrity), pure: control files, trailers, truncation, unreadable heads, control tallies."""

from __future__ import annotations

import os
import shutil
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from legacy.integrity import (
    ControlEntry,
    ControlTally,
    DropRefused,
    FileCheck,
    control_file_text,
    parse_control_file,
    read_trailer,
    verify_drop,
)
from legacy.sources import SourceConfigError, load_source, read_source_file
from tests.book import manifest, sample_book

MF, PC = "mainframe_life", "pc_csv"
HYPO = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def drop(tmp_path):
    """A fresh copy of a sample drop, to spoil."""
    def copy(source: str) -> Path:
        target = tmp_path / f"{source}-{len(list(tmp_path.iterdir()))}"
        shutil.copytree(sample_book() / source, target)
        return target
    return copy


def refusal(source: str, folder: Path):
    with pytest.raises(DropRefused) as refused:
        verify_drop(load_source(source), folder)
    return refused.value.problems


def without_control(source: str):
    return load_source(source).model_copy(update={"control": None})


def without_junk(folder: Path, file: str, width: int) -> bytes:
    """Drop a fixed-length file's trailing garbage (the sample gives most some), as its control file declares."""
    path = folder / file
    data = path.read_bytes()
    data = data[: len(data) - len(data) % width]
    path.write_bytes(data)
    entries = parse_control_file(folder / "CONTROL.txt")
    entries[file] = ControlEntry(file, 0, len(data) // width, len(data))
    (folder / "CONTROL.txt").write_text(control_file_text(entries.values()))
    return data


def test_the_sample_drops_verify_with_their_control_files_and_trailer():
    book = sample_book()
    facts = manifest(book)["files"]
    mf = verify_drop(load_source(MF), book / MF)
    assert mf.control_file == "CONTROL.txt" and set(mf.files) == {s.kind for s in load_source(MF).files}
    master = mf.files["policies"]
    assert master.records == facts[f"{MF}/POLMAST.dat"]["records"] and master.records_from == ["control file", "trailer"]
    assert not master.records_checked  # a V file is counted while it is staged
    assert master.data_bytes == master.bytes - 44 and master.total_of == "MODAL_PREMIUM"
    assert Decimal(master.total) == Decimal(manifest(book)["policy_totals"][MF]["premium_cents"]) / 100
    for kind, check in mf.files.items():
        if kind != "policies":  # fixed-length files are proven here; trailing junk is not a record the sender wrote
            junk = 1 if facts[f"{MF}/{check.file}"].get("trailing_bytes") else 0
            assert check.records_checked and check.records == facts[f"{MF}/{check.file}"]["records"] - junk
    pc = verify_drop(load_source(PC), book / PC)
    assert {k: c.records for k, c in pc.files.items()} == {
        "policies": facts[f"{PC}/policies.csv"]["records"], "coverages": facts[f"{PC}/coverages.csv"]["records"]}
    from legacy.errors import UsageError

    assert issubclass(DropRefused, UsageError) and issubclass(DropRefused, ValueError)  # bad input: exit 2


def test_reading_a_file_with_a_trailer_leaves_the_trailer_out():
    book = sample_book()
    source = load_source(MF)
    results = list(read_source_file(source, source.file("policies"), book / MF / "POLMAST.dat", block_records=97))
    read = sum(r.table.num_rows + r.quarantine.num_rows for r in results)
    assert read == manifest(book)["files"][f"{MF}/POLMAST.dat"]["records"]  # the trailer is no record


def test_control_files_parse_and_name_the_bad_line(tmp_path):
    path = tmp_path / "CONTROL.txt"
    path.write_text("# header\n\nA.dat records=3 bytes=30  # trailing comment\nB.dat bytes=0\n")
    assert parse_control_file(path) == {"A.dat": ControlEntry("A.dat", 3, 3, 30), "B.dat": ControlEntry("B.dat", 4, None, 0)}
    for body, line, needle in [("A.dat records=x\n", 1, "'records=x'"), ("ok.dat records=1\nA.dat\n", 2, "neither"),
                               ("A.dat records=1\nA.dat bytes=2\n", 2, "listed twice")]:
        path.write_text(body)
        with pytest.raises(DropRefused) as refused:
            parse_control_file(path)
        (problem,) = refused.value.problems
        assert (problem.reason, problem.line) == ("control_file", line) and needle in problem.detail
    path.write_bytes(b"A.dat records=1 \xff\n")
    with pytest.raises(DropRefused, match="not UTF-8"):
        parse_control_file(path)
    entries = [ControlEntry("X.dat", 0, 5, 50), ControlEntry("Y.csv", 0, None, 7)]
    path.write_text(control_file_text(entries))
    assert {e.file: (e.records, e.bytes) for e in parse_control_file(path).values()} == {"X.dat": (5, 50), "Y.csv": (None, 7)}


@HYPO
@given(cut=st.integers(min_value=1, max_value=10_000))
def test_a_master_cut_anywhere_is_refused_as_truncated(drop, cut):
    folder = drop(MF)
    path = folder / "POLMAST.dat"
    data = path.read_bytes()
    keep = max(len(data) - cut, 1)
    path.write_bytes(data[:keep])
    (problem,) = refusal(MF, folder)
    assert (problem.file, problem.reason, problem.offset) == ("POLMAST.dat", "truncated", keep)
    assert f"declares {len(data)} bytes" in problem.detail and "ask the sender" in problem.advice
    # without a control file the missing trailer gives it away
    with pytest.raises(DropRefused) as refused:
        verify_drop(without_control(MF), folder)
    assert [p.reason for p in refused.value.problems if p.file == "POLMAST.dat"] in (["trailer_missing"], ["unreadable"])


@HYPO
@given(cut=st.integers(min_value=1, max_value=119))
def test_a_fixed_length_file_that_ends_inside_a_record_is_truncated(drop, cut):
    folder = drop(MF)
    path = folder / "CORRIDX.dat"  # 40-byte records
    data = without_junk(folder, "CORRIDX.dat", 40)
    path.write_bytes(data[:-cut])
    (problem,) = refusal(MF, folder)
    assert problem.reason == "truncated" and problem.offset == len(data) - cut
    # no control file: the size alone tells (the other files' trailing junk is refused the same way)
    try:
        verify_drop(without_control(MF), folder)
        problems = []
    except DropRefused as refused:
        problems = [p for p in refused.problems if p.file == "CORRIDX.dat"]
    if cut % 40:
        (problem,) = problems
        whole = (len(data) - cut) // 40
        assert (problem.reason, problem.offset, problem.record) == ("truncated", whole * 40, whole + 1)
        assert "40-byte records" in problem.detail
    else:  # a cut on a record boundary cannot be seen without a count
        assert problems == []


def test_a_cut_on_a_record_boundary_needs_the_count(drop):
    folder = drop(MF)
    path = folder / "CORRIDX.dat"
    path.write_bytes(without_junk(folder, "CORRIDX.dat", 40)[:-80])
    (problem,) = refusal(MF, folder)
    assert problem.reason == "truncated"
    entries = parse_control_file(folder / "CONTROL.txt")
    (folder / "CONTROL.txt").write_text(control_file_text(
        [ControlEntry(e.file, 0, e.records, None) for e in entries.values()]))  # counts only
    (problem,) = refusal(MF, folder)
    assert problem.reason == "count_mismatch" and f"declares {entries['CORRIDX.dat'].records}" in problem.detail
    with pytest.raises(DropRefused) as refused:  # nothing declared: two records fewer is undetectable
        verify_drop(without_control(MF), folder)
    assert "CORRIDX.dat" not in {p.file for p in refused.value.problems}  # (the others' junk is refused)


def test_trailing_junk_after_the_declared_records_is_left_to_the_quarantine(drop):
    book = sample_book()
    junky = [k for k, v in manifest(book)["files"].items() if k.startswith(MF) and v.get("trailing_bytes")]
    assert junky, "the sample should hold a fixed-length file with trailing garbage"
    folder = drop(MF)
    verify_drop(load_source(MF), folder)  # the control file declares whole records: accepted
    with pytest.raises(DropRefused) as refused:  # without it, a partial last record looks truncated
        verify_drop(without_control(MF), folder)
    assert {p.file for p in refused.value.problems} == {k.split("/")[1] for k in junky}
    assert {p.reason for p in refused.value.problems} == {"truncated"}


@pytest.mark.parametrize("source,file", [(MF, "POLMAST.dat"), (MF, "COVERAGE.dat"), (PC, "policies.csv"),
                                         (PC, "coverages.csv")])
def test_random_bytes_are_unreadable(drop, source, file):
    folder = drop(source)
    path = folder / file
    path.write_bytes(os.urandom(path.stat().st_size))  # the declared size: only the content can tell
    (problem,) = refusal(source, folder)
    assert problem.file == file and problem.reason in ("unreadable", "bad_header")
    assert problem.offset is not None
    if source == PC:
        assert (problem.reason, problem.line) == ("bad_header", 1)


def test_a_csv_with_its_header_and_then_garbage_is_unreadable_at_its_first_bad_line(drop):
    folder = drop(PC)
    path = folder / "policies.csv"
    header = path.read_bytes().split(b"\n", 1)[0] + b"\n"
    body = bytes(range(128, 256)) * 400
    path.write_bytes(header + body)
    entries = parse_control_file(folder / "control.txt")
    entries["policies.csv"] = ControlEntry("policies.csv", 0, None, path.stat().st_size)
    (folder / "control.txt").write_text(control_file_text(entries.values()))
    (problem,) = refusal(PC, folder)
    assert (problem.reason, problem.line, problem.offset) == ("unreadable", 2, len(header))
    assert "not valid utf-8" in problem.detail


def test_an_empty_required_file_is_refused_and_an_empty_optional_one_declared_empty_is_not(drop):
    folder = drop(MF)
    (folder / "COVERAGE.dat").write_bytes(b"")
    problems = refusal(MF, folder)
    assert [(p.file, p.reason, p.offset) for p in problems] == [("COVERAGE.dat", "empty", 0)]
    folder = drop(MF)
    (folder / "PAYHIST.dat").write_bytes(b"")
    entries = parse_control_file(folder / "CONTROL.txt")
    (problem,) = refusal(MF, folder)  # the control file still declares its records
    assert (problem.file, problem.reason) == ("PAYHIST.dat", "truncated")
    entries["PAYHIST.dat"] = ControlEntry("PAYHIST.dat", 0, 0, 0)
    (folder / "CONTROL.txt").write_text(control_file_text(entries.values()))
    assert verify_drop(load_source(MF), folder).files["payments"].records == 0


def test_the_control_file_and_the_drop_must_agree_on_which_files_there_are(drop):
    folder = drop(MF)
    (folder / "CLAIMREF.dat").unlink()  # optional, but the control file lists it: lost in transfer
    (problem,) = refusal(MF, folder)
    assert (problem.file, problem.reason) == ("CLAIMREF.dat", "missing_file") and "CONTROL.txt line" in problem.detail
    folder = drop(MF)
    (folder / "CONTROL.txt").unlink()
    problem, *junk = refusal(MF, folder)  # and, with no counts, the satellites' trailing junk looks truncated
    assert problem.reason == "control_file" and "CONTROL*.txt" in problem.detail
    assert {p.reason for p in junk} <= {"truncated"}
    folder = drop(PC)
    lines = (folder / "control.txt").read_text().splitlines()
    (folder / "control.txt").write_text("\n".join(l for l in lines if not l.startswith("coverages.csv")) + "\n")
    (problem,) = refusal(PC, folder)
    assert (problem.file, problem.reason) == ("coverages.csv", "control_file")
    folder = drop(PC)
    (folder / "policies.csv").unlink()
    (problem,) = refusal(PC, folder)
    assert problem.reason == "missing_file" and "policies*.csv" in problem.detail


def test_every_bad_file_of_a_drop_is_named_at_once(drop):
    folder = drop(MF)
    (folder / "POLMAST.dat").write_bytes(b"")
    (folder / "ENDORSE.dat").write_bytes((folder / "ENDORSE.dat").read_bytes()[:-7])
    assert sorted((p.file, p.reason) for p in refusal(MF, folder)) == [
        ("ENDORSE.dat", "truncated"), ("POLMAST.dat", "empty")]
    text = str(pytest.raises(DropRefused, verify_drop, load_source(MF), folder).value)
    assert text.startswith(f"{MF} drop {folder.name} refused; nothing of it is staged:")
    assert "  - POLMAST.dat, byte offset 0: empty: the file has no bytes; ask the sender" in text


def test_a_trailer_is_found_and_decoded_and_a_wrong_one_is_named(drop):
    source = load_source(MF)
    spec = source.file("policies")
    folder = drop(MF)
    path = folder / "POLMAST.dat"
    trailer = read_trailer(source, spec, path, folder)
    assert trailer.offset == path.stat().st_size - 44 and trailer.length == 44
    data = bytearray(path.read_bytes())
    data[trailer.offset + 4: trailer.offset + 12] = "TRAILEX ".encode("cp037")
    path.write_bytes(bytes(data))
    with pytest.raises(DropRefused) as refused:
        read_trailer(source, spec, path, folder)
    (problem,) = refused.value.problems
    assert (problem.reason, problem.offset, problem.field) == ("trailer_missing", trailer.offset, "TRL_REC_TYPE")
    data[trailer.offset + 4: trailer.offset + 12] = "TRAILER ".encode("cp037")
    data[trailer.offset + 12] = 0x40  # a space in the zoned count
    path.write_bytes(bytes(data))
    with pytest.raises(DropRefused) as refused:
        read_trailer(source, spec, path, folder)
    assert refused.value.problems[0].reason == "trailer_invalid"


def test_the_tally_proves_counts_and_totals_the_cheap_checks_cannot():
    check = FileCheck("policies", "P.dat", "V", 100, 56, records=3, records_from=["trailer"], total="10.50",
                      total_of="AMT")
    table = pa.table({"record_no": [1, 2, 3], "AMT": pa.array([Decimal("1.50"), Decimal("4.00"), Decimal("5.00")],
                                                               pa.decimal128(9, 2))})
    empty_q = pa.table({"record_no": pa.array([], pa.int64())})
    tally = ControlTally("s", "d", check)
    tally.add(table, empty_q)
    assert tally.finish() == {"records_declared": 3, "records_read": 3, "total_of": "AMT", "total_declared": "10.50",
                              "total_staged": "10.50", "total_proven": True}
    tally = ControlTally("s", "d", check)
    tally.add(table.slice(0, 2), empty_q)
    with pytest.raises(DropRefused) as refused:
        tally.finish()
    assert [p.reason for p in refused.value.problems] == ["count_mismatch", "total_mismatch"]
    assert "the file holds 2 records, but the trailer declares 3" in refused.value.problems[0].detail
    tally = ControlTally("s", "d", check)  # a record quarantined: its amount cannot be read, nothing proven, no refusal
    tally.add(table.slice(0, 2), pa.table({"record_no": [3]}))
    assert tally.finish()["total_proven"] is False


def test_source_configurations_validate_the_new_settings(tmp_path):
    base = yaml.safe_load((Path(load_source(PC).path)).read_text())
    for change, needle in [
        (lambda d: d["files"][0].update(trailer={"copybook": "T.cpy", "tag_field": "A", "tag": "T",
                                                 "count_field": "N"}), "files[0].trailer"),
        (lambda d: d["files"][0].update(kind="drop"), "reserved"),
        (lambda d: d.update(limits={"max_field_bytes": 0}), "limits.max_field_bytes"),
        (lambda d: d.update(control={"pattern": "a/b.txt"}), "control.pattern"),
    ]:
        data = yaml.safe_load(yaml.safe_dump(base))
        change(data)
        path = tmp_path / "pc_csv.yaml"
        path.write_text(yaml.safe_dump(data))
        with pytest.raises(SourceConfigError, match=needle.replace("[", r"\[").replace("]", r"\]")):
            load_source(path)
    mf = yaml.safe_load((Path(load_source(MF).path)).read_text())
    del mf["files"][0]["trailer"]["total_of"]
    path = tmp_path / "mainframe_life.yaml"
    path.write_text(yaml.safe_dump(mf))
    with pytest.raises(SourceConfigError, match="total_field and total_of go together"):
        load_source(path)
