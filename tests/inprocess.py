"""An in-process launcher for the asset and integration tiers: the same runs the product submits to Dagster,
executed here on a test instance with the test's resources, and the compensation sensor evaluated as the daemon
would. Only tests run jobs in process; the product submits them (`dagster_project.launcher.DagsterLauncher`)."""

from __future__ import annotations

import uuid

import dagster as dg

from dagster_project.definitions import build_definitions
from dagster_project.launcher import COMPENSATES, RunOutcome, run_outcome
from resources.guard import current_principal
from resources.wal import PRINCIPAL_TAG


class InProcessLauncher:
    def __init__(self, resources: dict, instance: dg.DagsterInstance, log_level: str = "CRITICAL"):
        self.resources, self.instance, self.log_level = resources, instance, log_level
        self.defs = build_definitions(resources=resources)
        self._backfills: dict[str, list[RunOutcome]] = {}

    def in_progress(self, tags: dict[str, str]) -> list[dg.DagsterRun]:
        return []  # in process, a run has ended when `run` returns

    def add_partitions(self, partitions_def_name: str, keys: list[str]) -> None:
        known = set(self.instance.get_dynamic_partitions(partitions_def_name))
        if missing := [k for k in keys if k not in known]:
            self.instance.add_dynamic_partitions(partitions_def_name, missing)

    def run(self, job_name: str, *, partition_key: str | None = None, tags: dict[str, str] | None = None,
            run_config: dict | None = None, asset_selection: list[dg.AssetKey] | None = None,
            label: str | None = None) -> RunOutcome:
        result = self.defs.resolve_job_def(job_name).execute_in_process(
            instance=self.instance, partition_key=partition_key, asset_selection=asset_selection,
            run_config={"loggers": {"console": {"config": {"log_level": self.log_level}}}, **(run_config or {})},
            raise_on_error=False, tags={PRINCIPAL_TAG: current_principal(), **(tags or {})})
        return run_outcome(self.instance, result.run_id)

    # a backfill: one run per contiguous range of partitions, as the canonical assets' single-run backfill policy
    # makes the daemon launch them (the daemon tier launches real backfills)
    def backfill(self, partition_names: list[str], asset_selection: list[dg.AssetKey], *, tags: dict[str, str],
                 title: str, description: str) -> str:
        from dagster_project.jobs import map_job_name
        from dagster_project.partitions import drops_partitions_name
        from dagster_project.reprocess import drop_ranges

        source = asset_selection[0].path[1]  # canonical/<source>/<table>
        backfill_id = f"inprocess{uuid.uuid4().hex[:8]}"
        order = list(self.instance.get_dynamic_partitions(drops_partitions_name(source)))
        self._backfills[backfill_id] = [
            self.run(map_job_name(source), tags={**tags, "dagster/backfill": backfill_id,
                                                 "dagster/asset_partition_range_start": chunk[0],
                                                 "dagster/asset_partition_range_end": chunk[-1]})
            for chunk in drop_ranges(order, partition_names)]
        return backfill_id

    def follow_backfill(self, backfill_id: str, label: str) -> str:
        return "COMPLETED_SUCCESS" if all(r.success for r in self._backfills[backfill_id]) else "COMPLETED_FAILED"

    def backfill_runs(self, backfill_id: str) -> list[dg.DagsterRun]:
        return [self.instance.get_run_by_id(r.run_id) for r in self._backfills[backfill_id]]

    def compensations(self, run_id: str, timeout: float = 0) -> list[RunOutcome]:
        """Evaluate `compensation_sensor` on the failed run, as the daemon would, and run what it requests."""
        return [self.run(r.job_name or "rollback_wave_job", partition_key=r.partition_key, tags=r.tags,
                         run_config=r.run_config) for r in self.requests_for(run_id)]

    def requests_for(self, run_id: str) -> list[dg.RunRequest]:
        sensor = self.defs.resolve_sensor_def("compensation_sensor")
        run = self.instance.get_run_by_id(run_id)
        failure = next(iter(self.instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)), None)
        if run is None or failure is None:
            return []
        if self.instance.get_runs(dg.RunsFilter(tags={COMPENSATES: run_id}), limit=1):
            return []  # its run key: compensated once
        with dg.build_run_status_sensor_context(sensor_name=sensor.name, dagster_event=failure.dagster_event,
                                                dagster_instance=self.instance, dagster_run=run,
                                                resources=self.resources) as context:
            result = sensor(context.for_run_failure())
        return [result] if isinstance(result, dg.RunRequest) else []
