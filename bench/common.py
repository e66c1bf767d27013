"""What the benchmarks share: per-step seconds of a Dagster run, and a wave that takes the whole routed book."""

from __future__ import annotations

from datetime import datetime, timezone


def step_seconds(instance, run_id: str) -> dict[str, float]:
    """Wall seconds of each step of a run, from the instance's event log (STEP_START to STEP_SUCCESS/FAILURE)."""
    import dagster as dg

    started, seconds = {}, {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or not event.step_key:
            continue
        if event.event_type == dg.DagsterEventType.STEP_START:
            started[event.step_key] = entry.timestamp
        elif event.event_type in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
            seconds[event.step_key] = round(entry.timestamp - started.get(event.step_key, entry.timestamp), 2)
    return seconds


def plan_whole_book_wave(engine, *, by: str = "bench") -> str:
    """Save (through the WAL) a plan of one wave taking every routed policy, with no DQ-score floor, approved; its id.

    The wave goes to each policy's routed target (criteria `true`, a cap above any book); the other gates keep
    their defaults. Run it with `data-mash wave execute <id>` or `runner.run_wave`."""
    from resources.wave_store import WaveStore
    from routing.waves import DEFAULT_GATES, ROUTED, WaveSpec

    store = WaveStore(engine)
    spec = WaveSpec(0, "bench: the whole book", ROUTED, True, 10_000_000, datetime.now(timezone.utc),
                    dict(DEFAULT_GATES, min_dq_score=0.0, mean_dq_score=0.0))
    _, (wave_id,) = store.save_plan(by, [spec], by)
    store.set_status(wave_id, "approved", allowed_from=("draft",), approved_by=by)
    return wave_id
