"""Quality gates of a wave, evaluated on its candidates' canonical records (no Dagster, no database).

completeness (required canonical fields present), data-quality score (mean and minimum), mapping
confidence, and business rules as a Great Expectations suite. Each gate reports what it observed,
the threshold, how many policies fail and a few policy ids (never personal data).
"""

import logging
import os
from dataclasses import dataclass, field

import pandas as pd

from canonical.tables import COVERAGES, POLICIES

EXAMPLES = 5


@dataclass
class GateResult:
    name: str
    passed: bool
    observed: dict
    threshold: dict
    failing: int = 0
    examples: list[str] = field(default_factory=list)
    detail: list[dict] = field(default_factory=list)  # per business rule: expectation, failing count, examples

    @property
    def description(self) -> str:
        if self.passed:
            return f"{self.name} passed: {self.observed}"
        return (f"{self.name} failed: observed {self.observed}, required {self.threshold}; {self.failing} policies fail"
                + (f", e.g. {', '.join(self.examples)}" if self.examples else ""))


def completeness(policies: pd.DataFrame, threshold: float) -> GateResult:
    required = [c.name for c in POLICIES.columns if c.required]
    complete = policies[required].notna().all(axis=1)
    share = float(complete.mean()) if len(policies) else 1.0
    bad = policies.loc[~complete, "policy_id"]
    return GateResult("completeness", share >= threshold, {"complete_share": round(share, 4)},
                      {"completeness": threshold}, int(len(bad)), bad.head(EXAMPLES).tolist())


def dq_score(policies: pd.DataFrame, mean_min: float, floor: float) -> GateResult:
    scores = policies["dq_score"].astype(float)
    mean = float(scores.mean()) if len(scores) else 100.0
    low = policies.loc[scores < floor, "policy_id"]
    passed = mean >= mean_min and low.empty
    return GateResult("dq_score", passed, {"mean": round(mean, 2), "min": float(scores.min()) if len(scores) else None},
                      {"mean_dq_score": mean_min, "min_dq_score": floor}, int(len(low)), low.head(EXAMPLES).tolist())


def mapping_confidence(confidence_by_source: dict[str, float], policies: pd.DataFrame, threshold: float) -> GateResult:
    counts = policies["source_system"].value_counts()
    total = int(counts.sum())
    weighted = sum(confidence_by_source.get(s, 0.0) * n for s, n in counts.items()) / total if total else 1.0
    weak = [s for s in counts.index if confidence_by_source.get(s, 0.0) < threshold]
    return GateResult("mapping_confidence", weighted >= threshold,
                      {"weighted_confidence": round(weighted, 3), "by_source": confidence_by_source},
                      {"mapping_confidence": threshold}, int(counts[weak].sum()) if weak else 0, [])


def business_rules(policies: pd.DataFrame, coverages: pd.DataFrame) -> GateResult:
    """A Great Expectations suite over the wave's policies and their coverages."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = gx.data_context.types.base.ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("wave")
    detail, failing_ids = [], set()

    def run(name: str, frame: pd.DataFrame, expectations: list) -> None:
        if frame.empty:
            return
        batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("all").get_batch(
            batch_parameters={"dataframe": frame})
        suite = gx.ExpectationSuite(name=f"{name}_business_rules", expectations=expectations)
        result = batch.validate(suite, result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["policy_id"]})
        for r in result.results:
            if r.success:
                continue
            ids = sorted({str(row["policy_id"]) for row in r.result.get("unexpected_index_list") or []})
            failing_ids.update(ids)
            detail.append({"expectation": r.expectation_config.type, "table": name,
                           "column": r.expectation_config.kwargs.get("column") or
                           f"{r.expectation_config.kwargs.get('column_A')} vs {r.expectation_config.kwargs.get('column_B')}",
                           "failing": int(r.result.get("unexpected_count") or len(ids)), "examples": ids[:EXAMPLES]})

    p = policies.copy()
    p["annual_premium"] = p["annual_premium"].astype(float)
    for column in ("effective_date", "expiration_date"):
        p[column] = pd.to_datetime(p[column])
    run("policies", p, [
        gx.expectations.ExpectColumnValuesToBeUnique(column="policy_id"),
        gx.expectations.ExpectColumnValuesToBeBetween(column="annual_premium", min_value=0),
        gx.expectations.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="expiration_date", column_B="effective_date", ignore_row_if="either_value_is_missing"),
        gx.expectations.ExpectColumnValuesToBeInSet(column="status", value_set=list(POLICIES.column("status").codes)),
        gx.expectations.ExpectColumnValuesToBeInSet(column="line_of_business",
                                                    value_set=list(POLICIES.column("line_of_business").codes)),
    ])
    c = coverages.copy()
    for column in ("limit_amount", "deductible_amount"):
        c[column] = c[column].astype(float)
    run("coverages", c, [
        gx.expectations.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="limit_amount", column_B="deductible_amount", or_equal=True, ignore_row_if="either_value_is_missing"),
        gx.expectations.ExpectColumnValuesToBeInSet(column="coverage_type",
                                                    value_set=list(COVERAGES.column("coverage_type").codes)),
    ])
    examples = sorted(failing_ids)[:EXAMPLES]
    return GateResult("business_rules", not detail, {"rules_failed": len(detail), "rules_checked": 7},
                      {"rules_failed": 0}, len(failing_ids), examples, detail)


def evaluate_gates(policies: pd.DataFrame, coverages: pd.DataFrame, gates: dict,
                   confidence_by_source: dict[str, float]) -> list[GateResult]:
    return [
        completeness(policies, gates["completeness"]),
        dq_score(policies, gates["mean_dq_score"], gates["min_dq_score"]),
        mapping_confidence(confidence_by_source, policies, gates["mapping_confidence"]),
        business_rules(policies, coverages),
    ]
