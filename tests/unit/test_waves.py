"""Wave planning, pure."""

from datetime import datetime, timezone
from decimal import Decimal

import pyarrow as pa

from routing.waves import DEFAULT_GATES, propose_plan

START = datetime(2026, 12, 1, 2, tzinfo=timezone.utc)


def book() -> pa.Table:
    n = 12
    return pa.table({
        "policy_id": [f"P{i:02d}" for i in range(n)],
        "target": ["new_platform"] * 10 + ["legacy_batch"] * 2,
        "status": ["in_force"] * 11 + ["lapsed"],
        "dq_score": pa.array([Decimal("100.00")] * 4 + [Decimal("90.00")] * 8, pa.decimal128(5, 2)),
        "line_of_business": ["life"] * 4 + ["commercial_auto"] * 5 + ["workers_comp"] * 3,
        "insured_state": ["TX", "CA", "NY", "TX", "TX", "CA", "NY", "TX", "CA", "TX", "TX", "TX"],
    })


def test_wave_zero_takes_clean_simple_lines_then_lines_split_by_state_under_the_cap():
    waves = propose_plan(book(), start=START, cadence_days=7, size_cap=3)
    assert [(w.number, w.name, w.estimated) for w in waves] == [
        (0, "Wave 0: clean in-force simple lines", 3),
        (1, "Commercial Auto (CA)", 2),
        (2, "Commercial Auto (TX, NY)", 3),
        (3, "Life", 1),  # the clean life policy beyond wave 0's cap
        (4, "Workers Comp", 1),
    ]
    assert [w.scheduled_start.day for w in waves] == [1, 8, 15, 22, 29]
    assert all(w.target == "new_platform" and w.gates == DEFAULT_GATES and w.size_cap == 3 for w in waves)
    assert waves[4].criteria == {"field": "line_of_business", "operator": "equals", "value": "workers_comp"}


def test_nothing_for_the_new_platform_means_only_an_empty_wave_zero():
    b = book()
    b = b.set_column(1, "target", pa.array(["legacy_batch"] * b.num_rows))
    waves = propose_plan(b, start=START)
    assert [(w.number, w.estimated) for w in waves] == [(0, 0)]


def test_clean_policies_beyond_wave_zeros_cap_are_planned_in_later_waves():
    b = book().set_column(3, "dq_score", pa.array([Decimal("100.00")] * 12, pa.decimal128(5, 2)))
    b = b.set_column(4, "line_of_business", pa.array(["life"] * 12))
    waves = propose_plan(b, start=START, size_cap=4)
    assert waves[0].estimated == 4
    assert sum(w.estimated for w in waves) == 10  # every new-platform policy has a wave
