"""`sync/*`: the nightly two-way sync between the legacy systems and the new platform, one partition per night.

- `sync/changes`: both sides' changes since they last agreed, one decision per policy (conflict
  rules per line of business), recorded; decisions that write nothing are settled here;
- `sync/new_platform`: legacy's version of bridge policies (and conflicts legacy won) onto the platform;
- `sync/legacy_batch`: the platform's changes to policies legacy still services, as a POLOUT batch;
- `sync/dq_queue`: manual conflicts, with both versions;
- `sync/report`: proves the night (`SyncStore.check`) and stores its report; a failed proof fails
  the night and its run, and `compensation_sensor` rolls it back with `rollback_wave_job`.

Each write is one WAL entry (namespace `sync`, wave `sync-<night>`). `nightly_sync_job` runs them,
after applying new legacy drops to the book; `nightly_sync_schedule` launches it every night at the
time and in the zone of `routing/rules/sync.yaml`. Thin: the work is in `resources/sync_store.py`.
"""

import hashlib
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg

from assets.routing import BOOK
from resources.book_store import BookStore
from resources.sync_store import OPERATIONS, SyncStore, sync_id
from resources.target_store import LoadResult, TargetsResource
from resources.wal import WriteAheadLog
from routing.sync import SyncRules

CHANGES = dg.AssetKey(["sync", "changes"])
NEW_PLATFORM = dg.AssetKey(["sync", "new_platform"])
LEGACY_BATCH = dg.AssetKey(["sync", "legacy_batch"])
DQ_QUEUE = dg.AssetKey(["sync", "dq_queue"])
REPORT = dg.AssetKey(["sync", "report"])
SYNC_KEYS = (CHANGES, NEW_PLATFORM, LEGACY_BATCH, DQ_QUEUE, REPORT)  # partitioned by night
NIGHTLY_SYNC_JOB = "nightly_sync_job"
SYNC_FAILED = "sync failed"
STEP_FAILED = "sync step failed"


def sync_partitions(rules: SyncRules) -> dg.DailyPartitionsDefinition:
    """One partition per night, dated in the sync's zone; tonight's exists already (a run by hand before 02:00)."""
    return dg.DailyPartitionsDefinition(start_date="2024-01-01", timezone=rules.schedule.timezone, end_offset=1)


def night_to_sync(scheduled: datetime, rules: SyncRules) -> date:
    """The night a scheduled run syncs: the day that ended, for a run after midnight and before noon."""
    local = scheduled.astimezone(ZoneInfo(rules.schedule.timezone))
    return (local - timedelta(days=1)).date() if local.hour < 12 else local.date()


def _store(targets: TargetsResource, rules: SyncRules) -> SyncStore:
    return SyncStore(targets.store(), rules)


def build_sync_assets(rules: SyncRules):
    """The sync assets, job and schedule for these settings."""
    partitions = sync_partitions(rules)

    def write_step(context, wal: WriteAheadLog, targets: TargetsResource, operation: str, action: str,
                   work) -> dg.MaterializeResult:
        night = date.fromisoformat(context.partition_key)
        store = _store(targets, rules)
        pending = store.pending(night, action)
        if not pending:
            return dg.MaterializeResult(metadata={"night": night.isoformat(), "policies": 0,
                                                  "note": f"no {action} decision to carry out"})
        digest = hashlib.sha256(",".join(map(str, pending)).encode()).hexdigest()[:16]
        asset_key = context.asset_key.to_user_string()
        try:
            with wal.intent(context, namespace="sync", operation=operation, target=asset_key,
                            key=f"sync:{night}:{operation}:{digest}",
                            payload={"night": night.isoformat(), "decisions": len(pending), "action": action},
                            wave=sync_id(night)) as intent:
                wal.maybe_crash("mid_load", asset_key)
                store.targets.before_publish = lambda: wal.maybe_crash("before_publish", asset_key)  # drills
                result: LoadResult = work(store, night, intent.id)
                intent.result = {"policies": result.policies, "rows": result.rows, "changed": result.changed,
                                 **result.detail}
        except Exception as error:
            store.set_status(night, "failed", f"{STEP_FAILED}: {asset_key}: {type(error).__name__}: {error}"[:2000])
            raise
        return dg.MaterializeResult(metadata={
            "night": night.isoformat(), "policies": result.policies, "rows": dg.MetadataValue.json(result.rows),
            "inserted": dg.MetadataValue.json(result.inserted), "updated": dg.MetadataValue.json(result.updated),
            "removed": dg.MetadataValue.json(result.removed), "wal_entry_id": intent.id,
            **{k: (dg.MetadataValue.path(v) if k == "file" else v) for k, v in result.detail.items()}})

    @dg.asset(key=CHANGES, deps=[BOOK], partitions_def=partitions, group_name="sync", kinds={"postgres"},
              description="What changed on each side since both last agreed (per-policy content hash of the book and "
                          "of the new platform), and one decision per changed policy: to the platform, back to "
                          "legacy, accepted, kept out, or queued; every conflict with its rule. Recorded in "
                          "`sync.decisions`.")
    def sync_changes(context: dg.AssetExecutionContext, wal: WriteAheadLog, targets: TargetsResource):
        night = date.fromisoformat(context.partition_key)
        store = _store(targets, rules)
        pending = BookStore(store.engine).pending()
        if pending:
            raise dg.Failure(f"{len(pending)} mapped drop(s) are not in the book yet ({pending[0]['drop_key']}, ...): "
                             "the book must be current before a sync")
        store.start(night)
        try:
            with wal.intent(context, namespace="sync", operation=OPERATIONS[0], target="sync.decisions",
                            key=f"sync:{night}:sync_detect:{context.run.run_id}",
                            payload={"night": night.isoformat(), "rules": rules.model_dump()},
                            wave=sync_id(night)) as intent:
                found = store.detect(night, intent.id)
                intent.result = found.__dict__
        except Exception as error:
            store.set_status(night, "failed", f"{STEP_FAILED}: sync/changes: {type(error).__name__}: {error}"[:2000])
            raise
        return dg.MaterializeResult(metadata={
            "night": night.isoformat(), "dagster/row_count": found.changed, "policies_on_platform": found.on_platform,
            "changed_policies": found.changed, "decisions": dg.MetadataValue.json(found.decided),
            "conflicts": found.conflicts, "settled_without_writes": found.settled,
            "adopted_into_baseline": found.adopted, "superseded": found.superseded, "wal_entry_id": intent.id})

    @dg.asset(key=NEW_PLATFORM, deps=[CHANGES], partitions_def=partitions, group_name="sync", kinds={"postgres"},
              description="Legacy's version of the policies the night sends to the new platform (bridge policies' "
                          "legacy changes, conflicts legacy won), written like a wave's load; the rows it replaces "
                          "are saved for compensation.")
    def sync_new_platform(context: dg.AssetExecutionContext, wal: WriteAheadLog, targets: TargetsResource):
        return write_step(context, wal, targets, OPERATIONS[1], "to_platform", SyncStore.apply_to_platform)

    @dg.asset(key=LEGACY_BATCH, deps=[CHANGES], partitions_def=partitions, group_name="sync", kinds={"file"},
              description="The new platform's changes to policies the legacy system still services (bridge), as a "
                          "POLOUT batch in the mainframe's layout: `POLOUT-sync-<night>-<entry>.dat`.")
    def sync_legacy_batch(context: dg.AssetExecutionContext, wal: WriteAheadLog, targets: TargetsResource):
        return write_step(context, wal, targets, OPERATIONS[2], "to_legacy", SyncStore.write_back)

    @dg.asset(key=DQ_QUEUE, deps=[CHANGES], partitions_def=partitions, group_name="sync", kinds={"postgres"},
              description="Conflicts of lines whose rule is `manual`: to the DQ queue, both versions kept on the "
                          "decision, neither applied until someone settles it.")
    def sync_dq_queue(context: dg.AssetExecutionContext, wal: WriteAheadLog, targets: TargetsResource):
        return write_step(context, wal, targets, OPERATIONS[3], "queue", SyncStore.queue_manual)

    @dg.asset(key=REPORT, deps=[NEW_PLATFORM, LEGACY_BATCH, DQ_QUEUE], partitions_def=partitions, group_name="sync",
              kinds={"postgres"},
              description="The night proved (every decision settled, both sides back at the agreed state, legacy's "
                          "version on the platform where it went there, the batch read back, manual conflicts "
                          "queued) and its report: changes per side, applied, conflicts by rule, queue additions.")
    def sync_report(context: dg.AssetExecutionContext, wal: WriteAheadLog, targets: TargetsResource):
        night = date.fromisoformat(context.partition_key)
        store = _store(targets, rules)
        with wal.intent(context, namespace="sync", operation="sync_report", target="sync.nights",
                        key=f"sync:{night}:sync_report:{context.run.run_id}", payload={"night": night.isoformat()},
                        wave=sync_id(night)) as intent:
            checks = store.check(night)
            report = {**store.report(night), "checks": [c.__dict__ for c in checks]}
            failed = [c for c in checks if not c.passed]
            status = "failed" if failed else "completed"
            reason = f"{SYNC_FAILED}: " + "; ".join(c.description for c in failed)[:1900] if failed else None
            store.set_status(night, status, reason, report)
            intent.result = {"status": status, "changed_policies": report["changed_policies"],
                             "failed_checks": [c.name for c in failed]}
        if failed:  # the night is failed, and so its run: compensation_sensor rolls it back
            raise dg.Failure(f"night {night} does not prove out: " + "; ".join(c.description for c in failed))
        return dg.MaterializeResult(metadata={
            "night": night.isoformat(), "changed_policies": report["changed_policies"],
            "seen": dg.MetadataValue.json(report["seen"]), "applied": dg.MetadataValue.json(report["applied"]),
            "conflicts_by_rule": dg.MetadataValue.json(report["conflicts"]),
            "queued_for_manual_review": report["queued_for_manual_review"],
            "checks": dg.MetadataValue.md("\n".join(f"- {c.description}" for c in checks))})

    job = dg.define_asset_job(
        NIGHTLY_SYNC_JOB, selection=dg.AssetSelection.assets(BOOK, CHANGES, NEW_PLATFORM, LEGACY_BATCH, DQ_QUEUE, REPORT),
        description="One night of sync (a partition per night): detect both sides' changes, decide, write each "
                    "through the WAL, prove and report. A failure is compensated by `rollback_wave_job`.")

    @dg.schedule(name="nightly_sync_schedule", cron_schedule=rules.schedule.cron, job=job,
                 execution_timezone=rules.schedule.timezone, default_status=dg.DefaultScheduleStatus.STOPPED,
                 description=f"The nightly sync, every night at {rules.schedule.time} {rules.schedule.timezone} "
                             "(routing/rules/sync.yaml), for the day that ended.")
    def nightly_sync_schedule(context: dg.ScheduleEvaluationContext):
        night = night_to_sync(context.scheduled_execution_time, rules)
        return dg.RunRequest(run_key=f"sync:{night}", partition_key=night.isoformat(),
                             tags={"data_mash/sync": sync_id(night), "data_mash/launched_by": "schedule"})

    return [sync_changes, sync_new_platform, sync_legacy_batch, sync_dq_queue, sync_report], job, nightly_sync_schedule
