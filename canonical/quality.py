"""Data-quality score of each canonical record: completeness of required fields and rule findings.

score = 100 − 50 × (missing required fields / required fields) − 15 × (rules broken), at least 0.
The findings name each rule broken (`negative_premium`, `zero_date:expiration_date`, …), so a
low score says why. Rules are vectorized masks over the mapped block.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from canonical.tables import V1_TABLES, Table

RULE_PENALTY = 15
COMPLETENESS_WEIGHT = 50


def _lt(table: pa.Table, a: str, b: str) -> pa.Array:
    return pc.fill_null(pc.less(table.column(a), table.column(b)), False)


def _negative(table: pa.Table, column: str) -> pa.Array:
    return pc.fill_null(pc.less(table.column(column), pa.scalar(0, table.column(column).type)), False)


RULES = {
    "policies": {
        "negative_premium": lambda t: _negative(t, "annual_premium"),
        "expiration_before_effective": lambda t: _lt(t, "expiration_date", "effective_date"),
        "effective_before_issue": lambda t: _lt(t, "effective_date", "issue_date"),
        "born_after_issue": lambda t: _lt(t, "issue_date", "insured_birth_date"),
    },
    "coverages": {
        "negative_premium": lambda t: _negative(t, "premium"),
        "limit_below_deductible": lambda t: _lt(t, "limit_amount", "deductible_amount"),
        "expiration_before_effective": lambda t: _lt(t, "expiration_date", "effective_date"),
    },
    "payments": {"negative_amount": lambda t: _negative(t, "amount")},
}


def score(table_name: str, table: pa.Table, zero_dates: dict[str, pa.Array],
          tables: dict[str, Table] | None = None) -> tuple[pa.Array, pa.Array]:
    """(dq_score decimal(5,2), dq_findings text) for every row of a mapped canonical block."""
    canonical = (tables or V1_TABLES)[table_name]
    n = table.num_rows
    required = [c.name for c in canonical.columns if c.required]
    missing = np.zeros(n, dtype=np.int64)
    labels: list[pa.Array] = []
    for name in required:
        null = pc.is_null(table.column(name)).to_numpy(zero_copy_only=False)
        missing += null
        labels.append(_label(null, f"missing:{name}"))
    broken = np.zeros(n, dtype=np.int64)
    for rule, fn in RULES.get(table_name, {}).items():
        hit = np.asarray(fn(table).to_numpy(zero_copy_only=False), dtype=bool)
        broken += hit
        labels.append(_label(hit, rule))
    for name, mask in zero_dates.items():
        hit = np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), dtype=bool)
        broken += hit
        labels.append(_label(hit, f"zero_date:{name}"))
    raw = 100.0 - COMPLETENESS_WEIGHT * missing / max(len(required), 1) - RULE_PENALTY * broken
    cents = np.round(np.clip(raw, 0, 100) * 100).astype(np.int64)
    from legacy.copybook import decimal_array

    dq = decimal_array(cents, 5, 2)
    if labels:
        joined = pc.binary_join_element_wise(*labels, ",", null_handling="skip")
        findings = pc.replace_substring_regex(pc.replace_substring_regex(joined, ",+", ","), "^,|,$", "")
    else:
        findings = pa.repeat(pa.scalar(""), n)
    return dq, findings


def _label(mask: np.ndarray, label: str) -> pa.Array:
    return pc.if_else(pa.array(mask), pa.scalar(label), pa.scalar(""))
