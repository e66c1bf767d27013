"""`targets/*`: a wave's loads, partitioned by wave, their reconciliation, and the wave's report.

- `targets/new_platform`: the new platform's normalized tables (COPY into staging, upsert);
- `targets/legacy_batch`: the POLOUT file for policies the mainframe keeps servicing;
- `targets/dq_queue`: policies held back, with reasons;
- `targets/coexistence_bridge`: policies both systems serve, legacy authoritative.

Each load is one WAL intent and one transaction that also moves the registry rows it owns. Each
target's reconciliation checks (blocking) compare it with the canonical book; the bridge loads only
after the new platform and the batch reconciled, and `waves/report` runs only when all passed, and
marks the wave completed. A failed load or reconciliation fails the run, and the
compensation sensors (`dagster_project/compensation.py`) roll the wave back.
"""

import dagster as dg

from assets.waves import CANDIDATES, RUN_WAVE_JOB, WAVES_PARTITIONS, refuse_reload
from resources.target_store import LoadResult, TargetsResource
from resources.wal import WriteAheadLog
from resources.wave_store import LOAD_FAILED, RECONCILIATION_FAILED, WaveStore

NEW_PLATFORM = dg.AssetKey(["targets", "new_platform"])
LEGACY_BATCH = dg.AssetKey(["targets", "legacy_batch"])
DQ_QUEUE = dg.AssetKey(["targets", "dq_queue"])
BRIDGE = dg.AssetKey(["targets", "coexistence_bridge"])
REPORT = dg.AssetKey(["waves", "report"])
TARGET_KEYS = (NEW_PLATFORM, LEGACY_BATCH, DQ_QUEUE, BRIDGE)
# WAL operation of each target load (compensation dispatches on it)
OPERATIONS = {"new_platform": "load_new_platform", "legacy_batch": "write_legacy_batch",
              "dq_queue": "queue_held_back", "coexistence_bridge": "record_bridge"}


def _table(rows: dict, *columns: dict) -> str:
    header = ["table", "rows", *[name for name, _ in columns]] if columns else ["table", "rows"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, n in rows.items():
        lines.append("| " + " | ".join([name, f"{n:,}", *[f"{values.get(name, 0):,}" for _, values in columns]]) + " |")
    return "\n".join(lines)


def _load(context: dg.AssetExecutionContext, wal: WriteAheadLog, targets: TargetsResource, name: str,
          work) -> dg.MaterializeResult:
    wave_id = context.partition_key
    asset_key = context.asset_key.to_user_string()
    store = targets.store()
    refuse_reload(WaveStore(store.engine).wave(wave_id), asset_key)
    try:
        with wal.intent(context, namespace="targets", operation=OPERATIONS[name], target=f"targets.{name}",
                        key=f"targets:{wave_id}:{name}",
                        payload={"wave": wave_id, "mapping": store.mapping.target,
                                 "mapping_version": store.mapping.version, "mapping_hash": store.mapping.hash},
                        wave=wave_id) as intent:
            store.before_publish = lambda: wal.maybe_crash("before_publish", asset_key)  # drills
            result: LoadResult = work(store, wave_id, intent.id, lambda _block: wal.maybe_crash("mid_load", asset_key))
            intent.result = {"policies": result.policies, "rows": result.rows, "changed": result.changed,
                             "registry_moved": result.registry_moved, **result.detail}
    except Exception as error:  # the wave is failed: compensation (the sensors) takes it from here
        WaveStore(store.engine).set_status(wave_id, "failed", allowed_from=("running", "completed", "failed"),
                                           reason=f"{LOAD_FAILED}: {asset_key}: {type(error).__name__}: {error}"[:2000])
        raise
    return dg.MaterializeResult(metadata={
        "state": "loaded",
        "dagster/row_count": sum(result.rows.values()),
        "wave": wave_id,
        "policies": result.policies,
        "rows": dg.MetadataValue.md(_table(result.rows, ("inserted", result.inserted), ("updated", result.updated),
                                           ("removed", result.removed))),
        "changed_rows": result.changed,
        "registry_rows_moved": result.registry_moved,
        "wal_entry_id": intent.id,
        **{k: (dg.MetadataValue.path(v) if k == "file" else v) for k, v in result.detail.items()},
    })


def _target_asset(name: str, key: dg.AssetKey, deps: list, description: str, work, kinds: set[str]):
    @dg.asset(key=key, deps=deps, partitions_def=WAVES_PARTITIONS, group_name="waves", kinds=kinds,
              description=description)
    def target_asset(context: dg.AssetExecutionContext, wal: WriteAheadLog, targets: TargetsResource):
        return _load(context, wal, targets, name, work)

    return target_asset


def _new_platform(store, wave_id, wal_id, on_block):
    return store.load_new_platform(wave_id, wal_id, actor=RUN_WAVE_JOB, on_block=on_block)


def _legacy_batch(store, wave_id, wal_id, on_block):
    on_block(None)
    return store.write_legacy_batch(wave_id, wal_id, actor=RUN_WAVE_JOB)


def _dq_queue(store, wave_id, wal_id, on_block):
    on_block(None)
    return store.queue_held_back(wave_id, wal_id)


def _bridge(store, wave_id, wal_id, on_block):
    on_block(None)
    return store.record_bridge(wave_id, wal_id, actor=RUN_WAVE_JOB)


new_platform = _target_asset(
    "new_platform", NEW_PLATFORM, [CANDIDATES],
    "The wave's policies routed to the new platform or the bridge, in the new platform's normalized tables "
    "(policy, party, coverage, rating, payment, endorsement, document, claim_link), by the versioned canonical -> "
    "new platform mapping: COPY into staging, then upsert. New-platform policies get it as system of record.",
    _new_platform, {"postgres"})
legacy_batch = _target_asset(
    "legacy_batch", LEGACY_BATCH, [CANDIDATES],
    "POLOUT file (fixed width, EBCDIC, the mainframe's layout) of the wave's policies the legacy system keeps "
    "servicing (legacy batch and bridge), in the outbound folder, registered in `targets.outbound_files`.",
    _legacy_batch, {"file"})
dq_queue = _target_asset(
    "dq_queue", DQ_QUEUE, [CANDIDATES],
    "The wave's policies that routing holds back, queued with the rule and the data-quality findings for remediation. "
    "Once fixed and routed again, a later wave takes them and releases them from the queue.",
    _dq_queue, {"postgres"})
coexistence_bridge = _target_asset(
    "coexistence_bridge", BRIDGE, [NEW_PLATFORM, LEGACY_BATCH],
    "The wave's policies both systems must see during the transition (on the new platform and in the legacy batch), "
    "with the authoritative side: their legacy system until a later decision moves them.",
    _bridge, {"postgres"})

RECONCILIATION_CHECKS = {
    ("new_platform", "row_counts"): (NEW_PLATFORM, "Rows per new-platform table equal what the mapping makes of the "
                                                   "canonical rows; new-platform policies have it as system of record."),
    ("new_platform", "money_totals"): (NEW_PLATFORM, "Premium, face amount, limits and every other money column sum to "
                                                     "the cent on both sides."),
    ("new_platform", "content_hash"): (NEW_PLATFORM, "A content hash per policy over all its rows, canonical (mapped in "
                                                     "SQL) against the new platform."),
    ("legacy_batch", "file_read_back"): (LEGACY_BATCH, "The delivered POLOUT file, read back with the copybook codec, "
                                                       "holds exactly the expected policies, values and premium."),
    ("dq_queue", "row_counts"): (DQ_QUEUE, "Every policy held back is in the queue."),
    ("coexistence_bridge", "row_counts"): (BRIDGE, "Every bridge policy is recorded on the bridge."),
}


def specs_target(target: str) -> tuple[str, str]:
    """The first reconciliation check of a target (its asset is the target's)."""
    return next(k for k in RECONCILIATION_CHECKS if k[0] == target)


def check_name(target: str, name: str) -> str:
    return f"targets_{target}_{name}"


def _reconciliation_check(target: str):
    specs = [dg.AssetCheckSpec(check_name(t, n), asset=key, blocking=True, description=d,
                               partitions_def=WAVES_PARTITIONS)  # each wave's reconciliation on its own partition
             for (t, n), (key, d) in RECONCILIATION_CHECKS.items() if t == target]

    @dg.multi_asset_check(specs=specs, name=f"{target}_reconciliation")
    def reconciliation(context: dg.AssetCheckExecutionContext, wal: WriteAheadLog, targets: TargetsResource):
        """Reconcile the target with the canonical book for the wave. A difference fails the wave (compensation follows)."""
        wave_id = context.run.tags.get("dagster/partition")
        store = targets.store()
        # the reconciliation records itself and (for the new platform) the sync's baseline: a write, so an intent
        with wal.intent(context, namespace="targets", operation=f"reconcile_{target}", target=f"targets.{target}",
                        key=f"targets:{wave_id}:reconcile:{target}:{context.run.run_id}", payload={"wave": wave_id},
                        wave=wave_id, partition_key=wave_id,
                        asset_key=RECONCILIATION_CHECKS[specs_target(target)][0].to_user_string()) as intent:
            checks = store.reconcile(wave_id, target)
            intent.result = {c.name: c.passed for c in checks}
        failed = [c for c in checks if not c.passed]
        if failed:
            WaveStore(store.engine).set_status(
                wave_id, "failed", allowed_from=("running", "completed", "failed"),
                reason=f"{RECONCILIATION_FAILED}: " + "; ".join(c.description for c in failed)[:2000])
        for c in checks:
            yield dg.AssetCheckResult(
                asset_key=RECONCILIATION_CHECKS[(c.target, c.name)][0], check_name=check_name(c.target, c.name),
                passed=c.passed, severity=dg.AssetCheckSeverity.ERROR, description=c.description,
                metadata={"observed": dg.MetadataValue.json(c.observed), "failing": c.failing,
                          "examples": ", ".join(map(str, c.examples)) or "none"})

    return reconciliation


reconciliation_checks = [_reconciliation_check(t) for t in OPERATIONS]


def report_markdown(report: list[dict]) -> str:
    lines = ["| line | state | target | policies | landed | in-force premium before | after |", "|---|---|---|---:|---:|---:|---:|"]
    lines += [f"| {r['line_of_business']} | {r['state']} | {r['target']} | {r['policies']:,} | {r['landed']:,} | "
              f"{r['in_force_premium_before']} | {r['in_force_premium_after']} |" for r in report]
    return "\n".join(lines)


@dg.asset(key=REPORT, deps=list(TARGET_KEYS), partitions_def=WAVES_PARTITIONS, group_name="waves", kinds={"postgres"},
          description="The wave's reconciliation report per line of business, state and target (policies, in-force "
                      "premium before and after). Runs only after reconciliation passed; marks the wave completed.")
def wave_report(context: dg.AssetExecutionContext, wal: WriteAheadLog, targets: TargetsResource) -> dg.MaterializeResult:
    wave_id = context.partition_key
    store = targets.store()
    latest = store.latest_reconciliations(wave_id)
    unreconciled = [t for t in OPERATIONS if t not in latest or not latest[t]["passed"]]
    if unreconciled:
        raise dg.Failure(f"wave {wave_id}: {', '.join(unreconciled)} not reconciled: "
                         f"run `data-mash wave reconcile {wave_id}`")
    waves = WaveStore(store.engine)
    reconciled = max(r["reconciled_at"] for r in latest.values())
    with wal.intent(context, namespace="waves", operation="complete_wave", target="waves.waves",
                    key=f"waves:{wave_id}:report:{reconciled.isoformat()}",
                    payload={"wave": wave_id, "reconciliations": sorted(r["id"] for r in latest.values())},
                    wave=wave_id) as intent:
        report = store.report(wave_id)
        waves.save_report(wave_id, report)
        wave = waves.set_status(wave_id, "completed", allowed_from=("running", "completed"),
                                reason=f"loaded and reconciled at {reconciled:%Y-%m-%d %H:%M:%S %Z}")
        intent.result = {"rows": len(report)}
    return dg.MaterializeResult(metadata={
        "state": "loaded",
        "dagster/row_count": len(report),
        "wave": f"{wave_id}: {wave['name']}",
        "policies": sum(r["policies"] for r in report),
        "landed": sum(r["landed"] for r in report),
        "report": dg.MetadataValue.md(report_markdown(report)),
    })


RECONCILE_JOB = "reconcile_wave_job"
reconcile_wave_job = dg.define_asset_job(
    RECONCILE_JOB, selection=dg.AssetSelection.checks_for_assets(*TARGET_KEYS) | dg.AssetSelection.assets(REPORT),
    description="Reconcile a loaded wave again (a partition of `waves`) and rebuild its report, without loading "
                "anything: for audits. A difference fails the run and `compensation_sensor` rolls the wave back.")
