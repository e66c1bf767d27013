"""What scaling out relies on: two waves run at once in two run workers, and Dagster's queue never lets two runs of
the same wave overlap (the CLI refuses to even ask while one is queued or running)."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import dagster as dg
import pytest

from dagster_project.launcher import LaunchError

pytestmark = [pytest.mark.postgres, pytest.mark.daemon, pytest.mark.xdist_group(name="dagster")]


def test_two_waves_run_at_once_and_the_same_wave_never_twice_at_once(world):
    from dagster_project.runner import run_wave
    from resources.wave_store import WaveStore
    from routing.waves import ROUTED, WaveSpec
    from tests.book import NO_GATES

    waves = WaveStore(world.engine)
    now = datetime.now(timezone.utc)
    life = {"field": "line_of_business", "operator": "in", "value": ["life", "annuity"]}
    other = {"field": "line_of_business", "operator": "not_in", "value": ["life", "annuity"]}
    _, (a, b) = waves.save_plan("parallel", [WaveSpec(0, "life", ROUTED, life, 300, now, dict(NO_GATES)),
                                             WaveSpec(1, "p&c", ROUTED, other, 300, now, dict(NO_GATES))], "tester")
    for wave in (a, b):
        waves.set_status(wave, "approved", allowed_from=("draft",), approved_by="tester")
        world.launcher.add_partitions("waves", [wave])

    hold = {"resources": {"wal": {"config": {"fault": "hold:after_intent:waves/candidates"}}}}
    first = world.launcher.submit("run_wave_job", partition_key=a, tags={"data_mash/wave": a}, run_config=hold)
    other_wave = world.launcher.submit("run_wave_job", partition_key=b, tags={"data_mash/wave": b}, run_config=hold)
    # a second request for wave a, as a sensor tick and a person could make at once: Dagster queues it
    second = world.launcher.submit("run_wave_job", partition_key=a, tags={"data_mash/wave": a})
    deadline = time.monotonic() + 120
    while world.launcher.instance.get_run_by_id(first).status != dg.DagsterRunStatus.STARTED:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    with pytest.raises(LaunchError, match=f"wave {a} already has run"):  # the CLI does not ask for a third
        run_wave(a, resources=world.resources, launcher=world.launcher)

    outcomes = {r: world.launcher.follow(r) for r in (first, other_wave, second)}
    records = {r: world.launcher.instance.get_run_record_by_id(r) for r in outcomes}
    assert outcomes[first].success and outcomes[other_wave].success, outcomes
    # two run workers at once: wave b started before wave a's first run ended
    assert records[other_wave].start_time < records[first].end_time
    assert records[first].start_time < records[other_wave].end_time
    # the per-wave limit held: the second run of wave a started only after the first ended
    assert records[second].start_time >= records[first].end_time
    # and the waves never shared a policy
    from sqlalchemy import text
    with world.engine.connect() as conn:
        shared = conn.execute(text("SELECT count(*) FROM (SELECT policy_id FROM waves.candidates "
                                   "WHERE wave_id IN (:a, :b) GROUP BY 1 HAVING count(*) > 1) x"),
                              {"a": a, "b": b}).scalar_one()
    assert shared == 0
