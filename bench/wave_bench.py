"""Wave benchmark: one wave over the whole routed book, loaded through Dagster, then rolled back.

    DATA_MASH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/bench python bench/wave_bench.py

The database must hold a mapped and routed book (`bench/intake_bench.py --only generate load map
route` makes a 1,000,000-policy one). Phases, each in its own process so that its peak RSS is its own:

- wave: plan one wave taking every policy (criteria `true`, cap above the book), approve it and run
  `run_wave_job` end to end (selection, gates, every target load, reconciliation, report);
- rollback: `rollback_wave_job` for that wave.

Per-step wall times come from the run's Dagster event log. Figures are printed and written to
bench/out/wave-<policies>.json. Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from bench.common import plan_whole_book_wave, step_seconds  # noqa: E402 - after the repository is on the path

STATE = HERE / "out" / "wave-bench-state.json"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def phase_wave() -> dict:
    from sqlalchemy import text

    from dagster_project.environment import resources_for_environment
    from dagster_project.runner import run_wave

    engine = resources_for_environment(resolved=True)["database"].engine()
    wave_id = plan_whole_book_wave(engine)
    launcher = _launcher()
    started = time.perf_counter()
    run = run_wave(wave_id, launcher=launcher, compensate=False)
    seconds = time.perf_counter() - started
    if not run.success:
        raise SystemExit(f"wave run failed: {run.error} {run.failed_checks}")
    STATE.write_text(json.dumps({"wave_id": wave_id}))
    with engine.connect() as conn:
        policies = conn.execute(text("SELECT count(*) FROM waves.candidates WHERE wave_id = :w"), {"w": wave_id}).scalar_one()
        by_target = dict(conn.execute(text("SELECT target, count(*) FROM waves.candidates WHERE wave_id = :w GROUP BY 1"),
                                      {"w": wave_id}).all())
        rows = conn.execute(text("SELECT " + " + ".join(f"(SELECT count(*) FROM new_platform.{t} WHERE wave_id = :w)" for t in (
            "policy", "party", "coverage", "rating", "payment", "endorsement", "document", "claim_link"))),
            {"w": wave_id}).scalar_one()
    return {"wave_id": wave_id, "policies": policies, "by_target": by_target, "new_platform_rows": rows,
            "seconds": seconds, "steps": step_seconds(launcher.instance, run.run_id)}


def phase_rollback() -> dict:
    from dagster_project.runner import rollback_wave

    wave_id = json.loads(STATE.read_text())["wave_id"]
    launcher = _launcher()
    started = time.perf_counter()
    run = rollback_wave(wave_id, reason="bench", launcher=launcher)
    seconds = time.perf_counter() - started
    if not run.success:
        raise SystemExit(f"rollback failed: {run.error}")
    return {"wave_id": wave_id, "seconds": seconds, "steps": step_seconds(launcher.instance, run.run_id)}


PHASES = ("wave", "rollback")


def _launcher():
    """The project's Dagster, as the CLI submits to it (started if needed)."""
    from dagster_project.launcher import DagsterLauncher

    return DagsterLauncher()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phase", choices=PHASES)
    args = parser.parse_args()
    if args.phase:
        result = {"wave": phase_wave, "rollback": phase_rollback}[args.phase]()
        result["peak_rss_mb"] = peak_rss_mb()
        print(json.dumps(result))
        return

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.setdefault("DATA_MASH_HOME", str(HERE / "out" / "home"))
    results = {}
    STATE.parent.mkdir(parents=True, exist_ok=True)
    for name in PHASES:
        print(f"… {name}", file=sys.stderr, flush=True)
        proc = subprocess.run([sys.executable, __file__, "--phase", name], env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr[-5000:])
            raise SystemExit(f"phase {name} failed")
        results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    wave, rollback = results["wave"], results["rollback"]
    n = wave["policies"]
    out = HERE / "out" / f"wave-{n}.json"
    out.write_text(json.dumps(results, indent=2))
    load = wave["steps"].get("targets__new_platform", 0.0)
    moved = wave["by_target"].get("new_platform", 0) + wave["by_target"].get("coexistence_bridge", 0)
    print(f"\nWave benchmark: {n:,} policies in one wave ({os.cpu_count()} cores); by target {wave['by_target']}")
    print(f"end to end (select, gates, 4 loads, reconciliation, report): {wave['seconds']:.1f} s = "
          f"{n / wave['seconds']:,.0f} policies/s, peak RSS {wave['peak_rss_mb']:,.0f} MB")
    print(f"new platform load step alone: {load:.1f} s for {moved:,} policies, {wave['new_platform_rows']:,} rows = "
          f"{moved / load if load else 0:,.0f} policies/s")
    print("steps: " + ", ".join(f"{k} {v:.1f} s" for k, v in wave["steps"].items()))
    print(f"rollback: {rollback['seconds']:.1f} s = {n / rollback['seconds']:,.0f} policies/s, "
          f"peak RSS {rollback['peak_rss_mb']:,.0f} MB; steps: "
          + ", ".join(f"{k} {v:.1f} s" for k, v in rollback["steps"].items()))
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
