"""The synthetic legacy book: determinism, manifest ground truth, intake reconciliation, coherence."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from datetime import date
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import legacy.sample as sample
from legacy.copybook import QUARANTINE_SCHEMA, DecodeResult
from legacy.sample import (
    ACCENTED_FIRST_NAMES,
    ACCENTED_LAST_NAMES,
    DEFECT_KINDS,
    LIFE_PLAN_CODES,
    LIFE_STATUS_CODES,
    PC_LOB_CODES,
    PC_STATUS_CODES,
    generate_sample,
)
from legacy.sources import builtin_sources_dir, find_drop_files, load_source, read_source_file

SOURCES = ("mainframe_life", "pc_csv")


def _decode(out: Path, source_name: str, block_records: int = 50_000) -> dict[str, tuple[pa.Table, pa.Table, str]]:
    """kind -> (parsed table, quarantine, file name) for every file of a source in the book."""
    src = load_source(source_name)
    drop = out / source_name
    found = find_drop_files(src, drop)
    result = {}
    for spec in src.files:
        path = found[spec.kind]
        blocks = list(read_source_file(src, spec, path, drop_dir=drop, block_records=block_records))
        if not blocks:  # the copybook decoder yields nothing for an empty file
            blocks = [DecodeResult(table=pa.table({"record_no": pa.array([], pa.int64())}),
                                   quarantine=QUARANTINE_SCHEMA.empty_table())]
        result[spec.kind] = (
            pa.concat_tables([b.table for b in blocks]),
            pa.concat_tables([b.quarantine for b in blocks]),
            path.name,
        )
    return result


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    """~2,000 policies at a 5% defect rate, generated in several chunks."""
    out = tmp_path_factory.mktemp("book")
    mp = pytest.MonkeyPatch()
    mp.setattr(sample, "CHUNK_POLICIES", 400)  # exercise chunk seams (record numbering, counters)
    calls: list[tuple[str, int, int]] = []
    try:
        summary = generate_sample(out, policies=2_000, seed=20250630, defect_rate=0.05,
                                  progress=lambda s, d, t: calls.append((s, d, t)))
    finally:
        mp.undo()
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    decoded = {s: _decode(out, s, block_records=700) for s in SOURCES}
    return out, summary, manifest, decoded, calls


def test_layout_summary_and_manifest(book):
    out, summary, manifest, _, calls = book
    for name in ("POLMAST", "COVERAGE", "PAYHIST", "ENDORSE", "CORRIDX", "CLAIMREF"):
        assert (out / "mainframe_life" / f"{name}.dat").is_file()
        cpy = out / "mainframe_life" / f"{name}.cpy"
        assert cpy.read_bytes() == (builtin_sources_dir() / "mainframe_life" / f"{name}.cpy").read_bytes()
    assert (out / "pc_csv" / "policies.csv").is_file() and (out / "pc_csv" / "coverages.csv").is_file()

    assert manifest["seed"] == 20250630 and manifest["policies"] == 2_000
    assert manifest["defect_rate"] == 0.05 and manifest["mainframe_share"] == 0.5
    assert set(manifest["files"]) == set(summary.files)
    for key, info in manifest["files"].items():
        p = out / key
        data = p.read_bytes()
        assert info["bytes"] == len(data) == summary.files[key].bytes
        assert info["sha256"] == hashlib.sha256(data).hexdigest()
        assert info["records"] == summary.files[key].records
    totals = manifest["policy_totals"]
    assert totals["mainframe_life"]["policies"] == 1_000 and totals["pc_csv"]["policies"] == 1_000
    assert totals["mainframe_life"]["modal_premium_cents"] == totals["mainframe_life"]["premium_cents"]

    kinds = Counter(d["kind"] for d in manifest["defects"])
    assert summary.defect_counts == dict(sorted(kinds.items()))
    assert set(kinds) == set(DEFECT_KINDS)  # every kind occurs in a book this size
    for d in manifest["defects"]:
        stage, reason = DEFECT_KINDS[d["kind"]]
        assert (d["stage"], d["reason"]) == (stage, reason)
        assert d["source"] in SOURCES and d["record"] >= 1
    keys = [(d["source"], d["file"], d["record"]) for d in manifest["defects"]]
    assert len(keys) == len(set(keys)), "a record carries at most one defect"
    # roughly defect_rate of the records of each file (trailing garbage aside)
    data_records = sum(v["records"] for v in manifest["files"].values())
    assert 0.03 < len(keys) / data_records < 0.07
    assert calls[-1] == ("pc_csv", 1_000, 1_000) and ("mainframe_life", 400, 1_000) in calls


def test_intake_quarantines_exactly_the_intake_defects(book):
    _, _, manifest, decoded, _ = book
    by_file: dict[tuple[str, str], list[dict]] = {}
    for d in manifest["defects"]:
        by_file.setdefault((d["source"], d["file"]), []).append(d)
    for source in SOURCES:
        for kind, (table, quarantine, fname) in decoded[source].items():
            defects = by_file.get((source, fname), [])
            records = manifest["files"][f"{source}/{fname}"]["records"]
            assert table.num_rows + quarantine.num_rows == records, fname
            got_nos = table.column("record_no").to_pylist() + quarantine.column("record_no").to_pylist()
            assert sorted(got_nos) == list(range(1, records + 1)), fname

            expected = {d["record"]: d for d in defects if d["stage"] == "intake"}
            q = {r["record_no"]: r for r in quarantine.to_pylist()}
            assert set(q) == set(expected), (fname, sorted(set(q) ^ set(expected))[:10])
            for rec, d in expected.items():
                assert q[rec]["reason"] == d["reason"], (fname, rec, q[rec]["detail"])
                if d["field"] is not None:
                    assert q[rec]["field"] == d["field"], (fname, rec, q[rec])

            parsed = set(table.column("record_no").to_pylist())
            for d in defects:
                if d["stage"] in ("mapping", "preserve"):
                    assert d["record"] in parsed, (fname, d)


def _rows(table: pa.Table, records: list[int]) -> dict[int, dict]:
    idx = pc.is_in(table.column("record_no"), pa.array(records, pa.int64()))
    return {r["record_no"]: r for r in table.filter(idx).to_pylist()}


def test_mapping_defects_load_untouched_and_preserve_names_exactly(book):
    _, _, manifest, decoded, _ = book
    mf_pol = decoded["mainframe_life"]["policies"][0]
    pc_pol = decoded["pc_csv"]["policies"][0]
    pc_cov = decoded["pc_csv"]["coverages"][0]
    mf_cov = decoded["mainframe_life"]["coverages"][0]
    tables = {("mainframe_life", "POLMAST.dat"): mf_pol, ("pc_csv", "policies.csv"): pc_pol,
              ("pc_csv", "coverages.csv"): pc_cov, ("mainframe_life", "COVERAGE.dat"): mf_cov}
    mf_ids = set(mf_pol.column("POL_NUMBER").to_pylist())
    pc_ids = set(pc_pol.column("PolicyNo").to_pylist())
    accented_upper = {n.upper() for n in ACCENTED_LAST_NAMES}
    seen = Counter()
    for d in manifest["defects"]:
        key = (d["source"], d["file"])
        if d["stage"] == "intake" or key not in tables:
            continue
        row = _rows(tables[key], [d["record"]])[d["record"]]
        kind, field = d["kind"], d["field"]
        seen[kind] += 1
        value = row[field] if field else None
        if kind == "impossible_date":
            if d["source"] == "mainframe_life":
                y, m, dd = value // 10000, value // 100 % 100, value % 100
            else:
                m, dd, y = (int(x) for x in value.split("/"))
            with pytest.raises(ValueError):
                date(y, m, dd)
        elif kind == "zero_date":
            assert value in (0, "00/00/0000")
        elif kind == "negative_premium":
            assert value < 0 and value * 100 == d["premium_cents"]
        elif kind == "duplicate_policy_id":
            original = _rows(tables[key], [d["duplicate_of"]])[d["duplicate_of"]]
            assert d["duplicate_of"] < d["record"] and original[field] == value == d["policy_id"]
            assert original != {**row, "record_no": original["record_no"]}  # conflicting data
        elif kind == "orphan_coverage":
            assert value == d["policy_id"] and value not in (mf_ids if d["source"] == "mainframe_life" else pc_ids)
        elif kind == "unknown_code":
            assert value not in LIFE_STATUS_CODES + LIFE_PLAN_CODES + PC_LOB_CODES + PC_STATUS_CODES
        elif kind == "non_ascii_name":
            assert not value.isascii()
            if d["source"] == "mainframe_life":
                assert value in accented_upper
                assert row["INS_FIRST_NAME"].isascii() or row["INS_FIRST_NAME"] in {n.upper() for n in ACCENTED_FIRST_NAMES}
            else:
                last, first = value.split(", ")
                assert last in ACCENTED_LAST_NAMES
        else:  # pragma: no cover
            raise AssertionError(kind)
    assert all(seen[k] > 0 for k in ("impossible_date", "zero_date", "negative_premium", "duplicate_policy_id",
                                     "orphan_coverage", "unknown_code", "non_ascii_name"))


def test_premium_totals_reconcile(book):
    _, _, manifest, decoded, _ = book
    for source, fname, column in (("mainframe_life", "POLMAST.dat", "MODAL_PREMIUM"), ("pc_csv", "policies.csv", "AnnualPrem")):
        table, quarantine, _ = decoded[source]["policies"]
        totals = manifest["policy_totals"][source]
        assert totals["premium_field"] == column and totals["records"] == manifest["files"][f"{source}/{fname}"]["records"]
        quarantined = set(quarantine.column("record_no").to_pylist())
        lost = sum(d["premium_cents"] for d in manifest["defects"]
                   if d["source"] == source and d["file"] == fname and d["record"] in quarantined)
        parsed = pc.sum(table.column(column)).as_py()
        assert isinstance(parsed, Decimal)
        assert parsed == Decimal(totals["premium_cents"] - lost) / 100


def test_determinism(tmp_path):
    a = generate_sample(tmp_path / "a", policies=300, seed=11, defect_rate=0.05)
    b = generate_sample(tmp_path / "b", policies=300, seed=11, defect_rate=0.05)
    c = generate_sample(tmp_path / "c", policies=300, seed=12, defect_rate=0.05)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 6 * 2 + 1 + 1 + 2 + 1 + 1  # .dat+.cpy, trailer layout, CONTROL.txt; 2 csv, control.txt; manifest
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    assert a.files.keys() == b.files.keys() == c.files.keys()
    for key in a.files:
        assert a.files[key].sha256 == b.files[key].sha256
        assert a.files[key].sha256 != c.files[key].sha256, key
    assert a.defect_counts == b.defect_counts


def test_a_clean_book_is_coherent(tmp_path):
    out = tmp_path / "clean"
    summary = generate_sample(out, policies=1_500, seed=3, defect_rate=0.0, mainframe_share=0.6)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["defects"] == [] and summary.total_defects == 0
    mf = _decode(out, "mainframe_life")
    pcs = _decode(out, "pc_csv")
    for tables in (mf, pcs):
        for kind, (table, quarantine, _) in tables.items():
            assert quarantine.num_rows == 0, (kind, quarantine.to_pylist()[:3])

    # --- mainframe life
    pol = mf["policies"][0].to_pandas()
    assert len(pol) == 900 and pol["POL_NUMBER"].is_unique
    assert pol["POL_NUMBER"].str.fullmatch(r"L\d{9}").all()
    assert set(pol["POL_STATUS"]) <= set(LIFE_STATUS_CODES) and set(pol["PLAN_CODE"]) <= set(LIFE_PLAN_CODES)
    assert set(pol["BILLING_MODE"]) <= set("ASQM")
    assert pol["INS_TAX_ID"].str.fullmatch(r"9\d{8}").all()
    for col in ("INS_BIRTH_DATE", "ISSUE_DATE", "EFF_DATE", "MATURITY_DATE"):
        d = pol[col]
        assert ((d // 10000 > 1890) & (d // 100 % 100).between(1, 12) & (d % 100).between(1, 31)).all()
        np.array([f"{v // 10000:04d}-{v // 100 % 100:02d}-{v % 100:02d}" for v in d], dtype="datetime64[D]")
    assert (pol["INS_BIRTH_DATE"] < pol["ISSUE_DATE"]).all()
    assert (pol["ISSUE_DATE"] <= pol["EFF_DATE"]).all() and (pol["EFF_DATE"] <= pol["MATURITY_DATE"]).all()
    assert (pol["MODAL_PREMIUM"] >= 0).all() and (pol["FACE_AMOUNT"] >= 0).all()
    assert (pol["LOAN_BALANCE"] <= pol["CASH_VALUE"]).all()
    assert ((pol["BEN_SHARE_1"] + pol["BEN_SHARE_2"]) == Decimal(100)).all()
    assert pol["RIDER_COUNT"].between(0, 5).all()
    assert pol.loc[pol["RIDER_COUNT"] == 0, "RIDER_CODE_1"].isna().all()  # absent occurrences are null

    cov = mf["coverages"][0].to_pandas()
    per = cov.groupby("POL_NUMBER").size()
    assert set(per.index) == set(pol["POL_NUMBER"]) and per.between(1, 4).all()
    assert (cov["COV_EFF_DATE"] <= cov["COV_EXP_DATE"]).all()
    cov_prem = cov.groupby("POL_NUMBER")["COV_PREMIUM"].sum()
    modal = pol.set_index("POL_NUMBER")["MODAL_PREMIUM"]
    assert (cov_prem <= modal[cov_prem.index]).all()  # base + riders shown: roughly the policy premium
    assert (cov_prem >= modal[cov_prem.index] * Decimal("0.7")).all()
    for kind, lo, hi in (("payments", 0, 6), ("endorsements", 0, 3), ("correspondence", 1, 4), ("claims", 0, 2)):
        t = mf[kind][0].to_pandas()
        counts = t.groupby("POL_NUMBER").size().reindex(pol["POL_NUMBER"], fill_value=0)
        assert counts.between(lo, hi).all(), kind
        assert set(t["POL_NUMBER"]) <= set(pol["POL_NUMBER"])
    claims = mf["claims"][0].to_pandas()
    assert len(claims) < len(pol) * 0.2  # claims are mostly absent
    dead = set(pol.loc[pol["POL_STATUS"] == "DC", "POL_NUMBER"])
    assert dead and dead <= set(claims.loc[claims["CLM_TYPE"] == "DT", "POL_NUMBER"])
    issue = pol.set_index("POL_NUMBER")["ISSUE_DATE"]
    for kind, col in (("payments", "PAY_DATE"), ("endorsements", "END_DATE"), ("correspondence", "DOC_DATE"),
                      ("claims", "CLM_DATE"), ("coverages", "COV_EFF_DATE")):
        t = mf[kind][0].to_pandas()
        assert (t[col].to_numpy() >= issue[t["POL_NUMBER"]].to_numpy()).all(), kind
        if kind != "coverages":
            assert (t[col] <= 20250630).all(), kind
    pay = mf["payments"][0].to_pandas()
    assert (pay["PAY_AMOUNT"] > 0).all()
    assert pay.groupby("POL_NUMBER")["PAY_DATE"].apply(lambda d: d.is_monotonic_increasing).all()

    # --- P&C
    ppol = pcs["policies"][0].to_pandas()
    assert len(ppol) == 600 and ppol["PolicyNo"].is_unique and ppol["PolicyNo"].str.fullmatch(r"PC\d{8}").all()
    assert set(ppol["LOB"]) <= set(PC_LOB_CODES) and set(ppol["PolStatus"]) <= set(PC_STATUS_CODES)
    eff = np.array([np.datetime64(f"{s[6:]}-{s[:2]}-{s[3:5]}") for s in ppol["EffDate"]])
    exp = np.array([np.datetime64(f"{s[6:]}-{s[:2]}-{s[3:5]}") for s in ppol["ExpDate"]])
    assert (eff < exp).all()
    assert ppol["InsuredName"].str.contains(",").any() and ppol["TaxId"].notna().all()
    pcov = pcs["coverages"][0].to_pandas()
    assert pcov.groupby("PolicyNo").size().between(1, 4).all()
    assert (pcov["LimitAmt"] >= pcov["DeductAmt"]).all()
    sums = pcov.groupby("PolicyNo")["CovPrem"].sum()
    assert (sums == ppol.set_index("PolicyNo")["AnnualPrem"][sums.index]).all()
    assert (
        pcov.merge(ppol[["PolicyNo", "EffDate"]], on="PolicyNo", suffixes=("", "_pol"))
        .eval("EffDate == EffDate_pol").all()
    )


def test_tiny_and_one_sided_books(tmp_path):
    s = generate_sample(tmp_path / "none", policies=0, seed=1)
    assert all(f.records == 0 for f in s.files.values())
    assert (tmp_path / "none" / "pc_csv" / "policies.csv").read_text().startswith("PolicyNo,LOB,")
    for source in SOURCES:
        for kind, (table, quarantine, _) in _decode(tmp_path / "none", source).items():
            assert table.num_rows == quarantine.num_rows == 0
    s = generate_sample(tmp_path / "mf", policies=50, seed=1, mainframe_share=1.0, defect_rate=0.0)
    assert s.records["mainframe_life/POLMAST.dat"] == 50 and s.records["pc_csv/policies.csv"] == 0
    with pytest.raises(ValueError):
        generate_sample(tmp_path / "bad", policies=10, seed=1, defect_rate=1.5)
    with pytest.raises(ValueError):
        generate_sample(tmp_path / "bad", policies=10, seed=1, mainframe_share=-0.1)
