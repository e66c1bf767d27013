"""Jobs: `ingest_<source>_job` takes a drop through intake and mapping; `map_<source>_job` re-maps only."""

import dagster as dg


def ingest_job_name(source: str) -> str:
    return f"ingest_{source}_job"


def map_job_name(source: str) -> str:
    return f"map_{source}_job"


def build_ingest_job(source: str) -> "dg.UnresolvedAssetJobDefinition":
    return dg.define_asset_job(
        name=ingest_job_name(source),
        selection=dg.AssetSelection.groups(f"legacy_{source}", f"canonical_{source}"),
        description=f"Decode, stage, quarantine and profile one {source} drop, then map it to the canonical model.",
    )


def build_map_job(source: str) -> "dg.UnresolvedAssetJobDefinition":
    return dg.define_asset_job(
        name=map_job_name(source),
        selection=dg.AssetSelection.groups(f"canonical_{source}"),
        description=(f"Map already staged {source} drops to the canonical model again, e.g. as a backfill over "
                     "past drops after a mapping change."),
    )


ROUTE_JOB = "route_book_job"


def build_route_job() -> "dg.UnresolvedAssetJobDefinition":
    return dg.define_asset_job(
        name=ROUTE_JOB,
        selection=dg.AssetSelection.groups("routing", "coexistence"),
        description="Route the current canonical book with the rule set and bring the coexistence registry in line.",
    )
