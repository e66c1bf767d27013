"""Compensation: `rollback_wave_job` undoes a wave (or one policy of it) in reverse order of its WAL entries.

Each undo step is its own WAL intent (namespace `compensation`, key `compensate:<entry>:<attempt>`
or `...:policy:<id>`), and a wave-level step marks the entry it undid `compensated`. Steps already
done are skipped, so running the rollback twice changes nothing the second time.

It runs by hand (`data-mash wave rollback W`) and automatically: `wave_failure_sensor` when a
`run_wave_job` run fails after loading something, `wave_reconciliation_sensor` when a wave's
reconciliation or one of its loads failed (by the wave's status, so it also catches runs the CLI
executed in process, which run-failure sensors do not see).
"""

import warnings

import dagster as dg

from assets.targets import OPERATIONS
from assets.waves import run_wave_job
from resources.sync_store import OPERATIONS as SYNC_OPERATIONS
from resources.sync_store import PREFIX as SYNC_PREFIX
from resources.sync_store import SyncStore, night_of
from resources.target_store import TargetsResource
from resources.wal import WalStore, WriteAheadLog
from resources.wave_store import WaveStore
from routing.sync import load_sync_rules

ROLLBACK_JOB = "rollback_wave_job"
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
    rows = sum(v for u in result["undone"] for k, v in u.items()
               if isinstance(v, int) and k not in ("entry", "compensation"))
    return dg.Output(None, metadata={
        "wave": wave_id, "policy": policy_id or "whole wave", "entries_undone": len(result["undone"]),
        "rows_and_files_undone": rows, "steps": dg.MetadataValue.json(result["undone"])})


@dg.job(name=ROLLBACK_JOB, description="Undo a wave, or one policy of it, in reverse order of its WAL entries: delete "
                                       "what it loaded, restore the registry rows it replaced, withdraw its legacy batch "
                                       "file and queue entries. Idempotent.",
        tags={"data_mash/kind": "compensation"})
def rollback_wave_job():
    close_wave_rollback(compensate_wave_entries(plan_wave_rollback()))


def rollback_request(wal_store: WalStore, waves: WaveStore, wave_id: str, reason: str, run_id: str | None = None):
    """A run request for `rollback_wave_job` if the wave (or, given `run_id`, that run of it) loaded anything,
    else a skip reason. A rerun stopped by its gates loaded nothing, and leaves the wave's earlier load alone."""
    return _rollback_request(wal_store, wave_id, LOADS, reason, f"attempt-{waves.wave(wave_id)['attempts']}", run_id)


def _rollback_request(wal_store: WalStore, unit: str, writes: tuple[str, ...], reason: str, attempt: str,
                      run_id: str | None = None):
    loaded = [e for e in wal_store.wave_entries(unit, writes, LIVE) if run_id is None or e["run_id"] == run_id]
    if not loaded:
        return dg.SkipReason(f"{unit}: nothing was written" + (f" by run {run_id}" if run_id else "")
                             + ", nothing to undo")
    return dg.RunRequest(
        run_key=f"rollback:{unit}:{attempt}",
        run_config={"ops": {"plan_wave_rollback": {"config": {"wave_id": unit, "reason": reason}}}},
        tags={"data_mash/wave": unit, "data_mash/launched_by": "compensation"})


# Dagster's run status sensors pass a beta parameter (`owners`) to SensorDefinition themselves, and warn each time
# the definition is rebuilt (binding resources); nothing here uses it
warnings.filterwarnings("ignore", message="Parameter `owners` of initializer `SensorDefinition", category=dg.BetaWarning)


def build_wave_failure_sensor() -> dg.SensorDefinition:
    @dg.run_failure_sensor(name="wave_failure_sensor", monitored_jobs=[run_wave_job],
                           request_job=rollback_wave_job, default_status=dg.DefaultSensorStatus.RUNNING,
                           description="When a wave run fails after loading something, launches `rollback_wave_job` "
                                       "for that wave.")
    def wave_failure_sensor(context: dg.RunFailureSensorContext, wal: WriteAheadLog, targets: TargetsResource):
        wave_id = context.dagster_run.tags.get("dagster/partition")
        if not wave_id:
            return dg.SkipReason("the failed run names no wave")
        return rollback_request(wal.store(), WaveStore(targets.store().engine), wave_id,
                                f"run {context.dagster_run.run_id} failed", run_id=context.dagster_run.run_id)

    return wave_failure_sensor


def build_wave_reconciliation_sensor() -> dg.SensorDefinition:
    @dg.sensor(name="wave_reconciliation_sensor", job=rollback_wave_job, minimum_interval_seconds=60,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="When a wave's reconciliation failed (in its run or re-run on its own) or one of its loads "
                           "failed, launches `rollback_wave_job` for that wave: it reads the waves' status, so it also "
                           "sees runs launched in process by the CLI, which the run-failure sensor cannot.")
    def wave_reconciliation_sensor(context: dg.SensorEvaluationContext, wal: WriteAheadLog, targets: TargetsResource):
        waves = WaveStore(targets.store().engine)
        requests = [rollback_request(wal.store(), waves, w["wave_id"], w["status_reason"])
                    for w in waves.failed_after_loading()]
        runs = [r for r in requests if isinstance(r, dg.RunRequest)]
        return dg.SensorResult(run_requests=runs,
                               skip_reason=None if runs else dg.SkipReason("no failed load or reconciliation left to undo"))

    return wave_reconciliation_sensor


def build_sync_failure_sensor() -> dg.SensorDefinition:
    @dg.sensor(name="sync_failure_sensor", job=rollback_wave_job, minimum_interval_seconds=60,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="When a night of sync failed (a step, its proof, or its worker died) after writing "
                           "something, launches `rollback_wave_job` for that night (`sync-<date>`): it reads the "
                           "nights' status, so it sees runs of the schedule and of the CLI alike.")
    def sync_failure_sensor(context: dg.SensorEvaluationContext, wal: WriteAheadLog, targets: TargetsResource):
        runs, store = [], wal.store()
        for night in _sync_store(targets).nights():
            # a night whose worker died (killed, out of memory) stays `running` with an intent nobody holds
            dead = night["status"] == "running" and any(
                not store.owner_alive(e["idempotency_key"])
                for e in store.wave_entries(night["sync_id"], SYNC_OPERATIONS, ("pending",)))
            if night["status"] != "failed" and not dead:
                continue
            request = _rollback_request(store, night["sync_id"], SYNC_WRITES,
                                        night["status_reason"] or "its worker died during a write",
                                        f"{night['finished_at'] or night['started_at']:%Y%m%dT%H%M%S%f}")
            if isinstance(request, dg.RunRequest):
                runs.append(request)
        return dg.SensorResult(run_requests=runs,
                               skip_reason=None if runs else dg.SkipReason("no failed night of sync left to undo"))

    return sync_failure_sensor
