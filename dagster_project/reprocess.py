"""Reprocess past drops after a mapping change: install the mapping, backfill the canonical assets, apply the book.

`data-mash reprocess` runs these steps; each is also usable on its own (tests call them directly):

1. `plan_reprocess`: which drops of the source landed since a date, and whether there is anything to do (a
   mapping equal to the active one is refused, unless an interrupted reprocess left drops mapped otherwise).
2. `preview_impact`: old and new mapping on the drops' staged rows (`canonical.impact`), field by field.
3. `reprocess`: install the mapping (a WAL intent), launch the backfill, apply the reprocessed drops to the book
   (`canonical/book`), and report what changed, by policy and by system of record.

The backfill is an asset backfill recorded on the Dagster instance, so it shows on the UI's backfills page. When
a daemon is running on the instance (`make ui`), it is submitted as the UI would submit it and the daemon launches
its runs, one per contiguous range of drops (the canonical assets' single-run backfill policy). Usually the CLI has
no daemon: it then executes the backfill's runs in process itself, one per range, each tagged with the backfill id
and its range, and marks the backfill completed or failed with what each run materialized. That backfill is
recorded with every partition already requested, so a daemon started meanwhile never launches the runs again.
Dagster has no public API for recording a backfill outside its daemon and webserver; the internals used here
(`PartitionBackfill`, `AssetBackfillData`) are the ones the webserver uses to launch one.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

import dagster as dg
from sqlalchemy import Engine, text

from canonical.impact import TableImpact, compare_block
from canonical.mapping import Mapping, MappingError
from dagster_project.definitions import build_definitions
from dagster_project.environment import resources_for_environment
from dagster_project.jobs import ROUTE_JOB, map_job_name
from dagster_project.partitions import drops_partitions_name
from dagster_project.runner import RunOutcome, _execute, instance, outcome_of, root_cause
from legacy.sources import load_source, output_columns
from resources.canonical_store import CanonicalStore, drop_key
from resources.mapping_store import MappingInstall, MappingStore, active_mapping, check_installable

RANGE_START, RANGE_END, BACKFILL_ID = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end",
                                       "dagster/backfill")
MIGRATED = ("new_platform", "coexistence_bridge")  # how the report counts policies a wave already moved


class ReprocessError(ValueError):
    """A reprocess that cannot start as asked (nothing to reprocess, no drop, another source): bad input."""


@dataclass
class Drop:
    drop_id: str
    registered_at: datetime
    mapped_with: str | None  # the policies table's mapping version now
    current: bool  # every table of the drop is mapped with the plan's mapping already


@dataclass
class ReprocessPlan:
    source: str
    since: datetime
    mapping: Mapping  # the new mapping
    active: Mapping  # the mapping in use now
    drops: list[Drop]  # to reprocess, in landing order
    resume: bool = False  # the mapping is installed already: finish an interrupted reprocess

    @property
    def drop_ids(self) -> list[str]:
        return [d.drop_id for d in self.drops]


def source_drops(engine: Engine, source: str, since: datetime, mapping_hash: str) -> list[Drop]:
    """The source's staged drops that landed on or after `since`, in landing order."""
    with engine.connect() as conn:
        rows = conn.execute(text("""
            SELECT d.drop_id, d.registered_at,
                   (SELECT l.mapping_version FROM canonical.loads l WHERE l.source = d.source AND l.drop_id = d.drop_id
                      AND l.table_name = 'policies') AS mapped_with,
                   (SELECT coalesce(bool_and(l.mapping_hash = :h), false) FROM canonical.loads l
                      WHERE l.source = d.source AND l.drop_id = d.drop_id) AS current
            FROM intake.drops d
            WHERE d.source = :s AND d.registered_at >= :since
              AND EXISTS (SELECT 1 FROM intake.files f WHERE f.source = d.source AND f.drop_id = d.drop_id)
            ORDER BY d.registered_at, d.drop_id"""), {"s": source, "since": since, "h": mapping_hash}).all()
    return [Drop(*r) for r in rows]


def plan_reprocess(mapping: Mapping, since: datetime, *, engine: Engine, source: str | None = None) -> ReprocessPlan:
    """What reprocessing `mapping` over the drops landed since `since` means; refuses what would change nothing."""
    source = source or mapping.spec.source
    if source != mapping.spec.source:
        raise ReprocessError(f"{mapping.path}: maps source {mapping.spec.source!r}, not {source!r}")
    check_installable(mapping)
    active = active_mapping(source)
    drops = source_drops(engine, source, since, mapping.hash)
    if not drops:
        raise ReprocessError(f"no staged drop of {source} landed on or after {since.isoformat()}: nothing to "
                             "reprocess (see `data-mash status`)")
    if mapping.hash != active.hash:
        return ReprocessPlan(source, since, mapping, active, drops)
    left = [d for d in drops if not d.current]
    if not left:
        raise ReprocessError(f"nothing to reprocess: {mapping.path} ({mapping.name} {mapping.version}, hash "
                             f"{mapping.hash[:12]}) is the active mapping of {source} already, and every drop since "
                             f"{since.isoformat()} is mapped with it")
    return ReprocessPlan(source, since, mapping, active, left, resume=True)


# --------------------------------------------------------------------------- preview
@dataclass
class ImpactPreview:
    tables: list[TableImpact]
    not_compared: dict[str, str] = field(default_factory=dict)  # table -> why

    @property
    def policies(self) -> set[str]:
        return set().union(*(t.changed_policies for t in self.tables)) if self.tables else set()


def preview_impact(plan: ReprocessPlan, *, engine: Engine, landing) -> ImpactPreview:
    """Map the plan's drops' staged rows with the active and the new mapping and compare, field by field.

    Row by row before duplicates and orphans are settled (that happens in the database at load), so it is the
    expected impact; what the book records after the backfill is the actual one."""
    source = load_source(plan.source)
    store = CanonicalStore(engine)
    preview = ImpactPreview([])
    for table in plan.mapping.spec.tables:
        kind = plan.mapping.spec.tables[table].from_
        impact = TableImpact(table)
        try:
            for drop_id in plan.drop_ids:
                drop_dir = landing.drop_dir(plan.source, drop_id)
                columns = output_columns(source, source.file(kind), drop_dir if drop_dir.is_dir() else None)
                for block in store.read_staged(plan.source, kind, drop_id, columns):
                    compare_block(plan.active, plan.mapping, table, block, impact)
        except MappingError as error:  # e.g. lookup() needs satellite data the comparison does not load
            preview.not_compared[table] = str(error)
            continue
        preview.tables.append(impact)
    return preview


# --------------------------------------------------------------------------- the backfill
def drop_ranges(partition_order: list[str], drops: list[str]) -> list[list[str]]:
    """The drops as contiguous ranges of the source's partitions (a range is what one single-run backfill run
    takes), in partition order."""
    wanted, ranges, current = set(drops), [], []
    for key in partition_order:
        if key in wanted:
            current.append(key)
        elif current:
            ranges.append(current)
            current = []
    if current:
        ranges.append(current)
    return ranges


@dataclass
class BackfillRun:
    run_id: str
    drops: list[str]
    success: bool
    failed_checks: list[str]
    error: str | None


@dataclass
class BackfillOutcome:
    backfill_id: str
    status: str
    runs: list[BackfillRun]
    by_daemon: bool = False  # the daemon launched the runs (else the CLI ran them in process)

    @property
    def success(self) -> bool:
        return self.status == "COMPLETED_SUCCESS" and all(r.success for r in self.runs)


def map_intent_key(source: str, table: str, drop_id: str, mapping_hash: str) -> str:
    """The idempotency key of one drop's `map_table` intent (as `assets/canonical.py` writes it)."""
    return f"canonical:{source}:{table}:{drop_id}:{mapping_hash}"


@contextmanager
def watch_mapping(engine: Engine, source: str, drops: list[str], mapping: Mapping,
                  on_mapped: Callable[[str, str], None] | None, interval: float = 0.25) -> Iterator[None]:
    """While the body runs, call `on_mapped(drop, table)` (from a thread) as each drop's table is committed in the
    WAL with `mapping`: progress from inside a run that maps a whole range."""
    if on_mapped is None:
        yield
        return
    keys = {map_intent_key(source, t, d, mapping.hash): (d, t) for d in drops for t in mapping.spec.tables}
    order = {key: n for n, key in enumerate(keys)}
    seen: set[str] = set()
    started = datetime.now().astimezone()
    stop = threading.Event()

    def poll() -> None:
        with engine.connect() as conn:
            done = conn.execute(text("SELECT idempotency_key FROM wal.intents WHERE idempotency_key = ANY(:k) "
                                     "AND status = 'committed' AND updated_at >= :t"),
                                {"k": list(keys), "t": started}).scalars().all()
        for key in sorted(set(done) - seen, key=order.__getitem__):
            seen.add(key)
            on_mapped(*keys[key])

    def loop() -> None:
        while not stop.wait(interval):
            poll()

    thread = threading.Thread(target=loop, name="reprocess-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        poll()


def backfill_daemon_alive(inst: dg.DagsterInstance, within_seconds: float = 90.0) -> bool:
    """Whether a Dagster daemon (`make ui`, `dagster-daemon run`) is running backfills on this instance now."""
    heartbeat = inst.get_daemon_heartbeats().get("BACKFILL")
    return heartbeat is not None and heartbeat.timestamp >= time.time() - within_seconds


def run_backfill(source: str, drops: list[str], mapping: Mapping, *, resources: dict | None = None,
                 dagster_instance: dg.DagsterInstance | None = None, tags: dict[str, str] | None = None,
                 on_mapped: Callable[[str, str], None] | None = None, use_daemon: bool | None = None,
                 timeout_seconds: float = 6 * 3600) -> BackfillOutcome:
    """Launch a backfill of the source's canonical assets over `drops` on the instance, and wait for it.

    With a live daemon the backfill is submitted as the UI would and the daemon launches its runs (one per contiguous
    range of drops, by the assets' backfill policy). Without one, its runs are executed here in process, one per
    range, tagged with the backfill id and the range, and the backfill is marked completed with what they did."""
    from dagster._core.execution.backfill import PartitionBackfill
    from dagster._core.utils import make_new_backfill_id

    from assets.canonical import canonical_asset_key

    inst = dagster_instance or instance()
    resolved = resources or resources_for_environment(resolved=True)
    engine = resolved["database"].engine()
    name = drops_partitions_name(source)
    known = set(inst.get_dynamic_partitions(name))
    if missing := [d for d in drops if d not in known]:  # e.g. an instance newer than the database
        inst.add_dynamic_partitions(name, missing)
    defs = build_definitions(resources=resources)
    asset_graph = defs.resolve_asset_graph()
    keys = [canonical_asset_key(source, t) for t in mapping.spec.tables]
    run_tags = {"data_mash/source": source, "data_mash/mapping": f"{mapping.name} {mapping.version}",
                "data_mash/launched_by": "cli", **(tags or {})}
    backfill = PartitionBackfill.from_asset_partitions(
        backfill_id=make_new_backfill_id(), asset_graph=asset_graph, partition_names=drops, asset_selection=keys,
        backfill_timestamp=time.time(), tags=run_tags, dynamic_partitions_store=inst, all_partitions=False,
        title=f"reprocess {source} with {mapping.name} {mapping.version}"[:100],
        description=(f"data-mash reprocess: {len(drops)} {source} drop(s) mapped again with mapping {mapping.name} "
                     f"{mapping.version} (hash {mapping.hash[:12]})"),
        run_config=None)
    with watch_mapping(engine, source, drops, mapping, on_mapped):
        if use_daemon if use_daemon is not None else backfill_daemon_alive(inst):
            return _backfill_by_daemon(backfill, source, inst, timeout_seconds)
        return _backfill_in_process(backfill, source, drops, keys, run_tags, inst, defs, asset_graph)


TERMINAL = ("COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED")


def _backfill_by_daemon(backfill, source: str, inst: dg.DagsterInstance, timeout_seconds: float) -> BackfillOutcome:
    """Submit the backfill for the daemon and wait until it is done (or the daemon stops answering)."""
    inst.add_backfill(backfill)
    deadline = time.monotonic() + timeout_seconds
    while True:
        current = inst.get_backfill(backfill.backfill_id)
        if current.status.value in TERMINAL:
            break
        if time.monotonic() > deadline or not backfill_daemon_alive(inst):
            why = "timed out" if time.monotonic() > deadline else "the daemon stopped"
            runs = _daemon_runs(backfill.backfill_id, source, inst)
            return BackfillOutcome(backfill.backfill_id, f"{current.status.value} ({why} while waiting)",
                                   [*runs, BackfillRun("", [], False, [], f"{why}: the backfill is still requested "
                                                       "on the instance and goes on when the daemon runs")], True)
        time.sleep(1.0)
    runs = _daemon_runs(backfill.backfill_id, source, inst)
    if current.status.value != "COMPLETED_SUCCESS" and all(r.success for r in runs):
        runs.append(BackfillRun("", [], False, [], f"backfill {current.status.value}"
                                + (f": {current.error.message.strip()}" if current.error else "")))
    return BackfillOutcome(backfill.backfill_id, current.status.value, runs, True)


def _daemon_runs(backfill_id: str, source: str, inst: dg.DagsterInstance) -> list[BackfillRun]:
    from assets.canonical import run_drops

    runs = []
    for run in reversed(inst.get_runs(dg.RunsFilter(tags={BACKFILL_ID: backfill_id}))):  # oldest first
        checks = [e.dagster_event.event_specific_data for e in
                  inst.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)]
        failures = inst.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
        error = "; ".join(f"{e.step_key}: {root_cause(e.dagster_event.event_specific_data.error)}" for e in failures)
        success = run.status == dg.DagsterRunStatus.SUCCESS
        runs.append(BackfillRun(run.run_id, run_drops(run.tags, source, inst), success,
                                [f"{c.asset_key.to_user_string()}: {c.check_name}" for c in checks if not c.passed],
                                error or (None if success else f"run {run.status.value}")))
    return runs


def _backfill_in_process(backfill, source: str, drops: list[str], keys: list[dg.AssetKey], run_tags: dict[str, str],
                         inst: dg.DagsterInstance, defs: dg.Definitions, asset_graph) -> BackfillOutcome:
    from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
    from dagster._core.definitions.events import AssetKeyPartitionKey
    from dagster._core.execution.backfill import BulkActionStatus

    data = backfill.asset_backfill_data
    # every partition requested up front: the runs are ours; a daemon started meanwhile only keeps the books
    data = data._replace(requested_subset=data.target_subset, requested_runs_for_target_roots=True,
                         latest_storage_id=inst.event_log_storage.get_maximum_record_id())
    backfill = backfill._replace(asset_backfill_data=data)
    inst.add_backfill(backfill)
    job = defs.resolve_job_def(map_job_name(source))
    runs, materialized, failed = [], set(), set()
    try:
        for chunk in drop_ranges(list(inst.get_dynamic_partitions(drops_partitions_name(source))), drops):
            result = job.execute_in_process(
                instance=inst, raise_on_error=False,
                run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
                tags={**run_tags, BACKFILL_ID: backfill.backfill_id, RANGE_START: chunk[0], RANGE_END: chunk[-1]})
            done = {AssetKeyPartitionKey(e.asset_key, e.partition) for e in
                    (ev.event_specific_data.materialization for ev in result.get_asset_materialization_events())}
            materialized |= done
            if not result.success:
                failed |= {AssetKeyPartitionKey(k, d) for k in keys for d in chunk} - done
            runs.append(_backfill_run(result, chunk))
    except BaseException:  # interrupted (Ctrl-C) or broken: the backfill must not stay "in progress" in the UI
        from dagster._utils.error import serializable_error_info_from_exc_info

        inst.update_backfill(backfill.with_status(BulkActionStatus.FAILED)
                             .with_error(serializable_error_info_from_exc_info(sys.exc_info()))
                             .with_end_timestamp(time.time()))
        raise
    data = data._replace(
        materialized_subset=AssetGraphSubset.from_asset_partition_set(materialized, asset_graph),
        failed_and_downstream_subset=AssetGraphSubset.from_asset_partition_set(failed, asset_graph),
        latest_storage_id=inst.event_log_storage.get_maximum_record_id())
    status = BulkActionStatus.COMPLETED_SUCCESS if all(r.success for r in runs) else BulkActionStatus.COMPLETED_FAILED
    inst.update_backfill(backfill._replace(asset_backfill_data=data, status=status, backfill_end_timestamp=time.time()))
    return BackfillOutcome(backfill.backfill_id, status.value, runs, False)


def _backfill_run(result, drops: list[str]) -> BackfillRun:
    run = outcome_of(result)
    return BackfillRun(run.run_id, drops, run.success, run.failed_checks, run.error)


# --------------------------------------------------------------------------- the book and the report
@dataclass
class DropReport:
    drop_id: str
    records_in: int
    records_mapped: int
    records_quarantined: int
    policies: int | None = None  # as applied to the book (None: not applied)
    new: int = 0
    changed: int = 0
    cancelled: int = 0
    unchanged: int = 0


@dataclass
class ChangeReport:
    drops: list[DropReport]
    by_owner: dict[tuple[str, str], int]  # (change, system of record now) -> policies
    migrated: dict[str, int]  # new_platform / coexistence_bridge -> changed policies a wave already moved
    changed_policies: set[str]
    gone: int  # policies of the book whose version in these drops the new mapping no longer maps

    @property
    def migrated_total(self) -> int:
        return sum(self.migrated.values())


def changes_mark(engine: Engine) -> int:
    """The last `canonical.changes` row so far: what the book records after it is this reprocess's."""
    with engine.connect() as conn:
        return conn.execute(text("SELECT coalesce(max(id), 0) FROM canonical.changes")).scalar_one()


def apply_book(*, resources: dict | None = None, dagster_instance: dg.DagsterInstance | None = None,
               tags: dict[str, str] | None = None) -> RunOutcome:
    """Materialize `canonical/book` (route_book_job's first step only): the reprocessed drops are compared with
    the book by content hash and their changes recorded. Routing is left as it is (`data-mash route` re-routes)."""
    from assets.routing import BOOK

    return _execute(ROUTE_JOB, None, resources, dagster_instance or instance(), "WARNING",
                    {"data_mash/launched_by": "cli", **(tags or {})}, asset_selection=[BOOK])


def change_report(engine: Engine, source: str, drops: list[str], mark: int) -> ChangeReport:
    """What the book recorded for `drops` after change `mark`: per drop, by system of record, migrated ones."""
    keys = [drop_key(source, d) for d in drops]
    with engine.connect() as conn:
        loads = {r[0]: r[1:] for r in conn.execute(text(
            "SELECT drop_id, records_in, records_mapped, records_quarantined FROM canonical.loads "
            "WHERE source = :s AND drop_id = ANY(:d) AND table_name = 'policies'"), {"s": source, "d": drops})}
        applied = {r["drop_key"]: r for r in conn.execute(text(
            "SELECT drop_key, policies, new, changed, cancelled, unchanged FROM canonical.book_drops "
            "WHERE drop_key = ANY(:k)"), {"k": keys}).mappings()}
        rows = conn.execute(text("""
            SELECT c.policy_id, c.change, coalesce(r.system_of_record, 'not routed yet') AS owner,
                   b.policy_id IS NOT NULL AS bridged
            FROM canonical.changes c LEFT JOIN coexistence.registry r USING (policy_id)
                 LEFT JOIN targets.coexistence_bridge b USING (policy_id)
            WHERE c.id > :m AND c.drop_key = ANY(:k)"""), {"m": mark, "k": keys}).all()
        gone = conn.execute(text(
            "SELECT count(*) FROM canonical.current k WHERE k.drop_key = ANY(:k) AND NOT EXISTS ("
            "SELECT 1 FROM canonical.policies p WHERE p.drop_key = k.drop_key AND p.policy_id = k.policy_id)"),
            {"k": keys}).scalar_one()
    by_owner: dict[tuple[str, str], set[str]] = {}
    migrated: dict[str, set[str]] = {m: set() for m in MIGRATED}
    for policy_id, change, owner, bridged in rows:
        by_owner.setdefault((change, owner), set()).add(policy_id)
        if owner == "new_platform":
            migrated["new_platform"].add(policy_id)
        elif bridged:
            migrated["coexistence_bridge"].add(policy_id)
    reports = []
    for d, key in zip(drops, keys):
        records = loads.get(d, (0, 0, 0))
        book = applied.get(key)
        reports.append(DropReport(d, *records, **({k: book[k] for k in ("policies", "new", "changed", "cancelled",
                                                                       "unchanged")} if book else {})))
    return ChangeReport(reports, {k: len(v) for k, v in sorted(by_owner.items())},
                        {k: len(v) for k, v in migrated.items()}, {r[0] for r in rows}, gone)


@dataclass
class ReprocessOutcome:
    plan: ReprocessPlan
    install: MappingInstall | None
    backfill: BackfillOutcome
    book_run: RunOutcome | None = None
    report: ChangeReport | None = None

    @property
    def success(self) -> bool:
        return self.backfill.success and self.book_run is not None and self.book_run.success


def reprocess(plan: ReprocessPlan, *, resources: dict | None = None,
              dagster_instance: dg.DagsterInstance | None = None, actor: str = "operator",
              on_installed: Callable[[MappingInstall], None] | None = None,
              on_mapped: Callable[[str, str], None] | None = None) -> ReprocessOutcome:
    """Install the plan's mapping (unless resuming), backfill its drops, apply them to the book, report."""
    resolved = resources or resources_for_environment(resolved=True)
    engine = resolved["database"].engine()
    inst = dagster_instance or instance()
    install = None
    if not plan.resume:
        install = MappingStore(resolved["wal"].store()).install(plan.mapping, actor)
        if on_installed:
            on_installed(install)
    backfill = run_backfill(plan.source, plan.drop_ids, plan.mapping, resources=resources, dagster_instance=inst,
                            on_mapped=on_mapped)
    outcome = ReprocessOutcome(plan, install, backfill)
    if not backfill.success:
        return outcome
    landed = source_drops(engine, plan.source, plan.since, plan.mapping.hash)
    stale = [d.drop_id for d in landed if not d.current]
    if stale:  # e.g. a daemon whose code location reads another DATA_MASH_HOME, hence another mapping
        backfill.runs.append(BackfillRun("", stale, False, [], f"drop(s) {', '.join(stale)} are not mapped with "
                                         f"{plan.mapping.version} after the backfill: does the code location that "
                                         "ran it use the same DATA_MASH_HOME as this command?"))
        return outcome
    mark = changes_mark(engine)
    outcome.book_run = apply_book(resources=resources, dagster_instance=inst,
                                  tags={"data_mash/reprocess_backfill": backfill.backfill_id})
    if outcome.book_run.success:  # every drop since the date: a resumed reprocess also reports what it finished
        outcome.report = change_report(engine, plan.source, [d.drop_id for d in landed], mark)
    return outcome
