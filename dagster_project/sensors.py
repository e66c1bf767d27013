"""`landing_sensor`: one dynamic partition and one ingest run per new drop in the landing folder."""


import json

import dagster as dg

from dagster_project.jobs import ingest_job_name
from dagster_project.partitions import drops_partitions_name
from resources.database import DatabaseResource
from resources.intake_store import IntakeStore
from resources.landing import LandingResource, content_hash
from resources.wal import WriteAheadLog


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
                    (d for d, h in handled.items() if h == digest and d != drop.drop_id
                     and not _not_taken(store, source, d)), None
                )  # a drop that was refused or undone does not stand in the way of the same files sent again
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


def _not_taken(store: IntakeStore, source: str, drop_id: str) -> bool:
    state = store.drop_state(source, drop_id)
    return state is not None and state.status in ("refused", "undone")


def build_wal_recovery_sensor(jobs) -> dg.SensorDefinition:
    @dg.sensor(
        name="wal_recovery_sensor",
        jobs=jobs,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=(
            "Finds WAL intents left pending by a run that died (its ownership lock is free) or failed, and "
            "re-launches their materialization once the lifecycle delay has passed; dead-letters intents whose "
            "retries are spent or whose time to live is over."
        ),
    )
    def wal_recovery_sensor(context: dg.SensorEvaluationContext, wal: WriteAheadLog):
        store = wal.store()
        requests, notes = [], []
        for action in store.recovery_plan():
            if action.action == "dead_letter":
                store.dead_letter(action.intent_id, action.reason)
                notes.append(f"intent {action.intent_id} dead-lettered: {action.reason}")
            elif action.action == "relaunch" and action.job_name and action.asset_key:
                requests.append(recovery_run_request(action))
            else:
                notes.append(f"intent {action.intent_id}: {action.reason}")
        for note in notes:
            context.log.info(note)
        return dg.SensorResult(
            run_requests=requests,
            skip_reason=None if requests else dg.SkipReason("; ".join(notes) or "no WAL intent needs recovery"),
        )

    return wal_recovery_sensor


def recovery_run_request(action) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=f"wal-recover:{action.intent_id}:{action.attempts}",
        job_name=action.job_name,
        asset_selection=[dg.AssetKey.from_user_string(action.asset_key)],
        partition_key=action.partition_key,
        tags={"data_mash/recovers_wal_intent": str(action.intent_id)},
    )
