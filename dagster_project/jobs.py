"""Jobs: `ingest_<source>_job` takes a drop through intake and mapping; `map_<source>_job` re-maps only."""

import warnings

import dagster as dg

# The ingest job takes one drop per run (intake maps no ranges); its canonical assets also take a range of drops
# in one run (single-run backfill policy, for reprocessing). Dagster warns that the job mixes the two and uses one
# partition per run for it, which is what ingesting wants.
warnings.filterwarnings("ignore", message=r"Asset job ingest_\w+_job materializes assets with varying BackfillPolicies")


def ingest_job_name(source: str) -> str:
    return f"ingest_{source}_job"


def map_job_name(source: str) -> str:
    return f"map_{source}_job"


def build_ingest_job(source: str) -> "dg.UnresolvedAssetJobDefinition":
    return dg.define_asset_job(
        name=ingest_job_name(source),
        selection=dg.AssetSelection.groups(f"legacy_{source}", f"canonical_{source}"),
        description=(f"Decode, stage, quarantine and profile one {source} drop, then map it to the canonical model. A "
                     "run whose worker dies is run again by Dagster (run retries) from the step that did not finish, "
                     "so the drop is taken whole; a step that fails is not retried."),
        # staging and mapping a drop are idempotent per file (WAL keys): a crashed run is finished, not undone
        tags={"dagster/max_retries": "2", "dagster/retry_strategy": "FROM_FAILURE"},
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
