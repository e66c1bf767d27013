"""Intake benchmark: generate a book, decode it, load it into PostgreSQL; rates and peak memory.

    python bench/intake_bench.py --policies 1000000            # embedded PostgreSQL under bench/out/
    DATA_MASH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres python bench/intake_bench.py

Each phase runs in its own process so that its peak RSS is its own. Figures are printed as a
table and written to bench/out/intake-<policies>.json. Nothing here asserts a timing.
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


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def phase_generate(book: Path, policies: int, seed: int) -> dict:
    from legacy.sample import generate_sample

    started = time.perf_counter()
    generate_sample(book, policies=policies, seed=seed, defect_rate=0.02)
    manifest = json.loads((book / "manifest.json").read_text())
    records = sum(f["records"] for f in manifest["files"].values())
    size = sum(f["bytes"] for f in manifest["files"].values())
    return {"seconds": time.perf_counter() - started, "records": records, "bytes": size}


def phase_decode(book: Path) -> dict:
    from legacy.sources import find_drop_files, list_sources, read_source_file

    started = time.perf_counter()
    per_file, total = {}, 0
    for source in list_sources():
        drop = book / source.name
        specs = {s.kind: s for s in source.files}
        for kind, path in find_drop_files(source, drop).items():
            t0, n = time.perf_counter(), 0
            for result in read_source_file(source, specs[kind], path, drop_dir=drop):
                n += result.table.num_rows + result.quarantine.num_rows
            per_file[f"{source.name}/{path.name}"] = {"records": n, "seconds": time.perf_counter() - t0}
            total += n
    return {"seconds": time.perf_counter() - started, "records": total, "files": per_file}


def phase_load(book: Path) -> dict:
    from dagster_project.environment import resources_for_environment
    from legacy.intake import ingest_file
    from legacy.sources import find_drop_files, list_sources
    from resources.intake_store import IntakeStore

    store = IntakeStore(resources_for_environment(resolved=True)["database"].engine())
    started = time.perf_counter()
    per_file, total = {}, 0
    for source in list_sources():
        drop = book / source.name
        for kind in find_drop_files(source, drop):
            t0 = time.perf_counter()
            ingested = ingest_file(store, source, kind, "bench", drop)
            per_file[f"{source.name}/{ingested.path.name}"] = {
                "records": ingested.load.records_read, "seconds": time.perf_counter() - t0}
            total += ingested.load.records_read
    return {"seconds": time.perf_counter() - started, "records": total, "files": per_file}


def run_phase(name: str, args: argparse.Namespace, env: dict) -> dict:
    cmd = [sys.executable, __file__, "--phase", name, "--policies", str(args.policies), "--seed", str(args.seed),
           "--book", str(args.book)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"phase {name} failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policies", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--book", type=Path, default=None)
    parser.add_argument("--phase", choices=["generate", "decode", "load"])
    args = parser.parse_args()
    args.book = args.book or HERE / "out" / f"book-{args.policies}-{args.seed}"

    if args.phase:
        fn = {"generate": lambda: phase_generate(args.book, args.policies, args.seed),
              "decode": lambda: phase_decode(args.book),
              "load": lambda: phase_load(args.book)}[args.phase]
        result = fn()
        result["peak_rss_mb"] = peak_rss_mb()
        print(json.dumps(result))
        return

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.setdefault("DATA_MASH_HOME", str(HERE / "out" / "home"))
    results = {"policies": args.policies}
    for name in ("generate", "decode", "load"):
        if name == "generate" and (args.book / "manifest.json").exists():
            continue
        print(f"… {name}", file=sys.stderr, flush=True)
        results[name] = run_phase(name, args, env)
    out = HERE / "out" / f"intake-{args.policies}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))

    print(f"\nIntake benchmark, {args.policies:,} policies ({os.cpu_count()} cores)")
    print(f"{'phase':<10}{'records':>14}{'seconds':>10}{'records/s':>14}{'peak RSS MB':>14}")
    for name in ("generate", "decode", "load"):
        r = results.get(name)
        if r:
            print(f"{name:<10}{r['records']:>14,}{r['seconds']:>10.1f}{r['records'] / r['seconds']:>14,.0f}{r['peak_rss_mb']:>14,.0f}")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
