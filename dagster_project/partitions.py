"""Partitions: one dynamic partition per legacy drop, per source."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from resources.database import data_mash_home


def drops_partitions_name(source: str) -> str:
    return f"{source}_drops"


def drops_partitions(source: str) -> dg.DynamicPartitionsDefinition:
    return dg.DynamicPartitionsDefinition(name=drops_partitions_name(source))


def reports_dir() -> Path:
    """Where JSON profile reports are written: `$DATA_MASH_HOME/reports/<source>/<drop>/`."""
    return data_mash_home() / "reports"
