"""Wave planning: propose waves over the routed book (pure; no Dagster, no database).

Wave 0 takes clean candidates (in force, high data-quality score, simple lines) routed to the new
platform, straight through (its target is `new_platform`); later waves take the rest of the book line of business by line of business,
split by state when a line is bigger than the size cap; their target is `routed`: each policy goes to
its routed target, the new platform, the coexistence bridge, the legacy batch, or the DQ queue. Each wave's selection criteria are a
condition in the routing rule language, so an operator can read and change them.
"""

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from routing.rules import selection_mask

DEFAULT_GATES = {"completeness": 0.99, "mean_dq_score": 95.0, "min_dq_score": 60.0, "mapping_confidence": 0.9}
SIMPLE_LINES = ("life", "personal_auto", "homeowners")
ROUTED = "routed"  # a wave's target when each of its policies goes to its own routed target


@dataclass
class WaveSpec:
    number: int
    name: str
    target: str
    criteria: dict
    size_cap: int
    scheduled_start: datetime
    gates: dict = field(default_factory=lambda: dict(DEFAULT_GATES))
    estimated: int = 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["scheduled_start"] = self.scheduled_start.isoformat()
        return d


def propose_plan(book: pa.Table, *, start: datetime, cadence_days: int = 7, size_cap: int = 50_000,
                 clean_dq: float = 99.0) -> list[WaveSpec]:
    """Waves over the routed book. `book` holds the canonical policy columns the criteria use plus `target`
    (the routing decision), in policy id order. A wave takes a slice of the book and each of its policies
    goes where routing sends it (new platform, bridge, legacy batch, or the DQ queue)."""
    to_new = np.asarray(pc.fill_null(pc.equal(book.column("target"), "new_platform"), False).to_numpy(zero_copy_only=False))
    everything = np.ones(book.num_rows, dtype=bool)
    waves: list[WaveSpec] = []

    def add(name: str, criteria: dict, mask: np.ndarray, target: str = ROUTED) -> None:
        # one state alone can exceed the cap: then the same criteria run as several waves, each taking the
        # next `size_cap` policies not yet moved (wave 0 takes only its first cap; the rest go by line)
        count = int(mask.sum())
        parts = 1 if target != ROUTED else max(1, -(-count // size_cap))
        for part in range(parts):
            waves.append(WaveSpec(len(waves), name + (f" (part {part + 1} of {parts})" if parts > 1 else ""), target,
                                  criteria, size_cap, start + timedelta(days=cadence_days * len(waves)),
                                  estimated=min(count - part * size_cap, size_cap)))

    clean = {"all": [{"field": "status", "operator": "equals", "value": "in_force"},
                     {"field": "dq_score", "operator": "greater_or_equal", "value": clean_dq},
                     {"field": "line_of_business", "operator": "in", "value": list(SIMPLE_LINES)}]}
    clean_mask = to_new & selection_mask(clean, book, "wave 0 criteria")
    add("Wave 0: clean in-force simple lines", clean, clean_mask, "new_platform")
    # wave 0 takes the first `size_cap` clean policies (selection goes by policy id); the rest wait for later waves
    taken = np.zeros(len(clean_mask), dtype=bool)
    taken[np.flatnonzero(clean_mask)[:size_cap]] = True
    remaining = everything & ~taken
    lines = pc.value_counts(book.column("line_of_business").filter(pa.array(remaining))).to_pylist()
    for item in sorted(lines, key=lambda i: (-i["counts"], str(i["values"]))):
        lob = item["values"]
        if lob is None:
            continue
        lob_cond = {"field": "line_of_business", "operator": "equals", "value": lob}
        lob_mask = remaining & selection_mask(lob_cond, book, f"{lob} criteria")
        if lob_mask.sum() <= size_cap:
            add(f"{lob.replace('_', ' ').title()}", lob_cond, lob_mask)
            continue
        states = pc.value_counts(book.column("insured_state").filter(pa.array(lob_mask))).to_pylist()
        group: list[str] = []
        count = 0
        for s in sorted(states, key=lambda i: (-i["counts"], str(i["values"]))):
            if s["values"] is None:
                continue
            if group and count + s["counts"] > size_cap:
                add(_wave_name(lob, group), _by_states(lob, group),
                    lob_mask & selection_mask(_by_states(lob, group), book, f"{lob} criteria"))
                group, count = [], 0
            group.append(s["values"])
            count += s["counts"]
        if group:
            add(_wave_name(lob, group), _by_states(lob, group),
                lob_mask & selection_mask(_by_states(lob, group), book, f"{lob} criteria"))
    return waves


def _wave_name(lob: str, states: list[str]) -> str:
    shown = ", ".join(states[:5]) + (f" +{len(states) - 5} more states" if len(states) > 5 else "")
    return f"{lob.replace('_', ' ').title()} ({shown})"


def _by_states(lob: str, states: list[str]) -> dict:
    return {"all": [{"field": "line_of_business", "operator": "equals", "value": lob},
                    {"field": "insured_state", "operator": "in", "value": list(states)}]}
