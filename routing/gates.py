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


class WaveGates:
    """The gates over a wave's candidates, fed block by block (`add`), so memory stays flat however big the
    wave: counts and sums accumulate, and the Great Expectations suite validates each block. Blocks must hold
    all rows of their policies (blocks by policy id range), so that uniqueness holds across blocks."""

    def __init__(self, gates: dict, confidence_by_source: dict[str, float]):
        self.gates, self.confidence = gates, confidence_by_source
        self.policies = self.complete = 0
        self.incomplete: list[str] = []
        self.score_sum, self.score_min = 0.0, None
        self.low: list[str] = []
        self.low_count = 0
        self.by_source: dict[str, int] = {}
        self.rules: dict[tuple, dict] = {}
        self.rule_ids: set[str] = set()
        self._suite: _RuleSuite | None = None

    def add(self, policies: pd.DataFrame, coverages: pd.DataFrame) -> None:
        if policies.empty:
            return
        required = [c.name for c in POLICIES.columns if c.required]
        complete = policies[required].notna().all(axis=1)
        self.policies += len(policies)
        self.complete += int(complete.sum())
        self.incomplete = sorted([*self.incomplete, *policies.loc[~complete, "policy_id"].head(EXAMPLES)])[:EXAMPLES]
        scores = policies["dq_score"].astype(float)
        self.score_sum += float(scores.sum())
        self.score_min = min(float(scores.min()), self.score_min if self.score_min is not None else float("inf"))
        low = policies.loc[scores < self.gates["min_dq_score"], "policy_id"]
        self.low_count += len(low)
        self.low = sorted([*self.low, *low.head(EXAMPLES)])[:EXAMPLES]
        for source, n in policies["source_system"].value_counts().items():
            self.by_source[source] = self.by_source.get(source, 0) + int(n)
        self._suite = self._suite or _RuleSuite()
        for failure in self._suite.validate(policies, coverages):
            key = (failure["expectation"], failure["table"], failure["column"])
            seen = self.rules.setdefault(key, {"expectation": key[0], "table": key[1], "column": key[2], "failing": 0,
                                               "examples": []})
            seen["failing"] += failure["failing"]
            seen["examples"] = sorted({*seen["examples"], *failure["examples"]})[:EXAMPLES]
            self.rule_ids.update(failure["ids"])

    def results(self) -> list[GateResult]:
        g = self.gates
        share = self.complete / self.policies if self.policies else 1.0
        mean = self.score_sum / self.policies if self.policies else 100.0
        total = sum(self.by_source.values())
        weighted = (sum(self.confidence.get(s, 0.0) * n for s, n in self.by_source.items()) / total) if total else 1.0
        weak = sum(n for s, n in self.by_source.items() if self.confidence.get(s, 0.0) < g["mapping_confidence"])
        detail = list(self.rules.values())
        return [
            GateResult("completeness", share >= g["completeness"], {"complete_share": round(share, 4)},
                       {"completeness": g["completeness"]}, self.policies - self.complete, self.incomplete),
            GateResult("dq_score", mean >= g["mean_dq_score"] and not self.low_count,
                       {"mean": round(mean, 2), "min": self.score_min},
                       {"mean_dq_score": g["mean_dq_score"], "min_dq_score": g["min_dq_score"]}, self.low_count, self.low),
            GateResult("mapping_confidence", weighted >= g["mapping_confidence"],
                       {"weighted_confidence": round(weighted, 3), "by_source": self.confidence},
                       {"mapping_confidence": g["mapping_confidence"]}, weak, []),
            GateResult("business_rules", not detail, {"rules_failed": len(detail), "rules_checked": 7},
                       {"rules_failed": 0}, len(self.rule_ids), sorted(self.rule_ids)[:EXAMPLES], detail),
        ]


class _RuleSuite:
    """The business rules as a Great Expectations suite over pandas blocks (one ephemeral context, reused)."""

    def __init__(self):
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
        import great_expectations as gx

        logging.getLogger("great_expectations").setLevel(logging.ERROR)
        self.gx = gx
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = gx.data_context.types.base.ProgressBarsConfig(globally=False)
        source = context.data_sources.add_pandas("wave")
        self.batches = {name: source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("block")
                        for name in ("policies", "coverages")}
        E = gx.expectations
        self.suites = {
            "policies": gx.ExpectationSuite(name="policies_business_rules", expectations=[
                E.ExpectColumnValuesToBeUnique(column="policy_id"),
                E.ExpectColumnValuesToBeBetween(column="annual_premium", min_value=0),
                E.ExpectColumnPairValuesAToBeGreaterThanB(column_A="expiration_date", column_B="effective_date",
                                                          ignore_row_if="either_value_is_missing"),
                E.ExpectColumnValuesToBeInSet(column="status", value_set=list(POLICIES.column("status").codes)),
                E.ExpectColumnValuesToBeInSet(column="line_of_business",
                                              value_set=list(POLICIES.column("line_of_business").codes)),
            ]),
            "coverages": gx.ExpectationSuite(name="coverages_business_rules", expectations=[
                E.ExpectColumnPairValuesAToBeGreaterThanB(column_A="limit_amount", column_B="deductible_amount",
                                                          or_equal=True, ignore_row_if="either_value_is_missing"),
                E.ExpectColumnValuesToBeInSet(column="coverage_type",
                                              value_set=list(COVERAGES.column("coverage_type").codes)),
            ]),
        }

    def validate(self, policies: pd.DataFrame, coverages: pd.DataFrame) -> list[dict]:
        p = policies.copy()
        p["annual_premium"] = p["annual_premium"].astype(float)
        for column in ("effective_date", "expiration_date"):
            p[column] = pd.to_datetime(p[column])
        c = coverages.copy()
        for column in ("limit_amount", "deductible_amount"):
            c[column] = c[column].astype(float)
        failures = []
        for name, frame in (("policies", p), ("coverages", c)):
            if frame.empty:
                continue
            batch = self.batches[name].get_batch(batch_parameters={"dataframe": frame})
            result = batch.validate(self.suites[name], result_format={
                "result_format": "COMPLETE", "unexpected_index_column_names": ["policy_id"]})
            for r in result.results:
                if r.success:
                    continue
                ids = sorted({str(row["policy_id"]) for row in r.result.get("unexpected_index_list") or []})
                kwargs = r.expectation_config.kwargs
                failures.append({"expectation": r.expectation_config.type, "table": name,
                                 "column": kwargs.get("column") or f"{kwargs.get('column_A')} vs {kwargs.get('column_B')}",
                                 "failing": int(r.result.get("unexpected_count") or len(ids)),
                                 "examples": ids[:EXAMPLES], "ids": ids})
        return failures


def evaluate_gates(policies: pd.DataFrame, coverages: pd.DataFrame, gates: dict,
                   confidence_by_source: dict[str, float]) -> list[GateResult]:
    """The gates over one frame of candidates (see `WaveGates` for blocks)."""
    wave_gates = WaveGates(gates, confidence_by_source)
    wave_gates.add(policies, coverages)
    return wave_gates.results()
