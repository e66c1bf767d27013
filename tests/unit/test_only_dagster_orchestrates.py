"""Dagster is the only orchestrator: no product module reaches into Dagster's private modules, runs a job in its own
process, or evaluates a sensor or schedule itself (only tests do, in tests/)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = [p for folder in ("dagster_project", "assets", "resources", "canonical", "routing", "legacy", "bench")
           for p in sorted((ROOT / folder).rglob("*.py"))]
FORBIDDEN_CALLS = {"execute_in_process", "materialize", "materialize_to_memory", "build_sensor_context",
                   "build_run_status_sensor_context", "build_schedule_context", "build_asset_context",
                   "build_op_context"}


def offences(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dagster._"):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {node.module}")
        elif isinstance(node, ast.Import):
            found += [f"{path.relative_to(ROOT)}:{node.lineno} imports {a.name}" for a in node.names
                      if a.name.startswith("dagster._")]
        elif isinstance(node, ast.Attribute) and node.attr in FORBIDDEN_CALLS:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} calls {node.attr}")
        elif isinstance(node, ast.Name) and node.id in FORBIDDEN_CALLS:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} uses {node.id}")
    return found


def test_no_product_module_orchestrates_beside_dagster():
    assert PRODUCT, "no product modules found"
    assert [o for p in PRODUCT for o in offences(p)] == []


def test_the_guard_catches_each_kind_of_offence(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from dagster._core.execution.backfill import PartitionBackfill\nimport dagster._utils\n"
                   "job.execute_in_process()\nwith dg.build_sensor_context() as c: pass\n")
    bad = bad.rename(ROOT / "tests" / "unit" / "_guard_probe.py")
    try:
        assert len(offences(bad)) == 4
    finally:
        bad.unlink()
