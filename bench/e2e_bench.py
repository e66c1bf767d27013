"""End-to-end benchmark: the whole user path through the `data-mash` CLI, beside its yardsticks, in one run.

    .venv/bin/python bench/e2e_bench.py --policies 100000 [--seed 42] [--keep] [--only STAGE ...]
    make bench-e2e POLICIES=100000

On a fresh DATA_MASH_HOME (bench/out/e2e-<N>-<seed>/home) and a fresh database created on the local server
(`--server`, default $DATA_MASH_TEST_DATABASE_URL or postgres@127.0.0.1:5432), each stage is one `data-mash` command
run as a subprocess, as a user runs it; the work itself happens in Dagster run workers of the project's services
(started first, stopped at the end with `data-mash services stop`):

    generate   data-mash generate-sample (test data: timed, reported apart from the product path)
    ingest-mainframe, ingest-pc   data-mash ingest <drop> --source mainframe_life | pc_csv
    route      data-mash route
    plan       data-mash generate-plan
    wave       a plan of one approved wave taking every routed policy (bench/common.py), then
               data-mash wave execute <id>: selection, gates, every target load, reconciliation, report
    sync       data-mash sync run: a night with nothing to do
and the yardsticks:
    copy       COPY of every new_platform table the wave loaded TO a file, then FROM it into empty copies of the
               tables (same primary keys and indexes): the floor for the new-platform load
    anchor     /work/shared/bench-anchor (../shared/bench-anchor), copied to bench/out/anchor with its own venv,
               its data generated for the same N, `e2e_fast.py` against a scratch database

Per stage: wall seconds, rows/s (records or policies), the peak RSS of the CLI process (its rusage) and of the
largest Dagster run worker (VmHWM, polled every 0.1 s over the services' process tree), the run workers' and this
database's PostgreSQL backends' CPU seconds, and the seconds of every step of each Dagster run (event log). The
product path is ingest-mainframe + ingest-pc + route + plan + wave. Figures are printed as one table with the
ratios (product / anchor; new-platform load rows/s / raw COPY rows/s; reconciliation / load) and written to
bench/out/e2e-<N>.json. Nothing here asserts a timing.

`--only STAGE ...` runs just those stages. Without `generate` it reuses the home, book and database that an
earlier `--keep` run of the same N and seed left (a completed bench wave is rolled back first when `wave` reruns).
Without `--keep` the database is dropped and the home and book removed at the end (logs/ stays).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psutil
import psycopg
from sqlalchemy.engine import make_url

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from bench.common import plan_whole_book_wave, step_seconds  # noqa: E402 - after the repository is on the path

DATA_MASH = Path(sys.executable).with_name("data-mash")
ANCHOR_SOURCE = REPO.parent / "shared" / "bench-anchor"
ANCHOR_DIR = HERE / "out" / "anchor"
SOURCES = {"ingest-mainframe": "mainframe_life", "ingest-pc": "pc_csv"}
PRODUCT_PATH = ("ingest-mainframe", "ingest-pc", "route", "plan", "wave")
STAGES = ("generate", *PRODUCT_PATH, "copy", "sync", "anchor")
RAW_COPY_SCHEMA = "bench_raw_copy"


# ------------------------------------------------------------------------------------------------ the run's settings
@dataclass
class Bench:
    policies: int
    seed: int
    keep: bool
    stages: tuple[str, ...]
    server: str
    work: Path = field(init=False)
    database: str = field(init=False)

    def __post_init__(self):
        self.work = HERE / "out" / f"e2e-{self.policies}-{self.seed}"
        self.database = f"bench_e2e_{self.policies}_{self.seed}"

    @property
    def fresh(self) -> bool:
        return "generate" in self.stages

    @property
    def home(self) -> Path:
        return self.work / "home"

    @property
    def book(self) -> Path:
        return self.work / "book"

    @property
    def state_file(self) -> Path:
        return self.work / "state.json"

    def url(self, database: str | None = None) -> str:
        return make_url(self.server).set(database=database or self.database).render_as_string(hide_password=False)

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("DATA_MASH_LANDING", "DATA_MASH_OUTBOUND",
                                                                "DATA_MASH_DAGSTER_URL")}
        return {**env, "DATA_MASH_HOME": str(self.home), "DAGSTER_HOME": str(self.home / "dagster_home"),
                "DATA_MASH_DATABASE_URL": self.url(), "PYTHONPATH": str(REPO)}


def machine() -> dict:
    """The machine's load right now (`uptime` and os.getloadavg) and its CPU count."""
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    return {"uptime": uptime, "load_average": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count()}


# ------------------------------------------------------------------------------------------------- databases
def admin(bench: Bench):
    return psycopg.connect(bench.url("postgres"), autocommit=True)


def create_database(bench: Bench, name: str) -> None:
    with admin(bench) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(bench: Bench, name: str) -> None:
    with admin(bench) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def query(bench: Bench, sql: str, params=()) -> list[tuple]:
    with psycopg.connect(bench.url()) as conn:
        return conn.execute(sql, params).fetchall()


def scalar(bench: Bench, sql: str, params=()):
    return query(bench, sql, params)[0][0]


# ------------------------------------------------------------------------------------------- watching processes
def vm_hwm_mb(pid: int) -> float | None:
    """A process's peak resident set so far (VmHWM), in MB; None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


class Watch(threading.Thread):
    """Samples, every `interval` seconds while a stage runs, the processes under the Dagster services (peak RSS and
    CPU of each run worker, peak RSS of the services themselves) and the CPU of this database's backends."""

    def __init__(self, services_pid: int | None, database: str, interval: float = 0.1):
        super().__init__(daemon=True)
        self.services_pid, self.database, self.interval = services_pid, database, interval
        self.workers: dict[int, dict] = {}  # pid -> {"rss": MB, "cpu": s}
        self.services_rss = 0.0
        self.backends: dict[int, list[float]] = {}  # pid -> [cpu when first seen, cpu last seen]
        self._stop_event = threading.Event()
        self._kinds: dict[int, str] = {}
        self._ticks = 0

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval)

    def stop(self) -> dict:
        self._stop_event.set()
        self.join()
        self.sample()
        return self.figures()

    def sample(self) -> None:
        self._sample_services()
        if self._ticks % 5 == 0:
            self._find_backends()
        self._sample_backends()
        self._ticks += 1

    def _sample_services(self) -> None:
        if self.services_pid is None:
            return
        try:
            root = psutil.Process(self.services_pid)
            processes = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        for p in processes:
            try:
                kind = self._kinds.get(p.pid) or self._kinds.setdefault(p.pid, _process_kind(p))
                rss = vm_hwm_mb(p.pid)
                if rss is None:
                    continue
                if kind == "worker":
                    cpu = sum(p.cpu_times()[:2])
                    self.workers[p.pid] = {"rss": max(rss, self.workers.get(p.pid, {}).get("rss", 0.0)), "cpu": cpu}
                elif kind == "service":
                    self.services_rss = max(self.services_rss, rss)
            except psutil.Error:
                continue

    def _find_backends(self) -> None:
        marker = f" {self.database} "
        for p in psutil.process_iter(["name", "cmdline"]):
            if p.pid in self.backends or p.info["name"] != "postgres":
                continue
            title = " ".join(p.info["cmdline"] or [])
            if title.startswith("postgres:") and marker in f"{title} ":
                try:
                    cpu = sum(p.cpu_times()[:2])
                except psutil.Error:
                    continue
                self.backends[p.pid] = [cpu, cpu]

    def _sample_backends(self) -> None:
        for pid, cpu in self.backends.items():
            try:
                cpu[1] = sum(psutil.Process(pid).cpu_times()[:2])
            except psutil.Error:
                continue

    def figures(self) -> dict:
        return {"worker_rss_mb": round(max((w["rss"] for w in self.workers.values()), default=0.0), 1) or None,
                "worker_cpu_s": round(sum(w["cpu"] for w in self.workers.values()), 1),
                "run_workers": len(self.workers),
                "services_rss_mb": round(self.services_rss, 1) or None,
                "postgres_cpu_s": round(sum(last - first for first, last in self.backends.values()), 1)}


def _process_kind(p: psutil.Process) -> str:
    """A Dagster run worker (a process spawned by the code server), a helper (tail, watch_orphans, the
    multiprocessing resource tracker) or one of the services (dagster dev, webserver, daemon, code server)."""
    command = " ".join(p.cmdline())
    if "multiprocessing.spawn" in command:
        return "worker"
    if "resource_tracker" in command or "watch_orphans" in command or p.name() == "tail":
        return "helper"
    return "service"


# ------------------------------------------------------------------------------------------------ running stages
class StageFailed(RuntimeError):
    pass


@dataclass
class Services:
    pid: int | None
    instance: object


# What the first command that runs work does to start the services (`runner.launcher_for` → `services.ensure` with
# the configured database), in a process of its own so that `dagster dev` outlives it, as it does a CLI command.
# (`data-mash services start` would do, but it writes the embedded server into dagster.yaml when
# DATA_MASH_DATABASE_URL is set: `services.ensure()` is called without the configured database.)
START_SERVICES = """
from dagster_project import services
from dagster_project.environment import resources_for_environment
print(services.ensure(resources_for_environment(resolved=True)["database"]).pid)
"""


def start_services(bench: Bench) -> tuple[Services, float]:
    """Start the project's Dagster for this home and database and open its instance; the seconds it took."""
    os.environ.update(bench.env)
    from dagster_project.environment import resources_for_environment
    from dagster_project.instance import open_instance

    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", START_SERVICES], env=bench.env, cwd=bench.work, capture_output=True,
                          text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise StageFailed(f"the Dagster services did not start:\n{proc.stderr[-4000:]}")
    pid = int(proc.stdout.split()[-1])
    return Services(pid, open_instance(resources_for_environment(resolved=True)["database"])), seconds


def run_cli(bench: Bench, services: Services, name: str, *args: str) -> dict:
    """Run one `data-mash` command as a subprocess while watching the services; its figures and Dagster runs."""
    logs = bench.work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}.log"
    since = datetime.now(timezone.utc) - timedelta(seconds=1)
    watch = Watch(services.pid, bench.database)
    watch.start()
    started = time.perf_counter()
    with open(log, "wb") as out:
        out.write(f"$ data-mash {shlex.join(args)}\n".encode())
        out.flush()
        proc = subprocess.Popen([str(DATA_MASH), *args], env=bench.env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=bench.work)
        _, status, usage = os.wait4(proc.pid, 0)  # the CLI's own peak RSS, from its rusage
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    figures = watch.stop()
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-4000:]
        raise StageFailed(f"stage {name}: `data-mash {shlex.join(args)}` exited {proc.returncode}; see {log}\n{tail}")
    return {"command": f"data-mash {shlex.join(args)}", "seconds": round(seconds, 2),
            "cli_rss_mb": round(usage.ru_maxrss / 1024, 1), **figures, "runs": dagster_runs(services, since),
            "log": str(log)}


def dagster_runs(services: Services, since: datetime) -> list[dict]:
    """The Dagster runs created since `since`, oldest first: job, status, seconds, and each step's seconds."""
    import dagster as dg

    runs = services.instance.get_runs(dg.RunsFilter(created_after=since))
    figures = []
    for run in reversed(list(runs)):
        stats = services.instance.get_run_stats(run.run_id)
        seconds = (stats.end_time - stats.start_time) if stats.start_time and stats.end_time else None
        figures.append({"run_id": run.run_id, "job": run.job_name, "status": run.status.value,
                        "seconds": round(seconds, 2) if seconds is not None else None,
                        "steps": step_seconds(services.instance, run.run_id)})
    return figures


def rated(figures: dict, unit: str, count: int) -> dict:
    return {**figures, "unit": unit, "count": count,
            "per_s": round(count / figures["seconds"]) if figures["seconds"] else None}


# --------------------------------------------------------------------------------------------------- the stages
def stage_generate(bench: Bench, services: Services) -> dict:
    figures = run_cli(bench, services, "generate", "generate-sample", "--policies", str(bench.policies),
                      "--seed", str(bench.seed), "--out", str(bench.book))
    manifest = json.loads((bench.book / "manifest.json").read_text())
    return rated(figures, "records", sum(f["records"] for f in manifest["files"].values()))


def stage_ingest(bench: Bench, services: Services, name: str) -> dict:
    source = SOURCES[name]
    figures = run_cli(bench, services, name, "ingest", str(bench.book / source), "--source", source)
    records = scalar(bench, "SELECT coalesce(sum(records_read), 0) FROM intake.files WHERE source = %s", (source,))
    return rated(figures, "records", int(records))


def stage_route(bench: Bench, services: Services) -> dict:
    figures = run_cli(bench, services, "route", "route")
    return rated(figures, "policies", scalar(bench, "SELECT count(*) FROM routing.decisions"))


def stage_plan(bench: Bench, services: Services) -> dict:
    figures = run_cli(bench, services, "plan", "generate-plan")
    return rated(figures, "policies", scalar(bench, "SELECT count(*) FROM routing.decisions"))


def stage_wave(bench: Bench, services: Services) -> dict:
    """Plan one approved wave over the whole routed book (timed apart), then `data-mash wave execute` it."""
    from dagster_project.environment import resources_for_environment

    rollback = roll_back_kept_wave(bench, services)
    started = time.perf_counter()
    wave_id = plan_whole_book_wave(resources_for_environment(resolved=True)["database"].engine())
    plan_seconds = time.perf_counter() - started
    save_state(bench, wave_id=wave_id)
    figures = run_cli(bench, services, "wave", "wave", "execute", wave_id)
    by_target = dict(query(bench, "SELECT target, count(*) FROM waves.candidates WHERE wave_id = %s GROUP BY 1",
                           (wave_id,)))
    tables = new_platform_rows(bench)
    return {**rated(figures, "policies", sum(by_target.values())), "wave_id": wave_id,
            "plan_seconds": round(plan_seconds, 2), "by_target": by_target, "new_platform_rows": tables,
            "rollback_of_kept_wave": rollback}


def roll_back_kept_wave(bench: Bench, services: Services) -> dict | None:
    """A bench wave an earlier `--keep` run completed holds the book: roll it back before planning a new one."""
    wave_id = load_state(bench).get("wave_id")
    if not wave_id:
        return None
    status = query(bench, "SELECT status FROM waves.waves WHERE wave_id = %s", (wave_id,))
    if not status or status[0][0] != "completed":
        return None
    return run_cli(bench, services, "wave-rollback", "wave", "rollback", wave_id)


def stage_sync(bench: Bench, services: Services) -> dict:
    figures = run_cli(bench, services, "sync", "sync", "run")
    return rated(figures, "policies", scalar(bench, "SELECT count(*) FROM coexistence.registry"))


def new_platform_tables(bench: Bench) -> list[str]:
    return [r[0] for r in query(bench, "SELECT table_name FROM information_schema.tables WHERE table_schema = "
                                "'new_platform' AND table_type = 'BASE TABLE' ORDER BY 1")]


def new_platform_rows(bench: Bench) -> dict[str, int]:
    return {t: scalar(bench, f"SELECT count(*) FROM new_platform.{t}") for t in new_platform_tables(bench)}


def stage_copy(bench: Bench, services: Services) -> dict:
    """The yardstick for the load: COPY each new_platform table out to a file, then into an empty copy of it (same
    columns, primary key and indexes; `LIKE ... INCLUDING ALL` copies no trigger, so no WAL guard), one
    transaction, timed; then the copies are dropped."""
    folder = bench.work / "copy"
    folder.mkdir(parents=True, exist_ok=True)
    tables = new_platform_tables(bench)
    with psycopg.connect(bench.url()) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {RAW_COPY_SCHEMA} CASCADE")
        conn.execute(f"CREATE SCHEMA {RAW_COPY_SCHEMA}")
        for t in tables:
            conn.execute(f"CREATE TABLE {RAW_COPY_SCHEMA}.{t} (LIKE new_platform.{t} INCLUDING ALL)")
        conn.commit()
        started = time.perf_counter()
        for t in tables:
            with open(folder / f"{t}.copy", "wb") as out, conn.cursor().copy(f"COPY new_platform.{t} TO STDOUT") as cp:
                for block in cp:
                    out.write(block)
        conn.commit()
        out_seconds = time.perf_counter() - started
        rows = {}
        started = time.perf_counter()
        with conn.cursor() as cur:
            for t in tables:
                with open(folder / f"{t}.copy", "rb") as src, cur.copy(f"COPY {RAW_COPY_SCHEMA}.{t} FROM STDIN") as cp:
                    while block := src.read(1 << 20):
                        cp.write(block)
                rows[t] = cur.rowcount
        conn.commit()
        in_seconds = time.perf_counter() - started
        conn.execute(f"DROP SCHEMA {RAW_COPY_SCHEMA} CASCADE")
        conn.commit()
    shutil.rmtree(folder, ignore_errors=True)
    total = sum(rows.values())
    return {"unit": "rows", "count": total, "rows": rows, "copy_out_seconds": round(out_seconds, 2),
            "seconds": round(in_seconds, 2), "per_s": round(total / in_seconds) if in_seconds else None}


# ---------------------------------------------------------------------------------------------------- the anchor
def prepare_anchor() -> Path:
    """bench/out/anchor: a copy of the anchor's files (refreshed if they changed) and its venv (made once)."""
    ANCHOR_DIR.mkdir(parents=True, exist_ok=True)
    for source in ANCHOR_SOURCE.iterdir():
        if source.is_file():
            target = ANCHOR_DIR / source.name
            if not target.exists() or target.read_bytes() != source.read_bytes():
                target.write_bytes(source.read_bytes())
    if not (ANCHOR_SOURCE / "bench_read.py").exists():  # the anchor imports it but does not ship it
        (ANCHOR_DIR / "bench_read.py").write_bytes((HERE / "anchor_read.py").read_bytes())
    python = ANCHOR_DIR / "venv" / "bin" / "python"
    if not python.exists():
        base = shutil.which("python3.11") or getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(ANCHOR_DIR / "venv")], check=True)
        with open(ANCHOR_DIR / "pip.log", "wb") as log:
            subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", "requirements.lock"], cwd=ANCHOR_DIR,
                           stdout=log, stderr=subprocess.STDOUT, check=True)
    return python


def run_anchor(python: Path, args: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """Run one anchor script in its folder: (seconds, peak RSS MB, output)."""
    started = time.perf_counter()
    proc = subprocess.Popen([str(python), *args], cwd=ANCHOR_DIR, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    output = proc.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise StageFailed(f"anchor {' '.join(args)} exited {proc.returncode}:\n{output[-4000:]}")
    return time.perf_counter() - started, usage.ru_maxrss / 1024, output


def stage_anchor(bench: Bench, services: Services) -> dict:
    """The anchor pipeline for the same N: its data generated (timed apart), `e2e_fast.py 1` on a scratch database."""
    python = prepare_anchor()
    gen_seconds, _, _ = run_anchor(python, ["gen_data.py", str(bench.policies)])
    database = f"bench_e2e_anchor_{bench.policies}"
    create_database(bench, database)
    try:
        seconds, rss, output = run_anchor(python, ["e2e_fast.py", "1"],
                                          env={**os.environ, "ANCHOR_DSN": bench.url(database)})
    finally:
        drop_database(bench, database)
        if not bench.keep:
            shutil.rmtree(ANCHOR_DIR / "data", ignore_errors=True)
    result = json.loads(re.search(r"^RESULT (.*)$", output, re.M).group(1))
    stages = {k[:-2]: v for k, v in result.items() if k.endswith("_s") and k != "op_s"}
    rows = result["loaded"] + result["rejects"]  # e2e_fast.py prints rows=1,000,000 whatever N is
    return {"unit": "rows", "count": rows, "seconds": result["op_s"], "per_s": round(rows / result["op_s"]),
            "stages": stages, "loaded": result["loaded"], "rejects": result["rejects"],
            "copy_connections": result["copy_connections"], "process_seconds": round(seconds, 2),
            "rss_mb": round(rss, 1), "generate_seconds": round(gen_seconds, 2),
            "read_stage_supplied": not (ANCHOR_SOURCE / "bench_read.py").exists()}


STAGE_FUNCTIONS = {
    "generate": stage_generate,
    "ingest-mainframe": lambda b, s: stage_ingest(b, s, "ingest-mainframe"),
    "ingest-pc": lambda b, s: stage_ingest(b, s, "ingest-pc"),
    "route": stage_route,
    "plan": stage_plan,
    "wave": stage_wave,
    "copy": stage_copy,
    "sync": stage_sync,
    "anchor": stage_anchor,
}


# --------------------------------------------------------------------------------------------------- state
def load_state(bench: Bench) -> dict:
    return json.loads(bench.state_file.read_text()) if bench.state_file.exists() else {}


def save_state(bench: Bench, **values) -> None:
    bench.state_file.write_text(json.dumps({**load_state(bench), **values}))


def prepare(bench: Bench) -> None:
    """A fresh home, book and database; or, with `--only` and no `generate`, those a `--keep` run left."""
    if bench.fresh:
        drop_database(bench, bench.database)
        for path in (bench.home, bench.book, bench.state_file, bench.work / "logs"):
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        bench.work.mkdir(parents=True, exist_ok=True)
        create_database(bench, bench.database)
        return
    if not any(s in bench.stages for s in (*PRODUCT_PATH, "copy", "sync")):
        return  # the anchor alone needs nothing kept
    with admin(bench) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (bench.database,)).fetchone()
    if not exists or not bench.home.exists():
        raise SystemExit(f"--only {' '.join(bench.stages)} reuses what a `--keep` run of {bench.policies} policies "
                         f"(seed {bench.seed}) left, and there is none: run with `generate` in the stages first")


def stop_services(bench: Bench) -> None:
    subprocess.run([str(DATA_MASH), "services", "stop"], env=bench.env, cwd=bench.work, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=False)


def clean_up(bench: Bench) -> None:
    if bench.keep:
        return
    drop_database(bench, bench.database)
    for path in (bench.home, bench.book, bench.work / "copy"):
        shutil.rmtree(path, ignore_errors=True)
    bench.state_file.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------------- the report
def ratios(stages: dict) -> dict:
    """Product / anchor total; new-platform load rows/s / raw COPY rows/s; reconciliation / load seconds."""
    result = {}
    product = [stages[s]["seconds"] for s in PRODUCT_PATH if s in stages]
    if len(product) == len(PRODUCT_PATH):
        result["product_seconds"] = round(sum(product), 2)
        if "anchor" in stages:
            result["product_over_anchor"] = round(sum(product) / stages["anchor"]["seconds"], 1)
    wave = stages.get("wave")
    if wave:
        steps = wave_steps(wave)
        load = steps.get("targets__new_platform")
        rows = sum(wave["new_platform_rows"].values())
        loads = sum(v for k, v in steps.items() if k.startswith("targets__"))
        reconciliation = sum(v for k, v in steps.items() if k.endswith("_reconciliation"))
        result.update({
            "new_platform_load_seconds": load, "new_platform_rows": rows,
            "new_platform_load_rows_per_s": round(rows / load) if load else None,
            "target_loads_seconds": round(loads, 2), "reconciliation_seconds": round(reconciliation, 2),
            "reconciliation_over_loads": round(reconciliation / loads, 2) if loads else None,
            "new_platform_reconciliation_over_load":
                round(steps.get("new_platform_reconciliation", 0.0) / load, 2) if load else None})
        if "copy" in stages and load:
            result["load_over_raw_copy"] = round(rows / load / stages["copy"]["per_s"], 2)
    return result


def wave_steps(wave: dict) -> dict[str, float]:
    return next((r["steps"] for r in wave["runs"] if r["job"] == "run_wave_job"), {})


def mb(value) -> str:
    return f"{value:,.0f}" if value else "-"


def print_report(result: dict) -> None:
    stages, n = result["stages"], result["policies"]
    print(f"\nEnd-to-end benchmark: {n:,} policies, seed {result['seed']}, {result['machine_start']['cpus']} CPUs")
    print(f"command: {result['command']}")
    print(f"load at start: {result['machine_start']['uptime']}")
    print(f"load at end:   {result['machine_end']['uptime']}\n")
    header = (f"{'stage':<22}{'seconds':>9}{'count':>12} {'unit':<9}{'per s':>10}{'worker MB':>11}{'CLI MB':>8}"
              f"{'worker CPU s':>14}{'PG CPU s':>10}")
    print(header)
    print("-" * len(header))
    if "services_start_seconds" in result:
        print(f"{'(Dagster services up)':<22}{result['services_start_seconds']:>9.1f}")
    for name in STAGES:
        s = stages.get(name)
        if s is None or name in ("copy", "anchor"):
            continue
        label = f"({name})" if name in ("generate", "sync") else name
        print(f"{label:<22}{s['seconds']:>9.1f}{s['count']:>12,} {s['unit']:<9}{s['per_s'] or 0:>10,}"
              f"{mb(s.get('worker_rss_mb')):>11}{mb(s.get('cli_rss_mb')):>8}{s.get('worker_cpu_s', 0):>14.1f}"
              f"{s.get('postgres_cpu_s', 0):>10.1f}")
    r = result["ratios"]
    if "product_seconds" in r:
        print(f"{'product path':<22}{r['product_seconds']:>9.1f}   (ingest x2 + route + plan + wave; "
              f"generate and sync apart)")
    print_steps(stages)
    print_yardsticks(stages, r)


def print_steps(stages: dict) -> None:
    print("\nSteps inside each Dagster run (seconds, largest first):")
    for name in STAGES:
        for run in (stages.get(name) or {}).get("runs", []):
            steps = sorted(run["steps"].items(), key=lambda kv: -kv[1])
            overhead = stages[name]["seconds"] - (run["seconds"] or 0)
            print(f"  {name} / {run['job']} ({run['status'].lower()}, run {run['seconds'] or 0:.1f} s, "
                  f"outside the run {overhead:.1f} s): " + ", ".join(f"{k} {v:.1f}" for k, v in steps))
    wave = stages.get("wave")
    if wave and wave["rollback_of_kept_wave"]:
        rollback = wave["rollback_of_kept_wave"]
        print(f"  before the wave, the kept bench wave rolled back (`{rollback['command']}`): {rollback['seconds']:.1f} s")
    if wave:
        print(f"  wave plan (WaveStore.save_plan + approve, in the bench): {wave['plan_seconds']:.2f} s; "
              f"by target {wave['by_target']}")


def print_yardsticks(stages: dict, r: dict) -> None:
    copy, anchor = stages.get("copy"), stages.get("anchor")
    print()
    if copy:
        print(f"raw COPY of the new_platform rows: {copy['count']:,} rows, out {copy['copy_out_seconds']:.1f} s, "
              f"in {copy['seconds']:.1f} s = {copy['per_s']:,} rows/s (into empty tables, same keys)")
    if anchor:
        parts = ", ".join(f"{k} {v:.2f}" for k, v in anchor["stages"].items())
        print(f"anchor e2e_fast.py ({anchor['count']:,} rows, {anchor['copy_connections']} COPY connection): {parts}; "
              f"total {anchor['seconds']:.2f} s = {anchor['per_s']:,} rows/s, peak RSS {anchor['rss_mb']:,.0f} MB "
              f"(process {anchor['process_seconds']:.1f} s with its imports; data generated in "
              f"{anchor['generate_seconds']:.1f} s)")
        if anchor["read_stage_supplied"]:
            print("  (the anchor does not ship the bench_read.py it imports: its read stage is bench/anchor_read.py)")
    if r:
        print("\nRatios:")
    if "product_over_anchor" in r:
        print(f"  product path / anchor total: {r['product_seconds']:.1f} / {anchor['seconds']:.2f} = "
              f"{r['product_over_anchor']:.1f}x")
    if r.get("new_platform_load_seconds"):
        print(f"  new-platform load: {r['new_platform_rows']:,} rows in {r['new_platform_load_seconds']:.1f} s = "
              f"{r['new_platform_load_rows_per_s']:,} rows/s"
              + (f"; / raw COPY rows/s = {r['load_over_raw_copy']:.2f} (goal >= 0.8)" if "load_over_raw_copy" in r
                 else ""))
        print(f"  reconciliation / load: every target {r['reconciliation_seconds']:.1f} / {r['target_loads_seconds']:.1f}"
              f" s = {r['reconciliation_over_loads']:.2f}; new platform "
              f"{r['new_platform_reconciliation_over_load']:.2f} (goal <= 0.10)")


# ------------------------------------------------------------------------------------------------------- main
def parse_args(argv=None) -> Bench:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policies", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--keep", action="store_true", help="Keep the database, home and book for a later --only.")
    parser.add_argument("--only", nargs="+", choices=STAGES, metavar="STAGE",
                        help=f"Run just these stages ({', '.join(STAGES)}).")
    parser.add_argument("--server", default=os.environ.get("DATA_MASH_TEST_DATABASE_URL")
                        or "postgresql://postgres@127.0.0.1:5432/postgres",
                        help="The PostgreSQL server to create the bench's databases on.")
    args = parser.parse_args(argv)
    stages = tuple(s for s in STAGES if s in (args.only or STAGES))
    return Bench(args.policies, args.seed, args.keep, stages, args.server)


def main(argv=None) -> None:
    bench = parse_args(argv)
    result = {"policies": bench.policies, "seed": bench.seed, "stages_run": list(bench.stages),
              "command": shlex.join([sys.executable, *sys.argv]), "machine_start": machine(), "stages": {}}
    print(f"{result['command']}\nload at start: {result['machine_start']['uptime']} "
          f"({result['machine_start']['cpus']} CPUs)", flush=True)
    began = time.perf_counter()

    def say(what: str) -> None:
        print(f"[{time.perf_counter() - began:6.1f} s] {what}", file=sys.stderr, flush=True)

    prepare(bench)
    services = None
    try:
        if any(s != "anchor" for s in bench.stages):
            say("starting the Dagster services")
            services, result["services_start_seconds"] = start_services(bench)
        for name in bench.stages:
            say(name)
            if name == "anchor" and services is not None:
                stop_services(bench)  # the anchor runs on a machine without the product's services
                services = None
            result["stages"][name] = STAGE_FUNCTIONS[name](bench, services)
    finally:
        if services is not None:
            say("stopping the Dagster services")
            stop_services(bench)
        say("cleaning up" if not bench.keep else "keeping the database, home and book")
        clean_up(bench)
        say("done")
    result["machine_end"] = machine()
    result["ratios"] = ratios(result["stages"])
    out = HERE / "out" / f"e2e-{bench.policies}.json"
    out.write_text(json.dumps(result, indent=2, default=str))
    print_report(result)
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
