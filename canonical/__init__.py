"""Canonical Policy Model (tables, documents, schemas, registry) and the mapping engine. No Dagster imports."""
