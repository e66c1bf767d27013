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
    assert [(w.number, w.name, w.target, w.estimated) for w in waves] == [
        (0, "Wave 0: clean in-force simple lines", "new_platform", 3),
        (1, "Commercial Auto (CA)", "routed", 2),
        (2, "Commercial Auto (TX, NY)", "routed", 3),
        (3, "Workers Comp", "routed", 3),  # two of them routed to the legacy batch: each goes to its target
        (4, "Life", "routed", 1),  # the clean life policy beyond wave 0's cap
    ]
    assert [w.scheduled_start.day for w in waves] == [1, 8, 15, 22, 29]
    assert all(w.gates == DEFAULT_GATES and w.size_cap == 3 for w in waves)
    assert waves[3].criteria == {"field": "line_of_business", "operator": "equals", "value": "workers_comp"}


def test_a_book_with_nothing_for_the_new_platform_has_an_empty_wave_zero_and_routed_waves():
    b = book()
    b = b.set_column(1, "target", pa.array(["legacy_batch"] * b.num_rows))
    waves = propose_plan(b, start=START)
    assert [(w.number, w.target, w.estimated) for w in waves] == [
        (0, "new_platform", 0), (1, "routed", 5), (2, "routed", 4), (3, "routed", 3)]


def test_every_policy_beyond_wave_zeros_cap_is_planned_in_a_later_wave():
    b = book().set_column(3, "dq_score", pa.array([Decimal("100.00")] * 12, pa.decimal128(5, 2)))
    b = b.set_column(4, "line_of_business", pa.array(["life"] * 12))
    waves = propose_plan(b, start=START, size_cap=4)
    assert waves[0].estimated == 4
    assert sum(w.estimated for w in waves) == 12  # every policy of the book has a wave
