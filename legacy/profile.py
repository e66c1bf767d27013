"""Column profiles of a legacy file: null rate, distinct count, min/max and top value patterns.

Patterns replace upper-case letters by `A`, lower-case by `a` and digits by `9`, so `20230231`
and `1987-04-02` show as `99999999` and `9999-99-99`. They are taken from the first
`sample_rows` records, vectorized. Columns that hold personal data never show values: their
min and max are masked; their patterns show only shape. Patterns and min/max keep at most
`VALUE_CAP` characters (then `…`), so a report stays small whatever the values hold.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

MASKED = "***"
VALUE_CAP = 64  # characters of a pattern, min or max kept in a profile; longer ones end in ELLIPSIS
ELLIPSIS = "…"


def cap_value(value: str | None, cap: int = VALUE_CAP) -> str | None:
    """A value cut to `cap` characters, with an ellipsis when it was longer."""
    if value is None or len(value) <= cap:
        return value
    return value[:cap] + ELLIPSIS


def value_patterns(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """The shape of each value: letters to A/a, digits to 9, everything else kept; past VALUE_CAP
    characters the shape is cut and ends in an ellipsis."""
    as_text = pc.cast(values, pa.string()) if not pa.types.is_string(values.type) else values
    long = pc.fill_null(pc.greater(pc.utf8_length(as_text), VALUE_CAP), False)
    if pc.any(long).as_py():  # shape only what is kept: cutting first is the same as cutting the shape
        cut = pc.utf8_slice_codeunits(as_text, 0, VALUE_CAP)
        return pc.if_else(long, pc.binary_join_element_wise(_shape(cut), ELLIPSIS, ""), _shape(cut))
    return _shape(as_text)


def _shape(as_text: pa.Array | pa.ChunkedArray) -> pa.Array:
    # ASCII classes are several times faster than Unicode ones; most legacy values are ASCII
    shaped = pc.replace_substring_regex(as_text, "[A-Z]", "A")
    shaped = pc.replace_substring_regex(shaped, "[a-z]", "a")
    shaped = pc.replace_substring_regex(shaped, "[0-9]", "9")
    if pc.all(pc.fill_null(pc.string_is_ascii(shaped), True)).as_py():
        return shaped
    shaped = pc.replace_substring_regex(shaped, r"\p{Lu}", "A")
    shaped = pc.replace_substring_regex(shaped, r"\p{Ll}|\p{Lo}", "a")
    return pc.replace_substring_regex(shaped, r"\p{Nd}", "9")


class PatternSampler:
    """Counts value patterns per column over the first `sample_rows` records of a file."""

    def __init__(self, sample_rows: int = 100_000, keep: int = 5):
        self.sample_rows = sample_rows
        self.keep = keep
        self.seen = 0
        self.counts: dict[str, Counter] = {}

    def add(self, table: pa.Table) -> None:
        room = self.sample_rows - self.seen
        if room <= 0 or table.num_rows == 0:
            return
        table = table.slice(0, room)
        self.seen += table.num_rows
        for name in table.column_names:
            if name == "record_no":
                continue
            column = table.column(name)
            if pa.types.is_floating(column.type) or pa.types.is_binary(column.type):
                continue
            # shape each distinct value once, then add up its count under its shape
            distinct = pc.value_counts(column.drop_null())
            shapes = value_patterns(distinct.field("values"))
            bucket = self.counts.setdefault(name, Counter())
            for shape, count in zip(shapes.to_pylist(), distinct.field("counts").to_pylist()):
                bucket[shape] += count
            if len(bucket) > 10_000:  # free text: keep the frequent shapes only
                self.counts[name] = Counter(dict(bucket.most_common(1_000)))

    def top(self, name: str) -> list[tuple[str, int]]:
        return self.counts.get(name, Counter()).most_common(self.keep)


class ColumnProfile(BaseModel):
    name: str
    sql_name: str
    type: str
    rows: int
    null_rate: float
    distinct: int
    min: str | None
    max: str | None
    pii: bool
    top_patterns: list[tuple[str, int]]


class FileProfile(BaseModel):
    source: str
    drop_id: str
    kind: str
    file_name: str
    records_read: int
    records_parsed: int
    records_quarantined: int
    pattern_sample_rows: int
    columns: list[ColumnProfile]

    def write_json(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.model_dump(), indent=2, default=str))
        return path

    def markdown(self, limit: int = 60) -> str:
        """A compact table for Dagster metadata: no values of personal-data columns."""
        lines = ["| column | type | null % | distinct | min | max | top pattern |", "|---|---|---:|---:|---|---|---|"]
        for col in self.columns[:limit]:
            pattern = f"`{col.top_patterns[0][0]}`" if col.top_patterns else ""
            lines.append(
                f"| {col.name}{' (PII)' if col.pii else ''} | {col.type} | {col.null_rate * 100:.1f} | {col.distinct} "
                f"| {_cell(col.min)} | {_cell(col.max)} | {_cell(pattern)} |"
            )
        if len(self.columns) > limit:
            lines.append(f"| … {len(self.columns) - limit} more columns in the JSON report | | | | | | |")
        return "\n".join(lines)


def _cell(value: str | None) -> str:
    if value is None:
        return ""
    value = value.replace("|", "\\|").replace("\n", " ")
    return value if len(value) <= 24 else value[:23] + "…"


def build_profile(
    *,
    source: str,
    drop_id: str,
    kind: str,
    file_name: str,
    columns: list[tuple[str, pa.DataType]],
    sql_names: list[str],
    stats: dict[str, dict],
    sampler: PatternSampler,
    pii: set[str],
    records_read: int,
    records_parsed: int,
    records_quarantined: int,
) -> FileProfile:
    """Assemble a file profile from database statistics and the pattern sample, masking PII."""
    profiles = []
    for (name, dtype), sql_col in zip(columns, sql_names):
        s = stats[name]
        is_pii = name in pii
        profiles.append(
            ColumnProfile(
                name=name,
                sql_name=sql_col,
                type=str(dtype),
                rows=s["rows"],
                null_rate=(s["nulls"] / s["rows"]) if s["rows"] else 0.0,
                distinct=s["distinct"],
                min=MASKED if is_pii and s["min"] is not None else cap_value(s["min"]),
                max=MASKED if is_pii and s["max"] is not None else cap_value(s["max"]),
                pii=is_pii,
                top_patterns=sampler.top(name),
            )
        )
    return FileProfile(
        source=source,
        drop_id=drop_id,
        kind=kind,
        file_name=file_name,
        records_read=records_read,
        records_parsed=records_parsed,
        records_quarantined=records_quarantined,
        pattern_sample_rows=sampler.seen,
        columns=profiles,
    )
