"""Reprocess past drops after a mapping change: install the mapping, backfill the canonical assets, apply the book.

`data-mash reprocess` runs these steps; each is also usable on its own (tests call them directly):

1. `plan_reprocess`: which drops of the source landed since a date, and whether there is anything to do (a
   mapping equal to the active one is refused, unless an interrupted reprocess left drops mapped otherwise).
2. `preview_impact`: old and new mapping on the drops' staged rows (`canonical.impact`), field by field.
3. `reprocess`: install the mapping (a WAL intent), launch the backfill, apply the reprocessed drops to the book
   (`canonical/book`), and report what changed, by policy and by system of record.

The backfill is an asset backfill launched the way the UI launches one (GraphQL `launchPartitionBackfill`), so it
shows on the UI's backfills page; the daemon launches its runs, one per contiguous range of drops (the canonical
assets' single-run backfill policy), and the CLI follows it until it is done.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

import dagster as dg
from sqlalchemy import Engine, text

from canonical.impact import TableImpact, compare_block
from canonical.mapping import Mapping, MappingError
from dagster_project.environment import resources_for_environment
from dagster_project.jobs import ROUTE_JOB
from dagster_project.launcher import RunOutcome, run_outcome
from dagster_project.partitions import drops_partitions_name
from dagster_project.runner import launcher_for
from legacy.sources import load_source, output_columns
from resources.canonical_store import CanonicalStore, drop_key
from resources.mapping_store import MappingInstall, MappingStore, active_mapping, check_installable

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


def run_backfill(source: str, drops: list[str], mapping: Mapping, *, resources: dict | None = None, launcher=None,
                 tags: dict[str, str] | None = None,
                 on_mapped: Callable[[str, str], None] | None = None) -> BackfillOutcome:
    """Launch a backfill of the source's canonical assets over `drops` through Dagster, and wait for it."""
    from assets.canonical import canonical_asset_key

    resolved = resources or resources_for_environment(resolved=True)
    launcher = launcher_for(launcher, resources)
    engine = resolved["database"].engine()
    launcher.add_partitions(drops_partitions_name(source), drops)  # e.g. an instance newer than the database
    keys = [canonical_asset_key(source, t) for t in mapping.spec.tables]
    run_tags = {"data_mash/source": source, "data_mash/mapping": f"{mapping.name} {mapping.version}",
                "data_mash/launched_by": "cli", **(tags or {})}
    with watch_mapping(engine, source, drops, mapping, on_mapped):
        backfill_id = launcher.backfill(
            drops, keys, tags=run_tags, title=f"reprocess {source} with {mapping.name} {mapping.version}"[:100],
            description=(f"data-mash reprocess: {len(drops)} {source} drop(s) mapped again with mapping "
                         f"{mapping.name} {mapping.version} (hash {mapping.hash[:12]})"))
        status = launcher.follow_backfill(backfill_id, f"backfill {backfill_id} ({len(drops)} {source} drop(s))")
    runs = [_backfill_run(launcher, run, source) for run in launcher.backfill_runs(backfill_id)]
    if status != "COMPLETED_SUCCESS" and all(r.success for r in runs):
        runs.append(BackfillRun("", [], False, [], f"backfill {status}"))
    return BackfillOutcome(backfill_id, status, runs)


def _backfill_run(launcher, run: dg.DagsterRun, source: str) -> BackfillRun:
    from assets.canonical import run_drops

    outcome = run_outcome(launcher.instance, run.run_id)
    return BackfillRun(run.run_id, run_drops(run.tags, source, launcher.instance), outcome.success,
                       outcome.failed_checks, outcome.error)


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


def apply_book(*, resources: dict | None = None, launcher=None, tags: dict[str, str] | None = None) -> RunOutcome:
    """Materialize `canonical/book` (route_book_job's first step only): the reprocessed drops are compared with
    the book by content hash and their changes recorded. Routing is left as it is (`data-mash route` re-routes)."""
    from assets.routing import BOOK

    return launcher_for(launcher, resources).run(ROUTE_JOB, asset_selection=[BOOK], label="apply the drops to the book",
                                                 tags={"data_mash/launched_by": "cli", **(tags or {})})


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
              launcher=None, actor: str = "operator",
              on_installed: Callable[[MappingInstall], None] | None = None,
              on_mapped: Callable[[str, str], None] | None = None) -> ReprocessOutcome:
    """Install the plan's mapping (unless resuming), backfill its drops, apply them to the book, report."""
    resolved = resources or resources_for_environment(resolved=True)
    engine = resolved["database"].engine()
    launcher = launcher_for(launcher, resources)
    install = None
    if not plan.resume:
        install = MappingStore(resolved["wal"].store()).install(plan.mapping, actor)
        if on_installed:
            on_installed(install)
    backfill = run_backfill(plan.source, plan.drop_ids, plan.mapping, resources=resources, launcher=launcher,
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
    outcome.book_run = apply_book(resources=resources, launcher=launcher,
                                  tags={"data_mash/reprocess_backfill": backfill.backfill_id})
    if outcome.book_run.success:  # every drop since the date: a resumed reprocess also reports what it finished
        outcome.report = change_report(engine, plan.source, [d.drop_id for d in landed], mark)
    return outcome
