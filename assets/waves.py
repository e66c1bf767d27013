"""`waves/candidates`: the policies a wave will move, one partition per wave.

Gates (blocking checks), target loads, reconciliation and compensation build on this asset.
"""

import warnings

import dagster as dg

from assets.routing import REGISTRY
from resources.database import DatabaseResource
from resources.target_store import TargetsResource
from resources.wal import WriteAheadLog
from resources.wave_store import WaveStore

WAVES_PARTITIONS = dg.DynamicPartitionsDefinition(name="waves")
# each wave's checks stand on its own partition (AssetCheckSpec(partitions_def=...)): a preview feature of Dagster
# 1.13 that the product relies on knowingly; its warning is not for the operator's terminal
warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec",
                        category=dg.PreviewWarning)
CANDIDATES = dg.AssetKey(["waves", "candidates"])


def refuse_reload(wave: dict, asset_key: str) -> None:
    """A completed wave's policies belong to their targets now (the new platform owns its own): loading the wave
    again would overwrite them with legacy's version. Only a rolled-back wave loads again."""
    if wave["status"] == "completed":
        raise dg.Failure(f"wave {wave['wave_id']} is completed: its policies are on their targets and the new platform "
                         f"owns those it took, so {asset_key} does not load it again over them. Roll the wave back "
                         f"first (`data-mash wave rollback {wave['wave_id']}`), approve it, and run it again.")


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
    refuse_reload(store.wave(wave_id), CANDIDATES.to_user_string())
    wave = store.set_status(wave_id, "running", allowed_from=("approved", "running", "failed"))
    with wal.intent(context, namespace="waves", operation="select_candidates", target="waves.candidates",
                    key=f"waves:{wave_id}:candidates:{wave['attempts']}",
                    payload={"wave": wave_id, "criteria": wave["criteria"], "size_cap": wave["size_cap"]},
                    wave=wave_id) as intent:
        selected = store.select_candidates(wave_id, intent.id)
        by_target = store.candidate_targets(wave_id)
        intent.result = {"selected": selected, "by_target": by_target}
    return dg.MaterializeResult(metadata={
        "state": "selected",
        "dagster/row_count": selected,
        "by_target": dg.MetadataValue.json(by_target),
        "target": wave["target"],
        "wave": f"{wave_id}: {wave['name']}",
        "estimated_at_planning": wave["estimated"],
        "size_cap": wave["size_cap"],
        "criteria": dg.MetadataValue.json(wave["criteria"] if isinstance(wave["criteria"], dict)
                                          else {"condition": wave["criteria"]}),
        "gates": dg.MetadataValue.json(wave["gates"]),
        "attempt": wave["attempts"],
        "wal_entry_id": intent.id,
    })


GATES = ("completeness", "dq_score", "mapping_confidence", "business_rules", "target_readiness")
GATE_DESCRIPTIONS = {
    "completeness": "Share of candidates with every required canonical field, at least the wave's threshold.",
    "dq_score": "Mean data-quality score at least the wave's threshold, and no candidate below its minimum.",
    "mapping_confidence": "Confidence of the mappings that produced the candidates, weighted by candidates.",
    "business_rules": ("Great Expectations suite: unique policy ids, premium not negative, expiration after "
                       "effective, known status and line codes, coverage limit at least deductible, known coverage types."),
    "target_readiness": ("The new platform's schema is there at the version the target mapping needs, the connection "
                         "answers, the legacy batch folder is writable."),
}


def _gate_markdown(result) -> str:
    if result.detail:
        lines = ["| rule | table | column | failing | e.g. policies |", "|---|---|---|---:|---|"]
        lines += [f"| {d['expectation']} | {d['table']} | {d['column']} | {d['failing']} | {', '.join(d['examples'])} |"
                  for d in result.detail]
        return "\n".join(lines)
    return ", ".join(result.examples) or "none"


@dg.multi_asset_check(
    specs=[dg.AssetCheckSpec(f"waves_candidates_{g}", asset=CANDIDATES, blocking=True, description=GATE_DESCRIPTIONS[g],
                             partitions_def=WAVES_PARTITIONS)  # each wave's gates stand on its own partition
           for g in GATES],
    name="wave_gates",
)
def wave_gates(context: dg.AssetCheckExecutionContext, database: DatabaseResource, targets: TargetsResource):
    """The wave's quality gates, on its candidates. A failed gate stops the wave before anything is loaded."""
    from resources.mapping_store import active_mapping
    from routing.gates import GateResult, WaveGates

    wave_id = context.run.tags.get("dagster/partition")
    store = WaveStore(database.engine())
    wave = store.wave(wave_id)
    confidence = {s: active_mapping(s).confidence("policies") for s in store.candidate_sources(wave_id)}
    gates = WaveGates(wave["gates"], confidence)
    for policies, coverages in store.candidate_records(wave_id):
        gates.add(policies, coverages)
    results = gates.results()
    readiness = targets.store().readiness()
    results.append(GateResult("target_readiness", not readiness["problems"], readiness["observed"], {"problems": 0},
                              examples=readiness["problems"]))
    failed = [r for r in results if not r.passed]
    if failed:
        store.set_status(wave_id, "failed", allowed_from=("running",),
                         reason="gate failed: " + "; ".join(r.description for r in failed)[:2000])
    for r in results:
        yield dg.AssetCheckResult(
            check_name=f"waves_candidates_{r.name}",
            passed=r.passed,
            severity=dg.AssetCheckSeverity.ERROR,
            description=r.description,
            metadata={"observed": dg.MetadataValue.json(r.observed), "threshold": dg.MetadataValue.json(r.threshold),
                      "failing_policies": r.failing, "failures": dg.MetadataValue.md(_gate_markdown(r))},
        )


RUN_WAVE_JOB = "run_wave_job"
run_wave_job = dg.define_asset_job(
    RUN_WAVE_JOB, selection=dg.AssetSelection.groups("waves"),
    description="Run one approved wave (a partition of `waves`): select its policies, gate them, load each target, "
                "reconcile, report. A failure is compensated by `rollback_wave_job`.")


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
