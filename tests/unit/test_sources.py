"""Source configurations: built-in YAMLs, validation errors naming file and field, drop folders."""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from legacy.sources import (
    DropFileError,
    SourceConfigError,
    builtin_sources_dir,
    copybook_path,
    find_drop_files,
    list_sources,
    load_source,
    output_columns,
    read_source_file,
)


def test_builtin_sources_load():
    names = [s.name for s in list_sources()]
    assert "mainframe_life" in names and "pc_csv" in names
    mf = load_source("mainframe_life")
    assert mf.format == "copybook" and mf.encoding == "cp037" and mf.key == "POL_NUMBER"
    assert [f.kind for f in mf.files] == ["policies", "coverages", "payments", "endorsements", "correspondence", "claims"]
    pol = mf.file("policies")
    assert pol.record_format == "V" and pol.copybook == "POLMAST.cpy" and pol.required
    assert all(f.record_format == "F" for f in mf.files[1:])
    assert "INS_TAX_ID" in mf.pii and "INS_LAST_NAME" in mf.pii
    assert mf.path == builtin_sources_dir() / "mainframe_life.yaml"
    assert mf.config_dir == builtin_sources_dir() / "mainframe_life"

    pc = load_source(builtin_sources_dir() / "pc_csv.yaml")  # by path too
    assert pc.format == "csv" and pc.encoding == "utf-8" and pc.key == "PolicyNo"
    cols = {c.name: c for c in pc.file("policies").columns}
    assert cols["AnnualPrem"].type == "amount" and cols["AnnualPrem"].scale == 2
    assert {"InsuredName", "TaxId"} <= set(pc.pii)


def test_output_columns():
    mf = load_source("mainframe_life")
    cols = dict(output_columns(mf, mf.file("policies")))
    assert cols["POL_NUMBER"] == pa.string()
    assert cols["ISSUE_DATE"] == pa.int64()
    assert cols["MODAL_PREMIUM"] == pa.decimal128(9, 2)
    assert cols["FACE_AMOUNT"] == pa.decimal128(11, 2)
    assert "RIDER_CODE_5" in cols and "BEN_NAME_2" in cols and "FILLER" not in cols and "record_no" not in cols
    for spec in mf.files:  # every copybook resolves and parses
        assert output_columns(mf, spec)[0][0] == "POL_NUMBER"
    pc = load_source("pc_csv")
    cols = output_columns(pc, pc.file("coverages"))
    assert cols[0] == ("PolicyNo", pa.string())
    assert dict(cols)["LimitAmt"] == pa.decimal128(18, 2)


GOOD = {
    "name": "tiny",
    "description": "a test source",
    "format": "csv",
    "encoding": "utf-8",
    "key": "Id",
    "pii": ["Name"],
    "files": [
        {
            "kind": "policies",
            "pattern": "pol*.csv",
            "columns": [{"name": "Id"}, {"name": "Name"}, {"name": "Amt", "type": "amount"}],
        },
        {"kind": "notes", "pattern": "notes*.csv", "required": False, "columns": [{"name": "Id"}]},
    ],
}


def _write_yaml(tmp_path: Path, data, name: str = "tiny.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return p


def _mutated(**changes):
    import copy

    d = copy.deepcopy(GOOD)
    for path, value in changes.items():
        target = d
        parts = path.split("__")
        for part in parts[:-1]:
            target = target[int(part)] if part.isdigit() else target[part]
        last = parts[-1]
        if value is _DELETE:
            del target[int(last) if last.isdigit() else last]
        else:
            target[int(last) if last.isdigit() else last] = value
    return d


_DELETE = object()


def test_good_yaml_loads(tmp_path):
    cfg = load_source(_write_yaml(tmp_path, GOOD))
    assert cfg.name == "tiny" and cfg.files[1].required is False


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"format": "xml"}, "format"),
        ({"format": _DELETE}, "format"),
        ({"encoding": "no-such-codec"}, "encoding"),
        ({"files__0__columns__2__type": "money"}, "files[0].columns[2].type"),
        ({"files__0__columns": _DELETE}, "files[0].columns"),
        ({"files__1__kind": "Bad Kind"}, "files[1].kind"),
        ({"files__0__colour": "red"}, "files[0].colour"),
        ({"key": "PolicyId"}, "key"),
        ({"pii": ["Name", "Nope"]}, "pii[1]"),
        ({"files__0__delimiter": ",,"}, "files[0].delimiter"),
        ({"files__0__copybook": "X.cpy"}, "files[0].copybook"),
        ({"files__1__kind": "policies"}, "policies"),
    ],
)
def test_bad_yaml_names_file_and_field(tmp_path, changes, field):
    p = _write_yaml(tmp_path, _mutated(**changes))
    with pytest.raises(SourceConfigError) as ei:
        load_source(p)
    msg = str(ei.value)
    assert str(p) in msg and field in msg, msg


def test_bad_copybook_source_fields(tmp_path):
    data = yaml.safe_load((builtin_sources_dir() / "mainframe_life.yaml").read_text())
    data["files"][2]["record_format"] = "VB"
    p = _write_yaml(tmp_path, data, "mf.yaml")
    with pytest.raises(SourceConfigError, match=r"files\[2\]\.record_format"):
        load_source(p)
    del data["files"][2]["record_format"]
    p = _write_yaml(tmp_path, data, "mf.yaml")
    with pytest.raises(SourceConfigError, match=r"mf\.yaml.*files\[2\]\.record_format.*required"):
        load_source(p)


def test_unparsable_yaml_and_unknown_names(tmp_path):
    p = _write_yaml(tmp_path, "name: [unclosed\n")
    with pytest.raises(SourceConfigError, match="tiny.yaml.*not valid YAML"):
        load_source(p)
    p = _write_yaml(tmp_path, "- just\n- a list\n", "list.yaml")
    with pytest.raises(SourceConfigError, match="list.yaml.*mapping"):
        load_source(p)
    with pytest.raises(SourceConfigError, match="unknown source 'nope'.*mainframe_life"):
        load_source("nope")
    with pytest.raises(SourceConfigError, match="not found"):
        load_source(tmp_path / "missing.yaml")


def test_find_drop_files(tmp_path):
    cfg = load_source(_write_yaml(tmp_path, GOOD))
    drop = tmp_path / "drop"
    drop.mkdir()
    with pytest.raises(DropFileError) as ei:
        find_drop_files(cfg, drop)
    assert str(drop) in str(ei.value) and "'pol*.csv'" in str(ei.value) and "policies" in str(ei.value)

    (drop / "pol_20250630.csv").write_text("Id,Name,Amt\n1,a,1\n")
    assert find_drop_files(cfg, drop) == {"policies": drop / "pol_20250630.csv"}  # optional notes absent
    (drop / "notes.csv").write_text("Id\n1\n")
    assert set(find_drop_files(cfg, drop)) == {"policies", "notes"}

    (drop / "pol_20250701.csv").write_text("Id,Name,Amt\n")
    with pytest.raises(DropFileError, match="matches 2 files"):
        find_drop_files(cfg, drop)

    with pytest.raises(DropFileError, match="does not exist"):
        find_drop_files(cfg, tmp_path / "nowhere")


def test_drop_with_a_source_subfolder_and_csv_dispatch(tmp_path):
    cfg = load_source(_write_yaml(tmp_path, GOOD))
    sub = tmp_path / "drop" / "tiny"
    sub.mkdir(parents=True)
    (sub / "pol.csv").write_text('Id,Name,Amt\n1,"a, b","$1,000.10"\n2,b,x\n')
    found = find_drop_files(cfg, tmp_path / "drop")
    assert found == {"policies": sub / "pol.csv"}
    results = list(read_source_file(cfg, cfg.file("policies"), found["policies"], block_records=1))
    good = pa.concat_tables([r.table for r in results]).to_pylist()
    bad = pa.concat_tables([r.quarantine for r in results]).to_pylist()
    assert good == [{"record_no": 1, "Id": "1", "Name": "a, b", "Amt": Decimal("1000.10")}]
    assert [(b["record_no"], b["reason"], b["field"]) for b in bad] == [(2, "invalid_number", "Amt")]


def test_copybook_resolution_prefers_the_drop(tmp_path):
    mf = load_source("mainframe_life")
    spec = mf.file("coverages")
    assert copybook_path(mf, spec) == mf.config_dir / "COVERAGE.cpy"
    drop = tmp_path / "drop"
    drop.mkdir()
    shutil.copy(mf.config_dir / "COVERAGE.cpy", drop / "COVERAGE.cpy")
    with open(drop / "COVERAGE.cpy", "a") as f:  # the drop's copybook has a longer layout
        f.write("001700     05  COV-EXTRA               PIC X(08).\n")
    assert copybook_path(mf, spec, drop) == drop / "COVERAGE.cpy"
    assert output_columns(mf, spec, drop)[-1] == ("COV_EXTRA", pa.string())
    assert output_columns(mf, spec)[-1] == ("COV_STATUS", pa.string())

    bad = mf.model_copy(update={"files": [spec.model_copy(update={"copybook": "NOPE.cpy"})]})
    with pytest.raises(SourceConfigError, match="NOPE.cpy.*not found"):
        copybook_path(bad, bad.files[0], drop)
