"""Model registry in PostgreSQL: idempotent registration, frozen versions, stable hashes, v1 -> v2 upgrades."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pytest
from sqlalchemy import text

from canonical import schemas, v2
from canonical.model import (MODEL_V1, AddColumn, DocumentValidationError, ModelVersion, Policy, Upgrade,
                             documents_to_tables, tables_to_documents)
from canonical.registry import (VERSIONS, FrozenVersionError, ModelRegistry, NoUpgradePathError, RegistryError,
                                UnknownVersionError)
from canonical.tables import V1, V1_TABLES, Column
from resources.database import get_engine
from resources.wal import WalStore
from tests.unit.test_canonical_model import sample_policy

REPO = Path(__file__).resolve().parents[2]
# v1 is frozen: this only changes if canonical/tables.py (or the hash recipe) changes, which v1 forbids.
V1_HASH = "264cf6f94ad8531eacf093f6eb447e0c6c221e99fd8fb8f0a8c8a762abf7a03d"


@pytest.fixture
def registry(database_url) -> ModelRegistry:
    """The registry as the product builds it: each registration through the WAL."""
    wal = WalStore(get_engine(database_url))
    return ModelRegistry(get_engine(database_url), record=lambda operation, payload: wal.action(
        namespace="canonical", operation=operation, target="canonical_registry.model_versions", payload=payload))


def v1_tables() -> dict[str, pa.Table]:
    return documents_to_tables([Policy.model_validate(sample_policy()),
                                Policy.model_validate(sample_policy(policy_id="P2", coverages=[]))])


def with_column(mv: ModelVersion, table: str, column: Column, version: str | None = None, **kwargs) -> ModelVersion:
    t = mv.tables[table]
    return ModelVersion(version or mv.version, {**mv.tables, table: replace(t, columns=(*t.columns, column))}, **kwargs)


def test_registration_is_idempotent(registry):
    assert registry.register_all() == {"1.0.0": "registered", "2.0.0": "registered"}
    assert registry.register_all() == {"1.0.0": "unchanged", "2.0.0": "unchanged"}
    assert registry.register(MODEL_V1) == "unchanged"
    assert registry.versions() == ["1.0.0", "2.0.0"]
    assert registry.schema_hash("1.0.0") == MODEL_V1.schema_hash() == V1_HASH
    assert registry.schema_hash("2.0.0") == v2.MODEL_V2.schema_hash() != V1_HASH
    with registry.engine.connect() as conn:
        rows = conn.execute(text("SELECT version, frozen FROM canonical_registry.model_versions ORDER BY 1")).all()
        upgrades = conn.execute(text("SELECT from_version, to_version, steps FROM canonical_registry.upgrades")).all()
    assert [tuple(r) for r in rows] == [("1.0.0", True), ("2.0.0", False)]
    assert [(u.from_version, u.to_version, [s["column"]["name"] for s in u.steps]) for u in upgrades] == [
        ("1.0.0", "2.0.0", ["preferred_language", "paperless"])]
    got = registry.get("1.0.0")
    assert got.frozen and got.tables == V1_TABLES and got.schema_hash() == V1_HASH
    with pytest.raises(UnknownVersionError, match="3.0.0 is not registered"):
        registry.get("3.0.0")


def test_a_frozen_version_refuses_a_different_definition(registry):
    registry.register(MODEL_V1)
    coverages = V1_TABLES["coverages"]
    loosened = replace(coverages, columns=tuple(replace(c, required=False) if c.name == "limit_amount" else c
                                                for c in coverages.columns))
    changes = [
        (ModelVersion(V1, {**V1_TABLES, "coverages": loosened}, frozen=True), "coverages", "limit_amount",
         "required changed from True to False"),
        (with_column(MODEL_V1, "policies", Column("nickname", pa.string())), "policies", "nickname", "column added"),
        (ModelVersion(V1, {n: t for n, t in V1_TABLES.items() if n != "claim_links"}), "claim_links", None,
         "table removed"),
    ]
    for changed, table, column, problem in changes:
        with pytest.raises(FrozenVersionError) as error:
            registry.register(changed)
        assert (error.value.version, error.value.table, error.value.column) == ("1.0.0", table, column)
        assert "version 1.0.0 is frozen" in str(error.value) and problem in str(error.value)
        assert f"table {table}" in str(error.value)
    assert registry.schema_hash("1.0.0") == V1_HASH
    # descriptions are not part of the contract: same hash, nothing to refuse
    assert registry.register(replace(MODEL_V1, description="reworded")) == "unchanged"


def test_a_draft_can_change_until_it_is_frozen(registry):
    draft = ModelVersion("9.0.0", V1_TABLES)
    assert registry.register(draft) == "registered"
    changed = with_column(draft, "payments", Column("reference", pa.string()))
    assert registry.register(changed) == "updated"
    assert registry.get("9.0.0") == changed  # not a built-in: rebuilt from the stored definition
    assert registry.register(replace(changed, frozen=True)) == "updated"
    assert registry.get("9.0.0").frozen
    with pytest.raises(FrozenVersionError, match="9.0.0 is frozen.*table payments, column reference: column removed"):
        registry.register(draft)


def test_schema_hash_is_stable_across_processes(registry):
    registry.register_all()
    # another interpreter, another hash seed (set and dict iteration order), no registry or pandera imported
    script = ("from canonical.model import MODEL_V1\nfrom canonical.v2 import MODEL_V2\n"
              "for v in (MODEL_V1, MODEL_V2): print(v.version, v.schema_hash())")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                         check=True).stdout
    assert dict(line.split() for line in out.splitlines()) == {v: registry.schema_hash(v) for v in VERSIONS}


def test_upgrade_tables_v1_to_v2(registry):
    registry.register_all()
    path = registry.upgrade_path("1.0.0", "2.0.0")
    assert path == [v2.V1_TO_V2]
    tables = v1_tables()
    upgraded = registry.upgrade_tables(tables, "1.0.0", "2.0.0")
    policies = upgraded["policies"]
    assert policies.schema == v2.MODEL_V2.tables["policies"].arrow_schema()
    assert policies.column("preferred_language").null_count == 2 and policies.column("paperless").null_count == 2
    assert policies.select(tables["policies"].column_names).equals(tables["policies"])
    for name in V1_TABLES:
        if name != "policies":
            assert upgraded[name].equals(tables[name]), name
        assert registry.validate_table("2.0.0", name, schemas.to_frame(upgraded[name])) == [], name
    # v1 policies are not v2 policies; pandas input works too
    missing = registry.validate_table("2.0.0", "policies", schemas.to_frame(tables["policies"]))
    assert {(f.column, f.check) for f in missing} == {("preferred_language", "missing column"),
                                                      ("paperless", "missing column")}
    frames = {"policies": schemas.to_frame(tables["policies"])}
    assert registry.upgrade_tables(frames, "1.0.0", "2.0.0")["policies"].equals(policies)
    with pytest.raises(ValueError, match=r"canonical 1.0.0 table policies: unknown columns \['paperless'\]"):
        registry.upgrade_tables({"policies": upgraded["policies"].drop_columns("preferred_language")}, "1.0.0",
                                "2.0.0")


def test_upgrade_a_document_v1_to_v2(registry):
    registry.register_all()
    old = Policy.model_validate(sample_policy())
    new = registry.upgrade_document(old, "1.0.0", "2.0.0")
    assert isinstance(new, v2.Policy) and new.model_version == "2.0.0"
    assert new.preferred_language is None and new.paperless is None
    assert {k: v for k, v in new.model_dump().items() if k not in ("preferred_language", "paperless")} == {
        **old.model_dump(), "model_version": "2.0.0"}
    # the upgraded document and the upgraded tables agree
    upgraded_tables = registry.upgrade_tables(documents_to_tables([old]), "1.0.0", "2.0.0")
    assert list(tables_to_documents(upgraded_tables, model=v2.Policy)) == [new]
    # a plain dict works as well, and a document that is not the version it claims is refused
    assert registry.upgrade_document(old.model_dump(mode="json"), "1.0.0", "2.0.0") == new
    with pytest.raises(DocumentValidationError, match="model_version"):
        registry.upgrade_document(new, "1.0.0", "2.0.0")


def test_upgrade_paths(registry):
    registry.register_all()
    assert registry.upgrade_path("2.0.0", "2.0.0") == []
    with pytest.raises(NoUpgradePathError, match=r"from canonical model version 2.0.0 to 1.0.0 \(declared upgrades: "
                                                  r"1.0.0 -> 2.0.0\)"):
        registry.upgrade_path("2.0.0", "1.0.0")
    with pytest.raises(UnknownVersionError, match="7.0.0 is not registered"):
        registry.upgrade_path("1.0.0", "7.0.0")
    # chains: 1.0.0 -> 2.0.0 -> 3.0.0
    v3_step = Upgrade("2.0.0", "3.0.0", "payments: add reference",
                      (AddColumn("payments", Column("reference", pa.string())),))
    v3 = with_column(v2.MODEL_V2, "payments", Column("reference", pa.string()), "3.0.0", upgrades=(v3_step,))
    registry.register(v3)
    assert registry.upgrade_path("1.0.0", "3.0.0") == [v2.V1_TO_V2, v3_step]
    upgraded = registry.upgrade_tables(v1_tables(), "1.0.0", "3.0.0")
    assert upgraded["payments"].column_names[-1] == "reference"
    assert registry.upgrade_document(sample_policy(), "1.0.0", "3.0.0").payments[0].reference is None


def test_declared_upgrades_must_produce_their_target(registry):
    registry.register_all()
    wrong = Upgrade("2.0.0", "3.0.0", "says payments, does parties",
                    (AddColumn("parties", Column("reference", pa.string())),))
    v3 = with_column(v2.MODEL_V2, "payments", Column("reference", pa.string()), "3.0.0", upgrades=(wrong,))
    with pytest.raises(RegistryError, match="upgrade 2.0.0 -> 3.0.0: the steps do not produce version 3.0.0: "
                                            "table parties, column reference: column removed"):
        registry.register(v3)
    orphan = replace(v3, upgrades=(Upgrade("8.0.0", "3.0.0", "from nowhere", ()),))
    with pytest.raises(RegistryError, match="version 8.0.0 is not registered; register it first"):
        registry.register(orphan)
    assert registry.versions() == ["1.0.0", "2.0.0"]  # nothing half-registered
    with pytest.raises(ValueError, match="must be optional"):
        AddColumn("policies", Column("must_have", pa.string(), required=True))


def test_validate_a_document_against_a_registered_version(registry):
    registry.register_all()
    doc = registry.validate_document("2.0.0", {**sample_policy(), "preferred_language": "es", "paperless": True,
                                               "model_version": "2.0.0"})
    assert isinstance(doc, v2.Policy) and doc.paperless is True
    with pytest.raises(DocumentValidationError, match=r"canonical model 2.0.0, policy 'L100000005': "
                                                      r"policies.paperless: Input should be a valid boolean"):
        registry.validate_document("2.0.0", {**sample_policy(), "paperless": "perhaps"})
    with pytest.raises(DocumentValidationError, match="policies.paperless: Extra inputs are not permitted"):
        registry.validate_document("1.0.0", {**sample_policy(), "paperless": True})
    assert registry.validate_document("1.0.0", sample_policy()) == Policy.model_validate(sample_policy())
