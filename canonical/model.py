"""Canonical Policy Model, document form: one frozen pydantic document per policy.

The document models are generated from a version's table definitions (`canonical/tables.py` for
v1), so the tabular and document forms cannot drift. This module also holds what a model version
is (`ModelVersion`, `Upgrade`, `AddColumn`), its schema hash, and the conversions between tables
and documents (`tables_to_documents`, `documents_to_tables`).
"""

import datetime as dt
import hashlib
import itertools
import json
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from functools import cached_property
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import pyarrow as pa
from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError,
                      create_model, model_validator)

from canonical.tables import V1, V1_TABLES, Column, Table

if TYPE_CHECKING:
    import pandas as pd

ROOT_TABLE = "policies"
ROOT_KEY = "policy_id"
VERSION_FIELD = "model_version"

# Money columns that can never be negative (premiums can: negative premiums are data-quality findings).
NON_NEGATIVE: frozenset[tuple[str, str]] = frozenset({("policies", "face_amount"), ("coverages", "limit_amount")})

_CLASS_NAMES = {"policies": "Policy", "coverages": "Coverage", "parties": "Party", "payments": "Payment",
                "endorsements": "Endorsement", "correspondence": "Correspondence", "claim_links": "ClaimLink"}


# ---------------------------------------------------------------------------------------------
# Arrow types as stable strings (the hash must not depend on pyarrow's repr)

_SIMPLE_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(), "large_string": pa.large_string(), "bool": pa.bool_(),
    "int8": pa.int8(), "int16": pa.int16(), "int32": pa.int32(), "int64": pa.int64(),
    "float32": pa.float32(), "float64": pa.float64(), "date32": pa.date32(),
}
_DECIMAL = re.compile(r"decimal128\((\d+),(\d+)\)")


def type_name(arrow_type: pa.DataType) -> str:
    """The canonical string of a column type, e.g. `decimal128(18,2)`, `date32`, `string`."""
    if pa.types.is_decimal128(arrow_type):
        return f"decimal128({arrow_type.precision},{arrow_type.scale})"
    for name, simple in _SIMPLE_TYPES.items():
        if arrow_type == simple:
            return name
    raise TypeError(f"arrow type {arrow_type} is not supported in a canonical model")


def parse_type(name: str) -> pa.DataType:
    """Inverse of `type_name`."""
    if name in _SIMPLE_TYPES:
        return _SIMPLE_TYPES[name]
    match = _DECIMAL.fullmatch(name)
    if match:
        return pa.decimal128(int(match[1]), int(match[2]))
    raise TypeError(f"unknown canonical column type {name!r}")


# ---------------------------------------------------------------------------------------------
# Model versions and declared upgrades


@dataclass(frozen=True)
class AddColumn:
    """Upgrade step: append an optional column to a table; existing rows get nulls."""

    table: str
    column: Column

    def __post_init__(self) -> None:
        if self.column.required:
            raise ValueError(f"upgrade step add_column {self.table}.{self.column.name}: an added column must be "
                             "optional (existing rows get nulls)")
        type_name(self.column.type)

    def apply_definition(self, tables: Mapping[str, Table], version: str) -> dict[str, Table]:
        if self.table not in tables:
            raise ValueError(f"upgrade from {version}: add_column {self.table}.{self.column.name}: no table {self.table}")
        table = tables[self.table]
        if self.column.name in table.names:
            raise ValueError(f"upgrade from {version}: add_column {self.table}.{self.column.name}: column exists")
        return {**tables, self.table: replace(table, columns=(*table.columns, self.column))}

    def apply_table(self, name: str, data: pa.Table) -> pa.Table:
        if name != self.table:
            return data
        if self.column.name in data.column_names:
            raise ValueError(f"add_column {self.table}.{self.column.name}: the table already has that column")
        return data.append_column(pa.field(self.column.name, self.column.type),
                                  pa.nulls(data.num_rows, self.column.type))

    def apply_document(self, doc: dict[str, Any]) -> dict[str, Any]:
        if self.table == ROOT_TABLE:
            doc.setdefault(self.column.name, None)
        else:
            for child in doc.get(self.table) or []:
                child.setdefault(self.column.name, None)
        return doc

    def to_json(self) -> dict[str, Any]:
        return {"op": "add_column", "table": self.table, "column": _column_json(self.column)}

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> "AddColumn":
        if data.get("op") != "add_column":
            raise ValueError(f"unknown upgrade step {data.get('op')!r}")
        return AddColumn(data["table"], _column_from_json(data["column"]))


@dataclass(frozen=True)
class Upgrade:
    """A declared upgrade from one model version to the next: ordered steps over tables and documents."""

    from_version: str
    to_version: str
    description: str
    steps: tuple[AddColumn, ...]

    def apply_definition(self, tables: Mapping[str, Table]) -> dict[str, Table]:
        result = dict(tables)
        for step in self.steps:
            result = step.apply_definition(result, self.from_version)
        return result

    def steps_json(self) -> list[dict[str, Any]]:
        return [step.to_json() for step in self.steps]


@dataclass(frozen=True)
class ModelVersion:
    """One version of the canonical model: its tables, whether it is frozen, and the upgrades into it."""

    version: str
    tables: Mapping[str, Table]
    frozen: bool = False
    upgrades: tuple[Upgrade, ...] = ()
    description: str = ""

    def table(self, name: str) -> Table:
        try:
            return self.tables[name]
        except KeyError:
            raise KeyError(f"canonical model {self.version} has no table {name!r} "
                           f"(tables: {', '.join(self.tables)})") from None

    def contract(self) -> dict[str, Any]:
        """What the schema hash covers: table names, keys, and per column name, type, required, codes."""
        return {"tables": {
            name: {"key": list(table.key),
                   "columns": [{"name": c.name, "type": type_name(c.type), "required": c.required,
                                "codes": list(c.codes) if c.codes is not None else None} for c in table.columns]}
            for name, table in self.tables.items()}}

    def schema_hash(self) -> str:
        return self._hash

    @cached_property
    def _hash(self) -> str:
        return schema_hash(self.contract())

    def definition(self) -> dict[str, Any]:
        """The full definition as JSON (the contract plus descriptions and PII flags; tables in order)."""
        return {"version": self.version, "description": self.description,
                "tables": [{"name": name, "description": t.description, "key": list(t.key),
                            "columns": [_column_json(c) for c in t.columns]} for name, t in self.tables.items()]}

    @classmethod
    def from_definition(cls, definition: Mapping[str, Any], frozen: bool = False,
                        upgrades: tuple[Upgrade, ...] = ()) -> "ModelVersion":
        tables = {t["name"]: Table(t["name"], tuple(_column_from_json(c) for c in t["columns"]), tuple(t["key"]),
                                   t.get("description", ""))
                  for t in definition["tables"]}
        return cls(definition["version"], tables, frozen, upgrades, definition.get("description", ""))

    def document_model(self, module: str | None = None) -> type["PolicyDocument"]:
        """The pydantic `Policy` class of this version (built once per version and schema hash)."""
        key = (self.version, self.schema_hash())
        model = _DOCUMENT_MODELS.get(key)
        if model is None:
            model = _DOCUMENT_MODELS[key] = _build_document_model(self, module or __name__)
        return model


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def schema_hash(contract: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of a version's contract."""
    return hashlib.sha256(canonical_json(contract).encode("ascii")).hexdigest()


def _column_json(c: Column) -> dict[str, Any]:
    return {"name": c.name, "type": type_name(c.type), "required": c.required, "pii": c.pii,
            "codes": list(c.codes) if c.codes is not None else None, "description": c.description}


def _column_from_json(c: Mapping[str, Any]) -> Column:
    return Column(c["name"], parse_type(c["type"]), bool(c.get("required", False)), bool(c.get("pii", False)),
                  tuple(c["codes"]) if c.get("codes") is not None else None, c.get("description", ""))


# ---------------------------------------------------------------------------------------------
# Document models


class DocumentValidationError(ValueError):
    """A policy document that does not fit its model version; `problems` are (table, row, column, message)."""

    def __init__(self, version: str, policy_id: Any, problems: list[tuple[str, int | None, str | None, str]]):
        self.version, self.policy_id, self.problems = version, policy_id, problems
        shown = "; ".join(f"{t}{f'[{r}]' if r is not None else ''}{f'.{c}' if c else ''}: {m}"
                          for t, r, c, m in problems[:10])
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        super().__init__(f"canonical model {version}, policy {policy_id!r}: {shown}{more}")


class CanonicalDocument(BaseModel):
    """Base of every canonical document model: immutable, no unknown fields."""

    # hide_input_in_errors: a pydantic error's text must not carry personal data (ours masks PII columns).
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)
    canonical_table: ClassVar[Table]


class PolicyDocument(CanonicalDocument):
    """Base of a version's `Policy`: the policy row plus its child rows, child keys unique per policy."""

    canonical_version: ClassVar[ModelVersion]
    child_models: ClassVar[dict[str, type[CanonicalDocument]]]

    @model_validator(mode="after")
    def _child_keys_unique(self) -> "PolicyDocument":
        for name, child in self.child_models.items():
            key = [c for c in child.canonical_table.key if c != ROOT_KEY]
            seen: set[tuple[Any, ...]] = set()
            for row, item in enumerate(getattr(self, name)):
                value = tuple(getattr(item, c) for c in key)
                if value in seen:
                    raise ValueError(f"{name}[{row}]: duplicate key {dict(zip(key, value))}")
                seen.add(value)
        return self


def _no_float(value: Any) -> Any:
    if isinstance(value, (float, bool)):
        raise ValueError(f"exact decimal expected (Decimal, int or str), got {type(value).__name__} {value!r}")
    return value


def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"integer expected, got bool {value!r}")
    return value


def _no_number(value: Any) -> Any:
    if isinstance(value, (int, float, Decimal)):
        raise ValueError(f"date expected, got number {value!r}")
    return value


def _quantizer(scale: int):
    exponent = Decimal(1).scaleb(-scale)

    def quantize(value: Decimal) -> Decimal:
        value = value.quantize(exponent)
        return abs(value) if value == 0 else value  # no negative zero

    return quantize


def _python_type(table: Table, c: Column) -> Any:
    t = c.type
    if c.codes is not None:
        if not pa.types.is_string(t):
            raise TypeError(f"table {table.name}, column {c.name}: codes need a string column, not {t}")
        return Literal[c.codes]
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return str
    if pa.types.is_boolean(t):
        return bool
    if pa.types.is_integer(t):
        bits = t.bit_width - 1
        return Annotated[int, BeforeValidator(_no_bool), Field(ge=-(2 ** bits), le=2 ** bits - 1)]
    if pa.types.is_floating(t):
        return float
    if pa.types.is_date32(t):
        return Annotated[dt.date, BeforeValidator(_no_number)]
    if pa.types.is_decimal128(t):
        bound = {"ge": 0} if (table.name, c.name) in NON_NEGATIVE else {}
        return Annotated[Decimal, BeforeValidator(_no_float),
                         Field(max_digits=t.precision, decimal_places=t.scale, allow_inf_nan=False, **bound),
                         AfterValidator(_quantizer(t.scale))]
    raise TypeError(f"table {table.name}, column {c.name}: type {t} is not supported")


def _field(table: Table, c: Column) -> tuple[Any, Any]:
    python_type = _python_type(table, c)
    extra = {"description": c.description or None, "repr": not c.pii,
             "json_schema_extra": {"pii": True} if c.pii else None}
    if c.required:
        return python_type, Field(..., **extra)
    return python_type | None, Field(None, **extra)


def _class_name(table: str) -> str:
    return _CLASS_NAMES.get(table) or "".join(part.title() for part in table.split("_"))


def _build_document_model(mv: ModelVersion, module: str) -> type[PolicyDocument]:
    where = f"canonical model {mv.version}"
    if ROOT_TABLE not in mv.tables or ROOT_KEY not in mv.tables[ROOT_TABLE].names:
        raise ValueError(f"{where}: needs a {ROOT_TABLE} table with a {ROOT_KEY} column")
    root = mv.tables[ROOT_TABLE]
    children: dict[str, type[CanonicalDocument]] = {}
    for name, table in mv.tables.items():
        if name == ROOT_TABLE:
            continue
        if ROOT_KEY not in table.key:
            raise ValueError(f"{where}: child table {name} must be keyed by {ROOT_KEY}")
        if name in root.names or name == VERSION_FIELD:
            raise ValueError(f"{where}: child table {name} collides with a {ROOT_TABLE} field")
        # an unchanged table keeps its class across versions, so upgrades can carry child rows as they are
        key = schema_hash({"table": name, **ModelVersion(mv.version, {name: table}).contract()})
        child = _CHILD_MODELS.get(key)
        if child is None:
            fields = {c.name: _field(table, c) for c in table.columns if c.name != ROOT_KEY}
            child = _CHILD_MODELS[key] = create_model(_class_name(name), __base__=CanonicalDocument,
                                                      __module__=module, __doc__=table.description, **fields)
            child.canonical_table = table
        children[name] = child
    if VERSION_FIELD in root.names:
        raise ValueError(f"{where}: {ROOT_TABLE} must not have a {VERSION_FIELD} column")
    fields = {c.name: _field(root, c) for c in root.columns}
    fields[VERSION_FIELD] = (Literal[mv.version], mv.version)
    for name, child in children.items():
        fields[name] = (list[child], Field(default_factory=list))
    policy = create_model(_class_name(ROOT_TABLE), __base__=PolicyDocument, __module__=module,
                          __doc__=root.description, **fields)
    policy.canonical_table = root
    policy.canonical_version = mv
    policy.child_models = children
    return policy


_DOCUMENT_MODELS: dict[tuple[str, str], type[PolicyDocument]] = {}
_CHILD_MODELS: dict[str, type[CanonicalDocument]] = {}

MODEL_V1 = ModelVersion(V1, V1_TABLES, frozen=True, description="Canonical Policy Model v1 (canonical/tables.py)")

Policy = MODEL_V1.document_model(module=__name__)
Coverage = Policy.child_models["coverages"]
Party = Policy.child_models["parties"]
Payment = Policy.child_models["payments"]
Endorsement = Policy.child_models["endorsements"]
Correspondence = Policy.child_models["correspondence"]
ClaimLink = Policy.child_models["claim_links"]


def validate_document(doc: Mapping[str, Any] | PolicyDocument,
                      model: type[PolicyDocument] = Policy) -> PolicyDocument:
    """Validate one policy document (python or JSON values) against a version's `Policy` model."""
    if isinstance(doc, model):
        return doc
    if isinstance(doc, PolicyDocument):
        doc = doc.model_dump()
    try:
        return model.model_validate(doc)
    except ValidationError as error:
        raise DocumentValidationError(model.canonical_version.version,
                                      doc.get(ROOT_KEY) if isinstance(doc, Mapping) else None,
                                      _problems(error, model)) from error


def _problems(error: ValidationError, model: type[PolicyDocument]) -> list[tuple[str, int | None, str | None, str]]:
    problems = []
    for e in error.errors():
        loc = list(e["loc"])
        # Literal/union errors add the branch to the location; keep table, row and column only.
        if loc and loc[0] in model.child_models:
            table, row = loc[0], loc[1] if len(loc) > 1 and isinstance(loc[1], int) else None
            column = loc[2] if row is not None and len(loc) > 2 else None
        else:
            table, row, column = ROOT_TABLE, None, loc[0] if loc else None
        message = e["msg"].removeprefix("Value error, ")
        if column is not None and e["type"] != "value_error" and not _is_pii(model, table, column):
            message += f" (got {e.get('input')!r})"
        problems.append((table, row, column, message))
    return problems


def _is_pii(model: type[PolicyDocument], table: str, column: Any) -> bool:
    t = model.canonical_version.tables.get(table)
    return bool(t and column in t.names and t.column(column).pii)


# ---------------------------------------------------------------------------------------------
# Tables <-> documents


def conform_table(name: str, data: "pa.Table | pd.DataFrame", version: ModelVersion = MODEL_V1) -> pa.Table:
    """A canonical table as arrow with exactly the version's schema: casts types, adds missing optional columns
    as nulls, refuses unknown or missing required columns."""
    table = version.table(name)
    if not isinstance(data, pa.Table) and type(data).__name__ == "DataFrame":
        import pandas as pd  # late: only frames need it, and it is slow to import

        if isinstance(data, pd.DataFrame):
            data = pa.Table.from_pandas(data, preserve_index=False)
    if not isinstance(data, pa.Table):
        raise TypeError(f"canonical {version.version} table {name}: expected a pyarrow Table or pandas DataFrame, "
                        f"got {type(data).__name__}")
    where = f"canonical {version.version} table {name}"
    unknown = [c for c in data.column_names if c not in table.names]
    if unknown:
        raise ValueError(f"{where}: unknown columns {unknown}")
    arrays = []
    for c in table.columns:
        if c.name not in data.column_names:
            if c.required:
                raise ValueError(f"{where}: required column {c.name} is missing")
            arrays.append(pa.nulls(data.num_rows, c.type))
            continue
        column = data[c.name]
        if column.type != c.type:
            try:
                column = column.cast(c.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
                raise ValueError(f"{where}, column {c.name}: cannot convert {column.type} to "
                                 f"{type_name(c.type)}: {error}") from error
        arrays.append(column)
    return pa.Table.from_arrays(arrays, schema=table.arrow_schema())


def tables_to_documents(tables: Mapping[str, "pa.Table | pd.DataFrame"],
                        model: type[PolicyDocument] = Policy) -> Iterator[PolicyDocument]:
    """One validated document per `policies` row, child rows grouped by policy_id (in table order).

    Raises (before the first document) on duplicate policy ids or child rows without a policy.
    """
    mv = model.canonical_version
    unknown = [name for name in tables if name not in mv.tables]
    if unknown:
        raise ValueError(f"canonical model {mv.version} has no tables {unknown}")
    if ROOT_TABLE not in tables:
        raise ValueError(f"canonical model {mv.version}: tables_to_documents needs the {ROOT_TABLE} table")
    roots = conform_table(ROOT_TABLE, tables[ROOT_TABLE], mv).to_pylist()
    ids = [row[ROOT_KEY] for row in roots]
    if len(set(ids)) != len(ids):
        seen: set[Any] = set()
        dupes = sorted({i for i in ids if i in seen or seen.add(i)}, key=str)[:5]
        raise ValueError(f"canonical {mv.version} table {ROOT_TABLE}: duplicate {ROOT_KEY} {dupes}")
    known = set(ids)
    children: dict[str, dict[Any, list[dict[str, Any]]]] = {}
    for name in model.child_models:
        grouped: dict[Any, list[dict[str, Any]]] = defaultdict(list)
        if name in tables:
            for row in conform_table(name, tables[name], mv).to_pylist():
                grouped[row.pop(ROOT_KEY)].append(row)
        orphans = [pid for pid in grouped if pid not in known]
        if orphans:
            raise ValueError(f"canonical {mv.version} table {name}: rows for {len(orphans)} policies not in "
                             f"{ROOT_TABLE}, e.g. {sorted(orphans, key=str)[:5]}")
        children[name] = grouped
    return _documents(roots, children, model)


def _documents(roots, children, model) -> Iterator[PolicyDocument]:
    for row in roots:
        pid = row[ROOT_KEY]
        for name, grouped in children.items():
            row[name] = grouped.get(pid, [])
        yield validate_document(row, model)


def documents_to_tables(docs: Iterable[PolicyDocument | Mapping[str, Any]],
                        model: type[PolicyDocument] | None = None) -> dict[str, pa.Table]:
    """Every table of the documents' version (empty ones too), money as exact decimal128."""
    iterator = iter(docs)
    first = next(iterator, None)
    if model is None:
        model = type(first) if isinstance(first, PolicyDocument) else Policy
    mv = model.canonical_version
    columns: dict[str, dict[str, list[Any]]] = {name: {c: [] for c in t.names} for name, t in mv.tables.items()}
    root = mv.tables[ROOT_TABLE]
    for doc in ([] if first is None else itertools.chain([first], iterator)):
        if not isinstance(doc, model):
            if isinstance(doc, PolicyDocument):
                raise TypeError(f"documents_to_tables: a {doc.model_version} document among "
                                f"{mv.version} documents (policy {doc.policy_id!r}); upgrade it first")
            doc = validate_document(doc, model)
        values = doc.__dict__
        out = columns[ROOT_TABLE]
        for c in root.names:
            out[c].append(values[c])
        for name, child_model in model.child_models.items():
            out = columns[name]
            names = [c for c in child_model.canonical_table.names if c != ROOT_KEY]
            for child in values[name]:
                out[ROOT_KEY].append(doc.policy_id)
                child_values = child.__dict__
                for c in names:
                    out[c].append(child_values[c])
    return {name: pa.Table.from_arrays([pa.array(columns[name][c.name], type=c.type) for c in table.columns],
                                       schema=table.arrow_schema())
            for name, table in mv.tables.items()}
