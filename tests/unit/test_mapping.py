"""The mapping language and engine, pure: parsing safety, each function, quarantine and DQ scoring."""

from datetime import date
from decimal import Decimal

import pyarrow as pa
import pytest

from canonical.mapping import MappingError, map_block, parse_mapping

POLICY_FIELDS = {
    "policy_id": {"expr": "trim(col('ID'))", "confidence": 1.0},
    "source_system": {"expr": "lit('test')", "confidence": 1.0},
    "status": {"expr": "code(col('ST'), 'status')", "confidence": 0.9},
    "line_of_business": {"expr": "code(col('LOB'), 'lob', 'life')", "confidence": 0.9},
    "product_code": {"expr": "upper(col('LOB'))", "confidence": 1.0},
    "carrier_code": {"expr": "concat(lit('C'), substr(trim(col('ID')), 0, 2))", "confidence": 1.0},
    "effective_date": {"expr": "date(col('EFF'), '%Y%m%d')", "confidence": 1.0},
    "expiration_date": {"expr": "date(col('EXP'), '%m/%d/%Y')", "confidence": 1.0},
    "insured_name": {"expr": "coalesce(col('NAME'), lit('UNKNOWN'))", "confidence": 0.5},
    "annual_premium": {"expr": "annualize(money(col('PREM')), code(col('MODE'), 'mode'))", "confidence": 1.0},
    "modal_premium": {"expr": "money(col('PREM'))", "confidence": 1.0},
    "face_amount": {"expr": "implied(col('FACE'), 2)", "confidence": 1.0},
    "currency": {"expr": "when(eq(col('LOB'), 'X'), lit('EUR'), lit('USD'))", "confidence": 1.0},
}
CODES = {"status": {"IF": "in_force", "LA": "lapsed"}, "lob": {"WL": "life", "AN": "annuity"},
         "mode": {"A": "annual", "M": "monthly"}}


def mapping(fields=None, codes=None, columns=None):
    raw = {"mapping": "t", "version": "1.0.0", "source": "test",
           "tables": {"policies": {"from": "policies", "fields": fields or POLICY_FIELDS}},
           "code_tables": codes or CODES}
    return parse_mapping(raw, None, columns)


def block(**overrides):
    data = {
        "record_no": [1, 2, 3, 4],
        "ID": [" P1", "P2", "P3", "P4"],
        "ST": ["IF", "LA", "ZZ", "IF"],
        "LOB": ["WL", "AN", "WL", "QQ"],
        "EFF": pa.array([20240131, 20230231, 0, 20200101], pa.int64()),
        "EXP": ["01/31/2025", "00/00/0000", "02/29/2024", "13/01/2024"],
        "NAME": ["A", None, "C", "D"],
        "PREM": pa.array([Decimal("100.10"), Decimal("-5.00"), Decimal("1.00"), Decimal("2.00")], pa.decimal128(9, 2)),
        "MODE": ["M", "A", "A", "A"],
        "FACE": pa.array([12345, None, 1, 2], pa.int64()),
    }
    data.update(overrides)
    return pa.table(data)


def test_each_function_and_the_first_problem_per_record_quarantines_it():
    out = map_block(mapping(), "policies", block())
    q = {r["source_record_no"]: (r["field"], r["reason"]) for r in out.quarantine.to_pylist()}
    # record 2: 2023-02-31 is not a date; record 3: unknown status code comes first in column order;
    # record 4: month 13
    assert q == {2: ("effective_date", "invalid_date"), 3: ("status", "unknown_code"), 4: ("expiration_date", "invalid_date")}
    (row,) = out.table.to_pylist()
    assert row["source_record_no"] == 1 and row["policy_id"] == "P1"
    assert row["effective_date"] == date(2024, 1, 31) and row["expiration_date"] == date(2025, 1, 31)
    assert row["annual_premium"] == Decimal("1201.20") and row["modal_premium"] == Decimal("100.10")
    assert row["face_amount"] == Decimal("123.45") and row["currency"] == "USD" and row["carrier_code"] == "CP1"
    assert row["dq_score"] == Decimal("100.00") and row["dq_findings"] == ""


def test_code_default_zero_dates_and_scores():
    fields = dict(POLICY_FIELDS, status={"expr": "code(col('ST'), 'status', 'pending')", "confidence": 1.0})
    out = map_block(mapping(fields), "policies", block(EFF=pa.array([20240131, 20240101, 20240101, 0], pa.int64()),
                                                       EXP=["01/31/2025", "00/00/0000", "01/01/2023", "01/01/2025"],
                                                       LOB=["WL", "AN", "QQ", "WL"]))
    by_record = {r["source_record_no"]: r for r in out.table.to_pylist()}
    assert by_record[3]["status"] == "pending"  # unknown code with a default
    assert by_record[3]["line_of_business"] == "life"  # unknown line of business with a default
    # record 2: optional zero date -> null, scored down, plus negative premium
    assert by_record[2]["expiration_date"] is None
    assert set(by_record[2]["dq_findings"].split(",")) == {"zero_date:expiration_date", "negative_premium"}
    assert by_record[2]["dq_score"] == Decimal("70.00")
    assert by_record[3]["dq_findings"] == "expiration_before_effective"
    # record 4: a zero date in a required column cannot be mapped
    assert [(r["source_record_no"], r["reason"]) for r in out.quarantine.to_pylist()] == [(4, "zero_date")]


@pytest.mark.parametrize("expr, message", [
    ("__import__('os').system('true')", "only calls of"),
    ("open('x')", "unknown function open()"),
    ("col('ID').upper()", "only calls of"),
    ("col(name)", "col() takes a column name"),
    ("code(col('ST'), 'nope')", "code table 'nope' is not defined"),
    ("trim(col('ID'), 1)", "trim() takes 1 arguments"),
    ("trim(col('MISSING'))", "source has no column 'MISSING'"),
    ("trim(col('ID')", "does not parse"),
    ("date(col('EFF'), fmt)", "date() takes a format"),
])
def test_bad_expressions_fail_validation_naming_the_field(expr, message):
    fields = dict(POLICY_FIELDS, insured_name={"expr": expr, "confidence": 1.0})
    with pytest.raises(MappingError, match="tables.policies.fields.insured_name") as error:
        mapping(fields, columns={"policies": {"ID", "ST", "LOB", "EFF", "EXP", "NAME", "PREM", "MODE", "FACE"}})
    assert message in str(error.value)


def test_structural_errors_name_the_problem():
    with pytest.raises(MappingError, match="no column 'nonsense'"):
        mapping(dict(POLICY_FIELDS, nonsense={"expr": "lit('x')", "confidence": 1}))
    without_key = {k: v for k, v in POLICY_FIELDS.items() if k != "policy_id"}
    with pytest.raises(MappingError, match="key column 'policy_id' is not mapped"):
        mapping(without_key)
    with pytest.raises(MappingError, match="confidence"):
        mapping(dict(POLICY_FIELDS, insured_name={"expr": "lit('x')", "confidence": 2}))
    with pytest.raises(MappingError, match="not a canonical table"):
        parse_mapping({"mapping": "t", "version": "1", "source": "s", "tables": {"widgets": {"from": "x", "fields": {}}}})


def test_the_hash_changes_with_the_mapping_and_not_with_formatting():
    a = mapping()
    b = mapping(dict(POLICY_FIELDS))
    c = mapping(dict(POLICY_FIELDS, insured_name={"expr": "lit('X')", "confidence": 0.5}))
    assert a.hash == b.hash != c.hash


def test_shipped_mappings_validate_against_their_sources():
    from canonical.mapping import load_mapping, mapping_for_source
    from legacy.sources import list_sources, output_columns

    for source in list_sources():
        columns = {spec.kind: {n for n, _ in output_columns(source, spec)} for spec in source.files}
        loaded = load_mapping(mapping_for_source(source.name), columns)
        assert {"policies", "coverages"} <= set(loaded.spec.tables)
        assert 0.8 < loaded.confidence("policies") <= 1.0


def test_change_impact_counts_changed_fields_policies_and_quarantine_moves():
    from canonical.impact import TableImpact, compare_block

    old = mapping()
    new_codes = {**CODES, "status": {"IF": "in_force", "LA": "lapsed", "ZZ": "pending"}}
    new_fields = dict(POLICY_FIELDS, currency={"expr": "lit('CAD')", "confidence": 1.0})
    new = mapping(new_fields, new_codes)
    impact = TableImpact("policies")
    compare_block(old, new, "policies", block(EFF=pa.array([20240131, 20230231, 20240101, 20200101], pa.int64())), impact)
    assert impact.records == 4
    # record 1 maps under both and its currency changes; record 3 (unknown status ZZ) is released by the new code
    assert impact.changed_by_field == {"currency": 1} and impact.changed_policies == {"P1"}
    assert impact.released == 1 and not impact.newly_quarantined
    assert impact.examples == [{"policy_id": "P1", "field": "currency"}]


def test_the_canonical_schema_quarantines_rows_it_refuses():
    """A negative face amount maps, but the canonical model forbids it: the record is held back, not loaded."""
    face = pa.array([-100, 5, 6, 7], pa.int64())
    out = map_block(mapping(), "policies", block(FACE=face, EFF=pa.array([20240131] * 4, pa.int64()),
                                                  EXP=["01/31/2025"] * 4, ST=["IF"] * 4, LOB=["WL"] * 4))
    assert [(r["source_record_no"], r["field"], r["reason"]) for r in out.quarantine.to_pylist()] == \
        [(1, "face_amount", "schema_violation")]
    assert out.table.column("source_record_no").to_pylist() == [2, 3, 4]


def test_money_parses_formatted_text_exactly_and_todo_codes_map_nothing():
    fields = dict(POLICY_FIELDS, annual_premium={"expr": "money(col('AMT'))", "confidence": 1.0},
                  status={"expr": "code(col('ST'), 'status')", "confidence": 1.0})
    codes = {**CODES, "status": {"IF": "in_force", "LA": "lapsed", "ZZ": "TODO"}}
    src = block(AMT=["$1,234.56", "(120.00)", "12.345", "-7"], ST=["IF", "LA", "IF", "ZZ"],
                EFF=pa.array([20240131] * 4, pa.int64()), EXP=["01/31/2025"] * 4)
    out = map_block(mapping(fields, codes), "policies", src)
    amounts = dict(zip(out.table.column("source_record_no").to_pylist(), out.table.column("annual_premium").to_pylist()))
    assert amounts == {1: Decimal("1234.56"), 2: Decimal("-120.00")}
    q = {r["source_record_no"]: (r["field"], r["reason"]) for r in out.quarantine.to_pylist()}
    assert q == {3: ("annual_premium", "invalid_amount"), 4: ("status", "unknown_code")}


def test_lookup_into_a_satellite_aggregate():
    fields = dict(POLICY_FIELDS, face_amount={"expr": "lookup('coverages', 'PID', 'FACE', 'sum', col('ID'))", "confidence": 0.9},
                  insured_name={"expr": "concat(lit('covers: '), lookup('coverages', 'PID', 'FACE', 'count', col('ID')))",
                                "confidence": 0.5})
    columns = {"policies": {"ID", "ST", "LOB", "EFF", "EXP", "NAME", "PREM", "MODE", "FACE"}, "coverages": {"PID", "FACE"}}
    m = mapping(fields, columns=columns)
    from canonical.mapping import lookup_specs

    assert lookup_specs(m, "policies") == {("coverages", "PID", "FACE", "sum"), ("coverages", "PID", "FACE", "count")}
    lookups = {("coverages", "PID", "FACE", "sum"): pa.table({"key": ["P1"], "value": pa.array([Decimal("250.50")], pa.decimal128(38, 2))}),
               ("coverages", "PID", "FACE", "count"): pa.table({"key": ["P1"], "value": pa.array([2], pa.int64())})}
    src = block(ST=["IF"] * 4, LOB=["WL"] * 4, EFF=pa.array([20240131] * 4, pa.int64()), EXP=["01/31/2025"] * 4)
    out = map_block(m, "policies", src, lookups=lookups)
    rows = {r["policy_id"]: r for r in out.table.to_pylist()}
    assert rows["P1"]["face_amount"] == Decimal("250.50") and rows["P1"]["insured_name"] == "covers: 2"
    assert rows["P2"]["face_amount"] is None and rows["P2"]["insured_name"] == "covers: 0"
    with pytest.raises(MappingError, match="has no column 'NOPE'"):
        mapping(dict(fields, face_amount={"expr": "lookup('coverages', 'PID', 'NOPE', 'sum', col('ID'))", "confidence": 1}),
                columns=columns)
    with pytest.raises(MappingError, match="aggregate 'avg'"):
        mapping(dict(fields, face_amount={"expr": "lookup('coverages', 'PID', 'FACE', 'avg', col('ID'))", "confidence": 1}))


def test_a_repeating_group_gives_one_row_per_present_occurrence():
    raw = {"mapping": "t", "version": "1.0.0", "source": "test", "code_tables": {"rel": {"SP": "spouse", "CH": "child"}},
           "tables": {"parties": {"from": "policies", "occurs": 2, "present": "BEN_{n}", "fields": {
               "policy_id": {"expr": "col('ID')", "confidence": 1},
               "role": {"expr": "lit('beneficiary')", "confidence": 1},
               "party_seq": {"expr": "lit({n})", "confidence": 1},
               "name": {"expr": "trim(col('BEN_{n}'))", "confidence": 1},
               "relationship": {"expr": "code(col('REL_{n}'), 'rel')", "confidence": 1}}}}}
    m = parse_mapping(raw, None, {"policies": {"ID", "BEN_1", "BEN_2", "REL_1", "REL_2"}})
    src = pa.table({"record_no": [1, 2, 3], "ID": ["P1", "P2", "P3"], "BEN_1": ["Ann", "Bob", "  "],
                    "BEN_2": [None, "Cy", ""], "REL_1": ["SP", "CH", ""], "REL_2": ["", "XX", ""]})
    out = map_block(m, "parties", src)
    rows = [(r["source_record_no"], r["occurrence"], r["party_seq"], r["name"], r["relationship"]) for r in out.table.to_pylist()]
    assert rows == [(1, 1, 1, "Ann", "spouse"), (2, 1, 1, "Bob", "child")]
    assert [(r["source_record_no"], r["reason"], r["detail"].split(":")[0]) for r in out.quarantine.to_pylist()] == \
        [(2, "unknown_code", "occurrence 2")]
    with pytest.raises(MappingError, match="needs `present`"):
        parse_mapping({**raw, "tables": {"parties": {**raw["tables"]["parties"], "present": None}}})
    with pytest.raises(MappingError, match="no column 'BEN_3'"):
        parse_mapping({**raw, "tables": {"parties": {**raw["tables"]["parties"], "occurs": 3}}}, None,
                      {"policies": {"ID", "BEN_1", "BEN_2", "REL_1", "REL_2"}})
