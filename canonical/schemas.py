"""Pandera schemas of the canonical tables, for pandas frames with pyarrow-backed dtypes.

Built from a version's table definitions: every column present with its arrow dtype, required
columns not null, code columns within their codes, keys unique, limit and face amounts >= 0
(premiums may be negative: that is a data-quality finding, scored elsewhere). `validate_table`
returns failures instead of raising so the mapping engine can quarantine by row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pandera.pandas as pdx
import pyarrow as pa

from canonical.model import MODEL_V1, NON_NEGATIVE, ModelVersion
from canonical.tables import V1

_SCHEMAS: dict[tuple[str, str, str], pdx.DataFrameSchema] = {}
EXAMPLE_ROWS = 5


@dataclass(frozen=True)
class SchemaFailure:
    """One failed check on one canonical table. `rows` are a few failing row labels; `all_rows` all of
    them; both empty when the whole table fails (missing or extra column, wrong dtype)."""

    version: str
    table: str
    column: str | None
    check: str
    failure_count: int
    rows: tuple[Any, ...]
    examples: tuple[Any, ...] = ()  # a few failing values; never for PII columns
    all_rows: tuple[Any, ...] = field(default=(), repr=False)

    @property
    def whole_table(self) -> bool:
        return not self.all_rows

    def __str__(self) -> str:
        where = f"canonical {self.version} table {self.table}" + (f", column {self.column}" if self.column else "")
        rows = f" in {self.failure_count} rows, e.g. rows {list(self.rows)}" if self.rows else ""
        values = f", values {list(self.examples)}" if self.examples else ""
        return f"{where}: {self.check} failed{rows}{values}"


def to_frame(table: pa.Table) -> pd.DataFrame:
    """An arrow table as the pyarrow-backed pandas frame these schemas expect."""
    return table.to_pandas(types_mapper=pd.ArrowDtype)


def resolve_version(version: str | ModelVersion) -> ModelVersion:
    """A version string (a built-in version, see `canonical.registry.VERSIONS`) or definition."""
    if isinstance(version, ModelVersion):
        return version
    if version == V1:
        return MODEL_V1
    from canonical.registry import VERSIONS  # late: the registry imports this module

    try:
        return VERSIONS[version]
    except KeyError:
        raise KeyError(f"unknown canonical model version {version!r} (known: {', '.join(VERSIONS)})") from None


def table_schema(name: str, version: str | ModelVersion = V1) -> pdx.DataFrameSchema:
    """The pandera schema of one canonical table of a version."""
    mv = resolve_version(version)
    key = (mv.version, mv.schema_hash(), name)
    schema = _SCHEMAS.get(key)
    if schema is None:
        table = mv.table(name)
        columns = {}
        for c in table.columns:
            checks = []
            if c.codes is not None:
                checks.append(pdx.Check.isin(list(c.codes)))
            if (table.name, c.name) in NON_NEGATIVE:
                checks.append(pdx.Check.ge(0))
            columns[c.name] = pdx.Column(pd.ArrowDtype(c.type), checks=checks, nullable=not c.required,
                                         required=True, description=c.description or None)
        schema = _SCHEMAS[key] = pdx.DataFrameSchema(
            columns, unique=list(table.key), report_duplicates="all", strict=True, coerce=False,
            name=f"canonical {mv.version} {name}", description=table.description)
    return schema


def schemas(version: str | ModelVersion = V1) -> dict[str, pdx.DataFrameSchema]:
    mv = resolve_version(version)
    return {name: table_schema(name, mv) for name in mv.tables}


def validate_table(name: str, frame: pd.DataFrame | pa.Table, version: str | ModelVersion = V1,
                   lazy: bool = True) -> list[SchemaFailure]:
    """Check a frame against a canonical table; [] when it passes. `lazy=False` stops at the first failure."""
    mv = resolve_version(version)
    schema = table_schema(name, mv)
    if isinstance(frame, pa.Table):
        frame = to_frame(frame)
    try:
        schema.validate(frame, lazy=lazy)
    except pdx.errors.SchemaErrors as errors:
        return _failures(mv, name, errors.failure_cases, frame)
    except pdx.errors.SchemaError as error:
        return _failures(mv, name, pdx.errors.SchemaErrors(schema, [error], frame).failure_cases, frame)
    return []


def failed_rows(failures: list[SchemaFailure]) -> set[Any]:
    """Row labels that failed any row-level check (to quarantine them)."""
    return {row for f in failures for row in f.all_rows}


def _failures(mv: ModelVersion, name: str, cases: pd.DataFrame, frame: pd.DataFrame) -> list[SchemaFailure]:
    table = mv.table(name)
    key_check = "multiple_fields_uniqueness"
    cases = cases.astype(object).where(cases.notna(), None)
    failures: list[SchemaFailure] = []
    order: dict[tuple[Any, str], list[dict[str, Any]]] = {}
    for case in cases.to_dict("records"):
        check = str(case["check"])
        if check in ("column_in_schema", "column_in_dataframe"):
            column = str(case["failure_case"])  # the column itself is the failure case
        elif check == key_check:
            column = ",".join(table.key)
        else:
            column = case["column"]
        order.setdefault((column, check), []).append(case)
    for (column, check), group in order.items():
        label = {"column_in_schema": "unknown column", "column_in_dataframe": "missing column",
                 key_check: f"unique key ({', '.join(table.key)})", "not_nullable": "required (not null)"}.get(
            check, check)
        if check.startswith("dtype("):  # a wrong dtype fails the whole column, whatever pandera lists
            found = str(frame[column].dtype) if column in frame.columns else "?"
            failures.append(SchemaFailure(mv.version, name, column, f"{check}, found {found}", 1, (), (found,)))
            continue
        rows = tuple(dict.fromkeys(c["index"] for c in group if c["index"] is not None))
        pii = column in table.names and table.column(column).pii
        examples = () if pii or check in ("not_nullable", "column_in_schema", "column_in_dataframe", key_check) else tuple(
            dict.fromkeys(_plain(c["failure_case"]) for c in group))[:EXAMPLE_ROWS]
        failures.append(SchemaFailure(mv.version, name, column, label, len(rows) or len(group),
                                      rows[:EXAMPLE_ROWS], examples, rows))
    return failures


def _plain(value: Any) -> Any:
    return value.as_py() if isinstance(value, pa.Scalar) else value
