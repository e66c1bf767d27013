"""Data Mash's work as Dagster runs: submit, follow, report.

The CLI and the demo use these functions. Each submits its job to Dagster through a launcher (the project's
webserver, queue, daemon and run workers; tests pass an in-process one) and reads the outcome back from the
database; none runs a job or a sensor itself, and none changes stored state outside a run.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from sqlalchemy import text

from dagster_project.compensation import ROLLBACK_JOB, compensation_expected
from dagster_project.environment import resources_for_environment
from dagster_project.jobs import ingest_job_name
from dagster_project.launcher import RunOutcome
from dagster_project.partitions import drops_partitions_name
from legacy.errors import UsageError
from legacy.integrity import verify_drop
from legacy.sources import find_drop_files, load_source
from resources.intake_store import IntakeStore
from resources.landing import content_hash, valid_drop_id


def launcher_for(launcher, resources: dict | None = None):
    """The launcher to submit runs with: the one given (tests pass their own), else this project's Dagster."""
    if launcher is not None:
        return launcher
    from dagster_project.launcher import DagsterLauncher

    resolved = resources or resources_for_environment(resolved=True)
    return DagsterLauncher(resolved["database"], say=lambda message: print(message, file=sys.stderr))


def refuse_second_run(launcher, tags: dict[str, str], what: str) -> None:
    """One run per wave (night) at a time: Dagster's queue holds a second one back; the CLI does not even ask."""
    from dagster_project.launcher import LaunchError

    if busy := launcher.in_progress(tags):
        run = busy[0]
        raise LaunchError(f"{what} already has run {run.run_id} ({run.status.value.lower()}); wait for it to end (the "
                          f"Dagster UI, Runs) before running it again")


def known_wave(wave_id: str, resources: dict | None = None):
    """The wave store, once `wave_id` is known to be a wave (else `UnknownWaveError`, exit 2 at the CLI)."""
    from resources.wave_store import WaveStore

    waves = WaveStore((resources or resources_for_environment(resolved=True))["database"].engine())
    waves.wave(wave_id)
    return waves


def fault_config(fault: str | None) -> dict | None:
    """Run config that injects a fault into this run's WAL resource only (demos and drills)."""
    return {"resources": {"wal": {"config": {"fault": fault}}}} if fault else None


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
    drop_status: str | None = None  # intake.drops: verified, refused (nothing staged) or undone (a file failed)
    drop_error: str | None = None


def default_drop_id(path: Path, digest: str) -> str:
    stem = "".join(c if c.isalnum() or c in "-_." else "-" for c in path.name).strip(".-") or "drop"
    return f"{stem}-{digest[:8]}"


def ingest(path: Path, source_name: str, drop_id: str | None = None, *, resources: dict | None = None,
           launcher=None, fault: str | None = None) -> IngestOutcome:
    """Place a drop in the landing folder, register it, and materialize its intake assets through Dagster (a run
    whose worker dies is retried by Dagster, and followed here to the end). `fault`: a drill, as for waves."""
    source = load_source(source_name)
    resolved = resources or resources_for_environment(resolved=True)
    landing, database = resolved["landing"], resolved["database"]
    path = path.resolve()
    if path.is_dir():
        find_drop_files(source, path)  # fail early, naming the missing file, before anything moves
    if drop_id is not None:
        valid_drop_id(drop_id)
    # the same check the run's legacy/<source>/drop asset makes, up front: a bad drop is refused (DropRefused, a
    # ValueError) before it is landed or a run is launched; the run checks again (the drop it stages is the landed one)
    verify_drop(source, path, drop_id or path.name)
    if drop_id is None:  # name the drop after its content; the landed copy's hash below is the one recorded
        drop_id = default_drop_id(path, content_hash(path) if path.is_dir() else "single")
    drop = landing.place(source.name, valid_drop_id(drop_id), path)
    digest = content_hash(drop.path)
    store = IntakeStore(database.engine())  # the run's drop asset registers the drop, with its verdict

    launcher = launcher_for(launcher, resources)
    launcher.add_partitions(drops_partitions_name(source.name), [drop_id])
    run = launcher.run(ingest_job_name(source.name), partition_key=drop_id, label=f"ingest {source.name} {drop_id}",
                       run_config=fault_config(fault),
                       tags={"data_mash/source": source.name, "data_mash/drop": f"{source.name}:{drop_id}",
                             "data_mash/content_hash": digest, "data_mash/launched_by": "cli"})
    state = store.drop_state(source.name, drop_id)
    return IngestOutcome(source.name, drop_id, run.run_id, run.success, file_outcomes(store, source.name, drop_id),
                         run.failed_checks, run.error, canonical_outcomes(store.engine, source.name, drop_id),
                         state.status if state else None, state.error if state else None)


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


def remap(source_name: str, drop_id: str, *, resources: dict | None = None, launcher=None) -> CanonicalOutcome:
    """Map an already staged drop again through Dagster (`map_<source>_job`)."""
    from dagster_project.jobs import map_job_name

    resolved = resources or resources_for_environment(resolved=True)
    run = launcher_for(launcher, resources).run(
        map_job_name(source_name), partition_key=drop_id, label=f"map {source_name} {drop_id}",
        tags={"data_mash/source": source_name, "data_mash/drop": f"{source_name}:{drop_id}",
              "data_mash/launched_by": "cli"})
    return CanonicalOutcome(source_name, drop_id, run.run_id, run.success,
                            canonical_outcomes(resolved["database"].engine(), source_name, drop_id), run.error)


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


def recover(*, resources: dict | None = None, launcher=None, now=None) -> list[RecoveryOutcome]:
    """Carry out the WAL's recovery plan through Dagster: relaunch what is due, dead-letter what is spent."""
    from dagster_project.sensors import recovery_run_request

    resolved = resources or resources_for_environment(resolved=True)
    store = resolved["wal"].store()
    outcomes = []
    for action in store.recovery_plan(now=now):
        if action.action == "dead_letter":
            store.dead_letter(action.intent_id, action.reason)
            outcomes.append(RecoveryOutcome(action.intent_id, "dead_lettered", action.reason))
        elif action.action == "relaunch" and action.job_name and action.asset_key:
            request = recovery_run_request(action)
            launcher = launcher_for(launcher, resources)
            run = launcher.run(request.job_name, partition_key=request.partition_key,
                               asset_selection=request.asset_selection, label=f"recover WAL intent {action.intent_id}",
                               tags={**request.tags, "data_mash/launched_by": "cli"})
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


def route(rules: Path | None = None, *, resources: dict | None = None, launcher=None) -> RouteOutcome:
    """Route the current canonical book and update the coexistence registry, through Dagster (`route_book_job`)."""
    from dagster_project.jobs import ROUTE_JOB

    resolved = resources or resources_for_environment(resolved=True)
    config = {"ops": {"routing__decisions": {"config": {"rules": str(rules.resolve())}}}} if rules else None
    run = launcher_for(launcher, resources).run(ROUTE_JOB, run_config=config, label="route the book",
                                                tags={"data_mash/launched_by": "cli"})
    with resolved["database"].engine().connect() as conn:
        by_target = dict(conn.execute(text("SELECT target, count(*) FROM routing.decisions GROUP BY 1 ORDER BY 1")).all())
        by_system = dict(conn.execute(text(
            "SELECT system_of_record, count(*) FROM coexistence.registry GROUP BY 1 ORDER BY 1")).all())
        conflicts = conn.execute(text("SELECT count(*) FROM coexistence.conflicts WHERE resolved_at IS NULL")).scalar_one()
    return RouteOutcome(run.run_id, run.success, run.error, by_target, by_system, conflicts)


WaveOutcome = RunOutcome  # a wave's or night's run, with the compensation runs the daemon launched for it


def _compensated(launcher, run: RunOutcome, job_name: str, unit: str, resources: dict | None,
                 compensate: bool) -> RunOutcome:
    """After a failed run: wait for the rollback the daemon's `compensation_sensor` launches, when the same rule the
    sensor follows says it will."""
    if compensate and not run.success and run.run_id:
        resolved = resources or resources_for_environment(resolved=True)
        if compensation_expected(resolved["wal"].store(), unit, run.run_id, job_name, bool(run.failed_checks)):
            run.rollbacks = launcher.compensations(run.run_id)
    return run


def run_wave(wave_id: str, *, resources: dict | None = None, launcher=None, fault: str | None = None,
             compensate: bool = True) -> RunOutcome:
    """Run one approved wave now, through Dagster (`run_wave_job`, partition = wave id).

    If the run fails after loading something, `compensation_sensor` (on the daemon) launches its rollback; with
    `compensate` this waits for it, so the wave is undone before this returns. `fault` (`fail:<point>:<asset key>`)
    injects a failure into this run only, for demos and drills.
    """
    from assets.waves import RUN_WAVE_JOB, WAVES_PARTITIONS
    from resources.wave_store import WaveError

    wave = known_wave(wave_id, resources).wave(wave_id)  # before a partition is added or a run submitted
    if wave["status"] == "completed":
        raise WaveError(f"wave {wave_id} is completed: its policies are on their targets, and running it again would "
                        f"load legacy's version over them. Roll it back first (`data-mash wave rollback {wave_id}`).")
    launcher = launcher_for(launcher, resources)
    refuse_second_run(launcher, {"data_mash/wave": wave_id}, f"wave {wave_id}")
    launcher.add_partitions(WAVES_PARTITIONS.name, [wave_id])
    run = launcher.run(RUN_WAVE_JOB, partition_key=wave_id, run_config=fault_config(fault), label=f"wave {wave_id}",
                       tags={"data_mash/wave": wave_id, "data_mash/launched_by": "cli"})
    return _compensated(launcher, run, RUN_WAVE_JOB, wave_id, resources, compensate)


def reconcile_wave(wave_id: str, *, resources: dict | None = None, launcher=None,
                   compensate: bool = True) -> RunOutcome:
    """Re-run a loaded wave's reconciliation checks through Dagster (`reconcile_wave_job`); a failure rolls it back."""
    from assets.targets import RECONCILE_JOB

    known_wave(wave_id, resources)
    launcher = launcher_for(launcher, resources)
    run = launcher.run(RECONCILE_JOB, partition_key=wave_id, label=f"reconcile wave {wave_id}",
                       tags={"data_mash/wave": wave_id, "data_mash/launched_by": "cli"})
    return _compensated(launcher, run, RECONCILE_JOB, wave_id, resources, compensate)


def tonight(rules=None) -> date:
    """Today's date in the sync's zone: the night a sync run by hand syncs."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from routing.sync import load_sync_rules

    return datetime.now(ZoneInfo((rules or load_sync_rules()).schedule.timezone)).date()


def sync_night(night=None, *, resources: dict | None = None, launcher=None, fault: str | None = None,
               compensate: bool = True) -> RunOutcome:
    """Run one night of sync now, through Dagster (`nightly_sync_job`, partition = the night, default tonight).
    A failed night is rolled back by `compensation_sensor` on the daemon; with `compensate` this waits for it."""
    from assets.sync import NIGHTLY_SYNC_JOB
    from resources.sync_store import sync_id

    night = night or tonight()
    launcher = launcher_for(launcher, resources)
    refuse_second_run(launcher, {"data_mash/sync": sync_id(night)}, f"the night of {night}")
    run = launcher.run(NIGHTLY_SYNC_JOB, partition_key=night.isoformat(), run_config=fault_config(fault),
                       label=f"sync night {night}",
                       tags={"data_mash/sync": sync_id(night), "data_mash/launched_by": "cli"})
    return _compensated(launcher, run, NIGHTLY_SYNC_JOB, sync_id(night), resources, compensate)


def rollback_sync(night, *, reason: str = "requested by an operator", resources: dict | None = None,
                  launcher=None) -> RunOutcome:
    """Undo a night of sync through Dagster (`rollback_wave_job` with the night's id)."""
    from resources.sync_store import sync_id

    return rollback_wave(sync_id(night), reason=reason, resources=resources, launcher=launcher)


def rollback_wave(wave_id: str, *, policy_id: str | None = None, reason: str = "requested by an operator",
                  resources: dict | None = None, launcher=None) -> RunOutcome:
    """Undo a wave, or one policy of it, through Dagster (`rollback_wave_job`). An unknown wave, or a policy that is
    not part of the wave, is refused before a run is submitted (`UsageError`)."""
    from resources.sync_store import PREFIX as SYNC_PREFIX

    if not wave_id.startswith(SYNC_PREFIX):
        waves = known_wave(wave_id, resources)
        if policy_id and waves.policy_in_wave(wave_id, policy_id) is None:
            raise UsageError(f"--policy {policy_id}: not a policy of wave {wave_id} (neither among its "
                             f"{waves.wave(wave_id)['candidates']:,} candidates nor rolled back from it before); "
                             f"nothing was rolled back. `data-mash where {policy_id}` says which wave holds it.")
    config = {"wave_id": wave_id, "policy_id": policy_id or "", "reason": reason}
    return launcher_for(launcher, resources).run(
        ROLLBACK_JOB, run_config={"ops": {"plan_wave_rollback": {"config": config}}},
        label=f"roll back {wave_id}" + (f" policy {policy_id}" if policy_id else ""),
        tags={"data_mash/wave": wave_id, "data_mash/launched_by": "cli"})


def audit_key_columns(store: IntakeStore) -> dict[str, str]:
    """Staging tables that hold a policy id, and which column: the source's key column where the table has it."""
    from legacy.sources import list_sources
    from resources.intake_store import sql_name

    keys = {s.name: sql_name(s.key) for s in list_sources()}
    with store.engine.connect() as conn:
        rows = conn.execute(text("SELECT table_name, source, columns FROM intake.staging_tables")).all()
    return {f"staging.{table}": keys[source] for table, source, columns in rows
            if source in keys and keys[source] in columns}
