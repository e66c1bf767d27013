"""Backfills after a mapping change: `data-mash reprocess` (real PostgreSQL, a real Dagster instance, in process).

The mapping change is made by hand so its effect is known exactly: pay plan 10P becomes a quarterly frequency
(policies table) and coverage code MEDPAY a liability coverage (coverages table). Exactly the policies whose
current version has one of them must change in the book; no other policy's content hash may move.
"""

from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pytest
import yaml
from sqlalchemy import text

from canonical.impact import TableImpact, compare_block
from canonical.mapping import MappingError, load_mapping, mapping_for_source
from dagster_project.reprocess import ReprocessError, drop_ranges, plan_reprocess, reprocess
from dagster_project.runner import ingest, route
from legacy.delta import write_delta
from legacy.sources import load_source, output_columns
from resources.canonical_store import CanonicalStore
from resources.mapping_store import MappingStore, active_mapping, installed_mappings_dir
from tests.book import run_one_wave, sample_book
from tests.inprocess import InProcessLauncher

SINCE = datetime(2000, 1, 1, tzinfo=timezone.utc)


def changed_mapping(folder: Path, version: str = "1.1.0", **edits) -> Path:
    """The built-in pc_csv mapping with 10P billed quarterly and MEDPAY a liability coverage."""
    spec = yaml.safe_load(mapping_for_source("pc_csv").read_text())
    spec["version"] = version
    spec["code_tables"]["pay_plan_frequency"]["10P"] = "quarterly"
    spec["code_tables"]["pc_coverage_type"]["MEDPAY"] = "liability"
    spec.update(edits)
    path = folder / f"pc_csv-{version}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture
def pc_book(resources, instance, tmp_path):
    """pc_csv day 1 (the full extract) and day 2 (a delta), mapped and routed."""
    book = sample_book()
    assert ingest(book / "pc_csv", "pc_csv", "day-1", resources=resources, launcher=InProcessLauncher(resources, instance)).success
    write_delta(book, tmp_path / "day-2", day=2, seed=7)
    assert ingest(tmp_path / "day-2" / "pc_csv", "pc_csv", "day-2", resources=resources,
                  launcher=InProcessLauncher(resources, instance)).success
    assert route(resources=resources, launcher=InProcessLauncher(resources, instance)).success
    return ["day-1", "day-2"]


def _hashes(engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(text("SELECT policy_id, content_hash FROM canonical.current")).all())


def _known_impact(engine) -> set[str]:
    """Policies whose current version has pay plan 10P or a MEDPAY coverage: what the change must change."""
    with engine.connect() as conn:
        return set(conn.execute(text("""
            SELECT k.policy_id FROM canonical.current k JOIN canonical.policies p USING (policy_id, drop_key)
            WHERE k.source = 'pc_csv' AND p.payment_plan = '10P'
            UNION
            SELECT k.policy_id FROM canonical.current k JOIN canonical.coverages c USING (policy_id, drop_key)
            WHERE k.source = 'pc_csv' AND c.coverage_code = 'MEDPAY'""")).scalars())


def _compared_impact(engine, old, new, drops: list[str]) -> set[str]:
    """The same, independently: both mappings on each drop's staged rows, kept where the drop holds the current
    version (an older drop never replaces a newer version)."""
    source, store = load_source("pc_csv"), CanonicalStore(engine)
    with engine.connect() as conn:
        current = {(d, p) for p, d in conn.execute(text("SELECT policy_id, drop_key FROM canonical.current"))}
    found = set()
    for drop_id in drops:
        for table, tmap in new.spec.tables.items():
            impact = TableImpact(table)
            columns = output_columns(source, source.file(tmap.from_))
            for block in store.read_staged("pc_csv", tmap.from_, drop_id, columns):
                compare_block(old, new, table, block, impact)
            found |= {p for p in impact.changed_policies if (f"pc_csv:{drop_id}", p) in current}
    return found


def test_a_backfill_after_a_mapping_change_updates_exactly_the_impacted_policies(
        pc_book, resources, engine, instance, tmp_path):
    old = active_mapping("pc_csv")
    new = load_mapping(changed_mapping(tmp_path))
    before = _hashes(engine)
    expected = _known_impact(engine)
    assert expected and expected == _compared_impact(engine, old, new, pc_book)
    assert len(expected) < len(before) / 2  # a subset: most of the book must stay as it is

    plan = plan_reprocess(new, SINCE, engine=engine)
    assert plan.drop_ids == pc_book and not plan.resume
    started, seen = datetime.now(timezone.utc), []
    outcome = reprocess(plan, resources=resources, launcher=InProcessLauncher(resources, instance),
                        on_mapped=lambda drop, table: seen.append((drop, table)))
    assert outcome.success, outcome.backfill.runs

    after = _hashes(engine)
    moved = {p for p in before if after.get(p) != before[p]}
    assert moved == expected  # exactly the impacted policies, no other content hash moved
    assert set(after) == set(before)
    assert outcome.report.changed_policies == expected
    with engine.connect() as conn:
        recorded = conn.execute(text("SELECT policy_id, change FROM canonical.changes WHERE detected_at >= :t"),
                                {"t": started}).all()
        mapped_with = set(conn.execute(text(
            "SELECT DISTINCT mapping_version FROM canonical.loads WHERE source = 'pc_csv'")).scalars())
    assert {p for p, _ in recorded} == expected and len(recorded) == len(expected)  # one change each, as changes
    assert {c for _, c in recorded} <= {"changed", "cancelled"}
    assert mapped_with == {"1.1.0"}
    assert sum(d.changed + d.cancelled + d.new for d in outcome.report.drops) == len(expected)
    assert outcome.report.by_owner and {owner for _, owner in outcome.report.by_owner} == {"pc_csv"}
    assert sum(outcome.report.by_owner.values()) == len(expected)
    assert outcome.report.migrated_total == 0 and outcome.report.gone == 0  # nothing migrated yet
    # progress came drop by drop, every table of every drop
    assert sorted(seen) == sorted((d, t) for d in pc_book for t in new.spec.tables)


def test_the_backfill_runs_are_tagged_one_per_range_with_one_intent_per_drop(
        pc_book, resources, engine, instance, tmp_path):
    new = load_mapping(changed_mapping(tmp_path))
    outcome = reprocess(plan_reprocess(new, SINCE, engine=engine), resources=resources, launcher=InProcessLauncher(resources, instance))
    assert outcome.success

    # (the backfill record itself, launched through the webserver, is checked in tests/daemon)
    keys = {dg.AssetKey(["canonical", "pc_csv", t]) for t in new.spec.tables}
    runs = instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": outcome.backfill.backfill_id}))
    assert len(runs) == 1  # both drops are one contiguous range: one single-run backfill run
    (run,) = runs
    assert (run.tags["dagster/asset_partition_range_start"], run.tags["dagster/asset_partition_range_end"]) == \
           ("day-1", "day-2")
    assert run.job_name == "map_pc_csv_job"
    checks = [e for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)]
    assert checks and all(e.dagster_event.event_specific_data.passed for e in checks)
    for key in keys:  # one materialization per drop, each with its own counts
        events = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key), limit=100).records
        in_run = {e.partition_key: e.asset_materialization.metadata for e in events if e.run_id == run.run_id}
        assert set(in_run) == set(pc_book)
        assert all(m["mapping"].value == "pc_csv 1.1.0" for m in in_run.values())

    with engine.connect() as conn:  # each drop its own WAL intent, keyed by the mapping, relaunchable by partition
        intents = conn.execute(text(
            "SELECT partition_key, idempotency_key, status FROM wal.intents WHERE operation = 'map_table' "
            "AND run_id = :r"), {"r": run.run_id}).all()
        install = conn.execute(text("SELECT status, payload FROM wal.intents WHERE operation = 'install_mapping'")).one()
    assert {(p, s) for p, _, s in intents} == {("day-1", "committed"), ("day-2", "committed")}
    assert len(intents) == len(pc_book) * len(keys) and all(new.hash in k for _, k, _ in intents)
    assert install.status == "committed"
    assert (install.payload["old"]["version"], install.payload["new"]["version"]) == ("1.0.0", "1.1.0")
    assert (install.payload["old"]["hash"], install.payload["new"]["hash"]) == (
        load_mapping(mapping_for_source("pc_csv")).hash, new.hash)
    assert active_mapping("pc_csv").hash == new.hash
    (backup,) = installed_mappings_dir().glob("pc_csv.yaml.*")
    assert load_mapping(backup).hash == install.payload["old"]["hash"]


def test_the_same_mapping_again_is_refused_and_an_interrupted_reprocess_is_finished(
        pc_book, resources, engine, instance, tmp_path):
    new = load_mapping(changed_mapping(tmp_path))
    # a reprocess that stopped after installing the mapping: the drops are still mapped with 1.0.0
    MappingStore(resources["wal"].store()).install(new)
    plan = plan_reprocess(new, SINCE, engine=engine)
    assert plan.resume and plan.drop_ids == pc_book
    before = _hashes(engine)
    outcome = reprocess(plan, resources=resources, launcher=InProcessLauncher(resources, instance))
    assert outcome.success and outcome.install is None
    assert {p for p in before if _hashes(engine)[p] != before[p]} == outcome.report.changed_policies != set()

    with pytest.raises(ReprocessError, match="nothing to reprocess"):
        plan_reprocess(new, SINCE, engine=engine)
    with pytest.raises(ReprocessError, match="no staged drop of pc_csv landed on or after"):
        plan_reprocess(load_mapping(changed_mapping(tmp_path, "1.2.0")), datetime.now(timezone.utc) + timedelta(days=1),
                       engine=engine)
    with pytest.raises(MappingError, match="draft: true"):
        plan_reprocess(load_mapping(changed_mapping(tmp_path, "1.3.0", draft=True)), SINCE, engine=engine)
    spec = yaml.safe_load(changed_mapping(tmp_path, "1.4.0").read_text())
    del spec["tables"]["coverages"]
    other = tmp_path / "pc_csv-1.4.0.yaml"
    other.write_text(yaml.safe_dump(spec))
    with pytest.raises(MappingError, match="assets map exactly coverages from coverages, policies from policies"):
        plan_reprocess(load_mapping(other), SINCE, engine=engine)


def test_only_drops_landed_since_the_date_are_reprocessed_each_range_in_one_run(
        pc_book, resources, engine, instance, tmp_path):
    with engine.connect() as conn:
        day2 = conn.execute(text("SELECT registered_at FROM intake.drops WHERE drop_id = 'day-2'")).scalar_one()
    plan = plan_reprocess(load_mapping(changed_mapping(tmp_path)), day2, engine=engine)
    assert plan.drop_ids == ["day-2"]
    outcome = reprocess(plan, resources=resources, launcher=InProcessLauncher(resources, instance))
    assert outcome.success and [r.drops for r in outcome.backfill.runs] == [["day-2"]]
    with engine.connect() as conn:
        versions = dict(conn.execute(text("SELECT drop_id, mapping_version FROM canonical.loads "
                                          "WHERE table_name = 'policies'")).all())
    assert versions == {"day-1": "1.0.0", "day-2": "1.1.0"}
    assert {d.drop_id for d in outcome.report.drops} == {"day-2"}


def test_drops_that_are_not_next_to_each_other_make_one_run_per_range():
    order = ["a", "b", "c", "d", "e"]
    assert drop_ranges(order, ["b", "c", "e"]) == [["b", "c"], ["e"]]
    assert drop_ranges(order, ["e", "a"]) == [["a"], ["e"]]
    assert drop_ranges(order, []) == []


@pytest.mark.daemon  # the CLI starts this project's Dagster
def test_cli_reprocess_reports_migrated_policies_as_sync_changes(pc_book, resources, engine, instance, tmp_path,
                                                                   database_url, monkeypatch):
    from typer.testing import CliRunner

    from dagster_project.cli import app

    monkeypatch.setenv("DATA_MASH_DATABASE_URL", database_url)
    monkeypatch.setenv("COLUMNS", "200")
    wave, run = run_one_wave(engine, resources, instance, name="all new-platform")
    assert run.success
    with engine.connect() as conn:
        moved = set(conn.execute(text("SELECT policy_id FROM coexistence.registry "
                                      "WHERE system_of_record = 'new_platform'")).scalars())
        loaded = conn.execute(text("SELECT count(*), sum(annual_premium) FROM new_platform.rating")).one()
    expected = _known_impact(engine)
    assert moved & expected

    cli = CliRunner()
    new = changed_mapping(tmp_path)
    result = cli.invoke(app, ["reprocess", "--mapping", str(new), "--since", "2000-01-01"], input="n\n")
    assert result.exit_code == 1 and "nothing was changed" in result.output
    assert active_mapping("pc_csv").version == "1.0.0"

    result = cli.invoke(app, ["reprocess", "--mapping", str(new), "--since", "2000-01-01", "--yes"])
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())
    assert "COMPLETED_SUCCESS" in out and "day-1 … day-2 (2 drops) succeeded" in out
    migrated = len(moved & expected)
    assert f"{len(expected):,} policies changed" in out
    assert f"{migrated:,} of them already migrated ({migrated:,} owned by the new platform" in out
    assert "nightly sync" in out
    assert "day-2 mapped with 1.1.0" in " ".join(result.stderr.split())
    with engine.connect() as conn:  # what the wave loaded, and who owns it, is untouched
        assert conn.execute(text("SELECT count(*), sum(annual_premium) FROM new_platform.rating")).one() == loaded
        assert set(conn.execute(text("SELECT policy_id FROM coexistence.registry "
                                     "WHERE system_of_record = 'new_platform'")).scalars()) == moved

    again = cli.invoke(app, ["reprocess", "--mapping", str(new), "--since", "2000-01-01", "--yes"])
    assert again.exit_code == 2 and "nothing to reprocess" in " ".join(again.output.split())
    bad = cli.invoke(app, ["reprocess", "--mapping", str(new), "--since", "yesterday", "--yes"])
    assert bad.exit_code == 2 and "is not a date" in bad.output


def test_a_failed_range_run_is_recovered_by_drop_and_the_same_command_finishes_it(
        pc_book, resources, engine, instance, tmp_path):
    from dagster_project.runner import recover
    from resources.wal import WriteAheadLog

    new = load_mapping(changed_mapping(tmp_path))
    before, expected = _hashes(engine), _known_impact(engine)
    faulty = {**resources, "wal": WriteAheadLog(database=resources["database"],
                                                fault="fail:after_intent:canonical/pc_csv/coverages")}
    outcome = reprocess(plan_reprocess(new, SINCE, engine=engine), resources=faulty,
                        launcher=InProcessLauncher(faulty, instance))
    assert not outcome.success and outcome.backfill.status == "COMPLETED_FAILED" and outcome.book_run is None
    (run,) = outcome.backfill.runs
    assert "fault injected" in run.error and run.drops == pc_book

    # the intent left pending names its drop, so recovery relaunches that one drop, not the range
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    (action,) = [a for a in resources["wal"].store().recovery_plan(now=later) if a.action == "relaunch"]
    assert (action.asset_key, action.partition_key) == ("canonical/pc_csv/coverages", "day-1")
    (recovered,) = recover(resources=resources, launcher=InProcessLauncher(resources, instance), now=later)
    assert recovered.success

    plan = plan_reprocess(new, SINCE, engine=engine)  # the mapping is installed: only day 2 is left to finish
    assert plan.resume and plan.drop_ids == ["day-2"]
    finished = reprocess(plan, resources=resources, launcher=InProcessLauncher(resources, instance))
    assert finished.success and finished.install is None
    after = _hashes(engine)
    assert {p for p in before if after[p] != before[p]} == finished.report.changed_policies == expected
    assert [d.drop_id for d in finished.report.drops] == pc_book  # the whole change, day 1 included
    with pytest.raises(ReprocessError, match="nothing to reprocess"):
        plan_reprocess(new, SINCE, engine=engine)
