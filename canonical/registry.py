"""The canonical model registry in PostgreSQL (schema `canonical_registry`, migration 3).

Every model version is registered with its definition and schema hash; a frozen version can never
change (declare a new version with an upgrade instead). Declared upgrades are stored with their
steps, so any process can find an upgrade path and apply it to tables and documents.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager as ContextManager
from contextlib import nullcontext
from typing import Any

import pandas as pd
import pyarrow as pa
from sqlalchemy import Engine, text

from canonical import schemas
from canonical.model import (MODEL_V1, ROOT_KEY, VERSION_FIELD, AddColumn, ModelVersion, PolicyDocument,
                             Upgrade, canonical_json, conform_table, validate_document)
from canonical.tables import V1
from canonical.v2 import MODEL_V2, V2

VERSIONS: dict[str, ModelVersion] = {V1: MODEL_V1, V2: MODEL_V2}

# Arbitrary constant: the advisory lock key that serialises registrations.
_REGISTRY_LOCK = 0x0CA40A1C


class RegistryError(Exception):
    """A registry operation that cannot be done; the message names the version and the problem."""


class UnknownVersionError(RegistryError, LookupError):
    pass


class NoUpgradePathError(RegistryError):
    pass


class FrozenVersionError(RegistryError):
    """A different definition offered for a frozen version."""

    def __init__(self, version: str, table: str | None, column: str | None, problem: str):
        self.version, self.table, self.column, self.problem = version, table, column, problem
        where = ", ".join(p for p in (f"table {table}" if table else "", f"column {column}" if column else "") if p)
        super().__init__(f"canonical model version {version} is frozen and registered with a different definition: "
                         f"{where + ': ' if where else ''}{problem}. Declare a new version with an upgrade instead.")


def version_key(version: str) -> tuple[Any, ...]:
    """Sort key: numeric semver parts first, then the string."""
    parts = version.split(".")
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts)


def first_difference(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[str | None, str | None, str] | None:
    """The first (table, column, problem) where two contracts (`ModelVersion.contract()`) differ, or None."""
    old_tables, new_tables = old["tables"], new["tables"]
    for name in [*old_tables, *(n for n in new_tables if n not in old_tables)]:
        if name not in new_tables:
            return name, None, "table removed"
        if name not in old_tables:
            return name, None, "table added"
        a, b = old_tables[name], new_tables[name]
        a_cols = {c["name"]: c for c in a["columns"]}
        b_cols = {c["name"]: c for c in b["columns"]}
        for column in a["columns"]:
            other = b_cols.get(column["name"])
            if other is None:
                return name, column["name"], "column removed"
            for attr in ("type", "required", "codes"):
                if column[attr] != other[attr]:
                    return name, column["name"], f"{attr} changed from {column[attr]!r} to {other[attr]!r}"
        for column in b["columns"]:
            if column["name"] not in a_cols:
                return name, column["name"], "column added"
        for x, y in zip(a["columns"], b["columns"]):
            if x["name"] != y["name"]:
                return name, y["name"], f"column order changed (was {x['name']} at this position)"
        if a["key"] != b["key"]:
            return name, None, f"key changed from {a['key']} to {b['key']}"
    return None


class ModelRegistry:
    """Model versions and upgrades, stored in PostgreSQL (`engine` must be migrated, e.g. `get_engine`)."""

    def __init__(self, engine: Engine, record: Callable[[str, dict], ContextManager] | None = None):
        """`record(operation, payload)`: the context a registration writes in (the WAL's `WalStore.action`; the
        database refuses writes outside an intent). Without it, registrations must run inside an open intent."""
        self.engine = engine
        self.record = record or (lambda operation, payload: nullcontext())
        self._frozen_cache: dict[str, ModelVersion] = {}

    # -- registration -----------------------------------------------------------------------

    def register(self, version_def: ModelVersion) -> str:
        """Store a version and its declared upgrades: "registered", "unchanged" or "updated" (a draft changed or
        was frozen). Raises FrozenVersionError when a frozen version is offered a different definition."""
        version = version_def.version
        version_def.document_model()  # refuses definitions that cannot make documents
        contract, digest = version_def.contract(), version_def.schema_hash()
        if self._registered_as(version_def, digest):
            return "unchanged"
        with self.record("register_model_version", {"version": version, "schema_hash": digest,
                                                    "frozen": version_def.frozen}):
            outcome = self._register(version_def, contract, digest)
        self._frozen_cache.pop(version, None)
        return outcome

    def _registered_as(self, version_def: ModelVersion, digest: str) -> bool:
        """Whether the version and its upgrades are stored exactly so already (nothing to write)."""
        with self.engine.connect() as conn:
            row = conn.execute(text("SELECT schema_hash, frozen FROM canonical_registry.model_versions "
                                    "WHERE version = :v"), {"v": version_def.version}).one_or_none()
            if row is None or row.schema_hash != digest or (version_def.frozen and not row.frozen):
                return False
            for upgrade in version_def.upgrades:
                steps = conn.execute(text("SELECT steps FROM canonical_registry.upgrades WHERE from_version = :f "
                                          "AND to_version = :t"),
                                     {"f": upgrade.from_version, "t": upgrade.to_version}).scalar_one_or_none()
                if steps is None or canonical_json(steps) != canonical_json(upgrade.steps_json()):
                    return False
        return True

    def _register(self, version_def: ModelVersion, contract, digest: str) -> str:
        version = version_def.version
        with self.engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _REGISTRY_LOCK})
            row = conn.execute(text("SELECT schema_hash, definition, frozen FROM canonical_registry.model_versions "
                                    "WHERE version = :v"), {"v": version}).one_or_none()
            if row is None:
                conn.execute(text("INSERT INTO canonical_registry.model_versions "
                                  "(version, schema_hash, definition, frozen) "
                                  "VALUES (:v, :h, CAST(:d AS jsonb), :f)"),
                             {"v": version, "h": digest, "d": canonical_json(version_def.definition()),
                              "f": version_def.frozen})
                outcome = "registered"
            elif row.schema_hash == digest:
                outcome = "unchanged"
                if version_def.frozen and not row.frozen:
                    conn.execute(text("UPDATE canonical_registry.model_versions SET frozen = true WHERE version = :v"),
                                 {"v": version})
                    outcome = "updated"
            else:
                stored = ModelVersion.from_definition(row.definition)
                if stored.schema_hash() != row.schema_hash:
                    raise RegistryError(f"canonical model version {version}: the stored definition does not match "
                                        f"its stored schema hash {row.schema_hash}")
                if row.frozen:
                    table, column, problem = first_difference(stored.contract(), contract) or (
                        None, None, "schema hash differs")
                    raise FrozenVersionError(version, table, column, problem)
                conn.execute(text("UPDATE canonical_registry.model_versions SET schema_hash = :h, "
                                  "definition = CAST(:d AS jsonb), frozen = :f, registered_at = now() "
                                  "WHERE version = :v"),
                             {"v": version, "h": digest, "d": canonical_json(version_def.definition()),
                              "f": version_def.frozen})
                outcome = "updated"
            frozen = version_def.frozen or (row is not None and row.frozen)
            for upgrade in version_def.upgrades:
                if self._register_upgrade(conn, upgrade, version_def, frozen) and outcome == "unchanged":
                    outcome = "updated"
        return outcome

    def register_all(self, versions: Iterable[ModelVersion] | None = None) -> dict[str, str]:
        """Register versions in version order (default: the built-in `VERSIONS`)."""
        ordered = sorted(versions if versions is not None else VERSIONS.values(), key=lambda m: version_key(m.version))
        return {mv.version: self.register(mv) for mv in ordered}

    def _register_upgrade(self, conn, upgrade: Upgrade, target: ModelVersion, frozen: bool) -> bool:
        where = f"upgrade {upgrade.from_version} -> {upgrade.to_version}"
        if upgrade.to_version != target.version:
            raise RegistryError(f"{where}: declared on version {target.version}, not on {upgrade.to_version}")
        row = conn.execute(text("SELECT definition FROM canonical_registry.model_versions WHERE version = :v"),
                           {"v": upgrade.from_version}).one_or_none()
        if row is None:
            raise RegistryError(f"{where}: version {upgrade.from_version} is not registered; register it first")
        source = ModelVersion.from_definition(row.definition)
        try:
            produced = ModelVersion(target.version, upgrade.apply_definition(source.tables))
        except ValueError as error:
            raise RegistryError(f"{where}: {error}") from error
        difference = first_difference(produced.contract(), target.contract())
        if difference:
            table, column, problem = difference
            raise RegistryError(f"{where}: the steps do not produce version {target.version}: table {table}"
                                f"{f', column {column}' if column else ''}: {problem} (steps result -> "
                                f"{target.version})")
        steps = canonical_json(upgrade.steps_json())
        existing = conn.execute(text("SELECT description, steps FROM canonical_registry.upgrades "
                                     "WHERE from_version = :f AND to_version = :t"),
                                {"f": upgrade.from_version, "t": upgrade.to_version}).one_or_none()
        if existing is not None:
            if canonical_json(existing.steps) == steps:
                return False
            if frozen:
                raise FrozenVersionError(target.version, None, None,
                                         f"{where} is registered with different steps")
        conn.execute(text("INSERT INTO canonical_registry.upgrades (from_version, to_version, description, steps) "
                          "VALUES (:f, :t, :d, CAST(:s AS jsonb)) ON CONFLICT (from_version, to_version) "
                          "DO UPDATE SET description = excluded.description, steps = excluded.steps"),
                     {"f": upgrade.from_version, "t": upgrade.to_version, "d": upgrade.description, "s": steps})
        return True

    # -- lookups ----------------------------------------------------------------------------

    def get(self, version: str) -> ModelVersion:
        """A registered version (the built-in definition object when it matches the stored hash)."""
        cached = self._frozen_cache.get(version)
        if cached is not None:
            return cached
        with self.engine.connect() as conn:
            row = conn.execute(text("SELECT schema_hash, definition, frozen FROM canonical_registry.model_versions "
                                    "WHERE version = :v"), {"v": version}).one_or_none()
            if row is None:
                raise UnknownVersionError(f"canonical model version {version} is not registered "
                                          f"(registered: {', '.join(self._versions(conn)) or 'none'})")
            upgrades = tuple(self._upgrades(conn, to_version=version))
        builtin = VERSIONS.get(version)
        if builtin is not None and builtin.schema_hash() == row.schema_hash:
            mv = ModelVersion(version, builtin.tables, row.frozen, upgrades, builtin.description)
        else:
            mv = ModelVersion.from_definition(row.definition, row.frozen, upgrades)
            if mv.schema_hash() != row.schema_hash:
                raise RegistryError(f"canonical model version {version}: the stored definition does not match its "
                                    f"stored schema hash {row.schema_hash}")
        if mv.frozen:
            self._frozen_cache[version] = mv
        return mv

    def versions(self) -> list[str]:
        with self.engine.connect() as conn:
            return self._versions(conn)

    def schema_hash(self, version: str) -> str:
        with self.engine.connect() as conn:
            digest = conn.execute(text("SELECT schema_hash FROM canonical_registry.model_versions WHERE version = :v"),
                                  {"v": version}).scalar_one_or_none()
        if digest is None:
            raise UnknownVersionError(f"canonical model version {version} is not registered")
        return digest

    @staticmethod
    def _versions(conn) -> list[str]:
        rows = conn.execute(text("SELECT version FROM canonical_registry.model_versions")).scalars().all()
        return sorted(rows, key=version_key)

    @staticmethod
    def _upgrades(conn, to_version: str | None = None) -> list[Upgrade]:
        sql = "SELECT from_version, to_version, description, steps FROM canonical_registry.upgrades"
        rows = conn.execute(text(sql + (" WHERE to_version = :t" if to_version else "")), {"t": to_version})
        return [Upgrade(r.from_version, r.to_version, r.description, tuple(AddColumn.from_json(s) for s in r.steps))
                for r in rows]

    # -- validation -------------------------------------------------------------------------

    def validate_table(self, version: str, name: str, frame: pd.DataFrame | pa.Table) -> list[schemas.SchemaFailure]:
        """Schema failures of a frame against a registered version's table ([] when it passes)."""
        return schemas.validate_table(name, frame, self.get(version))

    def validate_document(self, version: str, doc_dict: Mapping[str, Any]) -> PolicyDocument:
        """The validated `Policy` document of a registered version; DocumentValidationError names what is wrong."""
        return validate_document(doc_dict, self.get(version).document_model(module=__name__))

    # -- upgrades ---------------------------------------------------------------------------

    def upgrade_path(self, from_version: str, to_version: str) -> list[Upgrade]:
        """The fewest declared upgrades leading from one registered version to another ([] for the same)."""
        known = self.versions()
        for v in (from_version, to_version):
            if v not in known:
                raise UnknownVersionError(f"canonical model version {v} is not registered "
                                          f"(registered: {', '.join(known) or 'none'})")
        if from_version == to_version:
            return []
        with self.engine.connect() as conn:
            upgrades = self._upgrades(conn)
        steps_from: dict[str, list[Upgrade]] = {}
        for upgrade in upgrades:
            steps_from.setdefault(upgrade.from_version, []).append(upgrade)
        previous: dict[str, Upgrade] = {}
        queue = deque([from_version])
        while queue:
            current = queue.popleft()
            for upgrade in sorted(steps_from.get(current, []), key=lambda u: version_key(u.to_version)):
                if upgrade.to_version in previous or upgrade.to_version == from_version:
                    continue
                previous[upgrade.to_version] = upgrade
                if upgrade.to_version == to_version:
                    path = [upgrade]
                    while path[0].from_version != from_version:
                        path.insert(0, previous[path[0].from_version])
                    return path
                queue.append(upgrade.to_version)
        declared = ", ".join(f"{u.from_version} -> {u.to_version}" for u in upgrades) or "none"
        raise NoUpgradePathError(f"no upgrade path from canonical model version {from_version} to {to_version} "
                                 f"(declared upgrades: {declared})")

    def upgrade_tables(self, tables: Mapping[str, pa.Table | pd.DataFrame], from_version: str,
                       to_version: str) -> dict[str, pa.Table]:
        """Tables of one version as arrow tables of another, by the declared steps (tables given only)."""
        source, target = self.get(from_version), self.get(to_version)
        path = self.upgrade_path(from_version, to_version)
        result = {name: conform_table(name, data, source) for name, data in tables.items()}
        for upgrade in path:
            for step in upgrade.steps:
                result = {name: step.apply_table(name, data) for name, data in result.items()}
        return {name: conform_table(name, data, target) for name, data in result.items()}

    def upgrade_document(self, doc: PolicyDocument | Mapping[str, Any], from_version: str,
                         to_version: str) -> PolicyDocument:
        """A policy document of one version as a validated document of another, by the declared steps."""
        source = self.get(from_version).document_model(module=__name__)
        current = validate_document(doc if isinstance(doc, PolicyDocument) else
                                    {VERSION_FIELD: from_version, **doc}, source)
        if current.model_version != from_version:
            raise RegistryError(f"policy {getattr(current, ROOT_KEY)!r} is a {current.model_version} document, "
                                f"not {from_version}")
        path = self.upgrade_path(from_version, to_version)
        data = current.model_dump()
        for upgrade in path:
            for step in upgrade.steps:
                data = step.apply_document(data)
        data[VERSION_FIELD] = to_version
        return validate_document(data, self.get(to_version).document_model(module=__name__))

