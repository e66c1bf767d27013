"""Mapping the sample book to the canonical model on a real PostgreSQL, through Dagster."""

import pytest
from sqlalchemy import text

from dagster_project.runner import ingest
from resources.canonical_store import drop_key
from resources.intake_store import partition_name, staging_table_name
from tests.book import manifest, sample_book
from tests.inprocess import InProcessLauncher

SOURCES = ["mainframe_life", "pc_csv"]
POLICY_FILES = {"mainframe_life": "POLMAST.dat", "pc_csv": "policies.csv"}
COVERAGE_FILES = {"mainframe_life": "COVERAGE.dat", "pc_csv": "coverages.csv"}
PREMIUM = {"mainframe_life": ("modal_premium", "modal_premium"), "pc_csv": ("annual_prem", "annual_premium")}


def mapped(engine, source):
    with engine.connect() as conn:
        quarantined = {(r.table_name, r.source_record_no): r.reason for r in conn.execute(text(
            "SELECT table_name, source_record_no, reason FROM canonical.quarantine WHERE source = :s"), {"s": source})}
        policies = {r.source_record_no: r for r in conn.execute(text(
            "SELECT source_record_no, dq_score, dq_findings FROM canonical.policies WHERE drop_key = :k"),
            {"k": drop_key(source, "day-1")})}
        coverages = {r.source_record_no: r for r in conn.execute(text(
            "SELECT source_record_no, dq_score, dq_findings FROM canonical.coverages WHERE drop_key = :k"),
            {"k": drop_key(source, "day-1")})}
    return quarantined, policies, coverages


@pytest.mark.parametrize("source", SOURCES)
def test_every_mapping_defect_is_quarantined_or_scored_down(source, resources, engine, instance):
    book = sample_book()
    outcome = ingest(book / source, source, "day-1", resources=resources, launcher=InProcessLauncher(resources, instance))
    assert outcome.success, outcome.error
    quarantined, policies, coverages = mapped(engine, source)
    seen_kinds = set()
    defects = [d for d in manifest(book)["defects"] if d["source"] == source and d["stage"] == "mapping"]
    intake_bad = {(d["file"], d["record"]) for d in manifest(book)["defects"] if d["stage"] == "intake"}
    for d in defects:
        table = {POLICY_FILES[source]: "policies", COVERAGE_FILES[source]: "coverages"}.get(d["file"])
        if table is None:
            continue
        rows = policies if table == "policies" else coverages
        reason = quarantined.get((table, d["record"]))
        kind = d["kind"]
        seen_kinds.add(kind)
        if table == "coverages" and reason == "orphan":
            continue  # its policy was held back, so the coverage is caught as an orphan before its own defect
        if kind == "impossible_date":
            assert reason == "invalid_date", d
        elif kind == "unknown_code":
            assert reason == "unknown_code", d
        elif kind == "orphan_coverage":
            assert reason == "orphan", d
        elif kind == "duplicate_policy_id":
            first = d["duplicate_of"]
            if (d["file"], first) in intake_bad or ("policies", first) in quarantined:
                continue  # the record it repeats never made it: this one stands on its own
            assert reason == "duplicate_policy_id", d
        elif kind == "negative_premium":
            assert reason is None and "negative_premium" in rows[d["record"]].dq_findings, d
            assert rows[d["record"]].dq_score < 100
        elif kind == "zero_date":
            if reason is None:  # an optional date: kept as null and scored down
                assert "zero_date" in rows[d["record"]].dq_findings and rows[d["record"]].dq_score < 100, d
            else:
                assert reason == "zero_date", d
        else:
            pytest.fail(f"unhandled defect kind {kind}")
    in_files = {d["kind"] for d in defects if d["file"] in (POLICY_FILES[source], COVERAGE_FILES[source])}
    assert seen_kinds == in_files
    # across both sources, the sample book exercises every mapping-stage defect class
    all_kinds = {d["kind"] for d in manifest(book)["defects"] if d["stage"] == "mapping"}
    assert all_kinds == {"impossible_date", "unknown_code", "orphan_coverage", "duplicate_policy_id",
                         "negative_premium", "zero_date"}


@pytest.mark.parametrize("source", SOURCES)
def test_canonical_premiums_equal_the_source_to_the_cent(source, resources, engine, instance):
    book = sample_book()
    assert ingest(book / source, source, "day-1", resources=resources, launcher=InProcessLauncher(resources, instance)).success
    staged = partition_name(staging_table_name(source, "policies"), "day-1")
    canon = partition_name("policies", drop_key(source, "day-1"))
    src_col, canon_col = PREMIUM[source]
    with engine.connect() as conn:
        source_total = conn.execute(text(f'SELECT sum({src_col}) FROM staging."{staged}"')).scalar_one()
        canonical_total = conn.execute(text(f'SELECT sum({canon_col}) FROM canonical."{canon}"')).scalar_one()
        held_back = conn.execute(text(
            f'SELECT coalesce(sum(s.{src_col}), 0) FROM staging."{staged}" s JOIN canonical.quarantine q '
            "ON q.source = :src AND q.drop_id = 'day-1' AND q.table_name = 'policies' AND q.source_record_no = s.record_no"),
            {"src": source}).scalar_one()
        loads = conn.execute(text("SELECT records_in, records_mapped, records_quarantined FROM canonical.loads "
                                  "WHERE source = :s AND table_name = 'policies'"), {"s": source}).one()
    assert source_total == canonical_total + held_back  # Decimal equality: exact to the cent
    assert loads.records_in == loads.records_mapped + loads.records_quarantined


def test_remapping_a_drop_replaces_it(resources, engine, instance):
    book = sample_book()
    ingest(book / "pc_csv", "pc_csv", "day-1", resources=resources, launcher=InProcessLauncher(resources, instance))
    first = mapped(engine, "pc_csv")
    assert ingest(book / "pc_csv", "pc_csv", "day-1", resources=resources, launcher=InProcessLauncher(resources, instance)).success
    second = mapped(engine, "pc_csv")
    assert (len(first[0]), len(first[1]), len(first[2])) == (len(second[0]), len(second[1]), len(second[2]))
    with engine.connect() as conn:
        intents = conn.execute(text("SELECT attempts FROM wal.intents WHERE namespace = 'canonical' "
                                    "AND target = 'canonical.policies'")).scalars().all()
    assert intents == [2]  # the same mapping of the same drop reuses its WAL intent


def test_lookup_tables_aggregate_a_staged_satellite_exactly(resources, engine, instance):
    from legacy.sources import load_source, output_columns
    from resources.canonical_store import CanonicalStore

    book = sample_book()
    assert ingest(book / "pc_csv", "pc_csv", "day-1", resources=resources, launcher=InProcessLauncher(resources, instance)).success
    source = load_source("pc_csv")
    columns = output_columns(source, source.file("coverages"))
    store = CanonicalStore(engine)
    sums = store.lookup_table("pc_csv", "day-1", ("coverages", "PolicyNo", "CovPrem", "sum"), columns)
    counts = store.lookup_table("pc_csv", "day-1", ("coverages", "PolicyNo", "CovPrem", "count"), columns)
    part = partition_name(staging_table_name("pc_csv", "coverages"), "day-1")
    with engine.connect() as conn:
        expected = dict(conn.execute(text(f'SELECT trim(policy_no), sum(cov_prem) FROM staging."{part}" '
                                          "WHERE policy_no IS NOT NULL GROUP BY 1")).all())
    assert dict(zip(sums.column("key").to_pylist(), sums.column("value").to_pylist())) == expected
    assert sum(counts.column("value").to_pylist()) > len(expected)


def test_beneficiaries_become_parties_and_every_occurrence_is_accounted_for(resources, engine, instance):
    book = sample_book()
    outcome = ingest(book / "mainframe_life", "mainframe_life", "day-1", resources=resources, launcher=InProcessLauncher(resources, instance))
    assert outcome.success and outcome.failed_checks == []
    staged = partition_name(staging_table_name("mainframe_life", "policies"), "day-1")
    with engine.connect() as conn:
        present = conn.execute(text(
            f"SELECT sum((nullif(trim(ben_name_1), '') IS NOT NULL)::int + (nullif(trim(ben_name_2), '') IS NOT NULL)::int) "
            f'FROM staging."{staged}"')).scalar_one()
        parties = conn.execute(text("SELECT count(*), count(DISTINCT policy_id), min(party_seq), max(party_seq) "
                                    "FROM canonical.parties WHERE drop_key = 'mainframe_life:day-1'")).one()
        held = conn.execute(text("SELECT count(*) FROM canonical.quarantine WHERE table_name = 'parties'")).scalar_one()
        relationships = set(conn.execute(text("SELECT DISTINCT relationship FROM canonical.parties")).scalars())
    assert parties[0] + held == present and parties[0] > parties[1] > 0
    assert (parties[2], parties[3]) == (1, 2)
    assert relationships <= {"spouse", "child", "parent", "trust", "estate", "sibling"}
