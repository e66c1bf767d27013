"""Routing rules: parsing, validation, vectorized evaluation, what-if (pure: no database, no Dagster)."""

import copy
import datetime as dt
import time
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from canonical.tables import LINE_OF_BUSINESS, POLICIES, POLICY_STATUS
from routing.rules import (DECISION_SCHEMA, DEFAULT_RULES_PATH, ROUTING_FIELDS, RuleSetError, compare,
                           evaluate, glob_to_regex, load_rule_set, parse_rule_set)

ROUTING_SCHEMA = pa.schema(list(POLICIES.arrow_schema()) + [
    pa.field("dq_score", pa.decimal128(5, 2)), pa.field("dq_findings", pa.string()),
    pa.field("source_record_no", pa.int64()), pa.field("occurrence", pa.int16())])


def table(rows: list[dict]) -> pa.Table:
    """A routing table with every canonical column; unspecified values are null."""
    cols = {}
    for f in ROUTING_SCHEMA:
        vals = [r.get(f.name) for r in rows]
        if f.name == "policy_id":
            vals = [r.get("policy_id", f"P{i:05d}") for i, r in enumerate(rows)]
        if pa.types.is_decimal(f.type):
            vals = [None if v is None else Decimal(str(v)) for v in vals]
        cols[f.name] = pa.array(vals, f.type)
    return pa.table(cols, schema=ROUTING_SCHEMA)


def rules_doc(*rules, default_target="coexistence_bridge") -> dict:
    out = [dict(r, priority=r.get("priority", 10 * (i + 1)), target=r.get("target", "new_platform"),
                name=r.get("name", f"r{i + 1}")) for i, r in enumerate(rules)]
    out.append({"name": "default_route", "priority": 999, "condition": True, "target": default_target})
    return {"rule_set": "t", "version": "1.0.0", "rules": out}


def matches(condition, rows: list[dict]) -> list[bool]:
    """Which rows a single condition routes to new_platform."""
    rs = parse_rule_set(rules_doc({"name": "probe", "condition": condition}))
    return [t == "new_platform" for t in evaluate(rs, table(rows)).column("target").to_pylist()]


def errors(doc: dict) -> str:
    with pytest.raises(RuleSetError) as e:
        parse_rule_set(doc, source="rules/bad.yaml")
    msg = str(e.value)
    assert "rules/bad.yaml" in msg
    return msg


# --------------------------------------------------------------------------- operators

S = [{"status": "in_force"}, {"status": "lapsed"}, {"status": None}]


def test_equals_and_not_equals_nulls_never_match():
    assert matches({"field": "status", "operator": "equals", "value": "in_force"}, S) == [True, False, False]
    assert matches({"field": "status", "operator": "not_equals", "value": "in_force"}, S) == [False, True, False]


def test_in_and_not_in():
    c = {"field": "status", "operator": "in", "value": ["in_force", "pending"]}
    assert matches(c, S) == [True, False, False]
    c = {"field": "status", "operator": "not_in", "value": ["in_force", "pending"]}
    assert matches(c, S) == [False, True, False]


def test_glob_and_prefix():
    rows = [{"policy_id": "L9001"}, {"policy_id": "L1001"}, {"policy_id": "AL9"}, {"product_code": None}]
    assert matches({"field": "policy_id", "operator": "glob", "value": "L9*"}, rows) == [True, False, False, False]
    assert matches({"field": "policy_id", "operator": "prefix", "value": "L9"}, rows) == [True, False, False, False]
    assert matches({"field": "policy_id", "operator": "glob", "value": "?L9"}, rows) == [False, False, True, False]
    assert matches({"field": "policy_id", "operator": "glob", "value": "*9*"}, rows) == [True, False, True, False]
    assert matches({"field": "policy_id", "operator": "glob", "value": "L[!9]00?"}, rows) == [False, True, False,
                                                                                              False]
    rows = [{"product_code": "TERM20"}, {"product_code": "WL100"}, {"product_code": "TERM.X"}, {}]
    assert matches({"field": "product_code", "operator": "glob", "value": "TERM*"}, rows) == [True, False, True, False]
    # glob metacharacters only: a '.' is literal
    assert matches({"field": "product_code", "operator": "glob", "value": "TERM.*"}, rows) == [False, False, True,
                                                                                               False]


def test_glob_translation_is_anchored():
    assert glob_to_regex("A*") == "(?s)^A.*$"
    assert glob_to_regex("a.b?") == "(?s)^a\\.b.$"


def test_numeric_comparisons_and_between_on_decimal():
    rows = [{"dq_score": 79.99}, {"dq_score": 80}, {"dq_score": 95.5}, {"dq_score": None}]
    f = "dq_score"
    assert matches({"field": f, "operator": "less_than", "value": 80}, rows) == [True, False, False, False]
    assert matches({"field": f, "operator": "less_or_equal", "value": 80}, rows) == [True, True, False, False]
    assert matches({"field": f, "operator": "greater_than", "value": 80}, rows) == [False, False, True, False]
    assert matches({"field": f, "operator": "greater_or_equal", "value": 80.0}, rows) == [False, True, True, False]
    assert matches({"field": f, "operator": "between", "value": [80, 95.5]}, rows) == [False, True, True, False]
    assert matches({"field": f, "operator": "equals", "value": 80}, rows) == [False, True, False, False]
    assert matches({"field": f, "operator": "in", "value": [80, 95.5]}, rows) == [False, True, True, False]
    # more digits than the column holds still compares exactly
    assert matches({"field": f, "operator": "less_than", "value": 79.995}, rows) == [True, False, False, False]
    assert matches({"field": "annual_premium", "operator": "less_than", "value": 0},
                   [{"annual_premium": -1.5}, {"annual_premium": 0}, {}]) == [True, False, False]


def test_date_comparisons_take_iso_strings_and_yaml_dates():
    rows = [{"effective_date": dt.date(2019, 12, 31)}, {"effective_date": dt.date(2020, 1, 1)},
            {"effective_date": dt.date(2024, 6, 1)}, {}]
    f = "effective_date"
    assert matches({"field": f, "operator": "less_than", "value": "2020-01-01"}, rows) == [True, False, False, False]
    assert matches({"field": f, "operator": "greater_or_equal", "value": dt.date(2020, 1, 1)}, rows) == [
        False, True, True, False]
    assert matches({"field": f, "operator": "between", "value": ["2020-01-01", "2023-12-31"]}, rows) == [
        False, True, False, False]
    assert matches({"field": f, "operator": "equals", "value": "2024-06-01"}, rows) == [False, False, True, False]


def test_is_null_and_not_null():
    rows = [{"expiration_date": dt.date(2030, 1, 1)}, {}]
    assert matches({"field": "expiration_date", "operator": "is_null"}, rows) == [False, True]
    assert matches({"field": "expiration_date", "operator": "not_null"}, rows) == [True, False]
    assert matches({"not": {"field": "expiration_date", "operator": "is_null"}}, rows) == [True, False]


def test_matches_regex_searches_dq_findings():
    rows = [{"dq_findings": "zero_date:expiration_date,negative_premium"}, {"dq_findings": "negative_premiums"},
            {"dq_findings": ""}, {}]
    c = {"field": "dq_findings", "operator": "matches", "value": "(^|,)negative_premium(,|$)"}
    assert matches(c, rows) == [True, False, False, False]
    assert matches({"field": "dq_findings", "operator": "matches", "value": "premium"}, rows) == [True, True, False,
                                                                                                 False]


# --------------------------------------------------------------------------- compound forms and nulls

def test_all_any_not():
    rows = [{"line_of_business": "life", "status": "in_force", "policy_id": "A1"},
            {"line_of_business": "life", "status": "lapsed", "policy_id": "A2"},
            {"line_of_business": "annuity", "status": "in_force", "policy_id": "L95"},
            {"line_of_business": "homeowners", "status": "in_force", "policy_id": "A4"}]
    clean_life = {"all": [{"field": "line_of_business", "operator": "in", "value": ["life", "annuity"]},
                          {"field": "status", "operator": "equals", "value": "in_force"},
                          {"not": {"field": "policy_id", "operator": "glob", "value": "L9*"}}]}
    assert matches(clean_life, rows) == [True, False, False, False]
    either = {"any": [{"field": "status", "operator": "equals", "value": "lapsed"},
                      {"field": "line_of_business", "operator": "equals", "value": "homeowners"}]}
    assert matches(either, rows) == [False, True, False, True]
    assert matches({"not": either}, rows) == [True, False, True, False]


def test_not_of_a_null_comparison_does_not_match():
    rows = [{"dq_score": 50}, {"dq_score": 90}, {}]
    low = {"field": "dq_score", "operator": "less_than", "value": 80}
    assert matches(low, rows) == [True, False, False]
    assert matches({"not": low}, rows) == [False, True, False]  # null: neither low nor not-low
    assert matches({"not": {"not": low}}, rows) == [True, False, False]


def test_kleene_logic_in_all_and_any():
    rows = [{"dq_score": None, "status": "in_force"}, {"dq_score": None, "status": "lapsed"}]
    low = {"field": "dq_score", "operator": "less_than", "value": 80}
    in_force = {"field": "status", "operator": "equals", "value": "in_force"}
    assert matches({"any": [low, in_force]}, rows) == [True, False]  # unknown OR true = true
    assert matches({"all": [low, in_force]}, rows) == [False, False]  # unknown AND true = unknown
    assert matches({"not": {"all": [low, {"not": in_force}]}}, rows) == [True, False]  # not(unknown AND false)


# --------------------------------------------------------------------------- priority

def test_first_match_wins_in_priority_order_whatever_the_file_order():
    doc = {"rule_set": "t", "version": "2.1.0", "rules": [
        {"name": "default_route", "priority": 999, "condition": True, "target": "coexistence_bridge"},
        {"name": "life_new", "priority": 20, "target": "new_platform",
         "condition": {"field": "line_of_business", "operator": "equals", "value": "life"}},
        {"name": "dq_hold", "priority": 10, "target": "dq_queue",
         "condition": {"field": "dq_score", "operator": "less_than", "value": 80}},
    ]}
    rs = parse_rule_set(doc)
    assert [r.name for r in rs.rules] == ["dq_hold", "life_new", "default_route"]
    assert rs.version == "2.1.0"
    t = table([{"line_of_business": "life", "dq_score": 50}, {"line_of_business": "life", "dq_score": 99},
               {"line_of_business": "annuity", "dq_score": 99}])
    out = evaluate(rs, t)
    assert out.schema == DECISION_SCHEMA
    assert out.column("target").to_pylist() == ["dq_queue", "new_platform", "coexistence_bridge"]
    assert out.column("rule_name").to_pylist() == ["dq_hold", "life_new", "default_route"]
    assert out.column("priority").to_pylist() == [10, 20, 999]
    assert out.column("policy_id").to_pylist() == t.column("policy_id").to_pylist()
    assert set(out.column("rule_set_hash").to_pylist()) == {rs.hash}
    assert set(out.column("rule_set").to_pylist()) == {"t"}


def test_empty_table_and_chunked_input():
    rs = load_rule_set(DEFAULT_RULES_PATH)
    assert evaluate(rs, table([])).num_rows == 0
    t = table([{"status": "lapsed", "dq_score": 99}, {"status": "in_force", "dq_score": 10}])
    chunked = pa.concat_tables([t.slice(0, 1), t.slice(1, 1)])
    assert evaluate(rs, chunked).column("target").to_pylist() == ["legacy_batch", "dq_queue"]


def test_missing_column_is_reported():
    rs = parse_rule_set(rules_doc({"condition": {"field": "dq_score", "operator": "is_null"}}))
    with pytest.raises(KeyError, match="dq_score"):
        evaluate(rs, pa.table({"policy_id": ["A"]}))


# --------------------------------------------------------------------------- validation

def test_unknown_field():
    msg = errors(rules_doc({"name": "oops", "condition": {"field": "colour", "operator": "equals", "value": "x"}}))
    assert "'oops'" in msg and "unknown field 'colour'" in msg


def test_code_value_not_in_code_list():
    msg = errors(rules_doc({"name": "typo", "condition": {"field": "status", "operator": "equals",
                                                          "value": "in_forse"}}))
    assert "'typo'" in msg and "value 'in_forse' is not a status code" in msg
    msg = errors(rules_doc({"name": "lob", "condition": {"field": "line_of_business", "operator": "in",
                                                         "value": ["life", "auto"]}}))
    assert "'lob'" in msg and "'auto' is not a line_of_business code" in msg
    msg = errors(rules_doc({"name": "g", "condition": {"field": "status", "operator": "glob", "value": "xx*"}}))
    assert "'g'" in msg and "matches no status code" in msg


@pytest.mark.parametrize("condition, problem", [
    ({"field": "dq_score", "operator": "less_than", "value": "eighty"}, "must be a number"),
    ({"field": "dq_score", "operator": "less_than", "value": True}, "must be a number"),
    ({"field": "effective_date", "operator": "less_than", "value": "2020-13-01"}, "not an ISO date"),
    ({"field": "effective_date", "operator": "less_than", "value": 2020}, "ISO date"),
    ({"field": "product_code", "operator": "less_than", "value": "M"}, "numeric or date field"),
    ({"field": "product_code", "operator": "equals", "value": 100}, "must be text"),
    ({"field": "dq_score", "operator": "glob", "value": "9*"}, "needs a text field"),
    ({"field": "dq_score", "operator": "in", "value": 80}, "non-empty list"),
    ({"field": "dq_score", "operator": "in", "value": []}, "non-empty list"),
    ({"field": "dq_score", "operator": "equals", "value": [80]}, "single value"),
    ({"field": "dq_score", "operator": "is_null", "value": 1}, "takes no value"),
    ({"field": "dq_score", "operator": "equals"}, "needs a value"),
])
def test_wrong_value_type(condition, problem):
    msg = errors(rules_doc({"name": "bad_value", "condition": condition}))
    assert "'bad_value'" in msg and problem in msg


def test_malformed_regex():
    msg = errors(rules_doc({"name": "rx", "condition": {"field": "dq_findings", "operator": "matches",
                                                        "value": "(neg"}}))
    assert "'rx'" in msg and "malformed regex" in msg
    msg = errors(rules_doc({"name": "lookahead", "condition": {"field": "dq_findings", "operator": "matches",
                                                               "value": "neg(?=ative)"}}))  # not RE2
    assert "'lookahead'" in msg and "malformed regex" in msg


@pytest.mark.parametrize("value, problem", [
    ([80], "two values"), ([1, 2, 3], "two values"), (80, "two values"), ([95, 80], "not ordered"),
])
def test_between_needs_two_ordered_values(value, problem):
    msg = errors(rules_doc({"name": "rng", "condition": {"field": "dq_score", "operator": "between",
                                                         "value": value}}))
    assert "'rng'" in msg and problem in msg
    msg = errors(rules_doc({"name": "dates", "condition": {"field": "issue_date", "operator": "between",
                                                           "value": ["2021-01-01", "2020-01-01"]}}))
    assert "'dates'" in msg and "not ordered" in msg


def test_duplicate_priority_and_name():
    c = {"field": "status", "operator": "equals", "value": "lapsed"}
    c2 = {"field": "status", "operator": "equals", "value": "pending"}
    msg = errors(rules_doc({"name": "a", "priority": 10, "condition": c},
                           {"name": "b", "priority": 10, "condition": c2}))
    assert "rule 'b': duplicate priority 10" in msg and "'a'" in msg
    msg = errors(rules_doc({"name": "a", "priority": 10, "condition": c},
                           {"name": "a", "priority": 20, "condition": c2}))
    assert "rule 'a': duplicate rule name" in msg


def test_default_route_rules():
    c = {"field": "status", "operator": "equals", "value": "lapsed"}
    doc = {"rule_set": "t", "version": "1.0.0",
           "rules": [{"name": "a", "priority": 10, "condition": c, "target": "legacy_batch"}]}
    assert "no default route" in errors(doc)
    doc = rules_doc({"name": "early_default", "priority": 5, "condition": True, "target": "legacy_batch"},
                    {"name": "a", "priority": 10, "condition": c})
    msg = errors(doc)
    assert "more than one default route" in msg
    doc["rules"] = [r for r in doc["rules"] if r["name"] != "default_route"]
    msg = errors(doc)
    assert "rule 'early_default': the default route must have the highest priority number" in msg
    assert "rule a is shadowed by rule early_default (priority 5)" in msg


def test_unknown_target_and_bad_shapes():
    c = {"field": "status", "operator": "equals", "value": "lapsed"}
    msg = errors(rules_doc({"name": "where", "condition": c, "target": "mars"}))
    assert "rule 'where'" in msg and "unknown target 'mars'" in msg
    msg = errors(rules_doc({"name": "op", "condition": {"field": "status", "operator": "like", "value": "x"}}))
    assert "rule 'op'" in msg and "operator" in msg
    msg = errors(rules_doc({"name": "shape", "condition": {"every": [c]}}))
    assert "rule 'shape'" in msg and "a condition is `true`" in msg
    msg = errors(rules_doc({"name": "falsy", "condition": False}))
    assert "rule 'falsy'" in msg
    msg = errors(rules_doc({"name": "empty_all", "condition": {"all": []}}))
    assert "rule 'empty_all'" in msg
    msg = errors(rules_doc({"name": "extra", "condition": c, "colour": "red"}))
    assert "rule 'extra'" in msg and "unknown key" in msg
    msg = errors({"rule_set": "t", "version": 1.0, "rules": rules_doc()["rules"]})
    assert "version" in msg
    with pytest.raises(RuleSetError, match="mapping"):
        parse_rule_set(["not", "a", "mapping"])


@pytest.mark.parametrize("earlier, later", [
    ({"field": "status", "operator": "equals", "value": "lapsed"},
     {"field": "status", "operator": "equals", "value": "lapsed"}),  # identical
    ({"all": [{"field": "status", "operator": "equals", "value": "lapsed"},
              {"field": "dq_score", "operator": "less_than", "value": 80}]},
     {"all": [{"field": "status", "operator": "equals", "value": "lapsed"},
              {"field": "dq_score", "operator": "less_than", "value": 80}]}),  # identical compound
    ({"field": "status", "operator": "in", "value": ["lapsed", "cancelled", "expired"]},
     {"field": "status", "operator": "in", "value": ["expired", "lapsed"]}),  # superset of values
    ({"field": "status", "operator": "in", "value": ["lapsed", "cancelled"]},
     {"field": "status", "operator": "equals", "value": "cancelled"}),
    ({"field": "status", "operator": "equals", "value": "lapsed"},
     {"all": [{"field": "status", "operator": "equals", "value": "lapsed"},
              {"field": "line_of_business", "operator": "equals", "value": "life"}]}),  # narrower conjunction
    ({"field": "dq_score", "operator": "less_than", "value": 80},
     {"field": "dq_score", "operator": "between", "value": [10, 50]}),  # range inside range
    ({"field": "product_code", "operator": "glob", "value": "TERM*"},
     {"field": "product_code", "operator": "in", "value": ["TERM10", "TERM20"]}),
])
def test_unreachable_rules_are_reported(earlier, later):
    msg = errors(rules_doc({"name": "first", "priority": 10, "condition": earlier},
                           {"name": "second", "priority": 20, "condition": later}))
    assert "rule 'second'" in msg and "rule second is shadowed by rule first (priority 10)" in msg


def test_reachable_rules_are_not_reported():
    parse_rule_set(rules_doc(
        {"name": "a", "priority": 10, "condition": {"field": "status", "operator": "in", "value": ["lapsed"]}},
        {"name": "b", "priority": 20, "condition": {"field": "status", "operator": "in",
                                                    "value": ["lapsed", "expired"]}},
        {"name": "c", "priority": 30, "condition": {"field": "dq_score", "operator": "less_than", "value": 80}},
        {"name": "d", "priority": 40, "condition": {"field": "dq_score", "operator": "less_or_equal", "value": 80}},
        {"name": "e", "priority": 50, "condition": {"not": {"field": "dq_score", "operator": "less_than",
                                                            "value": 90}}},
    ))


def test_load_rule_set_names_the_file(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("rule_set: x\nversion: 1.0.0\nrules:\n  - name: r1\n    priority: 1\n"
                 "    condition: {field: status, operator: equals, value: in_forse}\n    target: dq_queue\n"
                 "  - name: d\n    priority: 2\n    condition: true\n    target: dq_queue\n")
    with pytest.raises(RuleSetError) as e:
        load_rule_set(p)
    assert str(p) in str(e.value) and "rule 'r1'" in str(e.value) and "is not a status code" in str(e.value)
    p.write_text("rules: [unclosed\n")
    with pytest.raises(RuleSetError, match="not valid YAML"):
        load_rule_set(p)
    p.write_text("rule_set: x\nversion: 1.0.0\nrules:\n  - name: d\n    priority: 2\n    condition: true\n"
                 "    target: !!python/object/apply:os.system [echo]\n")
    with pytest.raises(RuleSetError):  # safe_load: no python tags
        load_rule_set(p)


# --------------------------------------------------------------------------- the shipped default

def test_default_rule_set_validates_and_routes_a_canonical_table():
    rs = load_rule_set(DEFAULT_RULES_PATH)
    assert rs.name == "default" and rs.version == "1.0.0" and len(rs.rules) == 10
    assert rs.rules[-1].condition is True
    assert rs.fields <= set(ROUTING_FIELDS)
    rows = [
        ({"line_of_business": "life", "status": "in_force", "product_code": "WL100", "dq_score": 72}, "dq_queue"),
        ({"line_of_business": "life", "status": "in_force", "product_code": "WL100", "dq_score": None}, "dq_queue"),
        ({"line_of_business": "homeowners", "status": "in_force", "dq_score": 99,
          "dq_findings": "negative_premium"}, "dq_queue"),
        ({"line_of_business": "life", "status": "lapsed", "product_code": "TERM20", "dq_score": 99}, "legacy_batch"),
        ({"line_of_business": "personal_auto", "status": "cancelled", "dq_score": 99}, "legacy_batch"),
        ({"line_of_business": "life", "status": "paid_up", "product_code": "WL100", "dq_score": 99}, "legacy_batch"),
        ({"line_of_business": "life", "status": "in_force", "product_code": "TERM10", "dq_score": 96}, "new_platform"),
        ({"line_of_business": "life", "status": "in_force", "product_code": "WL100", "dq_score": 95}, "new_platform"),
        ({"line_of_business": "life", "status": "in_force", "product_code": "WL100", "dq_score": 90},
         "coexistence_bridge"),
        ({"line_of_business": "life", "status": "in_force", "product_code": "UL2000", "dq_score": 99},
         "coexistence_bridge"),
        ({"line_of_business": "annuity", "status": "in_force", "product_code": "ANNFX", "dq_score": 99},
         "coexistence_bridge"),
        ({"line_of_business": "homeowners", "status": "in_force", "dq_score": 85,
          "dq_findings": "zero_date:expiration_date"}, "new_platform"),
        ({"line_of_business": "personal_auto", "status": "in_force", "dq_score": 100}, "new_platform"),
        ({"line_of_business": "workers_comp", "status": "in_force", "dq_score": 100}, "legacy_batch"),
        ({"line_of_business": "homeowners", "status": "pending", "dq_score": 100}, "coexistence_bridge"),
    ]
    out = evaluate(rs, table([r for r, _ in rows]))
    assert out.column("target").to_pylist() == [t for _, t in rows]


# --------------------------------------------------------------------------- what-if

def test_what_if_report():
    base = load_rule_set(DEFAULT_RULES_PATH)
    doc = {"rule_set": base.name, "version": "1.1.0",
           "rules": [r.model_dump(mode="json", by_alias=True, exclude_none=True) for r in base.rules]}
    cand_doc = copy.deepcopy(doc)
    for r in cand_doc["rules"]:
        if r["name"] == "annuities":
            r["target"] = "new_platform"
        if r["name"] == "dq_hold":
            r["condition"]["any"][0]["value"] = 90
    cand = parse_rule_set(cand_doc)
    assert cand.hash != base.hash
    t = table([
        {"policy_id": "A1", "line_of_business": "annuity", "status": "in_force", "dq_score": 99},
        {"policy_id": "A2", "line_of_business": "annuity", "status": "in_force", "dq_score": 99},
        {"policy_id": "H1", "line_of_business": "homeowners", "status": "in_force", "dq_score": 85},
        {"policy_id": "W1", "line_of_business": "workers_comp", "status": "in_force", "dq_score": 99},
        {"policy_id": "L1", "line_of_business": "life", "status": "lapsed", "dq_score": 99},
    ])
    current, candidate = evaluate(base, t), evaluate(cand, t)
    w = compare(current, candidate)
    assert (w.total, w.unchanged, w.moved) == (5, 2, 3)
    assert w.by_target == {("coexistence_bridge", "new_platform"): 2, ("new_platform", "dq_queue"): 1}
    assert w.by_rule[0] == (("annuities", "annuities"), 2)
    assert (("personal_lines", "dq_hold"), 1) in w.by_rule
    assert w.moved_policy_ids("coexistence_bridge", "new_platform") == ["A1", "A2"]
    assert w.moved_policy_ids(to_target="dq_queue") == ["H1"]
    assert w.moved_policy_ids(limit=1) == ["A1"]
    assert w.to_rows() == [
        {"from_target": "coexistence_bridge", "to_target": "new_platform", "policies": 2, "percent": 40.0},
        {"from_target": "new_platform", "to_target": "dq_queue", "policies": 1, "percent": 20.0}]
    assert w.current_rule_set.startswith("default 1.0.0 ") and w.candidate_rule_set.startswith("default 1.1.0 ")
    # joined on policy_id when the tables are not row-aligned
    w2 = compare(current, candidate.take([4, 3, 2, 1]))
    assert (w2.total, w2.moved, w2.only_current, w2.only_candidate) == (4, 2, 1, 0)
    assert sorted(w2.moved_policy_ids()) == ["A2", "H1"]
    same = compare(current, current)
    assert (same.moved, same.unchanged, same.to_rows(), same.by_rule) == (0, 5, [], [])


# --------------------------------------------------------------------------- determinism

def test_hash_is_deterministic_and_covers_the_rules():
    a = load_rule_set(DEFAULT_RULES_PATH)
    b = load_rule_set(DEFAULT_RULES_PATH)
    assert a.hash == b.hash and len(a.hash) == 64
    doc = {"rule_set": "default", "version": "1.0.0",
           "rules": [r.model_dump(mode="json", by_alias=True) for r in reversed(a.rules)]}
    # file order, key order and descriptions do not change the hash; a value does
    for r in doc["rules"]:
        r["description"] = "changed"
    assert parse_rule_set(doc).hash == a.hash
    doc["rules"][-1]["condition"]["any"][0]["value"] = 81
    assert parse_rule_set(doc).hash != a.hash
    t = synthetic_book(5_000, seed=3)
    assert evaluate(a, t).equals(evaluate(b, t))


def test_yaml_dates_and_quoted_dates_hash_the_same():
    q = rules_doc({"condition": {"field": "issue_date", "operator": "less_than", "value": "2020-01-01"}})
    d = rules_doc({"condition": {"field": "issue_date", "operator": "less_than", "value": dt.date(2020, 1, 1)}})
    assert parse_rule_set(q).hash == parse_rule_set(d).hash


# --------------------------------------------------------------------------- volume

def synthetic_book(n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    lob = np.array(LINE_OF_BUSINESS)[rng.integers(0, len(LINE_OF_BUSINESS), n)]
    status = np.array(POLICY_STATUS)[rng.integers(0, len(POLICY_STATUS), n)]
    products = np.array(["WL100", "UL2000", "TERM20", "TERM10", "ANNFX", "HO3", "PAUTO"])
    cents = rng.integers(7000, 10001, n)
    score = pa.array(cents / 100.0).cast(pa.decimal128(5, 2))
    score_nulls = rng.random(n) < 0.01
    findings = np.where(rng.random(n) < 0.02, "negative_premium", "")
    cols = {
        "policy_id": pa.array(np.char.add("P", np.arange(n).astype(str)), pa.string()),
        "status": pa.array(status, pa.string()),
        "line_of_business": pa.array(lob, pa.string()),
        "product_code": pa.array(products[rng.integers(0, len(products), n)], pa.string()),
        "dq_score": pc.if_else(pa.array(score_nulls), pa.scalar(None, pa.decimal128(5, 2)), score),
        "dq_findings": pa.array(findings, pa.string()),
    }
    return pa.table(cols)


def test_evaluation_rate_for_a_million_policies():
    rs = load_rule_set(DEFAULT_RULES_PATH)
    t = synthetic_book(1_000_000, seed=11)
    start = time.perf_counter()
    out = evaluate(rs, t)
    seconds = time.perf_counter() - start
    assert out.num_rows == 1_000_000
    counts = out.group_by("target").aggregate([([], "count_all")]).to_pylist()
    print(f"\nrouting: 1,000,000 policies x {len(rs.rules)} rules in {seconds:.3f}s "
          f"= {1_000_000 / seconds:,.0f} policies/s; {counts}")
