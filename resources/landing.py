"""The landing folder where legacy drops arrive: `<landing>/<source>/<drop_id>/<files>`.

A drop is ready when it holds a `_READY` marker (what `data-mash ingest` and most transfer tools
write last) or when nothing in it has changed for `settle_seconds`. Its content hash (names and
bytes of every file) identifies it, so the same files dropped twice are not taken twice.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from resources.database import data_mash_home

READY_MARKER = "_READY"


@dataclass(frozen=True)
class Drop:
    source: str
    drop_id: str
    path: Path


def content_hash(drop_dir: Path, chunk: int = 1 << 22) -> str:
    """SHA-256 over the sorted relative names and bytes of every file in a drop, marker excluded."""
    digest = hashlib.sha256()
    for path in sorted(p for p in drop_dir.rglob("*") if p.is_file() and p.name != READY_MARKER):
        digest.update(path.relative_to(drop_dir).as_posix().encode() + b"\0")
        with open(path, "rb") as handle:
            while block := handle.read(chunk):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def valid_drop_id(drop_id: str) -> str:
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
    if not drop_id or not set(drop_id) <= allowed or drop_id.startswith("."):
        raise ValueError(
            f"drop id {drop_id!r} may hold only letters, digits, '-', '_' and '.', and not start with '.'"
        )
    return drop_id


class LandingResource(dg.ConfigurableResource):
    """The landing folder; empty `path` means `$DATA_MASH_HOME/landing`."""

    path: str = ""
    settle_seconds: int = 60

    def root(self) -> Path:
        return Path(self.path) if self.path else data_mash_home() / "landing"

    def drop_dir(self, source: str, drop_id: str) -> Path:
        return self.root() / source / valid_drop_id(drop_id)

    def ready_drops(self, source: str, now: float | None = None) -> list[Drop]:
        base = self.root() / source
        if not base.is_dir():
            return []
        now = time.time() if now is None else now
        drops = []
        for entry in sorted(base.iterdir()):
            if not entry.is_dir() or entry.name.startswith("."):
                continue
            if (entry / READY_MARKER).exists():
                drops.append(Drop(source, entry.name, entry))
                continue
            files = [p for p in entry.rglob("*") if p.is_file()]
            if files and now - max(p.stat().st_mtime for p in files) >= self.settle_seconds:
                drops.append(Drop(source, entry.name, entry))
        return drops

    def place(self, source: str, drop_id: str, origin: Path) -> Drop:
        """Copy a file or a folder of files into the landing folder as one drop, marker last."""
        target = self.drop_dir(source, drop_id)
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        if origin.is_dir():
            for path in sorted(origin.iterdir()):
                if path.is_file() and path.name != READY_MARKER:
                    shutil.copy2(path, target / path.name)
        elif origin.is_file():
            shutil.copy2(origin, target / origin.name)
        else:
            raise FileNotFoundError(f"{origin}: no such file or folder to ingest")
        (target / READY_MARKER).write_text("")
        return Drop(source, drop_id, target)
