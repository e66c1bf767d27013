"""Compensation: `rollback_wave_job` undoes a wave (or one policy of it) in reverse order of its WAL entries.

Each undo step is its own WAL intent (namespace `compensation`, key `compensate:<entry>:<attempt>`
or `...:policy:<id>`), and a wave-level step marks the entry it undid `compensated`. Steps already
done are skipped, so running the rollback twice changes nothing the second time.

It runs by hand (`data-mash wave rollback W`) and automatically: `compensation_sensor`, a run-failure
sensor on the daemon, launches it when a wave run, a wave's reconciliation or a night of sync fails
(a step, a blocking check, or a run worker that died), for what that run wrote.
"""

import warnings

import dagster as dg

from assets.sync import NIGHTLY_SYNC_JOB, SYNC_KEYS
from assets.targets import OPERATIONS, RECONCILE_JOB, REPORT, TARGET_KEYS, reconcile_wave_job
from assets.waves import CANDIDATES, run_wave_job
from dagster_project.launcher import COMPENSATES
from resources.sync_store import OPERATIONS as SYNC_OPERATIONS
from resources.sync_store import PREFIX as SYNC_PREFIX
from resources.sync_store import SyncStore, night_of
from resources.target_store import TargetsResource
from resources.wal import WalStore, WriteAheadLog
from resources.wave_store import WaveStore
from routing.sync import load_sync_rules

ROLLBACK_JOB = "rollback_wave_job"
ROLLED_BACK = "rolled back"  # the `state` of a rolled-back wave's (night's) partitions; a load says `loaded`
LOADS = tuple(OPERATIONS.values())
COMPENSABLE = ("select_candidates", *LOADS, *SYNC_OPERATIONS)
SYNC_WRITES = SYNC_OPERATIONS[1:]
LIVE = ("committed", "failed", "pending")  # a failed or dead attempt may sit on data an earlier attempt committed


def _sync_store(targets: TargetsResource) -> SyncStore:
    return SyncStore(targets.store(), load_sync_rules())


class RollbackConfig(dg.Config):
    wave_id: str  # a wave, or a night of sync (`sync-YYYY-MM-DD`)
    policy_id: str = ""  # empty: the whole wave
    reason: str = "requested by an operator"


def _step_key(entry: dict, policy_id: str) -> str:
    return f"compensate:{entry['id']}:{entry['attempts']}" + (f":policy:{policy_id}" if policy_id else "")


@dg.op(description="List the wave's WAL entries to undo, latest first; refuse while a load of the wave is running.")
def plan_wave_rollback(context: dg.OpExecutionContext, config: RollbackConfig, wal: WriteAheadLog,
                       targets: TargetsResource) -> dict:
    store = wal.store()
    if config.wave_id.startswith(SYNC_PREFIX):
        if config.policy_id:
            raise dg.Failure("a night of sync is rolled back whole, not by policy")
        later = _sync_store(targets).later_nights(night_of(config.wave_id))
        if later:
            raise dg.Failure(f"later nights wrote after {config.wave_id} ({', '.join(later)}): roll those back first")
    entries = store.wave_entries(config.wave_id, COMPENSABLE, LIVE)
    busy = [e for e in entries if e["status"] == "pending" and store.owner_alive(e["idempotency_key"])]
    if busy:
        raise dg.Failure(f"wave {config.wave_id} is still loading ({busy[0]['operation']}, WAL entry {busy[0]['id']}); "
                         "roll back once its run has ended")
    steps = [e for e in entries if store.status_of(_step_key(e, config.policy_id)) != "committed"]
    context.log.info(f"{len(steps)} of {len(entries)} WAL entries of wave {config.wave_id} to undo"
                     + (f" for policy {config.policy_id}" if config.policy_id else ""))
    return {"wave_id": config.wave_id, "policy_id": config.policy_id, "reason": config.reason, "steps": steps}


@dg.op(description="Undo each entry in order, each as a WAL-logged compensation step; mark wave-level entries "
                   "compensated.")
def compensate_wave_entries(context: dg.OpExecutionContext, plan: dict, wal: WriteAheadLog,
                            targets: TargetsResource) -> dict:
    wave_id, policy_id = plan["wave_id"], plan["policy_id"] or None
    store, wal_store = targets.store(), wal.store()
    undone = []
    for entry in plan["steps"]:
        with wal.intent(context, namespace="compensation", operation=f"undo_{entry['operation']}",
                        target=entry["target"], key=_step_key(entry, plan["policy_id"]),
                        payload={"undoes": entry["id"], "wave": wave_id, "policy": policy_id, "reason": plan["reason"]},
                        wave=wave_id) as intent:
            if entry["operation"] in SYNC_OPERATIONS:
                detail = _sync_store(targets).compensate(entry["operation"], night_of(wave_id), entry["id"],
                                                         reason=f"rolled back: {plan['reason']}")
            else:
                detail = store.compensate(entry["operation"], wave_id, entry["id"], policy_id=policy_id,
                                          actor=f"{ROLLBACK_JOB} {context.run.run_id[:8]}")
            intent.result = detail
        if policy_id is None:
            wal_store.compensated(entry["id"], {"by": intent.id, **detail})
        undone.append({"entry": entry["id"], "operation": entry["operation"], "compensation": intent.id, **detail})
        context.log.info(f"undid WAL entry {entry['id']} ({entry['operation']}): {detail}")
    return {**plan, "undone": undone}


@dg.op(description="Mark the wave rolled back (whole-wave rollback) and report what was undone.")
def close_wave_rollback(context: dg.OpExecutionContext, result: dict, targets: TargetsResource) -> dg.Output:
    wave_id, policy_id = result["wave_id"], result["policy_id"]
    waves = WaveStore(targets.store().engine)
    if wave_id.startswith(SYNC_PREFIX):
        _sync_store(targets).set_status(night_of(wave_id), "rolled_back",
                                        f"rolled back: {result['reason']}; {len(result['undone'])} WAL entries undone")
    elif not policy_id and (result["undone"] or waves.wave(wave_id)["status"] != "rolled_back"):
        waves.set_status(wave_id, "rolled_back", allowed_from=("approved", "running", "failed", "completed"),
                         reason=f"rolled back: {result['reason']}; {len(result['undone'])} WAL entries undone")
    if not policy_id:
        supersede_partitions(context, wave_id, result["reason"], len(result["undone"]))
    rows = sum(v for u in result["undone"] for k, v in u.items()
               if isinstance(v, int) and k not in ("entry", "compensation"))
    return dg.Output(None, metadata={
        "wave": wave_id, "policy": policy_id or "whole wave", "entries_undone": len(result["undone"]),
        "rows_and_files_undone": rows, "steps": dg.MetadataValue.json(result["undone"])})


def wave_asset_keys(unit: str) -> tuple[str, list[dg.AssetKey]]:
    """The partition and the partitioned assets that hold a wave's (or a night of sync's) materializations."""
    if unit.startswith(SYNC_PREFIX):
        return night_of(unit).isoformat(), list(SYNC_KEYS)
    return unit, [CANDIDATES, *TARGET_KEYS, REPORT]


def supersede_partitions(context: dg.OpExecutionContext, unit: str, reason: str, undone: int) -> None:
    """After a whole rollback, the wave's (night's) partitions say so: each gets a new materialization, state
    `rolled back`, no rows, with the reason and this run, superseding the load it undid. (Dagster's open-source
    event log storages refuse `wipe_asset_partitions`; a superseding event is the public way that works.)"""
    partition, keys = wave_asset_keys(unit)
    for key in keys:
        context.log_event(dg.AssetMaterialization(asset_key=key, partition=partition, metadata={
            "state": ROLLED_BACK, "dagster/row_count": 0, "reason": reason, "wal_entries_undone": undone,
            "rollback_run": dg.MetadataValue.dagster_run(context.run.run_id)}))


@dg.job(name=ROLLBACK_JOB, description="Undo a wave, or one policy of it, in reverse order of its WAL entries: delete "
                                       "what it loaded, restore the registry rows it replaced, withdraw its legacy batch "
                                       "file and queue entries. Idempotent.",
        tags={"data_mash/kind": "compensation"})
def rollback_wave_job():
    close_wave_rollback(compensate_wave_entries(plan_wave_rollback()))


def compensation_for(wal_store: WalStore, job_name: str, unit: str, run_id: str, failed_checks: bool):
    """What undoes a failed run: a run request for `rollback_wave_job`, or why nothing needs undoing.

    - `run_wave_job`: what this run loaded (a rerun stopped by its gates loaded nothing, and leaves the wave's earlier
      load alone);
    - `reconcile_wave_job`: the whole wave, when a reconciliation check failed (a run that did not finish changed
      nothing);
    - `nightly_sync_job`: everything the night wrote.
    The CLI asks the same question to know whether to wait for the daemon's rollback."""
    if job_name == RECONCILE_JOB:
        if not failed_checks:
            return dg.SkipReason(f"{unit}: the reconciliation run did not finish; it changed nothing, run it again")
        return _rollback_request(wal_store, unit, LOADS, f"reconciliation failed in run {run_id}", run_id, None)
    if job_name == NIGHTLY_SYNC_JOB:
        return _rollback_request(wal_store, unit, SYNC_WRITES, f"run {run_id} failed", run_id, None)
    return _rollback_request(wal_store, unit, LOADS, f"run {run_id} failed", run_id, run_id)


def compensation_expected(wal_store: WalStore, unit: str, run_id: str, job_name: str = "",
                          failed_checks: bool = False) -> bool:
    return isinstance(compensation_for(wal_store, job_name, unit, run_id, failed_checks), dg.RunRequest)


def _rollback_request(wal_store: WalStore, unit: str, writes: tuple[str, ...], reason: str, failed_run: str,
                      written_by: str | None):
    loaded = [e for e in wal_store.wave_entries(unit, writes, LIVE) if written_by is None or e["run_id"] == written_by]
    if not loaded:
        return dg.SkipReason(f"{unit}: nothing was written" + (f" by run {written_by}" if written_by else "")
                             + ", nothing to undo")
    return dg.RunRequest(
        run_key=f"rollback:{failed_run}",
        run_config={"ops": {"plan_wave_rollback": {"config": {"wave_id": unit, "reason": reason}}}},
        tags={"data_mash/wave": unit, "data_mash/launched_by": "compensation", COMPENSATES: failed_run})


# Dagster's run status sensors pass a beta parameter (`owners`) to SensorDefinition themselves, and warn each time
# the definition is rebuilt (binding resources); nothing here uses it
warnings.filterwarnings("ignore", message="Parameter `owners` of initializer `SensorDefinition", category=dg.BetaWarning)


def _unit_of(run: dg.DagsterRun) -> str | None:
    """The wave or night a run worked on: its partition (a night's partition is its date)."""
    partition = run.tags.get("dagster/partition")
    if partition and run.job_name == NIGHTLY_SYNC_JOB:
        return SYNC_PREFIX + partition
    return partition


def build_compensation_sensor(sync_job) -> dg.SensorDefinition:
    @dg.run_failure_sensor(name="compensation_sensor", monitored_jobs=[run_wave_job, reconcile_wave_job, sync_job],
                           request_job=rollback_wave_job, default_status=dg.DefaultSensorStatus.RUNNING,
                           minimum_interval_seconds=2,
                           description="When a wave run, a wave's reconciliation or a night of sync fails (a step, a "
                                       "blocking check, or its run worker died), launches `rollback_wave_job` for what "
                                       "it wrote, tagged with the run it compensates.")
    def compensation_sensor(context: dg.RunFailureSensorContext, wal: WriteAheadLog):
        run = context.dagster_run
        unit = _unit_of(run)
        if not unit:
            return dg.SkipReason(f"run {run.run_id} names no wave or night")
        failed_checks = any(not e.dagster_event.event_specific_data.passed for e in context.instance.all_logs(
            run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION))
        return compensation_for(wal.store(), run.job_name, unit, run.run_id, failed_checks)

    return compensation_sensor
