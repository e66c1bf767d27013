"""Canonical Policy Model: document form vs tables, money and codes, pandera schemas, round trips."""

from __future__ import annotations

import datetime as dt
import types
import typing
from dataclasses import replace
from decimal import Decimal

import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from canonical import schemas
from canonical.model import (MODEL_V1, NON_NEGATIVE, ROOT_KEY, ClaimLink, Coverage, DocumentValidationError,
                             ModelVersion, Party, Policy, PolicyDocument, documents_to_tables, parse_type,
                             tables_to_documents, type_name, validate_document)
from canonical.tables import V1, V1_TABLES, Column

# ---------------------------------------------------------------------------------------------
# Strategies: valid documents of any version, generated from its table definitions

TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=8)


def column_values(table: str, column: Column) -> st.SearchStrategy:
    t = column.type
    if column.codes is not None:
        values = st.sampled_from(column.codes)
    elif pa.types.is_string(t):
        values = TEXT
    elif pa.types.is_boolean(t):
        values = st.booleans()
    elif pa.types.is_integer(t):
        values = st.integers(-(2 ** (t.bit_width - 1)), 2 ** (t.bit_width - 1) - 1)
    elif pa.types.is_date32(t):
        values = st.dates()
    elif pa.types.is_decimal128(t):
        top = Decimal(10) ** (t.precision - t.scale) - Decimal(1).scaleb(-t.scale)
        low = Decimal(0) if (table, column.name) in NON_NEGATIVE else -top
        values = st.one_of(st.decimals(low, top, places=t.scale, allow_nan=False, allow_infinity=False),
                           st.sampled_from([low, top, Decimal(0)]))
    else:
        raise AssertionError(f"no strategy for {t}")
    return values if column.required else st.none() | values


def documents(model: type[PolicyDocument] = Policy, max_children: int = 3) -> st.SearchStrategy:
    mv = model.canonical_version
    root = mv.table("policies")
    fields = {c.name: column_values("policies", c) for c in root.columns}
    for name in model.child_models:
        table = mv.table(name)
        key = [c for c in table.key if c != ROOT_KEY]
        row = st.fixed_dictionaries({c.name: column_values(name, c) for c in table.columns if c.name != ROOT_KEY})
        fields[name] = st.lists(row, max_size=max_children, unique_by=lambda r, key=key: tuple(r[k] for k in key))
    return st.fixed_dictionaries(fields).map(model.model_validate)


def books(model: type[PolicyDocument] = Policy) -> st.SearchStrategy:
    return st.lists(documents(model), max_size=4, unique_by=lambda d: d.policy_id)


def sample_policy(**changes) -> dict:
    doc = {
        "policy_id": "L100000005", "source_system": "mainframe_life", "status": "in_force",
        "line_of_business": "life", "product_code": "WL1", "carrier_code": "ACME", "issue_date": dt.date(2001, 2, 3),
        "effective_date": dt.date(2001, 2, 3), "insured_name": "Ada Example", "insured_tax_id": "123-45-6789",
        "annual_premium": Decimal("1200.00"), "modal_premium": Decimal("100"), "premium_frequency": "monthly",
        "face_amount": Decimal("250000"), "currency": "USD",
        "coverages": [{"coverage_seq": 1, "coverage_code": "BASE", "coverage_type": "life",
                       "limit_amount": Decimal("250000"), "premium": Decimal("-5.25")},
                      {"coverage_seq": 2, "coverage_code": "ADB", "coverage_type": "rider", "limit_amount": "1000.5"}],
        "parties": [{"role": "beneficiary", "party_seq": 1, "name": "Bo Example", "share_percent": "100"}],
        "payments": [{"payment_seq": 1, "payment_date": "2024-01-01", "amount": "100.00", "method": "ach"}],
        "claim_links": [{"claim_number": "C-1", "claim_amount": "10.10"}],
    }
    doc.update(changes)
    return doc


# ---------------------------------------------------------------------------------------------
# The document form agrees with the tables, column by column


def _base(annotation):
    """(python type, optional, codes) of a field annotation."""
    optional = False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        (annotation,) = args
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) is typing.Literal:
        return str, optional, typing.get_args(annotation)
    return annotation, optional, None


EXPECTED_PYTHON = {"string": str, "int64": int, "date32": dt.date, "bool": bool}


@pytest.mark.parametrize("table_name", list(V1_TABLES))
def test_document_fields_match_the_table_column_by_column(table_name):
    table = V1_TABLES[table_name]
    model = Policy if table_name == "policies" else Policy.child_models[table_name]
    columns = [c for c in table.columns if table_name == "policies" or c.name != "policy_id"]
    extra = {"model_version", *Policy.child_models} if table_name == "policies" else set()
    assert list(model.model_fields)[:len(columns)] == [c.name for c in columns]
    assert set(model.model_fields) - {c.name for c in columns} == extra
    for column in columns:
        info = model.model_fields[column.name]
        python, optional, codes = _base(info.annotation)
        assert info.is_required() is column.required, column.name
        assert optional is (not column.required), column.name
        assert codes == column.codes, column.name
        name = type_name(column.type)
        assert python is (Decimal if name.startswith("decimal128") else EXPECTED_PYTHON[name]), column.name
        assert (info.repr is False) is column.pii, column.name


def test_policy_lists_children_and_carries_its_version():
    assert Policy.model_fields["coverages"].annotation == list[Coverage]
    assert Policy.model_fields["parties"].annotation == list[Party]
    assert Policy.model_fields["claim_links"].annotation == list[ClaimLink]
    assert Policy.model_config["frozen"] is True and Policy.model_config["extra"] == "forbid"
    policy = Policy.model_validate(sample_policy())
    assert policy.model_version == "1.0.0"
    with pytest.raises(ValidationError):
        Policy.model_validate(sample_policy(model_version="2.0.0"))


def test_money_is_exact_two_place_decimal():
    policy = Policy.model_validate(sample_policy())
    assert policy.modal_premium == Decimal("100.00") and str(policy.modal_premium) == "100.00"
    assert str(policy.coverages[1].limit_amount) == "1000.50"
    assert policy.coverages[0].premium == Decimal("-5.25")  # negative premiums are findings, not errors
    for bad, problem in [(12.5, "exact decimal expected"), (Decimal("1.005"), "2 decimal places"),
                         (Decimal("12345678901234567"), "16 digits"), (Decimal("NaN"), "finite")]:
        with pytest.raises(DocumentValidationError, match=problem) as error:
            validate_document(sample_policy(annual_premium=bad))
        assert "1.0.0" in str(error.value) and "policies.annual_premium" in str(error.value)
    with pytest.raises(DocumentValidationError, match=r"coverages\[0\]\.limit_amount: Input should be greater"):
        validate_document(sample_policy(coverages=[{"coverage_seq": 1, "coverage_code": "B", "coverage_type": "life",
                                                    "limit_amount": "-1"}]))
    with pytest.raises(DocumentValidationError, match="face_amount"):
        validate_document(sample_policy(face_amount="-0.01"))


def test_codes_required_fields_and_unknown_fields_are_refused():
    with pytest.raises(DocumentValidationError) as error:
        validate_document(sample_policy(status="active", line_of_business=None, colour="red",
                                        parties=[{"role": "spouse", "party_seq": 1, "name": "X"}]))
    text = str(error.value)
    assert "canonical model 1.0.0, policy 'L100000005'" in text
    assert "policies.status: Input should be 'in_force'" in text and "(got 'active')" in text
    assert "policies.line_of_business" in text and "policies.colour: Extra inputs are not permitted" in text
    assert "parties[0].role" in text
    doc = sample_policy()
    del doc["currency"]
    with pytest.raises(DocumentValidationError, match="policies.currency: Field required"):
        validate_document(doc)
    with pytest.raises(DocumentValidationError, match="date expected"):
        validate_document(sample_policy(effective_date=20010203))


def test_personal_data_stays_out_of_reprs_and_errors():
    policy = Policy.model_validate(sample_policy())
    assert "Ada" not in repr(policy) and "123-45-6789" not in repr(policy)
    with pytest.raises(DocumentValidationError) as error:
        validate_document(sample_policy(insured_tax_id=123456789, insured_name=["Ada Example"]))
    assert "123456789" not in str(error.value) and "Ada" not in str(error.value)
    assert "insured_tax_id" in str(error.value)


def test_documents_are_frozen_and_child_keys_unique():
    policy = Policy.model_validate(sample_policy())
    with pytest.raises(ValidationError):
        policy.status = "lapsed"
    duplicate = sample_policy()["coverages"][:1] * 2
    with pytest.raises(DocumentValidationError, match=r"coverages\[1\]: duplicate key \{'coverage_seq': 1\}"):
        validate_document(sample_policy(coverages=duplicate))


def test_types_have_stable_names():
    for table in V1_TABLES.values():
        for column in table.columns:
            assert parse_type(type_name(column.type)) == column.type
    assert type_name(pa.decimal128(18, 2)) == "decimal128(18,2)"
    with pytest.raises(TypeError, match="not supported"):
        type_name(pa.list_(pa.int64()))


def test_definition_round_trips_and_hash_covers_the_contract():
    again = ModelVersion.from_definition(MODEL_V1.definition(), frozen=True)
    assert again == MODEL_V1 and again.schema_hash() == MODEL_V1.schema_hash()
    # descriptions and PII flags are not part of the contract; codes are
    tables = dict(V1_TABLES)
    tables["policies"] = replace(tables["policies"], description="another description")
    assert ModelVersion(V1, tables).schema_hash() == MODEL_V1.schema_hash()
    contract = MODEL_V1.contract()
    assert contract["tables"]["parties"]["key"] == ["policy_id", "role", "party_seq"]
    assert contract["tables"]["policies"]["columns"][2] == {
        "name": "status", "type": "string", "required": True, "codes": list(V1_TABLES["policies"].column("status").codes)}


# ---------------------------------------------------------------------------------------------
# Tables <-> documents


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(books())
def test_documents_tables_documents_round_trip(docs):
    tables = documents_to_tables(docs)
    assert set(tables) == set(V1_TABLES)
    for name, table in tables.items():
        assert table.schema == V1_TABLES[name].arrow_schema()
    assert list(tables_to_documents(tables)) == docs


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(books())
def test_tables_of_valid_documents_pass_the_schemas_and_survive_pandas(docs):
    frames = {name: schemas.to_frame(table) for name, table in documents_to_tables(docs).items()}
    for name, frame in frames.items():
        assert schemas.validate_table(name, frame) == [], name
    assert list(tables_to_documents(frames)) == docs


def test_tables_group_children_by_policy_and_refuse_orphans():
    first = Policy.model_validate(sample_policy())
    second = Policy.model_validate(sample_policy(policy_id="P2", coverages=[], parties=[], payments=[],
                                                 claim_links=[]))
    tables = documents_to_tables([first, second])
    assert tables["coverages"].column("policy_id").to_pylist() == ["L100000005", "L100000005"]
    assert tables["coverages"].schema.field("limit_amount").type == pa.decimal128(18, 2)
    assert tables["coverages"].column("limit_amount").to_pylist() == [Decimal("250000.00"), Decimal("1000.50")]
    # a child table's rows may come in any order; documents keep each policy's rows in table order
    shuffled = dict(tables, coverages=tables["coverages"].take([1, 0]))
    docs = list(tables_to_documents(shuffled))
    assert [c.coverage_seq for c in docs[0].coverages] == [2, 1] and docs[1].coverages == []
    orphan = dict(tables, payments=tables["payments"].set_column(0, "policy_id", pa.array(["NOPE"])))
    with pytest.raises(ValueError, match=r"table payments: rows for 1 policies not in policies, e.g. \['NOPE'\]"):
        next(tables_to_documents(orphan))
    with pytest.raises(ValueError, match="unknown columns"):
        next(tables_to_documents(dict(tables, policies=tables["policies"].append_column("x", pa.nulls(2)))))
    # optional columns may be left out; they come back as nulls
    lean = tables["claim_links"].drop_columns(["claim_date", "claim_status"])
    assert next(tables_to_documents(dict(tables, claim_links=lean))).claim_links[0].claim_date is None
    assert documents_to_tables([])["policies"].num_rows == 0


def test_bad_rows_in_tables_name_version_table_and_column():
    tables = documents_to_tables([Policy.model_validate(sample_policy())])
    bad = tables["coverages"].set_column(3, "coverage_type", pa.array(["life", "bogus"]))
    with pytest.raises(DocumentValidationError, match=r"1.0.0.*coverages\[1\]\.coverage_type"):
        list(tables_to_documents(dict(tables, coverages=bad)))


# ---------------------------------------------------------------------------------------------
# Pandera schemas


def frames() -> dict[str, pd.DataFrame]:
    docs = [Policy.model_validate(sample_policy()),
            Policy.model_validate(sample_policy(policy_id="P2", parties=[], payments=[], claim_links=[]))]
    return {name: schemas.to_frame(t) for name, t in documents_to_tables(docs).items()}


def test_valid_frames_pass_every_schema():
    for name, frame in frames().items():
        assert schemas.validate_table(name, frame) == [], name
    assert set(schemas.schemas()) == set(V1_TABLES)


def test_schema_failures_name_column_check_and_rows():
    coverages = frames()["coverages"]
    coverages.loc[1, "coverage_type"] = "bogus"
    coverages.loc[2, "limit_amount"] = Decimal("-1.00")
    coverages.loc[3, "premium"] = Decimal("-99.00")  # allowed
    coverages.loc[0, "coverage_code"] = None
    coverages.loc[3, "policy_id"] = coverages.loc[1, "policy_id"]  # row 3 now has row 1's key
    failures = {(f.column, f.check): f for f in schemas.validate_table("coverages", coverages)}
    assert set(failures) == {("coverage_type", "isin(['life', 'rider', 'annuity', 'property', 'liability', 'medical', "
                                               "'auto_physical_damage', 'uninsured_motorist', 'workers_comp'])"),
                             ("limit_amount", "greater_than_or_equal_to(0)"),
                             ("coverage_code", "required (not null)"),
                             ("policy_id,coverage_seq", "unique key (policy_id, coverage_seq)")}
    bad_code = failures[("coverage_type", next(k[1] for k in failures if k[0] == "coverage_type"))]
    assert (bad_code.failure_count, bad_code.rows, bad_code.examples) == (1, (1,), ("bogus",))
    assert failures[("limit_amount", "greater_than_or_equal_to(0)")].rows == (2,)
    assert failures[("coverage_code", "required (not null)")].rows == (0,)
    assert failures[("policy_id,coverage_seq", "unique key (policy_id, coverage_seq)")].rows == (1, 3)
    assert schemas.failed_rows(list(failures.values())) == {0, 1, 2, 3}
    assert "canonical 1.0.0 table coverages, column coverage_type" in str(bad_code)
    assert len(schemas.validate_table("coverages", coverages, lazy=False)) == 1


def test_schema_checks_columns_and_dtypes_of_the_whole_table():
    policies = frames()["policies"]
    policies["annual_premium"] = policies["annual_premium"].astype("float64")
    policies = policies.drop(columns=["currency"]).assign(colour="red")
    failures = {(f.column, f.check): f for f in schemas.validate_table("policies", policies)}
    assert ("currency", "missing column") in failures and ("colour", "unknown column") in failures
    dtype = next(f for (column, check), f in failures.items() if column == "annual_premium")
    assert dtype.check.startswith("dtype(") and dtype.whole_table and dtype.rows == ()
    with pytest.raises(KeyError, match="no table 'policy'"):
        schemas.validate_table("policy", policies)
    with pytest.raises(KeyError, match="unknown canonical model version '9.9.9'"):
        schemas.validate_table("policies", policies, version="9.9.9")


def test_pii_values_are_not_repeated_in_schema_failures():
    policies = V1_TABLES["policies"]
    coded = replace(policies.column("insured_tax_id"), codes=("000-00-0000",))
    draft = ModelVersion("0.0.1-test", {**V1_TABLES, "policies": replace(
        policies, columns=tuple(coded if c.name == coded.name else c for c in policies.columns))})
    failures = schemas.validate_table("policies", frames()["policies"], version=draft)
    assert [(f.column, f.failure_count, f.examples) for f in failures] == [("insured_tax_id", 2, ())]
    assert "123-45-6789" not in str(failures[0])
