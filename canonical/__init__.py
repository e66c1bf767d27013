"""Canonical Policy Model, model registry and mapping engine (no Dagster imports). Lands with issue 4."""
