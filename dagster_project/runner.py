"""Run Data Mash work through Dagster on the persistent instance, so the UI shows every run.

The CLI and the demo use these functions; they never bypass Dagster to change stored state.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
from sqlalchemy import text

from dagster_project.compensation import ROLLBACK_JOB
from dagster_project.definitions import build_definitions
from dagster_project.environment import resources_for_environment
from dagster_project.jobs import ingest_job_name
from dagster_project.partitions import drops_partitions_name
from legacy.sources import find_drop_files, load_source
from resources.database import data_mash_home
from resources.intake_store import IntakeStore
from resources.landing import content_hash, valid_drop_id
from resources.wal import WriteAheadLog


def ensure_dagster_home() -> Path:
    """Use $DAGSTER_HOME, defaulting to `$DATA_MASH_HOME/dagster_home` (what `make ui` uses too)."""
    home = Path(os.environ.get("DAGSTER_HOME") or data_mash_home() / "dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text("telemetry:\n  enabled: false\n")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def instance() -> dg.DagsterInstance:
    ensure_dagster_home()
    return dg.DagsterInstance.get()


@dataclass
class FileOutcome:
    kind: str
    file_name: str
    records_read: int
    records_parsed: int
    records_quarantined: int
    reasons: dict[str, int] = field(default_factory=dict)


@dataclass
class IngestOutcome:
    source: str
    drop_id: str
    run_id: str
    success: bool
    files: list[FileOutcome]
    failed_checks: list[str]
    error: str | None = None
    canonical: list = field(default_factory=list)


def default_drop_id(path: Path, digest: str) -> str:
    stem = "".join(c if c.isalnum() or c in "-_." else "-" for c in path.name).strip(".-") or "drop"
    return f"{stem}-{digest[:8]}"


def ingest(path: Path, source_name: str, drop_id: str | None = None, *, resources: dict | None = None,
           dagster_instance: dg.DagsterInstance | None = None, console_log_level: str = "WARNING") -> IngestOutcome:
    """Place a drop in the landing folder, register it, and materialize its intake assets through Dagster."""
    source = load_source(source_name)
    resolved = resources or resources_for_environment(resolved=True)
    landing, database = resolved["landing"], resolved["database"]
    path = path.resolve()
    if path.is_dir():
        find_drop_files(source, path)  # fail early, naming the missing file, before anything moves
    if drop_id is None:  # name the drop after its content; the landed copy's hash below is the one recorded
        drop_id = default_drop_id(path, content_hash(path) if path.is_dir() else "single")
    drop = landing.place(source.name, valid_drop_id(drop_id), path)
    digest = content_hash(drop.path)
    files = {kind: str(p.name) for kind, p in find_drop_files(source, drop.path).items()}
    store = IntakeStore(database.engine())
    store.register_drop(source.name, drop_id, digest, drop.path, files)

    inst = dagster_instance or instance()
    inst.add_dynamic_partitions(drops_partitions_name(source.name), [drop_id])
    run = _execute(ingest_job_name(source.name), drop_id, resources, inst, console_log_level,
                   {"data_mash/source": source.name, "data_mash/content_hash": digest, "data_mash/launched_by": "cli"})
    return IngestOutcome(source.name, drop_id, run.run_id, run.success, file_outcomes(store, source.name, drop_id),
                         run.failed_checks, run.error, canonical_outcomes(store.engine, source.name, drop_id))


@dataclass
class RunOutcome:
    run_id: str
    success: bool
    failed_checks: list[str]
    error: str | None


def _execute(job_name: str, partition_key: str | None, resources: dict | None, inst: dg.DagsterInstance,
             console_log_level: str, tags: dict[str, str], asset_selection: list[dg.AssetKey] | None = None,
             ops_config: dict | None = None) -> RunOutcome:
    """Run one partition of a job in process on the instance; collect failed checks and root-cause errors."""
    job = build_definitions(resources=resources).resolve_job_def(job_name)
    result = job.execute_in_process(
        instance=inst,
        partition_key=partition_key,
        asset_selection=asset_selection,
        # the CLI prints its own summary; the full event log is in the UI
        run_config={"loggers": {"console": {"config": {"log_level": console_log_level}}}, **({"ops": ops_config} if ops_config else {})},
        raise_on_error=False,
        tags=tags,
    )
    return outcome_of(result)


def outcome_of(result) -> RunOutcome:
    """An in-process run's result as the CLI reports it: failed checks by asset, and the root cause of each failed
    step."""
    failed_checks = [f"{e.asset_key.to_user_string()}: {e.check_name}"
                     for e in result.get_asset_check_evaluations() if not e.passed]
    error = None
    if not result.success:
        failures = [ev for ev in result.all_events if ev.event_type_value == "STEP_FAILURE"]
        error = "; ".join(f"{ev.step_key}: {root_cause(ev.event_specific_data.error)}" for ev in failures) or "run failed"
    return RunOutcome(result.run_id, result.success, failed_checks, error)


@dataclass
class CanonicalTableOutcome:
    table: str
    records_in: int
    records_mapped: int
    records_quarantined: int
    mean_dq_score: float | None
    reasons: dict[str, int] = field(default_factory=dict)
    scored_down: int = 0


@dataclass
class CanonicalOutcome:
    source: str
    drop_id: str
    run_id: str
    success: bool
    tables: list[CanonicalTableOutcome]
    error: str | None = None


def canonical_outcomes(engine, source: str, drop_id: str) -> list[CanonicalTableOutcome]:
    with engine.connect() as conn:
        loads = conn.execute(text(
            "SELECT table_name, records_in, records_mapped, records_quarantined, mean_dq_score FROM canonical.loads "
            "WHERE source = :s AND drop_id = :d ORDER BY table_name"), {"s": source, "d": drop_id}).all()
        reasons = conn.execute(text(
            "SELECT table_name, reason, count(*) FROM canonical.quarantine WHERE source = :s AND drop_id = :d "
            "GROUP BY 1, 2"), {"s": source, "d": drop_id}).all()
        scored_down = {
            table: conn.execute(text(f"SELECT count(*) FROM canonical.{table} WHERE drop_key = :k AND dq_score < 100"),
                                {"k": f"{source}:{drop_id}"}).scalar_one()
            for table, *_ in loads  # table names come from canonical.loads, i.e. the canonical model's own
        }
    by_table: dict[str, dict[str, int]] = {}
    for table, reason, count in reasons:
        by_table.setdefault(table, {})[reason] = count
    return [CanonicalTableOutcome(t, i, m, q, float(dq) if dq is not None else None, by_table.get(t, {}),
                                  scored_down[t]) for t, i, m, q, dq in loads]


def remap(source_name: str, drop_id: str, *, resources: dict | None = None,
          dagster_instance: dg.DagsterInstance | None = None) -> CanonicalOutcome:
    """Map an already staged drop again through Dagster (`map_<source>_job`)."""
    from dagster_project.jobs import map_job_name

    resolved = resources or resources_for_environment(resolved=True)
    inst = dagster_instance or instance()
    run = _execute(map_job_name(source_name), drop_id, resources, inst, "WARNING",
                   {"data_mash/source": source_name, "data_mash/launched_by": "cli"})
    return CanonicalOutcome(source_name, drop_id, run.run_id, run.success,
                            canonical_outcomes(resolved["database"].engine(), source_name, drop_id), run.error)


def root_cause(error) -> str:
    """The innermost error of a step failure: what a person can act on, not Dagster's wrapper."""
    while getattr(error, "cause", None) is not None:
        error = error.cause
    return error.message.strip()


def file_outcomes(store: IntakeStore, source: str, drop_id: str) -> list[FileOutcome]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT kind, file_name, records_read, records_parsed, records_quarantined FROM intake.files "
                 "WHERE source = :s AND drop_id = :d ORDER BY kind"),
            {"s": source, "d": drop_id},
        ).all()
        reasons = conn.execute(
            text("SELECT kind, reason, count(*) FROM intake.quarantine WHERE source = :s AND drop_id = :d "
                 "GROUP BY kind, reason ORDER BY kind, reason"),
            {"s": source, "d": drop_id},
        ).all()
    by_kind: dict[str, dict[str, int]] = {}
    for kind, reason, count in reasons:
        by_kind.setdefault(kind, {})[reason] = count
    return [FileOutcome(r[0], r[1], r[2], r[3], r[4], by_kind.get(r[0], {})) for r in rows]


@dataclass
class RecoveryOutcome:
    intent_id: int
    action: str
    reason: str
    run_id: str | None = None
    success: bool | None = None


def recover(*, resources: dict | None = None, dagster_instance: dg.DagsterInstance | None = None,
            now=None) -> list[RecoveryOutcome]:
    """Carry out the WAL's recovery plan through Dagster: relaunch what is due, dead-letter what is spent."""
    resolved = resources or resources_for_environment(resolved=True)
    store = resolved["wal"].store()
    inst = dagster_instance or instance()
    outcomes = []
    for action in store.recovery_plan(now=now):
        if action.action == "dead_letter":
            store.dead_letter(action.intent_id, action.reason)
            outcomes.append(RecoveryOutcome(action.intent_id, "dead_lettered", action.reason))
        elif action.action == "relaunch" and action.job_name and action.asset_key:
            run = _execute(action.job_name, action.partition_key, resources, inst, "WARNING",
                           {"data_mash/recovers_wal_intent": str(action.intent_id), "data_mash/launched_by": "cli"},
                           asset_selection=[dg.AssetKey.from_user_string(action.asset_key)])
            outcomes.append(RecoveryOutcome(action.intent_id, "relaunched", action.reason, run.run_id, run.success))
        else:
            outcomes.append(RecoveryOutcome(action.intent_id, action.action, action.reason))
    return outcomes


@dataclass
class RouteOutcome:
    run_id: str
    success: bool
    error: str | None
    by_target: dict[str, int]
    by_system: dict[str, int]
    open_conflicts: int


def route(rules: Path | None = None, *, resources: dict | None = None,
          dagster_instance: dg.DagsterInstance | None = None) -> RouteOutcome:
    """Route the current canonical book and update the coexistence registry, through Dagster (`route_book_job`)."""
    from dagster_project.jobs import ROUTE_JOB

    resolved = resources or resources_for_environment(resolved=True)
    inst = dagster_instance or instance()
    config = {"routing__decisions": {"config": {"rules": str(rules.resolve())}}} if rules else None
    run = _execute(ROUTE_JOB, None, resources, inst, "WARNING", {"data_mash/launched_by": "cli"}, ops_config=config)
    with resolved["database"].engine().connect() as conn:
        by_target = dict(conn.execute(text("SELECT target, count(*) FROM routing.decisions GROUP BY 1 ORDER BY 1")).all())
        by_system = dict(conn.execute(text(
            "SELECT system_of_record, count(*) FROM coexistence.registry GROUP BY 1 ORDER BY 1")).all())
        conflicts = conn.execute(text("SELECT count(*) FROM coexistence.conflicts WHERE resolved_at IS NULL")).scalar_one()
    return RouteOutcome(run.run_id, run.success, run.error, by_target, by_system, conflicts)


# wave runs fail on purpose (gates, drills): the CLI prints the root cause and the outcome; the UI has the event log
QUIET = "CRITICAL"


def run_wave(wave_id: str, *, resources: dict | None = None, dagster_instance: dg.DagsterInstance | None = None,
             fault: str | None = None, compensate: bool = True) -> "WaveOutcome":
    """Run one approved wave now, through Dagster (`run_wave_job`, partition = wave id).

    If the run fails, the compensation sensors are evaluated at once, as the daemon would on its next
    tick, and the rollback they request is run: the wave is undone before this returns. `fault`
    (`fail:<point>:<asset key>`) injects a failure into this run only, for demos and drills.
    """
    from assets.waves import RUN_WAVE_JOB, WAVES_PARTITIONS

    inst = dagster_instance or instance()
    inst.add_dynamic_partitions(WAVES_PARTITIONS.name, [wave_id])
    resolved = dict(resources or resources_for_environment(resolved=True))
    if fault:
        resolved["wal"] = WriteAheadLog(database=resolved["database"], fault=fault)
    run = _execute(RUN_WAVE_JOB, wave_id, resolved, inst, QUIET,
                   {"data_mash/wave": wave_id, "data_mash/launched_by": "cli"})
    rollbacks = compensate_failed_run(run.run_id, resources=resources, dagster_instance=inst) \
        if compensate and not run.success else []
    return WaveOutcome(run.run_id, run.success, run.failed_checks, run.error, rollbacks)


@dataclass
class WaveOutcome(RunOutcome):
    rollbacks: list[RunOutcome] = field(default_factory=list)


def _launch_requests(requests, job_name: str, resources: dict | None, inst: dg.DagsterInstance) -> list[RunOutcome]:
    """Run what a sensor requested (of `job_name`, its job), in process on the instance, skipping run keys that
    already ran."""
    outcomes = []
    for request in requests:
        if not isinstance(request, dg.RunRequest):
            continue
        if request.run_key and inst.get_runs(dg.RunsFilter(tags={"dagster/run_key": request.run_key}), limit=1):
            continue
        tags = {**request.tags, **({"dagster/run_key": request.run_key} if request.run_key else {})}
        outcomes.append(_execute(request.job_name or job_name, request.partition_key, resources, inst,
                                 QUIET, tags, ops_config=request.run_config.get("ops")))
    return outcomes


def compensate_failed_run(run_id: str, *, resources: dict | None = None,
                          dagster_instance: dg.DagsterInstance | None = None) -> list[RunOutcome]:
    """Evaluate `wave_failure_sensor` on a failed wave run and run the rollback it requests."""
    inst = dagster_instance or instance()
    defs = build_definitions(resources=resources)
    sensor = defs.resolve_sensor_def("wave_failure_sensor")
    run = inst.get_run_by_id(run_id)
    failure = next(iter(inst.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)), None)
    if run is None or failure is None:
        return []
    with dg.build_run_status_sensor_context(sensor_name=sensor.name, dagster_event=failure.dagster_event,
                                            dagster_instance=inst, dagster_run=run,
                                            resources=resources or resources_for_environment(resolved=True)) as context:
        result = sensor(context.for_run_failure())
    return _launch_requests([result] if result else [], ROLLBACK_JOB, resources, inst)


def compensate_failed_waves(*, resources: dict | None = None,
                                      dagster_instance: dg.DagsterInstance | None = None) -> list[RunOutcome]:
    """Evaluate `wave_reconciliation_sensor` and run the rollbacks it requests."""
    return _evaluate_sensor("wave_reconciliation_sensor", resources, dagster_instance or instance())


def _evaluate_sensor(name: str, resources: dict | None, inst: dg.DagsterInstance) -> list[RunOutcome]:
    """Evaluate a compensation sensor now, as the daemon would on its next tick, and run the rollbacks it requests."""
    sensor = build_definitions(resources=resources).resolve_sensor_def(name)
    with dg.build_sensor_context(instance=inst, resources=resources or resources_for_environment(resolved=True)) as context:
        result = sensor(context)
    return _launch_requests(result.run_requests if isinstance(result, dg.SensorResult) else [], ROLLBACK_JOB,
                            resources, inst)


def reconcile_wave(wave_id: str, *, resources: dict | None = None,
                   dagster_instance: dg.DagsterInstance | None = None, compensate: bool = True) -> WaveOutcome:
    """Re-run a loaded wave's reconciliation checks through Dagster (`reconcile_wave_job`); a failure rolls it back."""
    from assets.targets import RECONCILE_JOB

    inst = dagster_instance or instance()
    run = _execute(RECONCILE_JOB, wave_id, resources, inst, QUIET,
                   {"data_mash/wave": wave_id, "data_mash/launched_by": "cli"})
    rollbacks = compensate_failed_waves(resources=resources, dagster_instance=inst) if compensate else []
    return WaveOutcome(run.run_id, run.success, run.failed_checks, run.error, rollbacks)


def tonight(rules=None) -> "date":
    """Today's date in the sync's zone: the night a sync run by hand syncs."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from routing.sync import load_sync_rules

    return datetime.now(ZoneInfo((rules or load_sync_rules()).schedule.timezone)).date()


def sync_night(night=None, *, resources: dict | None = None, dagster_instance: dg.DagsterInstance | None = None,
               fault: str | None = None, compensate: bool = True) -> WaveOutcome:
    """Run one night of sync now, through Dagster (`nightly_sync_job`, partition = the night, default tonight).
    A failed night is rolled back before this returns (`sync_failure_sensor`, evaluated at once)."""
    from assets.sync import NIGHTLY_SYNC_JOB
    from resources.sync_store import sync_id

    night = night or tonight()
    inst = dagster_instance or instance()
    resolved = dict(resources or resources_for_environment(resolved=True))
    if fault:
        resolved["wal"] = WriteAheadLog(database=resolved["database"], fault=fault)
    run = _execute(NIGHTLY_SYNC_JOB, night.isoformat(), resolved, inst, QUIET,
                   {"data_mash/sync": sync_id(night), "data_mash/launched_by": "cli"})
    rollbacks = compensate_failed_syncs(resources=resources, dagster_instance=inst) \
        if compensate and not run.success else []
    return WaveOutcome(run.run_id, run.success, run.failed_checks, run.error, rollbacks)


def compensate_failed_syncs(*, resources: dict | None = None,
                            dagster_instance: dg.DagsterInstance | None = None) -> list[RunOutcome]:
    """Evaluate `sync_failure_sensor` and run the rollbacks it requests."""
    return _evaluate_sensor("sync_failure_sensor", resources, dagster_instance or instance())


def rollback_sync(night, *, reason: str = "requested by an operator", resources: dict | None = None,
                  dagster_instance: dg.DagsterInstance | None = None) -> RunOutcome:
    """Undo a night of sync through Dagster (`rollback_wave_job` with the night's id)."""
    from resources.sync_store import sync_id

    return rollback_wave(sync_id(night), reason=reason, resources=resources, dagster_instance=dagster_instance)


def rollback_wave(wave_id: str, *, policy_id: str | None = None, reason: str = "requested by an operator",
                  resources: dict | None = None, dagster_instance: dg.DagsterInstance | None = None) -> RunOutcome:
    """Undo a wave, or one policy of it, through Dagster (`rollback_wave_job`)."""
    inst = dagster_instance or instance()
    config = {"wave_id": wave_id, "policy_id": policy_id or "", "reason": reason}
    return _execute(ROLLBACK_JOB, None, resources, inst, QUIET,
                    {"data_mash/wave": wave_id, "data_mash/launched_by": "cli"},
                    ops_config={"plan_wave_rollback": {"config": config}})


def audit_key_columns(store: IntakeStore) -> dict[str, str]:
    """Staging tables that hold a policy id, and which column: the source's key column where the table has it."""
    from legacy.sources import list_sources
    from resources.intake_store import sql_name

    keys = {s.name: sql_name(s.key) for s in list_sources()}
    with store.engine.connect() as conn:
        rows = conn.execute(text("SELECT table_name, source, columns FROM intake.staging_tables")).all()
    return {f"staging.{table}": keys[source] for table, source, columns in rows
            if source in keys and keys[source] in columns}
