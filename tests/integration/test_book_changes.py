"""The book over days: a day-2 legacy delta is found, policy by policy, by content hash (real PostgreSQL, Dagster)."""

from sqlalchemy import text

from dagster_project.runner import ingest, route
from legacy.delta import write_delta
from resources.book_store import BookStore
from tests.book import run_one_wave, sample_book
from tests.inprocess import InProcessLauncher


def _quarantined(engine, drop_id: str) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(text("SELECT DISTINCT policy_id FROM canonical.quarantine WHERE drop_id = :d "
                                     "AND policy_id IS NOT NULL"), {"d": drop_id}).scalars())


def test_a_day_2_delta_changes_exactly_the_policies_it_holds_and_the_book_keeps_the_rest(
        routed_book, resources, engine, instance, tmp_path):
    book = BookStore(engine)
    with engine.connect() as conn:
        day1 = dict(conn.execute(text("SELECT policy_id, content_hash FROM canonical.current")).all())
    assert len(day1) == sum(routed_book.by_system.values())  # every mapped day-1 policy is in the book, and routed

    delta = write_delta(sample_book(), tmp_path / "day-2", day=2, seed=7)
    for source in ("mainframe_life", "pc_csv"):
        assert ingest(tmp_path / "day-2" / source, source, "day-2", resources=resources, launcher=InProcessLauncher(resources, instance)).success
    assert route(resources=resources, launcher=InProcessLauncher(resources, instance)).success  # applies the drops, then routes

    skipped = _quarantined(engine, "day-2")  # a record of the delta the mapping could not take keeps day 1's version
    for source, d in delta.sources.items():
        found = book.changes(f"{source}:day-2")
        assert set(found["new"]) == set(d.new) - skipped
        assert set(found["cancelled"]) == set(d.cancelled) - skipped
        assert set(found["changed"]) == set(d.changed) - skipped
    with engine.connect() as conn:
        now = dict(conn.execute(text("SELECT policy_id, content_hash FROM canonical.current")).all())
        versions = dict(conn.execute(text("SELECT version, count(*) FROM canonical.current GROUP BY 1")).all())
        routed = conn.execute(text("SELECT count(*) FROM routing.decisions")).scalar_one()
        registry = conn.execute(text("SELECT count(*) FROM coexistence.registry")).scalar_one()
    changed = {p for d in delta.sources.values() for p in [*d.changed, *d.cancelled]} - skipped
    new = {p for d in delta.sources.values() for p in d.new} - skipped
    assert set(now) == set(day1) | new  # nothing dropped out of the book: a delta is not a full extract
    assert {p for p in day1 if now[p] != day1[p]} == changed & set(day1)
    assert versions.get(2, 0) == len(changed & set(day1))
    assert routed == registry == len(now)

    # applying again changes nothing: the drops are already in the book
    before = {k: book.changes(f"{k}:day-2") for k in delta.sources}
    assert route(resources=resources, launcher=InProcessLauncher(resources, instance)).success
    assert {k: book.changes(f"{k}:day-2") for k in delta.sources} == before
    assert book.pending() == []


def test_changes_to_policies_a_wave_already_moved_are_told_apart(routed_book, resources, engine, instance, tmp_path):
    wave, run = run_one_wave(engine, resources, instance, name="all new-platform")
    assert run.success
    with engine.connect() as conn:
        moved = set(conn.execute(text("SELECT policy_id FROM waves.candidates WHERE wave_id = :w"), {"w": wave}).scalars())
        before = conn.execute(text("SELECT count(*), sum(annual_premium) FROM new_platform.rating")).one()

    delta = write_delta(sample_book(), tmp_path / "day-2", day=2, seed=7)
    for source in ("mainframe_life", "pc_csv"):
        assert ingest(tmp_path / "day-2" / source, source, "day-2", resources=resources, launcher=InProcessLauncher(resources, instance)).success
    assert route(resources=resources, launcher=InProcessLauncher(resources, instance)).success
    book = BookStore(engine)
    for source in delta.sources:
        found = book.changes(f"{source}:day-2")
        owners = book.changes_by_owner(f"{source}:day-2")
        assert owners.get(("changed", "new_platform"), 0) == len(set(found["changed"]) & moved) > 0
        assert sum(n for (change, _), n in owners.items() if change == "new") == len(found["new"])
    with engine.connect() as conn:  # the wave's load is untouched: legacy changes do not rewrite the new platform
        assert conn.execute(text("SELECT count(*), sum(annual_premium) FROM new_platform.rating")).one() == before
        still = conn.execute(text("SELECT count(*) FROM coexistence.registry WHERE system_of_record = 'new_platform'"))
        assert still.scalar_one() == len(moved)


def test_waves_wait_for_drops_mapped_since_the_last_routing(routed_book, resources, engine, instance, tmp_path):
    import pytest

    from resources.wave_store import WaveError, WaveStore

    write_delta(sample_book(), tmp_path / "day-2", day=2, seed=7)
    assert ingest(tmp_path / "day-2" / "pc_csv", "pc_csv", "day-2", resources=resources, launcher=InProcessLauncher(resources, instance)).success
    with pytest.raises(WaveError, match=r"1 mapped drop\(s\) are not in the book yet \(pc_csv:day-2…\): run `data-mash route`"):
        WaveStore(engine).routed_book()
    assert route(resources=resources, launcher=InProcessLauncher(resources, instance)).success
    assert WaveStore(engine).routed_book().num_rows > 0
