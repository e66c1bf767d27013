"""A small generated sample book shared by asset and integration tests (pure files, no database)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
import tempfile

from legacy.sample import generate_sample

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
