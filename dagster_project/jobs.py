"""Jobs: `ingest_<source>_job` takes one drop of one source through intake."""

from __future__ import annotations

import dagster as dg


def ingest_job_name(source: str) -> str:
    return f"ingest_{source}_job"


def build_ingest_job(source: str) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        name=ingest_job_name(source),
        selection=dg.AssetSelection.groups(f"legacy_{source}"),
        description=f"Decode, stage, quarantine and profile one {source} drop from the landing folder.",
    )
