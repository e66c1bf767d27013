"""Sync benchmark: one night of sync over about 100,000 changed policies, through Dagster.

    DATA_MASH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/bench python bench/sync_bench.py --policies 1000000

The database must hold the routed bench book (`bench/intake_bench.py --policies N --only generate
load map route`). Phases, each in its own process so that its peak RSS is its own:

- platform: unless policies are on the new platform already, one wave over the whole book
  (`bench/wave_bench.py`'s wave phase), so that the platform and the bridge hold what routing sends;
- changes: a day-2 legacy delta of the book (`--change-rate`), ingested and applied to the book,
  then `simulate_activity` on `--activity` platform policies;
- sync: `nightly_sync_job` for one night, end to end (detect, decide, 3 writes, proof, report);
- again: the same night once more: nothing to do, so this is the cost of detection alone;
- rollback: `rollback_wave_job` for the night.

Per-step wall times come from the run's Dagster event log. Figures are printed and written to
bench/out/sync-<changed>.json. Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))
NIGHT = date(2026, 11, 21)

from bench.common import step_seconds  # noqa: E402
from wave_bench import peak_rss_mb, phase_wave  # noqa: E402


def _engine():
    from dagster_project.environment import resources_for_environment

    return resources_for_environment(resolved=True)["database"].engine()


def phase_platform(args) -> dict:
    from sqlalchemy import text

    with _engine().connect() as conn:
        on_platform = conn.execute(text("SELECT count(*) FROM new_platform.policy")).scalar_one()
    if on_platform:
        return {"on_platform": on_platform, "wave": "already loaded"}
    result = phase_wave()
    with _engine().connect() as conn:
        result["on_platform"] = conn.execute(text("SELECT count(*) FROM new_platform.policy")).scalar_one()
    return result


def phase_changes(args) -> dict:
    import dagster as dg

    from dagster_project.runner import ingest, route
    from legacy.delta import write_delta
    from resources.platform_activity import simulate_activity

    book = HERE / "out" / f"book-{args.policies}-{args.seed}"
    delta = HERE / "out" / f"book-{args.policies}-{args.seed}-sync-day-{args.day}"
    started = time.perf_counter()
    summary = write_delta(book, delta, day=args.day, seed=args.seed, change_rate=args.change_rate)
    generated = time.perf_counter() - started
    launcher = _launcher()
    for source in ("mainframe_life", "pc_csv"):
        outcome = ingest(delta / source, source, f"sync-bench-day-{args.day}", launcher=launcher)
        if not outcome.success:
            raise SystemExit(f"ingest of {source} failed: {outcome.error}")
    routed = route(launcher=launcher)
    if not routed.success:
        raise SystemExit(f"route failed: {routed.error}")
    applied = time.perf_counter() - started - generated
    activity = simulate_activity(_engine(), args.activity, seed=args.seed)
    return {"delta_policies": sum(len(s.changed) + len(s.cancelled) + len(s.new) for s in summary.sources.values()),
            "delta_seconds": round(generated, 1), "ingest_and_book_seconds": round(applied, 1),
            "activity": activity.by_kind, "activity_seconds": round(time.perf_counter() - started - generated - applied, 1)}


def _sync() -> dict:
    import dagster as dg
    from sqlalchemy import text

    from dagster_project.runner import sync_night

    launcher = _launcher()
    started = time.perf_counter()
    run = sync_night(NIGHT, launcher=launcher, compensate=False)
    seconds = time.perf_counter() - started
    if not run.success:
        raise SystemExit(f"sync failed: {run.error}")
    with _engine().connect() as conn:
        report = conn.execute(text("SELECT report FROM sync.nights WHERE night = :n"), {"n": NIGHT}).scalar_one()
        on_platform = conn.execute(text("SELECT count(*) FROM sync.baseline")).scalar_one()
    return {"seconds": round(seconds, 1), "steps": step_seconds(launcher.instance, run.run_id), "on_platform": on_platform,
            "report": {k: v for k, v in report.items() if k != "checks"}}


def phase_sync(args) -> dict:
    return _sync()


def phase_again(args) -> dict:
    return _sync()


def phase_rollback(args) -> dict:
    import dagster as dg

    from dagster_project.runner import rollback_sync

    launcher = _launcher()
    started = time.perf_counter()
    run = rollback_sync(NIGHT, reason="bench", launcher=launcher)
    if not run.success:
        raise SystemExit(f"rollback failed: {run.error}")
    return {"seconds": round(time.perf_counter() - started, 1), "steps": step_seconds(launcher.instance, run.run_id)}


PHASES = {"platform": phase_platform, "changes": phase_changes, "sync": phase_sync, "again": phase_again,
          "rollback": phase_rollback}


def _launcher():
    """The project's Dagster, as the CLI submits to it (started if needed)."""
    from dagster_project.launcher import DagsterLauncher

    return DagsterLauncher()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policies", type=int, default=1_000_000, help="the bench book's size")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--change-rate", type=float, default=0.08, help="share of the book the legacy delta changes")
    parser.add_argument("--day", type=int, default=2, help="the delta's day (a new day for each run on one database)")
    parser.add_argument("--activity", type=int, default=60_000, help="platform policies the platform's users change")
    parser.add_argument("--phase", choices=PHASES)
    parser.add_argument("--only", nargs="*", choices=PHASES, default=list(PHASES))
    args = parser.parse_args()
    if args.phase:
        result = PHASES[args.phase](args)
        result["peak_rss_mb"] = round(peak_rss_mb())
        print(json.dumps(result, default=str))
        return

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.setdefault("DATA_MASH_HOME", str(HERE / "out" / "home"))
    results = {}
    for name in args.only:
        print(f"… {name}", file=sys.stderr, flush=True)
        proc = subprocess.run([sys.executable, __file__, "--phase", name, "--policies", str(args.policies),
                               "--seed", str(args.seed), "--change-rate", str(args.change_rate), "--day", str(args.day),
                               "--activity", str(args.activity)], env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr[-5000:])
            raise SystemExit(f"phase {name} failed")
        results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(json.dumps(results[name], default=str)[:600], file=sys.stderr, flush=True)
    if "sync" not in results:
        return
    sync = results["sync"]
    changed = sync["report"]["changed_policies"]
    out = HERE / "out" / f"sync-{changed}.json"
    out.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nSync benchmark: one night, {changed:,} changed policies of {sync['on_platform']:,} on the new platform "
          f"({os.cpu_count()} cores)")
    print(f"seen: {sync['report']['seen']}; applied: {sync['report']['applied']}; "
          f"conflicts: {sync['report']['conflicts']}; queued: {sync['report']['queued_for_manual_review']}")
    print(f"end to end: {sync['seconds']:.1f} s = {changed / sync['seconds']:,.0f} changed policies/s, "
          f"peak RSS {sync['peak_rss_mb']:,} MB")
    print("steps: " + ", ".join(f"{k} {v:.1f} s" for k, v in sync["steps"].items()))
    if "again" in results:
        print(f"the same night again (nothing to do: detection only): {results['again']['seconds']:.1f} s")
    if "rollback" in results:
        print(f"rollback of the night: {results['rollback']['seconds']:.1f} s, "
              f"peak RSS {results['rollback']['peak_rss_mb']:,} MB")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
