"""Wave gates, pure: each gate's pass/fail, counts and examples; the GX business-rule suite."""

from datetime import date
from decimal import Decimal

import pandas as pd

from canonical.tables import POLICIES
from routing.gates import evaluate_gates

GATES = {"completeness": 0.99, "mean_dq_score": 95, "min_dq_score": 60, "mapping_confidence": 0.9}


def policies(**changes) -> pd.DataFrame:
    frame = pd.DataFrame({c.name: [None] * 3 for c in POLICIES.columns})
    frame["policy_id"] = ["A", "B", "C"]
    for column, value in {"source_system": "s", "status": "in_force", "line_of_business": "life", "product_code": "X",
                          "carrier_code": "C", "insured_name": "n", "currency": "USD"}.items():
        frame[column] = value
    frame["effective_date"] = [date(2024, 1, 1)] * 3
    frame["expiration_date"] = [date(2025, 1, 1)] * 3
    frame["annual_premium"] = [Decimal("100.00")] * 3
    frame["dq_score"] = [Decimal("100.00")] * 3
    for column, values in changes.items():
        frame[column] = values
    return frame


COVERAGES = pd.DataFrame({"policy_id": ["A"], "limit_amount": [Decimal("1000")], "deductible_amount": [Decimal("100")],
                          "coverage_type": ["life"]})


def by_name(results):
    return {r.name: r for r in results}


def test_a_clean_wave_passes_every_gate():
    results = by_name(evaluate_gates(policies(), COVERAGES, GATES, {"s": 0.97}))
    assert all(r.passed for r in results.values()), [r.description for r in results.values()]


def test_each_gate_fails_with_counts_and_examples():
    bad = policies(dq_score=[Decimal("100"), Decimal("50"), Decimal("100")], insured_name=["n", "n", None],
                   annual_premium=[Decimal("1"), Decimal("-1"), Decimal("1")],
                   expiration_date=[date(2025, 1, 1), date(2025, 1, 1), date(2023, 1, 1)])
    coverages = COVERAGES.assign(deductible_amount=[Decimal("5000")])
    results = by_name(evaluate_gates(bad, coverages, GATES, {"s": 0.5}))
    assert not results["completeness"].passed and results["completeness"].examples == ["C"]
    assert not results["dq_score"].passed and results["dq_score"].examples == ["B"]
    assert not results["mapping_confidence"].passed
    rules = results["business_rules"]
    assert not rules.passed
    assert {(d["expectation"], d["table"], tuple(d["examples"])) for d in rules.detail} == {
        ("expect_column_values_to_be_between", "policies", ("B",)),
        ("expect_column_pair_values_a_to_be_greater_than_b", "policies", ("C",)),
        ("expect_column_pair_values_a_to_be_greater_than_b", "coverages", ("A",)),
    }
    assert "business_rules failed" in rules.description and "A, B, C" in rules.description


def test_gates_fed_block_by_block_give_what_one_frame_gives():
    from routing.gates import WaveGates

    bad = policies(dq_score=[Decimal("100"), Decimal("50"), Decimal("100")], insured_name=["n", "n", None],
                   annual_premium=[Decimal("1"), Decimal("-1"), Decimal("1")])
    coverages = COVERAGES.assign(deductible_amount=[Decimal("5000")])
    whole = evaluate_gates(bad, coverages, GATES, {"s": 0.95})
    blocks = WaveGates(GATES, {"s": 0.95})
    blocks.add(bad.iloc[:1], coverages)
    blocks.add(bad.iloc[1:], coverages.iloc[:0])
    assert [(r.name, r.passed, r.observed, r.failing, r.examples) for r in blocks.results()] == [
        (r.name, r.passed, r.observed, r.failing, r.examples) for r in whole]
