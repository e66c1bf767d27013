"""A small generated sample book shared by asset and integration tests (pure files, no database)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
import tempfile

from legacy.sample import generate_sample
from tests.inprocess import InProcessLauncher

_ROOT = Path(tempfile.mkdtemp(prefix="data-mash-book-"))


@lru_cache(maxsize=None)
def sample_book(policies: int = 600, seed: int = 11, defect_rate: float = 0.05) -> Path:
    out = _ROOT / f"book-{policies}-{seed}-{defect_rate}"
    if not (out / "manifest.json").exists():
        generate_sample(out, policies=policies, seed=seed, defect_rate=defect_rate)
    return out


def manifest(book: Path) -> dict:
    return json.loads((book / "manifest.json").read_text())


def expected_quarantine(book: Path, source: str) -> set[tuple[str, int, str]]:
    """(file, record, reason) of every defect the manifest says intake must quarantine."""
    return {
        (d["file"], d["record"], d["reason"])
        for d in manifest(book)["defects"]
        if d["source"] == source and d["stage"] == "intake"
    }


NO_GATES = {"completeness": 0.0, "mean_dq_score": 0.0, "min_dq_score": 0.0, "mapping_confidence": 0.0}


def run_one_wave(engine, resources, instance, *, target: str = "new_platform", criteria=True, name: str = "test wave"):
    """Plan one wave (no gate thresholds), approve it and run it through Dagster; its id and the run's outcome."""
    from datetime import datetime, timezone

    from dagster_project.runner import run_wave
    from resources.wave_store import WaveStore
    from routing.waves import WaveSpec

    waves = WaveStore(engine)
    _, (wave,) = waves.save_plan(name, [WaveSpec(0, name, target, criteria, 10_000, datetime.now(timezone.utc),
                                                 dict(NO_GATES))], "tester")
    waves.set_status(wave, "approved", allowed_from=("draft",), approved_by="tester")
    return wave, run_wave(wave, resources=resources, launcher=InProcessLauncher(resources, instance))


def as_intent(engine, what: str = "test setup"):
    """A test's own change to stored state, made the way the product makes one: inside a WAL intent (the database
    refuses writes outside one)."""
    from resources.wal import WalStore

    return WalStore(engine).action(namespace="test", operation="setup", target="test", payload={"what": what})


def tampered(engine):
    """A transaction as someone with administrator access to the database would run it: triggers off (the write
    guard and the WAL's append-only rule with them), for tests of what verification and reconciliation catch."""
    from contextlib import contextmanager

    from sqlalchemy import text

    @contextmanager
    def transaction():
        with engine.begin() as conn:
            conn.execute(text("SET LOCAL session_replication_role = replica"))
            yield conn

    return transaction()
