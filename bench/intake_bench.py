"""Intake benchmark: generate a book, decode it, load it into PostgreSQL; rates and peak memory.

    python bench/intake_bench.py --policies 1000000            # embedded PostgreSQL under bench/out/home
    DATA_MASH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres python bench/intake_bench.py

Phases: generate, decode (no database), load (decode + COPY + profile, each file in its WAL intent: the database
refuses writes outside one), latency (single-intent begin/commit).
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
    """Stage every file of the book, each inside its WAL intent as the intake asset does (the database refuses
    writes outside one)."""
    from dagster_project.environment import resources_for_environment
    from legacy.intake import ingest_file, locate_file
    from legacy.sources import find_drop_files, list_sources
    from resources.intake_store import IntakeStore, file_sha256, staging_table_name
    from resources.wal import WalStore

    engine = resources_for_environment(resolved=True)["database"].engine()
    store, wal = IntakeStore(engine), WalStore(engine)
    drop_id = "bench"
    started = time.perf_counter()
    per_file, total = {}, 0
    for source in list_sources():
        drop = book / source.name
        for kind in find_drop_files(source, drop):
            t0 = time.perf_counter()
            path = locate_file(source, kind, drop)
            sha = file_sha256(path)
            with wal.action(namespace="intake", operation="stage_file",
                            target=f"staging.{staging_table_name(source.name, kind)}",
                            payload={"source": source.name, "kind": kind, "file_sha256": sha}) as intent:
                ingested = ingest_file(store, source, kind, drop_id, drop, path=path, sha256=sha, wal_id=intent.id)
                intent.result = {"records_read": ingested.load.records_read}
            per_file[f"{source.name}/{ingested.path.name}"] = {
                "records": ingested.load.records_read, "seconds": time.perf_counter() - t0}
            total += ingested.load.records_read
    return {"seconds": time.perf_counter() - started, "records": total, "files": per_file}


def phase_map(book: Path) -> dict:
    """Map the staged `bench` drop of every source to the canonical model (read, map, COPY, settle keys)."""
    from canonical.mapping import load_mapping, map_block, mapping_for_source
    from dagster_project.environment import resources_for_environment
    from legacy.sources import list_sources, output_columns
    from resources.canonical_store import CanonicalStore
    from resources.wal import WalStore

    store = CanonicalStore(resources_for_environment(resolved=True)["database"].engine())
    started = time.perf_counter()
    per_table, total = {}, 0
    for source in list_sources():
        mapping = load_mapping(mapping_for_source(source.name))
        for table, table_map in mapping.spec.tables.items():  # policies first: the others check orphans against it
            t0 = time.perf_counter()
            columns = output_columns(source, source.file(table_map.from_), book / source.name)
            blocks = (map_block(mapping, table, b) for b in store.read_staged(source.name, table_map.from_, "bench", columns))
            with WalStore(store.engine).action(namespace="canonical", operation="map_table",
                                               target=f"canonical.{table}", payload={"source": source.name}) as intent:
                load = store.load_table(source=source.name, drop_id="bench", table=table, mapping=mapping,
                                        blocks=blocks, wal_id=intent.id)
            per_table[f"{source.name}/{table}"] = {"records": load.records_in, "mapped": load.records_mapped,
                                                   "seconds": time.perf_counter() - t0}
            total += load.records_in
    return {"seconds": time.perf_counter() - started, "records": total, "tables": per_table}


def phase_route(samples: int = 1000) -> dict:
    """Route the mapped bench book with the default rules: evaluation alone, end to end, then `where` latency."""
    import random
    import statistics

    import pyarrow as pa

    from assets.routing import default_rules_path
    from dagster_project.environment import resources_for_environment
    from resources.book_store import BookStore
    from resources.coexistence_store import CoexistenceStore
    from resources.wal import WalStore
    from routing.rules import evaluate, load_rule_set

    engine = resources_for_environment(resolved=True)["database"].engine()
    store = CoexistenceStore(engine)
    rules = load_rule_set(default_rules_path())
    tb = time.perf_counter()
    books = BookStore(engine)
    wal = WalStore(engine)
    for drop in books.pending():  # the book (latest version of each policy) first, as `canonical/book` does
        with wal.action(namespace="canonical", operation="apply_drop", target="canonical.current",
                        payload={"drop": drop}) as intent:
            books.apply(drop, intent.id)
    t0 = time.perf_counter()
    book = list(store.read_book())
    t1 = time.perf_counter()
    decisions = [evaluate(rules, block).append_column("source_system", block.column("source_system")) for block in book]
    t2 = time.perf_counter()
    with wal.action(namespace="routing", operation="route_book", target="routing.decisions", payload={}) as intent:
        routed = store.apply_decisions(decisions, intent.id)
        registry = store.update_registry(intent.id)
    t3 = time.perf_counter()
    policies = sum(b.num_rows for b in book)
    ids = pa.concat_arrays([b.column("policy_id").combine_chunks() for b in book]).to_pylist()
    random.seed(7)
    latencies = []
    for policy in random.sample(ids, min(samples, len(ids))):
        w0 = time.perf_counter()
        store.where(policy)
        latencies.append((time.perf_counter() - w0) * 1000)
    latencies.sort()
    return {"records": policies, "seconds": t3 - t0, "book_seconds": t0 - tb, "rules": len(rules.rules),
            "read_seconds": t1 - t0,
            "evaluate_seconds": t2 - t1, "evaluate_per_s": policies / (t2 - t1), "store_seconds": t3 - t2,
            "changed": routed.changed, "registry_added": registry.added, "by_target": routed.by_target,
            "where_median_ms": statistics.median(latencies), "where_p99_ms": latencies[int(0.99 * len(latencies)) - 1]}


def phase_latency(samples: int = 1000) -> dict:
    """Single-intent latency: begin (committed) + commit, each a durable PostgreSQL transaction."""
    import statistics

    from dagster_project.environment import resources_for_environment
    from resources.wal import WalStore

    wal = WalStore(resources_for_environment(resolved=True)["database"].engine())
    begin_ms, cycle_ms = [], []
    run = time.time_ns()
    for i in range(samples):
        t0 = time.perf_counter()
        intent = wal.begin(namespace="bench", operation="noop", target="none", key=f"bench:{run}:{i}", payload={"i": i})
        t1 = time.perf_counter()
        wal.commit(intent, {})
        t2 = time.perf_counter()
        begin_ms.append((t1 - t0) * 1000)
        cycle_ms.append((t2 - t0) * 1000)

    def pct(values, p):
        return sorted(values)[min(len(values) - 1, int(round(p / 100 * len(values))) - 1)]

    return {"records": samples, "seconds": sum(cycle_ms) / 1000,
            "begin_median_ms": statistics.median(begin_ms), "begin_p99_ms": pct(begin_ms, 99),
            "cycle_median_ms": statistics.median(cycle_ms), "cycle_p99_ms": pct(cycle_ms, 99)}


def run_phase(name: str, args: argparse.Namespace, env: dict) -> dict:
    cmd = [sys.executable, __file__, "--phase", name, "--policies", str(args.policies), "--seed", str(args.seed),
           "--book", str(args.book)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"phase {name} failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


PHASES = ("generate", "decode", "load", "latency", "map", "route")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policies", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--book", type=Path, default=None)
    parser.add_argument("--phase", choices=PHASES)
    parser.add_argument("--only", nargs="*", choices=PHASES, help="Run just these phases (the book must exist).")
    args = parser.parse_args()
    args.book = args.book or HERE / "out" / f"book-{args.policies}-{args.seed}"

    if args.phase:
        fn = {"generate": lambda: phase_generate(args.book, args.policies, args.seed),
              "decode": lambda: phase_decode(args.book),
              "load": lambda: phase_load(args.book),
              "latency": phase_latency,
              "map": lambda: phase_map(args.book),
              "route": phase_route}[args.phase]
        result = fn()
        result["peak_rss_mb"] = peak_rss_mb()
        print(json.dumps(result))
        return

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.setdefault("DATA_MASH_HOME", str(HERE / "out" / "home"))
    results = {"policies": args.policies}
    for name in args.only or PHASES:
        if name == "generate" and (args.book / "manifest.json").exists():
            continue
        print(f"… {name}", file=sys.stderr, flush=True)
        results[name] = run_phase(name, args, env)
    out = HERE / "out" / f"intake-{args.policies}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.only and out.exists():  # keep the figures of the phases not rerun
        results = {**json.loads(out.read_text()), **results}
    out.write_text(json.dumps(results, indent=2))

    print(f"\nIntake benchmark, {args.policies:,} policies ({os.cpu_count()} cores)")
    print(f"{'phase':<10}{'records':>14}{'seconds':>10}{'records/s':>14}{'peak RSS MB':>14}")
    for name in ("generate", "decode", "load", "map", "route"):
        r = results.get(name)
        if r:
            print(f"{name:<10}{r['records']:>14,}{r['seconds']:>10.1f}{r['records'] / r['seconds']:>14,.0f}{r['peak_rss_mb']:>14,.0f}")
    rt = results.get("route")
    if rt:
        print(f"routing {rt['records']:,} policies with {rt['rules']} rules: evaluation {rt['evaluate_per_s']:,.0f} "
              f"decisions/s ({rt['evaluate_seconds']:.2f} s); read book {rt['read_seconds']:.1f} s, store decisions + "
              f"registry {rt['store_seconds']:.1f} s; `where` on the registry: median {rt['where_median_ms']:.2f} ms, "
              f"p99 {rt['where_p99_ms']:.2f} ms")
    lat = results.get("latency")
    if lat:
        print(f"single intent, {lat['records']} samples: begin median {lat['begin_median_ms']:.2f} ms, "
              f"p99 {lat['begin_p99_ms']:.2f} ms; begin+commit median {lat['cycle_median_ms']:.2f} ms, "
              f"p99 {lat['cycle_p99_ms']:.2f} ms")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
