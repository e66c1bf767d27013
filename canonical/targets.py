"""The versioned canonical -> new-platform mapping (no Dagster, no database).

`canonical/mappings/new_platform.yaml` says how each normalized table of the new policy platform
(policy, party, coverage, rating, payment, endorsement, document, claim link) is filled from the
canonical tables. The same mapping is applied two independent ways:

- `expected_select`: as SQL over the canonical tables, where the data is: the load (`strict`: an unknown code
  fails it) inserts with it, and reconciliation compares what the platform holds with it, per policy, by
  content hash;
- `transform`: vectorized over Arrow, the reference implementation; tests hold the SQL to it, row by row.
"""

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from canonical.tables import MONEY, V1_TABLES
from legacy.errors import InputError, load_yaml

MAPPING_FILE = Path(__file__).parent / "mappings" / "new_platform.yaml"
_TYPES = {"text": pa.string(), "int64": pa.int64(), "date": pa.date32(), "decimal(5,2)": pa.decimal128(5, 2),
          "decimal(18,2)": MONEY}


class TargetMappingError(InputError):
    """A target mapping that cannot be used, or a value it cannot translate; the message names table and column."""


@dataclass(frozen=True)
class ColumnRule:
    name: str
    type: pa.DataType
    source: str | None = None  # canonical column
    codes: tuple[tuple[str, str], ...] | None = None
    const: object = None


@dataclass(frozen=True)
class TargetSource:
    table: str  # canonical table
    columns: tuple[ColumnRule, ...]


@dataclass(frozen=True)
class TargetTable:
    name: str
    key: tuple[str, ...]
    columns: tuple[str, ...]
    types: tuple[pa.DataType, ...]
    sources: tuple[TargetSource, ...]

    def arrow_schema(self) -> pa.Schema:
        return pa.schema([pa.field(n, t) for n, t in zip(self.columns, self.types)])

    @property
    def money_columns(self) -> list[str]:
        return [n for n, t in zip(self.columns, self.types) if t == MONEY]


@dataclass(frozen=True)
class TargetMapping:
    target: str
    version: str
    model_version: str
    tables: dict[str, TargetTable]
    hash: str


@lru_cache(maxsize=8)
def load_target_mapping(path: Path = MAPPING_FILE) -> TargetMapping:
    """Read and check the mapping: canonical tables and columns exist, every source fills every column with
    one type, codes cover the canonical code lists."""
    spec = load_yaml(path, error=TargetMappingError).data
    where = Path(path).name
    tables = {}
    for name, t in spec["tables"].items():
        sources = []
        for s in t["sources"]:
            canonical = V1_TABLES.get(s["from"])
            if canonical is None:
                raise TargetMappingError(f"{where}: {name}: no canonical table {s['from']!r}")
            sources.append(TargetSource(canonical.name, tuple(_rule(where, name, canonical, col, rule)
                                                              for col, rule in s["columns"].items())))
        columns = tuple(r.name for r in sources[0].columns)
        types = tuple(r.type for r in sources[0].columns)
        for s in sources[1:]:
            if tuple(r.name for r in s.columns) != columns or tuple(r.type for r in s.columns) != types:
                raise TargetMappingError(f"{where}: {name}: source {s.table} must fill the columns "
                                         f"{', '.join(columns)} in that order with the same types")
        if "policy_number" not in columns or not set(t["key"]) <= set(columns):
            raise TargetMappingError(f"{where}: {name}: needs policy_number and its key columns {t['key']}")
        tables[name] = TargetTable(name, tuple(t["key"]), columns, types, tuple(sources))
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()
    return TargetMapping(spec["target"], str(spec["version"]), str(spec["model_version"]), tables, digest)


def _rule(where: str, table: str, canonical, column: str, rule) -> ColumnRule:
    if isinstance(rule, str):
        rule = {"from": rule}
    if "const" in rule:
        return ColumnRule(column, _TYPES[rule.get("type", "text")], const=rule["const"])
    try:
        source = canonical.column(rule["from"])
    except KeyError:
        raise TargetMappingError(f"{where}: {table}.{column}: canonical table {canonical.name} has no column "
                                 f"{rule['from']!r}") from None
    codes = rule.get("codes")
    if codes is None:
        return ColumnRule(column, source.type, source=source.name)
    missing = sorted(set(source.codes or ()) - set(codes))
    if missing:
        raise TargetMappingError(f"{where}: {table}.{column}: codes do not cover canonical "
                                 f"{canonical.name}.{source.name} values {', '.join(missing)}")
    return ColumnRule(column, pa.string(), source=source.name, codes=tuple((str(k), str(v)) for k, v in codes.items()))


def transform(table: TargetTable, source: TargetSource, frame: pa.Table) -> pa.Table:
    """Canonical rows (Arrow) -> rows of the target table, column by column."""
    arrays = []
    for rule, dtype in zip(source.columns, table.types):
        if rule.source is None:
            arrays.append(pa.nulls(frame.num_rows, dtype) if rule.const is None
                          else pa.array([rule.const] * frame.num_rows, dtype))
            continue
        values = frame.column(rule.source)
        if rule.codes is not None:
            keys = pa.array([k for k, _ in rule.codes], pa.string())
            index = pc.index_in(values, value_set=keys)
            unknown = pc.and_(pc.is_null(index), pc.is_valid(values))
            if pc.any(unknown).as_py():
                bad = values.filter(unknown)[0].as_py()
                raise TargetMappingError(f"{table.name}.{rule.name}: canonical {source.table}.{rule.source} value "
                                         f"{bad!r} has no code on the new platform")
            values = pc.take(pa.array([v for _, v in rule.codes], pa.string()), index)
        arrays.append(values.cast(dtype))
    return pa.Table.from_arrays(arrays, schema=table.arrow_schema())


def _sql_type(dtype: pa.DataType) -> str:
    from resources.sqlnames import pg_type  # a plain naming helper, no database access

    return pg_type(dtype)


def _literal(value) -> str:
    return "NULL" if value is None else "'" + str(value).replace("'", "''") + "'"


def expected_select(table: TargetTable, source: TargetSource, alias: str = "c", *, strict: bool = False) -> list[str]:
    """The SQL expressions over canonical `alias` that yield the target columns, each cast to its target type.
    `strict` (the load): a canonical value with no code on the new platform raises (`data_mash.no_code`, migration
    17), as `transform` does, instead of becoming NULL (what reconciliation compares against)."""
    exprs = []
    for rule, dtype in zip(source.columns, table.types):
        if rule.source is None:
            expr = _literal(rule.const)
        elif rule.codes is not None:
            cases = " ".join(f"WHEN {_literal(k)} THEN {_literal(v)}" for k, v in rule.codes)
            column = f"{alias}.{rule.source}"
            if strict:
                what = _literal(f"{table.name}.{rule.name}: canonical {source.table}.{rule.source}")
                searched = " ".join(f"WHEN {column} = {_literal(k)} THEN {_literal(v)}" for k, v in rule.codes)
                expr = f"CASE WHEN {column} IS NULL THEN NULL {searched} ELSE data_mash.no_code({what}, {column}::text) END"
            else:
                expr = f"CASE {column} {cases} END"
        else:
            expr = f"{alias}.{rule.source}"
        exprs.append(f"CAST({expr} AS {_sql_type(dtype)})")
    return exprs


def target_ddl(mapping: TargetMapping, schema: str) -> list[str]:
    """CREATE TABLE statements for the target schema: the mapped columns, plus the wave and WAL entry of each row."""
    statements = []
    for t in mapping.tables.values():
        columns = ", ".join(f"{n} {_sql_type(d)}" + (" NOT NULL" if n in t.key else "")
                            for n, d in zip(t.columns, t.types))
        statements.append(f"CREATE TABLE {schema}.{t.name} ({columns}, wave_id text NOT NULL, wal_id bigint NOT NULL, "
                          f"loaded_at timestamptz NOT NULL, PRIMARY KEY ({', '.join(t.key)}))")
        statements.append(f"CREATE INDEX {t.name}_by_wal ON {schema}.{t.name} (wal_id)")
    return statements
