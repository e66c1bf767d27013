"""The single Dagster code location of Data Mash."""

from __future__ import annotations

import dagster as dg

from assets.canonical import build_canonical_assets
from assets.legacy import build_intake_assets
from assets.routing import build_routing_assets
from assets.sync import build_sync_assets
from assets.targets import (coexistence_bridge, dq_queue, legacy_batch, new_platform, reconcile_wave_job,
                            reconciliation_checks, wave_report)
from assets.waves import build_wave_schedule_sensor, run_wave_job, wave_candidates, wave_gates
from dagster_project.compensation import build_compensation_sensor, rollback_wave_job
from dagster_project.environment import resources_for_environment
from dagster_project.jobs import build_ingest_job, build_map_job, build_route_job
from dagster_project.sensors import build_landing_sensor, build_wal_recovery_sensor
from legacy.sources import list_sources
from routing.sync import load_sync_rules


def build_definitions(resources: dict | None = None) -> dg.Definitions:
    """All assets, checks, jobs and sensors, with the given resources (tests pass their own)."""
    assets, checks, jobs = [], [], []
    sources = list_sources()
    for source in sources:
        for build in (build_intake_assets, build_canonical_assets):
            source_assets, source_checks = build(source)
            assets += source_assets
            checks += source_checks
        jobs += [build_ingest_job(source.name), build_map_job(source.name)]
    policy_keys = [a.key for a in assets if a.key.path[0] == "canonical" and a.key.path[-1] == "policies"]
    assets += build_routing_assets(policy_keys)
    assets += [wave_candidates, new_platform, legacy_batch, dq_queue, coexistence_bridge, wave_report]
    checks += [wave_gates, *reconciliation_checks]
    jobs += [build_route_job(), run_wave_job, rollback_wave_job, reconcile_wave_job]
    sync_assets, sync_job, sync_schedule = build_sync_assets(load_sync_rules())
    assets += sync_assets
    jobs.append(sync_job)
    return dg.Definitions(
        assets=assets,
        asset_checks=checks,
        jobs=jobs,
        sensors=[build_landing_sensor([s.name for s in sources], jobs), build_wal_recovery_sensor(jobs),
                 build_wave_schedule_sensor(), build_compensation_sensor(sync_job)],
        schedules=[sync_schedule],
        resources=resources if resources is not None else resources_for_environment(),
        # one run worker process per run, its steps in order: the columnar work inside a step is what is heavy, and a
        # process per step would pay the imports again for each (the scale-out executors are in docs/scale-out.md)
        executor=dg.in_process_executor,
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
