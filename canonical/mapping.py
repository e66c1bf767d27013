"""Source → canonical mappings: versioned YAML, a small expression language, a vectorized engine.

A mapping file says, per canonical table, which source file kind feeds it and, per canonical
column, an expression over source columns with a confidence:

    policies:
      from: policies
      fields:
        effective_date: {expr: "date(col('EFF_DATE'), '%Y%m%d')", confidence: 0.98}

Expressions are parsed with `ast` and checked against a fixed set of functions: user text is
never evaluated. Each function works on whole Arrow columns (one pass per field per block, no loop
per record). A value that cannot be mapped (impossible date, unknown code without default)
makes its record go to quarantine with the canonical field and the reason.
"""

from __future__ import annotations

import ast
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from canonical.tables import FREQUENCY, MONEY, V1_TABLES, Table
from legacy.errors import InputError, YamlDocument, load_yaml

PERIODS_PER_YEAR = {"annual": 1, "semi_annual": 2, "quarterly": 4, "monthly": 12, "single": 1}
assert set(PERIODS_PER_YEAR) == set(FREQUENCY)


class MappingError(InputError):
    """A mapping file that cannot be used; the message names the file, line, table, field and problem."""


@dataclass(frozen=True)
class _Where:
    """A place in a mapping file (file, dotted field, line) that makes the error about it."""

    file: str
    field: str | None = None
    line: int | None = None

    def error(self, problem: str) -> MappingError:
        return MappingError(problem, file=self.file, line=self.line, field=self.field)


class FieldMapping(BaseModel):
    model_config = ConfigDict(extra="forbid")
    expr: str
    confidence: float = Field(ge=0.0, le=1.0)
    reason: str | None = None
    review: bool = False


class TableMapping(BaseModel):
    """How one canonical table is filled. `occurs: N` makes one canonical row per occurrence n = 1..N of a
    repeating group (`{n}` in expressions is the occurrence); `present` names the column, with `{n}`,
    whose non-blank value says that an occurrence exists."""

    model_config = ConfigDict(extra="forbid")
    from_: str = Field(alias="from")
    occurs: int = Field(default=1, ge=1, le=99)
    present: str | None = None
    fields: dict[str, FieldMapping]

    def present_columns(self) -> list[str]:
        return [self.present.replace("{n}", str(n)) for n in range(1, self.occurs + 1)] if self.present else []


class MappingFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mapping: str
    version: str
    source: str
    model_version: str = "1.0.0"
    draft: bool = False
    description: str = ""
    tables: dict[str, TableMapping]
    code_tables: dict[str, dict[str, str]] = Field(default_factory=dict)
    unmapped_required: list[str] = Field(default_factory=list)
    unused_source_columns: dict[str, list[str]] = Field(default_factory=dict)

    @field_validator("code_tables", mode="before")
    @classmethod
    def _codes_as_text(cls, value):
        # YAML reads codes like 00 or 10 as numbers: codes are text (anything else is left for validation to name)
        if not isinstance(value, dict):
            return value if value is not None else {}
        return {t: {str(k): str(v) for k, v in m.items()} if isinstance(m, dict) else ({} if m is None else m)
                for t, m in value.items()}


@dataclass
class Mapping:
    """A validated mapping, with its content hash (what the registry and the WAL record)."""

    spec: MappingFile
    path: Path | None
    hash: str
    compiled: dict[str, dict[str, ast.expr]] = field(default_factory=dict)
    # per table with `occurs`, the compiled fields of each occurrence (compiled[table] is the first)
    occurrences: dict[str, list[dict[str, ast.expr]]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.mapping

    @property
    def version(self) -> str:
        return self.spec.version

    def confidence(self, table: str) -> float:
        fields = self.spec.tables[table].fields
        return sum(f.confidence for f in fields.values()) / len(fields) if fields else 0.0


# --------------------------------------------------------------------------- parsing & validation
FUNCTIONS = {
    "col": (1, 1), "lit": (1, 1), "trim": (1, 1), "upper": (1, 1), "concat": (1, 20), "substr": (3, 3),
    "date": (2, 2), "money": (1, 1), "implied": (2, 2), "code": (2, 3), "annualize": (2, 2),
    "coalesce": (1, 10), "when": (3, 3), "eq": (2, 2), "ne": (2, 2), "in_": (2, 30), "is_null": (1, 1),
    "gt": (2, 2), "lt": (2, 2), "add": (2, 2), "sub": (2, 2), "mul": (2, 2), "int": (1, 1),
    "lookup": (5, 5),
}
LOOKUP_AGGREGATES = ("sum", "count", "min", "max", "first")


def _check(node: ast.AST, where: _Where, columns: set[str] | None, code_tables: set[str],
           all_columns: dict[str, set[str]] | None = None) -> None:
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, int, float)) and not isinstance(node.value, bool):
        return
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
        return
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name) or node.keywords:
        raise where.error(f"only calls of {sorted(FUNCTIONS)} with plain arguments are allowed, "
                           f"found {ast.unparse(node)!r}")
    name = node.func.id
    if name not in FUNCTIONS:
        raise where.error(f"unknown function {name}(); use one of {sorted(FUNCTIONS)}")
    low, high = FUNCTIONS[name]
    if not low <= len(node.args) <= high:
        raise where.error(f"{name}() takes {low}{'' if low == high else f' to {high}'} arguments, "
                           f"got {len(node.args)}")
    if name == "col":
        arg = node.args[0]
        if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
            raise where.error(f"col() takes a column name in quotes")
        if columns is not None and arg.value not in columns:
            raise where.error(f"source has no column {arg.value!r}")
        return
    if name == "code":
        table = node.args[1]
        if not (isinstance(table, ast.Constant) and isinstance(table.value, str)) or table.value not in code_tables:
            raise where.error(f"code table {ast.unparse(table)} is not defined under code_tables")
    if name == "lookup":
        kind, key, value, agg = node.args[:4]
        if not all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in (kind, key, value, agg)):
            raise where.error(f"lookup(kind, key column, value column, aggregate, our key) takes four names "
                               "in quotes and then an expression")
        if agg.value not in LOOKUP_AGGREGATES:
            raise where.error(f"lookup aggregate {agg.value!r} is not one of {LOOKUP_AGGREGATES}")
        if all_columns is not None:
            if kind.value not in all_columns:
                raise where.error(f"lookup into file kind {kind.value!r}, which the source does not have")
            for column in (key.value, value.value):
                if column not in all_columns[kind.value]:
                    raise where.error(f"lookup: file kind {kind.value!r} has no column {column!r}")
        _check(node.args[4], where, columns, code_tables, all_columns)
        return
    if name == "date" and not (isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)):
        raise where.error(f"date() takes a format in quotes, e.g. '%Y%m%d'")
    for arg in node.args:
        _check(arg, where, columns, code_tables, all_columns)


def load_mapping(path: str | Path, source_columns: dict[str, set[str]] | None = None,
                 tables: dict[str, Table] | None = None) -> Mapping:
    """Read and validate a mapping file; `source_columns` (kind → columns) also checks column names."""
    path = Path(path)
    document = load_yaml(path, error=MappingError)
    return parse_mapping(document.data, path, source_columns, tables, document=document)


def parse_mapping(raw: Any, path: Path | None = None, source_columns: dict[str, set[str]] | None = None,
                  tables: dict[str, Table] | None = None, *, document: YamlDocument | None = None) -> Mapping:
    """Validate a mapping read from YAML; `document` (from `load_yaml`) lets errors name their line."""
    where_file = str(path) if path else "<mapping>"
    tables = tables or V1_TABLES

    def at(*loc: str | int) -> _Where:
        return _Where(where_file, ".".join(str(p) for p in loc) or None, document.line(*loc) if document else None)

    if not isinstance(raw, dict):
        raise at().error(f"a mapping file is a YAML mapping with mapping, version, source and tables; found "
                         f"{'nothing' if raw is None else type(raw).__name__}")
    try:
        spec = MappingFile.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        raise at(*first["loc"]).error(first["msg"].removeprefix("Value error, ")) from None
    compiled: dict[str, dict[str, ast.expr]] = {}
    occurrences: dict[str, list[dict[str, ast.expr]]] = {}
    for table_name, table_map in spec.tables.items():
        if table_name not in tables:
            raise at("tables", table_name).error(f"not a canonical table ({sorted(tables)})")
        canonical = tables[table_name]
        cols = source_columns.get(table_map.from_) if source_columns is not None else None
        if cols is not None:
            cols = cols | {"record_no"}  # every source block carries its record numbers
        if source_columns is not None and cols is None:
            raise at("tables", table_name, "from").error(f"source has no file kind {table_map.from_!r}")
        if (table_map.occurs > 1) != bool(table_map.present) or (table_map.present and "{n}" not in table_map.present):
            raise at("tables", table_name).error("`occurs` above 1 needs `present`, a column name "
                               "with {n} (e.g. BEN_NAME_{n}), and `present` needs `occurs`")
        variants = []
        for n in range(1, table_map.occurs + 1):
            variant = {}
            for column, fmap in table_map.fields.items():
                where = at("tables", table_name, "fields", column)
                if column not in canonical.names:
                    raise where.error(f"canonical table {table_name} has no column {column!r}")
                expr = fmap.expr.replace("{n}", str(n)) if table_map.occurs > 1 else fmap.expr
                try:
                    tree = ast.parse(expr, mode="eval").body
                except SyntaxError as error:
                    raise where.error(f"expression {fmap.expr!r} does not parse: {error.msg}") from None
                _check(tree, where, cols, set(spec.code_tables), source_columns)
                variant[column] = tree
            variants.append(variant)
        if cols is not None:
            missing = [c for c in table_map.present_columns() if c not in cols]
            if missing:
                raise at("tables", table_name, "present").error(f"source has no column {missing[0]!r}")
        compiled[table_name] = variants[0]
        if table_map.occurs > 1:
            occurrences[table_name] = variants
        for key in canonical.key:
            if key not in table_map.fields:
                raise at("tables", table_name, "fields").error(f"key column {key!r} is not mapped")
    canonical_json = json.dumps(spec.model_dump(by_alias=True, exclude={"draft"}), sort_keys=True)
    return Mapping(spec, path, hashlib.sha256(canonical_json.encode()).hexdigest(), compiled, occurrences)


def lookup_specs(mapping: Mapping, table: str) -> set[tuple[str, str, str, str]]:
    """The (kind, key column, value column, aggregate) lookups a table's expressions need."""
    specs = set()
    for node in mapping.compiled[table].values():
        for sub in ast.walk(node):
            if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name) and sub.func.id == "lookup":
                specs.add(tuple(a.value for a in sub.args[:4]))
    return specs


def builtin_mappings_dir() -> Path:
    return Path(__file__).resolve().parent / "mappings"


def mapping_for_source(source: str) -> Path:
    path = builtin_mappings_dir() / f"{source}.yaml"
    if not path.exists():
        raise MappingError(f"no mapping for source {source!r} in {builtin_mappings_dir()}; "
                           f"draft one with `data-mash suggest-mapping --source {source}`")
    return path


# --------------------------------------------------------------------------- evaluation
@dataclass
class Problem:
    mask: pa.Array  # boolean, true where the row has this problem
    reason: str
    detail: str


class _Eval:
    """Evaluates one field's expression over a block; collects per-row problems."""

    def __init__(self, source: pa.Table, mapping: Mapping, lookups: dict | None = None):
        self.lookups = lookups or {}
        self.source = source
        self.n = source.num_rows
        self.codes = mapping.spec.code_tables
        self.problems: list[Problem] = []
        self.zero: pa.Array | None = None  # rows where a date was a legacy "zero date"

    def __call__(self, node: ast.expr):
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.UnaryOp):
            return -node.operand.value
        name = node.func.id
        if name == "col":
            return self.source.column(node.args[0].value).combine_chunks()
        if name == "lit":
            return self._full(self(node.args[0]))
        if name == "lookup":
            spec = tuple(a.value for a in node.args[:4])
            return self.f_lookup(spec, self(node.args[4]))
        args = [self(a) for a in node.args]
        return getattr(self, f"f_{name}")(*args)

    def _full(self, value) -> pa.Array:
        if isinstance(value, (pa.Array, pa.ChunkedArray)):
            return value
        return pa.repeat(pa.scalar(value), self.n)

    def _text(self, value) -> pa.Array:
        value = self._full(value)
        return value if pa.types.is_string(value.type) else pc.cast(value, pa.string())

    def f_trim(self, x):
        return pc.utf8_trim_whitespace(self._text(x))

    def f_upper(self, x):
        return pc.utf8_upper(self._text(x))

    def f_concat(self, *parts):
        texts = [self._text(p) for p in parts]
        return pc.binary_join_element_wise(*texts, "", null_handling="replace", null_replacement="")

    def f_substr(self, x, start, length):
        return pc.utf8_slice_codeunits(self._text(x), start, start + length)

    def f_int(self, x):
        return pc.cast(self._full(x), pa.int64())

    def f_date(self, x, fmt):
        text_ = pc.utf8_trim_whitespace(self._text(x))
        zero = pc.fill_null(pc.match_substring_regex(text_, r"^[0\s/.\-]*$"), False)
        candidate = pc.if_else(zero, pa.scalar(None, pa.string()), text_)
        if fmt == "%Y%m%d":  # numbers lose leading zeros only for years < 1000: never valid anyway
            candidate = pc.utf8_lpad(candidate, 8, "0")
        parsed = pc.strptime(candidate, format=fmt, unit="s", error_is_null=True)
        # strptime may roll 2023-02-31 over to March: a date is valid only if it formats back the same
        back = pc.strftime(parsed, format=fmt)
        same = pc.equal(back, candidate)
        valid = pc.fill_null(same, False)
        bad = pc.and_(pc.is_valid(candidate), pc.invert(valid))
        if pc.any(bad).as_py():
            self.problems.append(Problem(bad, "invalid_date", f"not a real date in format {fmt}"))
        self.zero = zero if self.zero is None else pc.or_(self.zero, zero)
        return pc.cast(pc.if_else(valid, parsed, pa.scalar(None, parsed.type)), pa.date32())

    def f_money(self, x):
        x = self._full(x)
        if pa.types.is_integer(x.type):  # via a wide decimal: Arrow sizes int casts for the int64 range
            return pc.cast(pc.cast(x, pa.decimal128(38, 0)), MONEY)
        if pa.types.is_decimal(x.type):
            if x.type.scale > 2:
                rounded = pc.round(x, 2)
                lossy = pc.fill_null(pc.not_equal(rounded, x), False)
                if pc.any(lossy).as_py():
                    self.problems.append(Problem(lossy, "invalid_amount", "more than 2 decimal places"))
                x = rounded
            return pc.cast(x, MONEY)
        if pa.types.is_string(x.type) or pa.types.is_large_string(x.type):
            return self._money_text(x)
        raise MappingError(f"money() needs a number or text column, got {x.type}")

    def _money_text(self, x):
        """Formatted amounts: `$1,234.56`, `-12.00`, `(120.00)` (negative), blanks as null."""
        text_ = pc.utf8_trim_whitespace(x)
        negative = pc.fill_null(pc.match_substring_regex(text_, r"^\(.*\)$|^-"), False)
        digits = pc.replace_substring_regex(text_, r"[\s$,()+\-]", "")
        digits = pc.if_else(pc.equal(digits, ""), pa.scalar(None, pa.string()), digits)
        well_formed = pc.fill_null(pc.match_substring_regex(digits, r"^\d{1,16}(\.\d{1,2})?$"), False)
        bad = pc.and_(pc.is_valid(digits), pc.invert(well_formed))
        if pc.any(bad).as_py():
            self.problems.append(Problem(bad, "invalid_amount", "not an amount with at most 2 decimal places"))
        value = pc.cast(pc.if_else(well_formed, digits, pa.scalar(None, pa.string())), MONEY)
        return pc.if_else(negative, pc.negate(value), value)

    def f_implied(self, x, scale):
        from legacy.copybook import decimal_array

        x = self._full(x)
        unscaled = pc.fill_null(pc.cast(x, pa.int64()), 0).to_numpy(zero_copy_only=False)
        return pc.cast(decimal_array(np.asarray(unscaled, dtype=np.int64), 18, scale, mask=pc.is_null(x).to_numpy(zero_copy_only=False)), MONEY)

    def f_code(self, x, table, default=None):
        x = pc.utf8_trim_whitespace(self._text(x))
        codes = {k: v for k, v in self.codes[table].items() if v != "TODO"}  # a draft's unreviewed codes map nothing
        keys = pa.array(list(codes), pa.string())
        values = pa.array(list(codes.values()), pa.string())
        index = pc.index_in(x, value_set=keys)
        mapped = pc.take(values, index)
        unknown = pc.and_(pc.is_valid(x), pc.is_null(index))
        if default is not None:
            return pc.if_else(unknown, pa.scalar(default, pa.string()), mapped)
        if pc.any(unknown).as_py():
            self.problems.append(Problem(unknown, "unknown_code", f"not in code table {table}"))
        return mapped

    def f_annualize(self, amount, frequency):
        freq = self._text(frequency)
        periods = pc.take(pa.array(list(PERIODS_PER_YEAR.values()), pa.int64()),
                          pc.index_in(freq, value_set=pa.array(list(PERIODS_PER_YEAR), pa.string())))
        return pc.cast(pc.multiply(self._full(amount), pc.cast(pc.cast(periods, pa.int8()), pa.decimal128(3, 0))), MONEY)

    def f_lookup(self, spec, our_key):
        """The aggregate of a satellite file's column for each record's key (0 for a count with no rows)."""
        if spec not in self.lookups:
            raise MappingError(f"lookup {spec} needs its satellite data; the caller did not provide it")
        found = self.lookups[spec]
        index = pc.index_in(pc.utf8_trim_whitespace(self._text(our_key)), value_set=found.column("key"))
        values = pc.take(found.column("value"), index)
        return pc.fill_null(values, 0) if spec[3] == "count" else values

    def f_coalesce(self, *values):
        return pc.coalesce(*[self._full(v) for v in values])

    def f_when(self, cond, a, b):
        a, b = self._full(a), self._full(b)
        if a.type != b.type:
            b = pc.cast(b, a.type)
        return pc.if_else(pc.fill_null(cond, False), a, b)

    def f_eq(self, a, b):
        return pc.equal(self._full(a), b if not isinstance(b, (pa.Array, pa.ChunkedArray)) else b)

    def f_ne(self, a, b):
        return pc.not_equal(self._full(a), b)

    def f_in_(self, x, *values):
        return pc.is_in(self._text(x), value_set=pa.array([str(v) for v in values]))

    def f_is_null(self, x):
        return pc.is_null(self._full(x))

    def f_gt(self, a, b):
        return pc.greater(self._full(a), b)

    def f_lt(self, a, b):
        return pc.less(self._full(a), b)

    def _money_op(self, op, a, b):
        a, b = self._full(a), self._full(b)
        return pc.cast(op(a, b), MONEY)

    def f_add(self, a, b):
        return self._money_op(pc.add, a, b)

    def f_sub(self, a, b):
        return self._money_op(pc.subtract, a, b)

    def f_mul(self, a, b):
        return self._money_op(pc.multiply, a, b)


@dataclass
class MappedBlock:
    """One block mapped: canonical rows (with source record numbers) and the records that could not be."""

    table: pa.Table  # source_record_no + canonical columns + dq_score + dq_findings
    quarantine: pa.Table  # source_record_no, field, reason, detail, policy_id


QUARANTINE_SCHEMA = pa.schema([("source_record_no", pa.int64()), ("field", pa.string()), ("reason", pa.string()),
                               ("detail", pa.string()), ("policy_id", pa.string())])


def map_block(mapping: Mapping, table_name: str, source: pa.Table, tables: dict[str, Table] | None = None,
              lookups: dict | None = None) -> MappedBlock:
    """Map one block of a source file to a canonical table, vectorized, one pass per field.

    `lookups` holds, per `lookup_specs` entry, a table (key, value) of the satellite aggregate. A table
    mapped with `occurs` gives one row per present occurrence, numbered in the `occurrence` column.
    """
    variants = mapping.occurrences.get(table_name)
    if not variants:
        return _map_occurrence(mapping, table_name, source, mapping.compiled[table_name], 1, tables, lookups)
    present = mapping.spec.tables[table_name].present_columns()
    parts = []
    for n, (compiled, column) in enumerate(zip(variants, present), start=1):
        values = source.column(column)
        text_ = values if pa.types.is_string(values.type) else pc.cast(values, pa.string())
        there = pc.fill_null(pc.not_equal(pc.utf8_trim_whitespace(text_), ""), False)
        parts.append(_map_occurrence(mapping, table_name, source.filter(there), compiled, n, tables, lookups))
    return MappedBlock(pa.concat_tables([p.table for p in parts]), pa.concat_tables([p.quarantine for p in parts]))


def _map_occurrence(mapping: Mapping, table_name: str, source: pa.Table, compiled: dict[str, ast.expr], occurrence: int,
                    tables: dict[str, Table] | None, lookups: dict | None) -> MappedBlock:
    from canonical.quality import score
    from canonical.schemas import validate_table

    canonical = (tables or V1_TABLES)[table_name]
    n = source.num_rows
    columns: dict[str, pa.Array] = {}
    first_problem: list[tuple[str, Problem]] = []
    zero_dates: dict[str, pa.Array] = {}
    for column in canonical.columns:
        node = compiled.get(column.name)
        if node is None:
            columns[column.name] = pa.nulls(n, column.type)
            continue
        ev = _Eval(source, mapping, lookups)
        try:
            value = ev._full(ev(node))
            value = value if value.type == column.type else pc.cast(value, column.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as error:
            raise MappingError(f"mapping {mapping.name} {table_name}.{column.name}: {error}") from error
        columns[column.name] = value
        first_problem += [(column.name, p) for p in ev.problems]
        if ev.zero is not None:
            zero_dates[column.name] = ev.zero
            if column.required:  # a zero date cannot stand in for a required one
                first_problem.append((column.name, Problem(ev.zero, "zero_date", "legacy zero date in a required date")))
    mapped = pa.table(columns)
    record_no = source.column("record_no").combine_chunks()

    # one quarantine row per record: its first problem in canonical column order
    bad = np.zeros(n, dtype=bool)
    rows = []
    for name, problem in sorted(first_problem, key=lambda item: canonical.names.index(item[0])):
        mask = pc.fill_null(problem.mask, False).to_numpy(zero_copy_only=False) & ~bad
        if mask.any():
            idx = np.flatnonzero(mask)
            rows.append(pa.table({
                "source_record_no": record_no.take(pa.array(idx)),
                "field": pa.repeat(pa.scalar(name), len(idx)),
                "reason": pa.repeat(pa.scalar(problem.reason), len(idx)),
                "detail": pa.repeat(pa.scalar(f"{name}: {problem.detail}"), len(idx)),
                "policy_id": mapped.column("policy_id").take(pa.array(idx)).cast(pa.string()),
            }))
            bad |= mask
    # the canonical schema (pandera) guards what is left; key uniqueness is settled across blocks in SQL
    survivors = np.flatnonzero(~bad)
    for failure in validate_table(table_name, mapped.take(pa.array(survivors))):
        if failure.check.startswith("unique key"):
            continue
        if failure.whole_table:
            raise MappingError(f"mapping {mapping.name} produced a table that breaks the canonical schema: {failure}")
        idx = survivors[np.asarray(failure.all_rows, dtype=np.int64)]
        idx = idx[~bad[idx]]
        if len(idx):
            rows.append(pa.table({
                "source_record_no": record_no.take(pa.array(idx)),
                "field": pa.repeat(pa.scalar(failure.column or ""), len(idx)),
                "reason": pa.repeat(pa.scalar("schema_violation"), len(idx)),
                "detail": pa.repeat(pa.scalar(f"{failure.column}: {failure.check}"), len(idx)),
                "policy_id": mapped.column("policy_id").take(pa.array(idx)).cast(pa.string()),
            }))
            bad[idx] = True
    quarantine = pa.concat_tables(rows) if rows else QUARANTINE_SCHEMA.empty_table()
    good = pa.array(~bad)
    kept = mapped.filter(good)
    zero_kept = {name: mask.filter(good) for name, mask in zero_dates.items()}
    dq, findings = score(table_name, kept, zero_kept, tables)
    kept = kept.add_column(0, "source_record_no", record_no.filter(good))
    kept = kept.add_column(1, "occurrence", pa.repeat(pa.scalar(occurrence, pa.int16()), kept.num_rows))
    kept = kept.append_column("dq_score", dq).append_column("dq_findings", findings)
    if occurrence > 1 or mapping.occurrences.get(table_name):
        quarantine = quarantine.set_column(3, "detail", pc.binary_join_element_wise(
            pa.repeat(pa.scalar(f"occurrence {occurrence}: "), quarantine.num_rows), quarantine.column("detail"), ""))
    return MappedBlock(kept, quarantine.cast(QUARANTINE_SCHEMA))
