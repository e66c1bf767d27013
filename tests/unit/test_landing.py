"""The landing folder and SQL naming (pure: files only)."""

from __future__ import annotations

import os
import time
from decimal import Decimal

import pytest

from dagster_project.cli import dumps_exact
from resources.intake_store import sql_name
from resources.landing import READY_MARKER, LandingResource, content_hash, valid_drop_id


def test_content_hash_depends_on_names_and_bytes_not_on_the_marker(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        (d / "x.csv").write_text("1,2\n")
    (b / READY_MARKER).write_text("")
    assert content_hash(a) == content_hash(b)
    (b / "x.csv").write_text("1,3\n")
    assert content_hash(a) != content_hash(b)
    (a / "x.csv").rename(a / "y.csv")
    (a / "y.csv").write_text("1,3\n")
    assert content_hash(a) != content_hash(b)


def test_ready_means_marker_or_settled(tmp_path):
    landing = LandingResource(path=str(tmp_path), settle_seconds=60)
    placed = landing.place("pc_csv", "d1", _folder(tmp_path / "origin"))
    assert (placed.path / READY_MARKER).exists()
    fresh = tmp_path / "pc_csv" / "d2"
    fresh.mkdir()
    (fresh / "policies.csv").write_text("x")
    assert [d.drop_id for d in landing.ready_drops("pc_csv")] == ["d1"]
    old = time.time() - 120
    os.utime(fresh / "policies.csv", (old, old))
    assert [d.drop_id for d in landing.ready_drops("pc_csv")] == ["d1", "d2"]
    assert landing.ready_drops("unknown_source") == []


def _folder(path):
    path.mkdir()
    (path / "policies.csv").write_text("PolicyNo\n")
    return path


@pytest.mark.parametrize("bad", ["", "../etc", "a/b", ".hidden", "drop id"])
def test_drop_ids_cannot_escape_the_landing_folder(bad):
    with pytest.raises(ValueError, match="drop id"):
        valid_drop_id(bad)


def test_sql_names():
    assert sql_name("POL_NUMBER") == "pol_number"
    assert sql_name("PolicyNo") == "policy_no"
    assert sql_name("RIDER_CODE_1") == "rider_code_1"
    assert sql_name("1st") == "c_1st"


def test_exact_json():
    assert dumps_exact({"a": Decimal("-12345.67"), "b": [1, None, "é"], "c": True}) == \
        '{"a": -12345.67, "b": [1, null, "é"], "c": true}'
