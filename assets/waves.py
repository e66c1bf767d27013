"""`waves/candidates`: the policies a wave will move, one partition per wave.

Gates (blocking checks), target loads, reconciliation and compensation build on this asset.
"""

import dagster as dg

from assets.routing import REGISTRY
from resources.database import DatabaseResource
from resources.wal import WriteAheadLog
from resources.wave_store import WaveStore

WAVES_PARTITIONS = dg.DynamicPartitionsDefinition(name="waves")
CANDIDATES = dg.AssetKey(["waves", "candidates"])


@dg.asset(
    key=CANDIDATES,
    deps=[REGISTRY],
    partitions_def=WAVES_PARTITIONS,
    group_name="waves",
    kinds={"postgres"},
    description=("The policies of one wave: routed to the wave's target, still on their legacy system, in no other "
                 "wave, matching the wave's criteria (routing rule language), up to its size cap. In "
                 "`waves.candidates`; the wave is marked running."),
)
def wave_candidates(context: dg.AssetExecutionContext, database: DatabaseResource,
                    wal: WriteAheadLog) -> dg.MaterializeResult:
    store = WaveStore(database.engine())
    wave_id = context.partition_key
    wave = store.set_status(wave_id, "running", allowed_from=("approved", "running", "failed"))
    with wal.intent(context, namespace="waves", operation="select_candidates", target="waves.candidates",
                    key=f"waves:{wave_id}:candidates:{wave['attempts']}",
                    payload={"wave": wave_id, "criteria": wave["criteria"], "size_cap": wave["size_cap"]},
                    wave=wave_id) as intent:
        selected = store.select_candidates(wave_id, intent.id)
        intent.result = {"selected": selected}
    return dg.MaterializeResult(metadata={
        "dagster/row_count": selected,
        "wave": f"{wave_id}: {wave['name']}",
        "estimated_at_planning": wave["estimated"],
        "size_cap": wave["size_cap"],
        "criteria": dg.MetadataValue.json(wave["criteria"]),
        "gates": dg.MetadataValue.json(wave["gates"]),
        "attempt": wave["attempts"],
        "wal_entry_id": intent.id,
    })


RUN_WAVE_JOB = "run_wave_job"
run_wave_job = dg.define_asset_job(RUN_WAVE_JOB, selection=dg.AssetSelection.groups("waves"),
                                   description="Run one approved wave (a partition of `waves`).")


def build_wave_schedule_sensor() -> dg.SensorDefinition:
    @dg.sensor(name="wave_schedule_sensor", job_name=RUN_WAVE_JOB, minimum_interval_seconds=60,
               default_status=dg.DefaultSensorStatus.STOPPED,
               description="Adds a `waves` partition for each approved wave whose scheduled start has come and launches "
                           "its run (run key: wave and attempt).")
    def wave_schedule_sensor(context: dg.SensorEvaluationContext, database: DatabaseResource):
        due = WaveStore(database.engine()).due()
        if not due:
            return dg.SkipReason("no approved wave is due")
        return dg.SensorResult(
            run_requests=[dg.RunRequest(run_key=f"{w['wave_id']}:attempt-{w['attempts'] + 1}", partition_key=w["wave_id"],
                                        tags={"data_mash/wave": w["wave_id"]}) for w in due],
            dynamic_partitions_requests=[WAVES_PARTITIONS.build_add_request([w["wave_id"] for w in due])],
        )

    return wave_schedule_sensor
