"""`landing_sensor`: one dynamic partition and one ingest run per new drop in the landing folder."""


import json

import dagster as dg

from dagster_project.jobs import ingest_job_name
from dagster_project.partitions import drops_partitions_name
from resources.database import DatabaseResource
from resources.intake_store import IntakeStore
from resources.landing import LandingResource, content_hash


def build_landing_sensor(sources: list[str], jobs) -> dg.SensorDefinition:
    @dg.sensor(
        name="landing_sensor",
        jobs=jobs,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=(
            "Watches `<landing>/<source>/<drop>/` for ready drops (a `_READY` marker, or files unchanged for "
            "`settle_seconds`). Adds one partition per drop and launches its ingest run; the run key is the "
            "drop's content hash, so the same files dropped twice are taken once."
        ),
    )
    def landing_sensor(context: dg.SensorEvaluationContext, landing: LandingResource, database: DatabaseResource):
        # cursor: {source: {drop_id: content_hash}} for drops already handled
        seen: dict[str, dict[str, str]] = json.loads(context.cursor) if context.cursor else {}
        store = IntakeStore(database.engine())
        run_requests, partition_requests, skipped = [], [], []
        for source in sources:
            handled = seen.setdefault(source, {})
            new_ids = []
            for drop in landing.ready_drops(source):
                if drop.drop_id in handled:
                    continue
                digest = content_hash(drop.path)
                handled[drop.drop_id] = digest
                earlier = store.drop_with_hash(source, digest) or next(
                    (d for d, h in handled.items() if h == digest and d != drop.drop_id), None
                )
                if earlier is not None:
                    skipped.append(f"{source}/{drop.drop_id} has the same content as drop {earlier}: not taken again")
                    continue
                new_ids.append(drop.drop_id)
                run_requests.append(
                    dg.RunRequest(
                        run_key=f"{source}:{digest}",
                        job_name=ingest_job_name(source),
                        partition_key=drop.drop_id,
                        tags={"data_mash/source": source, "data_mash/content_hash": digest},
                    )
                )
            if new_ids:
                partition_requests.append(dg.AddDynamicPartitionsRequest(drops_partitions_name(source), new_ids))
        for message in skipped:
            context.log.info(message)
        return dg.SensorResult(
            run_requests=run_requests,
            dynamic_partitions_requests=partition_requests,
            cursor=json.dumps(seen, sort_keys=True),
            skip_reason=None if run_requests else dg.SkipReason("; ".join(skipped) or "no new drop in the landing folder"),
        )

    return landing_sensor
