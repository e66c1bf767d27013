"""Intake assets in process on a real Dagster instance and a real PostgreSQL."""

from __future__ import annotations

import json

import dagster as dg
import pytest
from sqlalchemy import text

from dagster_project.definitions import build_definitions
from dagster_project.runner import ingest
from resources.intake_store import partition_name, sql_name, staging_table_name
from tests.book import expected_quarantine, manifest, sample_book, tampered
from tests.inprocess import InProcessLauncher

SOURCES = ["mainframe_life", "pc_csv"]


def quarantined(engine, source, drop_id) -> set[tuple[str, int, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT file_name, record_no, reason FROM intake.quarantine WHERE source = :s AND drop_id = :d"),
            {"s": source, "d": drop_id},
        ).all()
    return {(r[0], r[1], r[2]) for r in rows}


@pytest.mark.parametrize("source", SOURCES)
def test_every_record_is_staged_or_quarantined_with_the_manifest_reason(source, resources, engine, instance):
    book = sample_book()
    outcome = ingest(book / source, source, "day-1", resources=resources, launcher=InProcessLauncher(resources, instance))
    assert outcome.success, outcome.error
    assert outcome.failed_checks == []
    files = manifest(book)["files"]
    for f in outcome.files:
        assert f.records_parsed + f.records_quarantined == f.records_read == files[f"{source}/{f.file_name}"]["records"]
    # exactly the injected intake defects are quarantined, with the right reason; nothing else
    assert quarantined(engine, source, "day-1") == expected_quarantine(book, source)
    # the run and its materializations are on the instance, so the UI shows them
    key = dg.AssetKey(["legacy", source, "policies"])
    event = instance.get_latest_materialization_event(key)
    assert event is not None and event.dagster_event.partition == "day-1"
    metadata = event.asset_materialization.metadata
    assert metadata["records_read"].value == metadata["records_parsed"].value + metadata["records_quarantined"].value
    assert "dagster/column_schema" in metadata and "profile" in metadata


@pytest.mark.parametrize("source", SOURCES)
def test_mapping_stage_defects_and_non_ascii_names_reach_staging_intact(source, resources, engine, instance):
    book = sample_book()
    assert ingest(book / source, source, "day-1", resources=resources, launcher=InProcessLauncher(resources, instance)).success
    defects = [d for d in manifest(book)["defects"] if d["source"] == source and d["stage"] in ("mapping", "preserve")]
    assert {d["stage"] for d in defects} == {"mapping", "preserve"}
    partitions = {file_name: partition_name(staging_table_name(source, kind), "day-1")
                  for file_name, kind in _kinds_by_file(engine, source, "day-1").items()}
    with engine.connect() as conn:
        staged_records = {file_name: set(conn.execute(text(f'SELECT record_no FROM staging."{part}"')).scalars())
                          for file_name, part in partitions.items()}
        for d in defects:
            assert d["record"] in staged_records[d["file"]], d
            if d["stage"] == "preserve":  # the accented name arrives as written, not folded or replaced
                name = conn.execute(text(f'SELECT "{sql_name(d["field"])}" FROM staging."{partitions[d["file"]]}" '
                                         "WHERE record_no = :r"), {"r": d["record"]}).scalar_one()
                assert not name.isascii() and "\ufffd" not in name and "?" not in name, d


def _kinds_by_file(engine, source, drop_id) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(text("SELECT file_name, kind FROM intake.files WHERE source = :s AND drop_id = :d"),
                                 {"s": source, "d": drop_id}).all())


def test_rerunning_a_drop_replaces_it_and_never_duplicates(resources, engine, instance):
    book = sample_book()
    first = ingest(book / "pc_csv", "pc_csv", "day-1", resources=resources, launcher=InProcessLauncher(resources, instance))
    second = ingest(book / "pc_csv", "pc_csv", "day-1", resources=resources, launcher=InProcessLauncher(resources, instance))
    assert first.success and second.success
    assert [(f.file_name, f.records_parsed, f.records_quarantined) for f in first.files] == \
           [(f.file_name, f.records_parsed, f.records_quarantined) for f in second.files]
    part = partition_name(staging_table_name("pc_csv", "policies"), "day-1")
    with engine.connect() as conn:
        staged = conn.execute(text(f'SELECT count(*) FROM staging."{part}"')).scalar_one()
        quarantine = conn.execute(text("SELECT count(*) FROM intake.quarantine WHERE kind = 'policies'")).scalar_one()
    policies = next(f for f in second.files if f.file_name == "policies.csv")
    assert (staged, quarantine) == (policies.records_parsed, policies.records_quarantined)


def test_accounting_check_fails_when_a_staged_record_goes_missing(resources, engine, instance):
    book = sample_book()
    assert ingest(book / "pc_csv", "pc_csv", "day-1", resources=resources, launcher=InProcessLauncher(resources, instance)).success
    part = partition_name(staging_table_name("pc_csv", "coverages"), "day-1")
    with tampered(engine) as conn:  # someone with database access deletes a staged record
        conn.execute(text(f'DELETE FROM staging."{part}" WHERE record_no = 2'))
    key = dg.AssetKey(["legacy", "pc_csv", "coverages"])
    defs = build_definitions(resources=resources)
    checks_only = dg.define_asset_job("recheck", selection=dg.AssetSelection.checks_for_assets(key))
    defs = dg.Definitions.merge(defs, dg.Definitions(jobs=[checks_only]))
    result = defs.resolve_job_def("recheck").execute_in_process(
        instance=instance, tags={"dagster/partition": "day-1"}, raise_on_error=False)
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) == 1 and not evaluations[0].passed
    assert evaluations[0].metadata["staged"].value + evaluations[0].metadata["quarantined"].value == \
           evaluations[0].metadata["recorded_read"].value - 1


def test_no_personal_data_in_metadata_or_profile_reports(resources, engine, instance, home):
    book = sample_book()
    for source in SOURCES:
        assert ingest(book / source, source, "day-1", resources=resources, launcher=InProcessLauncher(resources, instance)).success
    from legacy.sources import load_source

    secrets: set[str] = set()
    for source in SOURCES:
        config = load_source(source)
        with engine.connect() as conn:
            for kind, table in conn.execute(text("SELECT kind, staging_table FROM intake.files WHERE source = :s"), {"s": source}):
                cols = {c for (c,) in conn.execute(text(
                    "SELECT column_name FROM information_schema.columns WHERE table_schema = 'staging' "
                    "AND table_name = :t"), {"t": table.split(".", 1)[1]})}
                for pii in config.pii:
                    if sql_name(pii) in cols:
                        values = conn.execute(text(f'SELECT DISTINCT "{sql_name(pii)}"::text FROM {table} LIMIT 200')).scalars()
                        secrets |= {v for v in values if v and len(v) >= 5}
    assert secrets, "the sample book should hold personal data to protect"
    shown = []
    for source in SOURCES:
        for kind in ("policies", "coverages"):
            event = instance.get_latest_materialization_event(dg.AssetKey(["legacy", source, kind]))
            shown.append(json.dumps({k: str(v.value) for k, v in event.asset_materialization.metadata.items()}))
    shown += [p.read_text() for p in (home / "reports").rglob("*.json")]
    everything = "\n".join(shown)
    leaked = sorted(s for s in secrets if s in everything)
    assert leaked == []


def test_a_drop_missing_its_required_file_is_refused_naming_it(resources, instance, tmp_path):
    empty = tmp_path / "empty-drop"
    empty.mkdir()
    (empty / "notes.txt").write_text("nothing here")
    with pytest.raises(FileNotFoundError, match="policies"):
        ingest(empty, "pc_csv", "bad", resources=resources, launcher=InProcessLauncher(resources, instance))


def test_a_malformed_copybook_refuses_the_drop_naming_file_and_line(resources, instance, tmp_path):
    import shutil

    from legacy.integrity import DropRefused

    book = sample_book()
    drop = tmp_path / "broken"
    shutil.copytree(book / "mainframe_life", drop)
    cpy = drop / "POLMAST.cpy"
    lines = cpy.read_text(encoding="latin-1").splitlines()
    target = next(i for i, line in enumerate(lines) if "COMP-3" in line)
    lines[target] = lines[target].replace("COMP-3", "COMP-9")
    cpy.write_text("\n".join(lines) + "\n", encoding="latin-1")
    # refused up front, before the drop is landed or a run launched
    with pytest.raises(DropRefused) as refused:
        ingest(drop, "mainframe_life", "broken", resources=resources, launcher=InProcessLauncher(resources, instance))
    assert "POLMAST.cpy" in str(refused.value) and f"line {target + 1}" in str(refused.value)
    assert [p.reason for p in refused.value.problems] == ["bad_layout"]
    assert not resources["landing"].drop_dir("mainframe_life", "broken").exists()
    # a drop copied into the landing folder (the landing sensor's way in) fails its run, naming file and line
    from dagster_project.jobs import ingest_job_name
    from dagster_project.partitions import drops_partitions_name

    resources["landing"].place("mainframe_life", "broken", drop)
    launcher = InProcessLauncher(resources, instance)
    launcher.add_partitions(drops_partitions_name("mainframe_life"), ["broken"])
    run = launcher.run(ingest_job_name("mainframe_life"), partition_key="broken")
    assert not run.success
    assert "POLMAST.cpy" in run.error and f"line {target + 1}" in run.error


def test_definitions_load(home):
    defs = build_definitions()  # resources from the environment; nothing connects at load time
    dg.Definitions.validate_loadable(defs)
    assert {j.name for j in defs.jobs} >= {"ingest_mainframe_life_job", "ingest_pc_csv_job"}
