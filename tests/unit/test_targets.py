"""The canonical -> new platform mapping and the legacy batch layout, pure."""

import datetime as dt
from decimal import Decimal

import pyarrow as pa
import pytest
import yaml

from canonical.tables import MONEY, V1_TABLES
from canonical.targets import MAPPING_FILE, TargetMappingError, expected_select, load_target_mapping, transform
from legacy.outbound import LINE, STATUS, encode_policies, read_policies


def test_the_mapping_fills_eight_normalized_tables_and_its_codes_cover_the_canonical_code_lists():
    mapping = load_target_mapping()
    assert list(mapping.tables) == ["policy", "party", "coverage", "rating", "payment", "endorsement", "document",
                                    "claim_link"]
    assert mapping.version == "1.0.0" and len(mapping.hash) == 64
    assert [s.table for s in mapping.tables["party"].sources] == ["policies", "parties"]
    assert mapping.tables["rating"].money_columns == ["annual_premium", "modal_premium", "outstanding_balance"]


def test_codes_that_miss_a_canonical_value_are_refused_naming_table_and_column(tmp_path):
    spec = yaml.safe_load(MAPPING_FILE.read_text())
    del spec["tables"]["policy"]["sources"][0]["columns"]["status"]["codes"]["lapsed"]
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(TargetMappingError, match=r"policy.status: codes do not cover canonical policies.status values lapsed"):
        load_target_mapping(path)


def test_sources_of_one_table_must_agree_on_columns(tmp_path):
    spec = yaml.safe_load(MAPPING_FILE.read_text())
    del spec["tables"]["party"]["sources"][1]["columns"]["relationship"]
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(TargetMappingError, match="party: source parties must fill the columns"):
        load_target_mapping(path)


def _policies(**overrides) -> pa.Table:
    columns = {c.name: pa.nulls(2, c.type) for c in V1_TABLES["policies"].columns}
    columns.update(policy_id=pa.array(["P1", "P2"]), status=pa.array(["in_force", "paid_up"]),
                   line_of_business=pa.array(["life", "homeowners"]), insured_type=pa.array(["person", None]),
                   annual_premium=pa.array([Decimal("12.34"), Decimal("0.01")], MONEY))
    columns.update(overrides)
    return pa.table(columns, schema=V1_TABLES["policies"].arrow_schema())


def test_transform_translates_codes_keeps_money_exact_and_fills_constants():
    mapping = load_target_mapping()
    policy = transform(mapping.tables["policy"], mapping.tables["policy"].sources[0], _policies())
    assert policy.column("status").to_pylist() == ["ACTIVE", "PAID_UP"]
    assert policy.column("product_line").to_pylist() == ["LIFE", "HOME"]
    party = transform(mapping.tables["party"], mapping.tables["party"].sources[0], _policies())
    assert party.column("role").to_pylist() == ["PRIMARY_INSURED"] * 2
    assert party.column("party_type").to_pylist() == ["PERSON", None]
    rating = transform(mapping.tables["rating"], mapping.tables["rating"].sources[0], _policies())
    assert rating.column("annual_premium").to_pylist() == [Decimal("12.34"), Decimal("0.01")]


def test_a_value_without_a_platform_code_fails_naming_it():
    mapping = load_target_mapping()
    bad = _policies(status=pa.array(["in_force", "frozen"]))
    with pytest.raises(TargetMappingError, match="policy.status: canonical policies.status value 'frozen'"):
        transform(mapping.tables["policy"], mapping.tables["policy"].sources[0], bad)


def test_the_reconciliation_side_casts_every_column_to_its_target_type():
    mapping = load_target_mapping()
    exprs = expected_select(mapping.tables["party"], mapping.tables["party"].sources[0])
    assert exprs[1] == "CAST('PRIMARY_INSURED' AS text)"
    assert exprs[-1] == "CAST(NULL AS numeric(5,2))"
    status = expected_select(mapping.tables["policy"], mapping.tables["policy"].sources[0])[2]
    assert status.startswith("CAST(CASE c.status WHEN 'in_force' THEN 'ACTIVE'") and status.endswith("END AS text)")


def test_the_legacy_batch_file_reads_back_exactly(tmp_path):
    policies = _policies(
        source_system=pa.array(["mainframe_life", "pc_csv"]), product_code=pa.array(["WL100", None]),
        carrier_code=pa.array(["C1", "C2"]), effective_date=pa.array([dt.date(2020, 2, 29), dt.date(1999, 12, 31)]),
        expiration_date=pa.array([None, dt.date(2030, 1, 1)], pa.date32()), insured_state=pa.array(["TX", "NY"]),
        agent_code=pa.array(["A1", "A2"]), face_amount=pa.array([Decimal("250000.00"), None], MONEY),
        annual_premium=pa.array([Decimal("-1.05"), Decimal("99999999999.99")], MONEY))
    path = tmp_path / "POLOUT-w.dat"
    path.write_bytes(encode_policies(policies, pa.array([3, 0]), pa.array([Decimal("7.50"), Decimal("0")], MONEY), "w"))
    assert path.stat().st_size == 2 * 160
    back = read_policies(path)
    for name in ("policy_id", "source_system", "status", "line_of_business", "product_code", "carrier_code",
                 "effective_date", "expiration_date", "insured_state", "agent_code"):
        assert back.column(name).to_pylist() == policies.column(name).to_pylist(), name
    assert back.column("annual_premium").to_pylist() == [Decimal("-1.05"), Decimal("99999999999.99")]
    assert back.column("face_amount").to_pylist() == [Decimal("250000.00"), Decimal("0.00")]  # no face amount: zero
    assert back.column("coverage_count").to_pylist() == [3, 0] and back.column("wave_id").to_pylist() == ["w", "w"]
    assert set(STATUS) == set(V1_TABLES["policies"].column("status").codes)
    assert set(LINE) == set(V1_TABLES["policies"].column("line_of_business").codes)


def test_an_empty_batch_reads_back_as_no_policies(tmp_path):
    path = tmp_path / "POLOUT-empty.dat"
    path.write_bytes(b"")
    assert read_policies(path).num_rows == 0
