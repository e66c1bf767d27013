"""Routing rule model and vectorized evaluator (no Dagster imports). Lands with issue 5."""
