"""Submit runs to Dagster and follow them: the CLI's only way to get work done.

A run is submitted to the webserver (Dagster's GraphQL API), queued by the instance's run coordinator, launched by the
daemon into a run worker of its own, and followed here through the instance's event log until it ends. Compensation is
the daemon's too: a run-failure sensor launches the rollback, and the CLI waits for it and reports it.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import dagster as dg
import requests
from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

from dagster_project import services
from dagster_project.instance import dagster_home
from legacy.errors import DataMashError
from resources.guard import current_principal
from resources.wal import PRINCIPAL_TAG

COMPENSATES = "data_mash/compensates"  # tag of a compensation run: the run it undoes
FINISHED = (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)
IN_PROGRESS = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
               dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


@dataclass
class RunOutcome:
    run_id: str
    success: bool
    failed_checks: list[str]
    error: str | None
    status: str = ""
    rollbacks: list["RunOutcome"] = field(default_factory=list)  # the compensation runs the daemon launched for it


class LaunchError(DataMashError, RuntimeError):
    """A run could not be submitted; the message says why."""


def root_cause(error) -> str:
    """The innermost error of a step failure: what a person can act on, not Dagster's wrapper."""
    while getattr(error, "cause", None) is not None:
        error = error.cause
    return error.message.strip()


def run_outcome(inst: dg.DagsterInstance, run_id: str) -> RunOutcome:
    """A finished run as the CLI reports it: failed checks by asset, and the root cause of each failed step."""
    run = inst.get_run_by_id(run_id)
    checks = [e.dagster_event.event_specific_data
              for e in inst.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)]
    failed_checks = [f"{c.asset_key.to_user_string()}: {c.check_name}" for c in checks if not c.passed]
    success = run.status == dg.DagsterRunStatus.SUCCESS
    error = None
    if not success:
        failures = inst.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
        error = "; ".join(f"{e.step_key}: {root_cause(e.dagster_event.event_specific_data.error)}" for e in failures)
        if not error:  # the worker died, or the run never started: Dagster's own account of it
            engine = [e.message for e in inst.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
                      if "process" in (e.message or "").lower() or "timed out" in (e.message or "").lower()]
            ended = inst.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
            error = (engine[-1] if engine else None) or (ended[-1].message if ended else None) \
                or f"run {run.status.value.lower()}"
    return RunOutcome(run_id, success, failed_checks, error, run.status.value)


def latest_run(inst: dg.DagsterInstance, tags: dict[str, str], job_name: str | None = None) -> RunOutcome | None:
    """The outcome of the newest run with these tags (of that job), if there is one."""
    runs = inst.get_runs(dg.RunsFilter(tags=tags, job_name=job_name), limit=1)
    if not runs:
        return None
    if runs[0].status not in FINISHED:
        return RunOutcome(runs[0].run_id, False, [], f"still {runs[0].status.value.lower()}", runs[0].status.value)
    return run_outcome(inst, runs[0].run_id)


class Progress:
    """What a run is doing, on a terminal: a status line with the step that runs; elsewhere silent."""

    def __init__(self, label: str):
        self.label = label
        self._status = None
        if sys.stderr.isatty():
            from rich.console import Console

            self._status = Console(stderr=True).status(f"{label}: queued")

    def __enter__(self):
        if self._status:
            from rich.errors import LiveError

            try:
                self._status.__enter__()
            except LiveError:  # the command shows its own status line already
                self._status = None
        return self

    def update(self, text: str) -> None:
        if self._status:
            self._status.update(f"{self.label}: {text}")

    def __exit__(self, *exc):
        if self._status:
            self._status.__exit__(*exc)


class DagsterLauncher:
    """Submits runs to this project's Dagster (started if needed) and follows them to the end."""

    def __init__(self, database=None, say: Callable[[str], None] | None = None):
        self.services = services.ensure(database, say=say)
        host_port = self.services.url.split("://", 1)[1]
        host, port = host_port.rsplit(":", 1)
        self.client = DagsterGraphQLClient(host, port_number=int(port), timeout=60)
        dagster_home()
        self.instance = dg.DagsterInstance.get()

    # ----------------------------------------------------------------------------------------- submitting
    def submit(self, job_name: str, *, partition_key: str | None = None, tags: dict[str, str] | None = None,
               run_config: dict | None = None, asset_selection: list[dg.AssetKey] | None = None) -> str:
        """Queue one run of a job (one partition of it) and return its id."""
        all_tags = {PRINCIPAL_TAG: current_principal(), **(tags or {}),
                    **({"dagster/partition": partition_key} if partition_key else {})}
        try:
            return self.client.submit_job_execution(
                job_name, repository_location_name=services.LOCATION, repository_name="__repository__",
                run_config=run_config or {}, tags=all_tags,
                asset_selection=[k.path for k in asset_selection] if asset_selection else None)
        except DagsterGraphQLClientError as error:
            detail = f": {error.body}" if getattr(error, "body", None) else ""
            raise LaunchError(f"Dagster refused to run {job_name}"
                              + (f" for {partition_key}" if partition_key else "") + f" ({error}{detail})") from error

    def in_progress(self, tags: dict[str, str]) -> list[dg.DagsterRun]:
        """Runs with these tags that are queued or running: a wave or night has at most one at a time."""
        return list(self.instance.get_runs(dg.RunsFilter(tags=tags, statuses=IN_PROGRESS)))

    def add_partitions(self, partitions_def_name: str, keys: list[str]) -> None:
        known = set(self.instance.get_dynamic_partitions(partitions_def_name))
        if missing := [k for k in keys if k not in known]:
            self.instance.add_dynamic_partitions(partitions_def_name, missing)

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        """A raw GraphQL call (for what the Python client has no method for, e.g. a partition backfill)."""
        response = requests.post(f"{self.services.url}/graphql", json={"query": query, "variables": variables or {}},
                                 timeout=60)
        body = response.json()
        if body.get("errors"):
            raise LaunchError("; ".join(e.get("message", str(e)) for e in body["errors"]))
        return body["data"]

    # ------------------------------------------------------------------------------------------ following
    def follow(self, run_id: str, label: str | None = None, poll: float = 0.5) -> RunOutcome:
        """Wait for a run (and any automatic retry of it) to end, showing its current step; then its outcome."""
        with Progress(label or f"run {run_id[:8]}") as progress:
            while True:
                run = self.instance.get_run_by_id(run_id)
                if run.status in FINISHED:
                    retry = self._retry_of(run)
                    if retry is None:
                        break
                    run_id = retry
                    continue
                progress.update(self._doing(run))
                time.sleep(poll)
        return run_outcome(self.instance, run_id)

    def _retry_of(self, run) -> str | None:
        """The automatic retry Dagster launched for a crashed run, if its retries are not spent."""
        if run.status != dg.DagsterRunStatus.FAILURE or int(run.tags.get("dagster/max_retries", "0") or 0) == 0:
            return None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            retries = self.instance.get_runs(dg.RunsFilter(tags={"dagster/parent_run_id": run.run_id}), limit=1)
            if retries:
                return retries[0].run_id
            if run.tags.get("dagster/will_retry") == "false":
                return None
            run = self.instance.get_run_by_id(run.run_id)
            if run.tags.get("dagster/will_retry", "") == "false":
                return None
            time.sleep(1)
        return None

    def _doing(self, run) -> str:
        if run.status in (dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED):
            return "queued (another run of the same wave, night or drop may be ahead)"
        if run.status == dg.DagsterRunStatus.STARTING:
            return "starting its run worker"
        started = self.instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_START)
        done = {e.step_key for e in self.instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)}
        running = [e.step_key for e in started if e.step_key not in done]
        return f"{', '.join(running) or 'between steps'} ({len(done)} step(s) done)"

    def run(self, job_name: str, *, label: str | None = None, **submit) -> RunOutcome:
        return self.follow(self.submit(job_name, **submit), label)

    def compensations(self, run_id: str, timeout: float = 180.0) -> list[RunOutcome]:
        """Wait for the compensation the daemon's failure sensor launches for a failed run, and follow it."""
        deadline = time.monotonic() + timeout
        with Progress(f"waiting for the daemon to compensate run {run_id[:8]}"):
            while time.monotonic() < deadline:
                runs = self.instance.get_runs(dg.RunsFilter(tags={COMPENSATES: run_id}))
                if runs:
                    break
                time.sleep(1.0)
            else:
                return [RunOutcome("", False, [], f"no compensation run for {run_id} after {timeout:.0f} s: is the "
                                   "daemon running, and is the sensor on? (Dagster UI, Automation)")]
        return [self.follow(r.run_id, f"compensation run {r.run_id[:8]}") for r in reversed(runs)]

    # ------------------------------------------------------------------------------------------ backfills
    def backfill(self, partition_names: list[str], asset_selection: list[dg.AssetKey], *, tags: dict[str, str],
                 title: str, description: str) -> str:
        """Launch an asset backfill the way the UI does (GraphQL `launchPartitionBackfill`); its id."""
        data = self.graphql(LAUNCH_BACKFILL, {"params": {
            "partitionNames": partition_names, "assetSelection": [{"path": k.path} for k in asset_selection],
            "tags": [{"key": k, "value": v} for k, v in {PRINCIPAL_TAG: current_principal(), **tags}.items()],
            "title": title, "description": description}})
        result = data["launchPartitionBackfill"]
        if result["__typename"] != "LaunchBackfillSuccess":
            raise LaunchError(f"Dagster refused the backfill ({result['__typename']}): {result.get('message', '')}")
        return result["backfillId"]

    def follow_backfill(self, backfill_id: str, label: str, timeout: float = 6 * 3600, poll: float = 1.0) -> str:
        """Wait until the daemon has finished a backfill; its final status (`COMPLETED_SUCCESS`, ...)."""
        deadline = time.monotonic() + timeout
        with Progress(label) as progress:
            while time.monotonic() < deadline:
                backfill = self.instance.get_backfill(backfill_id)
                if backfill.status.value in BACKFILL_DONE:
                    return backfill.status.value
                runs = self.instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
                progress.update(f"{len(runs)} run(s) launched, {sum(r.is_finished for r in runs)} finished")
                time.sleep(poll)
        return f"{self.instance.get_backfill(backfill_id).status.value} (timed out waiting)"

    def backfill_runs(self, backfill_id: str) -> list[dg.DagsterRun]:
        return list(reversed(self.instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill_id}))))


BACKFILL_DONE = ("COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED")
LAUNCH_BACKFILL = """
mutation LaunchBackfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
  }
}
"""
