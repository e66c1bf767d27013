"""Change impact of a mapping change: map the same source rows with both versions and compare.

For each canonical table: how many records change, field by field, which policies, and which
records move into or out of quarantine. Vectorized per block (a join on the source record number
and one comparison per column), so a whole book can be compared.
"""

from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from canonical.mapping import Mapping, map_block
from canonical.tables import V1_TABLES


@dataclass
class TableImpact:
    table: str
    records: int = 0
    changed_records: int = 0
    changed_by_field: Counter = field(default_factory=Counter)
    newly_quarantined: Counter = field(default_factory=Counter)  # reason under the new mapping
    released: int = 0  # quarantined before, mapped now
    changed_policies: set[str] = field(default_factory=set)
    examples: list[dict] = field(default_factory=list)  # a few (policy, field) changes, no values shown


def compare_block(old: Mapping, new: Mapping, table: str, source: pa.Table, impact: TableImpact, examples: int = 10) -> None:
    """Map one source block with both mappings and add the differences to `impact`."""
    a = map_block(old, table, source)
    b = map_block(new, table, source)
    impact.records += source.num_rows
    columns = V1_TABLES[table].names
    joined = a.table.select(["source_record_no", *columns]).join(
        b.table.select(["source_record_no", *columns]), "source_record_no", join_type="inner",
        left_suffix="__old", right_suffix="__new")
    changed_any = pa.repeat(pa.scalar(False), joined.num_rows)
    for name in columns:
        left, right = joined.column(f"{name}__old"), joined.column(f"{name}__new")
        differs = pc.fill_null(pc.not_equal(left, right), False)
        differs = pc.or_(differs, pc.xor(pc.is_null(left), pc.is_null(right)))
        count = pc.sum(differs).as_py() or 0
        if count:
            impact.changed_by_field[name] += count
            changed_any = pc.or_(changed_any, differs)
            if len(impact.examples) < examples:
                ids = joined.filter(differs).column("policy_id__new").slice(0, examples - len(impact.examples))
                impact.examples += [{"policy_id": pid, "field": name} for pid in ids.to_pylist()]
    impact.changed_records += pc.sum(changed_any).as_py() or 0
    impact.changed_policies.update(joined.filter(changed_any).column("policy_id__new").to_pylist())
    old_bad = set(a.quarantine.column("source_record_no").to_pylist())
    new_bad = dict(zip(b.quarantine.column("source_record_no").to_pylist(), b.quarantine.column("reason").to_pylist()))
    for record, reason in new_bad.items():
        if record not in old_bad:
            impact.newly_quarantined[reason] += 1
    impact.released += len(old_bad - set(new_bad))
