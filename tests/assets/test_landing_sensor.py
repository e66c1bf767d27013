"""`landing_sensor` called directly: one partition and one run per new drop, never the same content twice."""

from __future__ import annotations

import json
import os
import shutil
import time

import dagster as dg
import pytest

from dagster_project.definitions import build_definitions
from resources.landing import READY_MARKER, LandingResource, content_hash
from tests.book import sample_book


@pytest.fixture
def sensor_env(resources, home):
    defs = build_definitions(resources=resources)
    sensor = defs.resolve_sensor_def("landing_sensor")
    with dg.instance_for_test() as instance:
        yield sensor, resources, instance


def evaluate(sensor, resources, instance, cursor=None) -> dg.SensorResult:
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
        return sensor(context)


def land(resources, source: str, drop_id: str, ready: bool = True):
    landing: LandingResource = resources["landing"]
    target = landing.drop_dir(source, drop_id)
    shutil.copytree(sample_book() / source, target)
    if ready:
        (target / READY_MARKER).write_text("")
    else:  # still arriving: written just now (copytree keeps the originals' older times)
        now = time.time()
        for path in target.iterdir():
            os.utime(path, (now, now))
    return target


def test_new_drops_get_a_partition_and_a_run_keyed_by_content(sensor_env):
    sensor, resources, instance = sensor_env
    pc = land(resources, "pc_csv", "2026-11-01")
    mf = land(resources, "mainframe_life", "2026-11-01")
    result = evaluate(sensor, resources, instance)
    requests = {(r.job_name, r.partition_key, r.run_key) for r in result.run_requests}
    assert requests == {
        ("ingest_pc_csv_job", "2026-11-01", f"pc_csv:{content_hash(pc)}"),
        ("ingest_mainframe_life_job", "2026-11-01", f"mainframe_life:{content_hash(mf)}"),
    }
    added = {(r.partitions_def_name, tuple(r.partition_keys)) for r in result.dynamic_partitions_requests}
    assert added == {("pc_csv_drops", ("2026-11-01",)), ("mainframe_life_drops", ("2026-11-01",))}

    again = evaluate(sensor, resources, instance, cursor=result.cursor)
    assert again.run_requests == [] and again.dynamic_partitions_requests == []


def test_the_same_files_dropped_under_another_name_are_not_taken_twice(sensor_env):
    sensor, resources, instance = sensor_env
    land(resources, "pc_csv", "monday")
    first = evaluate(sensor, resources, instance)
    land(resources, "pc_csv", "monday-resent")
    second = evaluate(sensor, resources, instance, cursor=first.cursor)
    assert second.run_requests == []
    assert "same content as drop monday" in second.skip_reason.skip_message


def test_a_drop_without_marker_waits_until_it_settles(sensor_env):
    sensor, resources, instance = sensor_env
    target = land(resources, "pc_csv", "in-flight", ready=False)
    assert evaluate(sensor, resources, instance).run_requests == []
    past = time.time() - 3600
    for path in target.iterdir():
        os.utime(path, (past, past))
    result = evaluate(sensor, resources, instance)
    assert [r.partition_key for r in result.run_requests] == ["in-flight"]
    assert json.loads(result.cursor)["pc_csv"]["in-flight"] == content_hash(target)


def test_files_sent_again_after_their_drop_was_refused_are_taken(sensor_env):
    from dagster_project.jobs import ingest_job_name
    from tests.inprocess import InProcessLauncher

    sensor, resources, instance = sensor_env
    target = land(resources, "pc_csv", "monday")
    (target / "control.txt").unlink()  # refused: the control file is missing
    first = evaluate(sensor, resources, instance)
    (request,) = first.run_requests
    launcher = InProcessLauncher(resources, instance)
    launcher.add_partitions("pc_csv_drops", ["monday"])
    outcome = launcher.run(ingest_job_name("pc_csv"), partition_key="monday", tags=request.tags)
    assert not outcome.success and "control_file" in outcome.error
    resent = land(resources, "pc_csv", "monday-resent")
    (resent / "control.txt").unlink()  # the same files (the sender's fix may be on the way, or the source's)
    second = evaluate(sensor, resources, instance, cursor=first.cursor)
    assert [r.partition_key for r in second.run_requests] == ["monday-resent"]
