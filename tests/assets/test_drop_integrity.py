"""A drop is taken whole or not at all: bad drops refused before anything is staged, a file that fails while staged
undoes the drop, over-long CSV fields quarantined. In process on a real Dagster instance and a real PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
from decimal import Decimal
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import text

from dagster_project.jobs import ingest_job_name
from dagster_project.partitions import drops_partitions_name
from dagster_project.runner import ingest
from legacy.integrity import DropRefused, encode_trailer, parse_control_file
from legacy.sample import generate_sample
from legacy.sources import load_copybook, load_source
from resources.intake_store import partition_name, staging_table_name
from tests.book import sample_book
from tests.inprocess import InProcessLauncher

MF = "mainframe_life"
PC = "pc_csv"


def copy_drop(tmp_path: Path, source: str, name: str = "drop", book: Path | None = None) -> Path:
    target = tmp_path / name
    shutil.copytree((book or sample_book()) / source, target)
    return target


def run_landed(resources, instance, source: str, drop_id: str, folder: Path, fault: str | None = None):
    """Land a drop as a transfer tool would (no up-front check) and run its ingest job: the landing sensor's path."""
    resources["landing"].place(source, drop_id, folder)
    launcher = InProcessLauncher(resources, instance)
    launcher.add_partitions(drops_partitions_name(source), [drop_id])
    config = {"resources": {"wal": {"config": {"fault": fault}}}} if fault else None
    return launcher.run(ingest_job_name(source), partition_key=drop_id, run_config=config,
                        tags={"data_mash/source": source})


def staged(engine, source: str, drop_id: str) -> dict[str, int]:
    """Everything stored of a drop: intake.files and intake.quarantine rows, and staged rows of every kind."""
    counts = {}
    with engine.connect() as conn:
        counts["intake.files"] = conn.execute(text(
            "SELECT count(*) FROM intake.files WHERE source = :s AND drop_id = :d"), {"s": source, "d": drop_id}
        ).scalar_one()
        counts["intake.quarantine"] = conn.execute(text(
            "SELECT count(*) FROM intake.quarantine WHERE source = :s AND drop_id = :d"), {"s": source, "d": drop_id}
        ).scalar_one()
        for spec in load_source(source).files:
            part = partition_name(staging_table_name(source, spec.kind), drop_id)
            if conn.execute(text("SELECT to_regclass(:t)"), {"t": f'staging."{part}"'}).scalar_one() is not None:
                counts[spec.kind] = conn.execute(text(f'SELECT count(*) FROM staging."{part}"')).scalar_one()
    return counts


NOTHING = {"intake.files": 0, "intake.quarantine": 0}


def drop_row(engine, source: str, drop_id: str):
    with engine.connect() as conn:
        return conn.execute(text("SELECT status, error, manifest FROM intake.drops WHERE source = :s AND drop_id = :d"),
                            {"s": source, "d": drop_id}).one_or_none()


def _truncate(drop: Path) -> None:
    data = (drop / "POLMAST.dat").read_bytes()
    (drop / "POLMAST.dat").write_bytes(data[: len(data) // 2])


def _empty(drop: Path) -> None:
    (drop / "POLMAST.dat").write_bytes(b"")


def _garbage(drop: Path) -> None:  # the same size: only readability can tell
    size = (drop / "POLMAST.dat").stat().st_size
    (drop / "POLMAST.dat").write_bytes(os.urandom(size))


BAD_MASTERS = {"truncated": (_truncate, "truncated"), "empty": (_empty, "empty"), "garbage": (_garbage, "unreadable")}


@pytest.mark.parametrize("defect", sorted(BAD_MASTERS))
def test_a_bad_master_file_is_refused_in_the_run_and_nothing_is_staged(defect, resources, engine, instance, tmp_path):
    spoil, reason = BAD_MASTERS[defect]
    drop = copy_drop(tmp_path, MF)
    spoil(drop)
    outcome = run_landed(resources, instance, MF, f"bad-{defect}", drop)
    assert not outcome.success
    assert "POLMAST.dat" in outcome.error and f": {reason}: " in outcome.error and "byte offset" in outcome.error
    assert "Traceback" not in outcome.error
    assert staged(engine, MF, f"bad-{defect}") == NOTHING  # no partition of any kind, no file, no quarantine row
    status, error, manifest = drop_row(engine, MF, f"bad-{defect}")
    assert status == "refused" and manifest is None and f": {reason}: " in error
    # the file steps never ran: the drop asset stopped the run before them
    materialized = {e.asset_key.path[-1] for e in instance.get_records_for_run(
        outcome.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
        for e in [e.event_log_entry.dagster_event]}
    assert materialized == set()


@pytest.mark.parametrize("defect", sorted(BAD_MASTERS))
def test_a_bad_master_file_is_refused_up_front_before_it_is_landed(defect, resources, engine, instance, tmp_path):
    spoil, reason = BAD_MASTERS[defect]
    drop = copy_drop(tmp_path, MF)
    spoil(drop)
    with pytest.raises(DropRefused) as refused:
        ingest(drop, MF, "up-front", resources=resources, launcher=InProcessLauncher(resources, instance))
    (problem,) = refused.value.problems
    assert (problem.file, problem.reason) == ("POLMAST.dat", reason) and problem.offset is not None
    assert not resources["landing"].drop_dir(MF, "up-front").exists()
    assert staged(engine, MF, "up-front") == NOTHING and drop_row(engine, MF, "up-front") is None


def _set_control(drop: Path, file: str, **values: int) -> None:
    control = next(drop.glob("*ontrol*.txt")) if not (drop / "CONTROL.txt").exists() else drop / "CONTROL.txt"
    lines = []
    for line in control.read_text().splitlines():
        if line.startswith(file + " "):
            entry = parse_control_file(control)[file]
            merged = {"records": entry.records, "bytes": entry.bytes, **values}
            line = " ".join([file] + [f"{k}={v}" for k, v in merged.items() if v is not None])
        lines.append(line)
    control.write_text("\n".join(lines) + "\n")


def test_a_control_total_mismatch_is_refused_and_a_matching_one_accepted(resources, engine, instance, tmp_path):
    drop = copy_drop(tmp_path, PC, "mismatch")
    declared = parse_control_file(drop / "control.txt")["coverages.csv"].records
    _set_control(drop, "coverages.csv", records=declared + 1)
    outcome = run_landed(resources, instance, PC, "mismatch", drop)
    assert not outcome.success and "coverages.csv" in outcome.error and ": count_mismatch: " in outcome.error
    assert f"declares {declared + 1}" in outcome.error
    assert staged(engine, PC, "mismatch") == NOTHING

    good = run_landed(resources, instance, PC, "matching", copy_drop(tmp_path, PC, "matching"))
    assert good.success, good.error
    status, error, manifest = drop_row(engine, PC, "matching")
    assert status == "verified" and error is None
    assert manifest["files"]["coverages"]["records"] == declared and manifest["files"]["coverages"]["records_checked"]
    event = instance.get_latest_materialization_event(dg.AssetKey(["legacy", PC, "drop"]))
    assert event.dagster_event.partition == "matching" and "control.txt" in str(
        event.asset_materialization.metadata["control_file"].value)


def _rewrite_trailer(drop: Path, records: int | None = None, total: Decimal | None = None) -> None:
    """Replace POLMAST's trailer with one declaring other figures (the file is otherwise untouched)."""
    from legacy.integrity import read_trailer

    source = load_source(MF)
    spec = source.file("policies")
    path = drop / "POLMAST.dat"
    old = read_trailer(source, spec, path, drop)
    layout = load_copybook(source, spec, drop, name=spec.trailer.copybook)
    data = path.read_bytes()[: old.offset]
    path.write_bytes(data + encode_trailer(layout, spec, old.records if records is None else records,
                                           old.total if total is None else total, source.encoding))
    _set_control(drop, "POLMAST.dat", records=old.records if records is None else records,
                 bytes=path.stat().st_size)


def test_a_master_whose_count_only_a_full_read_disproves_undoes_the_whole_drop(resources, engine, instance, tmp_path):
    drop = copy_drop(tmp_path, MF)
    declared = parse_control_file(drop / "CONTROL.txt")["POLMAST.dat"].records
    _rewrite_trailer(drop, records=declared + 1)  # trailer and control file agree; the records do not
    outcome = run_landed(resources, instance, MF, "short", drop)
    assert not outcome.success
    assert "POLMAST.dat" in outcome.error and ": count_mismatch: " in outcome.error
    assert f"the file holds {declared} records" in outcome.error
    assert staged(engine, MF, "short") == NOTHING
    status, error, _ = drop_row(engine, MF, "short")
    assert status == "undone" and "the whole drop is undone" in error


def test_a_wrong_money_total_in_the_trailer_undoes_the_drop(resources, engine, instance, tmp_path):
    clean = tmp_path / "clean-book"
    generate_sample(clean, policies=200, seed=3, defect_rate=0.0)  # nothing quarantined: the total is provable
    drop = copy_drop(tmp_path, MF, book=clean)
    ok = run_landed(resources, instance, MF, "clean", copy_drop(tmp_path, MF, "clean", book=clean))
    assert ok.success, ok.error
    event = instance.get_latest_materialization_event(dg.AssetKey(["legacy", MF, "policies"]))
    controls = event.asset_materialization.metadata["control_totals"].value
    assert controls["total_proven"] and controls["total_declared"] == controls["total_staged"]

    _rewrite_trailer(drop, total=Decimal(controls["total_declared"]) + Decimal("0.01"))
    outcome = run_landed(resources, instance, MF, "off-by-a-cent", drop)
    assert not outcome.success and ": total_mismatch: " in outcome.error and "MODAL_PREMIUM" in outcome.error
    assert staged(engine, MF, "off-by-a-cent") == NOTHING


def test_a_file_that_fails_while_staged_leaves_none_of_the_drop_staged(resources, engine, instance, tmp_path):
    from resources.wal import WalStore

    # steps run in key order: coverages is staged, then policies fails partway
    outcome = run_landed(resources, instance, PC, "half", copy_drop(tmp_path, PC),
                         fault="fail:mid_load:legacy/pc_csv/policies")
    assert not outcome.success and "the policies file policies.csv failed while it was staged" in outcome.error
    assert staged(engine, PC, "half") == NOTHING
    status, error, _ = drop_row(engine, PC, "half")
    assert status == "undone" and "fault injected" in error
    with engine.connect() as conn:
        intents = dict(conn.execute(text(
            "SELECT operation || ':' || coalesce(asset_key, ''), status FROM wal.intents WHERE partition_key = 'half'"
        )).all())
        undo = conn.execute(text("SELECT result FROM wal.intents WHERE operation = 'undo_drop'")).scalar_one()
    # the coverages file was staged, then undone; its intent and the failed one are settled, so recovery leaves them
    assert intents["stage_file:legacy/pc_csv/coverages"] == "compensated"
    assert intents["stage_file:legacy/pc_csv/policies"] == "compensated"
    assert intents["undo_drop:legacy/pc_csv/policies"] == "committed"
    assert undo["removed"]["staging.pc_csv__coverages"] > 0 and undo["removed"]["intake.files"] == 1
    assert not [a for a in WalStore(engine).recovery_plan() if a.partition_key == "half"]
    assert not (Path(os.environ["DATA_MASH_HOME"]) / "reports" / PC / "half").exists()

    # sent again whole, the same drop is taken
    again = run_landed(resources, instance, PC, "half", copy_drop(tmp_path, PC, "resent"))
    assert again.success, again.error
    assert drop_row(engine, PC, "half")[0] == "verified" and staged(engine, PC, "half")["intake.files"] == 2


def test_a_64_mib_csv_field_is_quarantined_and_the_rest_is_staged_and_mapped(resources, engine, instance, tmp_path,
                                                                           home):
    drop = copy_drop(tmp_path, PC)
    path = drop / "policies.csv"
    lines = path.read_bytes().split(b"\n")
    city = lines[0].decode().split(",").index("City")
    fields = next(csv.reader([lines[5].decode()]))
    fields[city] = "X" * (64 << 20)  # 64 MiB in one field of data record 5 (line 6)
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(fields)
    lines[5] = out.getvalue().encode()
    path.write_bytes(b"\n".join(lines))
    _set_control(drop, "policies.csv", bytes=path.stat().st_size)

    outcome = ingest(drop, PC, "huge", resources=resources, launcher=InProcessLauncher(resources, instance))
    assert outcome.success, outcome.error
    with engine.connect() as conn:
        row = conn.execute(text(
            "SELECT record_no, reason, detail, length(raw) FROM intake.quarantine WHERE drop_id = 'huge' "
            "AND kind = 'policies' AND record_no = 5")).one()
    assert row.reason == "record_too_long" and "line 6" in row.detail and f"{len(lines[5]):,} bytes" in row.detail
    assert row[3] == 64 << 10  # the raw bytes kept are capped
    policies = next(f for f in outcome.files if f.kind == "policies")
    assert policies.records_parsed + policies.records_quarantined == policies.records_read == len(lines) - 2
    assert policies.reasons["record_too_long"] == 1
    assert {t.table for t in outcome.canonical} >= {"policies", "coverages"}  # mapped
    report = home / "reports" / PC / "huge" / "policies.profile.json"
    assert report.stat().st_size < 64 << 10
    assert max(len(p) for c in json.loads(report.read_text())["columns"] for p, _ in c["top_patterns"]) <= 65


def test_status_says_which_drops_were_refused_or_undone_and_why(resources, engine, home, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from dagster_project.cli import app
    from dagster_project.instance import open_instance

    monkeypatch.setenv("DATA_MASH_DATABASE_URL", resources["database"].url)
    monkeypatch.setenv("DATA_MASH_LANDING", resources["landing"].path)
    instance = open_instance(resources["database"])  # the instance `data-mash status` reads
    try:
        empty = copy_drop(tmp_path, MF, "empty")
        _empty(empty)
        assert not run_landed(resources, instance, MF, "refused-1", empty).success
        assert not run_landed(resources, instance, PC, "undone-1", copy_drop(tmp_path, PC),
                              fault="fail:mid_load:legacy/pc_csv/policies").success
        assert run_landed(resources, instance, PC, "taken-1", copy_drop(tmp_path, PC, "good")).success
    finally:
        instance.dispose()
    result = CliRunner().invoke(app, ["status"])
    said = " ".join(result.output.split())
    assert result.exit_code == 0, result.output
    assert "mainframe_life drop refused-1: Dagster run" in said and "FAILED drop refused: its check failed" in said
    assert "POLMAST.dat, byte offset 0: empty: the file has no bytes" in said
    assert "pc_csv drop undone-1: Dagster run" in said and "drop undone: a file failed while it was staged" in said
    assert "the policies file policies.csv failed while it was staged" in said
    assert re.search(r"pc_csv drop taken-1: Dagster run \S+ succeeded", said)


def test_a_required_file_gone_after_the_drop_check_undoes_the_drop(resources, engine, instance, tmp_path,
                                                                   monkeypatch):
    import legacy.intake
    from legacy.sources import DropFileError

    real = legacy.intake.find_drop_files

    def vanished(source, drop_dir):  # policies.csv disappears between the drop check and its staging step
        found = real(source, drop_dir)
        if source.name == PC and "coverages" in {p.stem for p in staged_files(engine)}:
            raise DropFileError(f"drop {drop_dir}: no file matches pattern 'policies*.csv' for the "
                                              "required pc_csv policies file")
        return found

    monkeypatch.setattr(legacy.intake, "find_drop_files", vanished)
    outcome = run_landed(resources, instance, PC, "vanished", copy_drop(tmp_path, PC))
    assert not outcome.success and "policies*.csv" in outcome.error and "the whole drop is undone" in outcome.error
    assert staged(engine, PC, "vanished") == NOTHING and drop_row(engine, PC, "vanished")[0] == "undone"


def staged_files(engine) -> list[Path]:
    with engine.connect() as conn:
        return [Path(n) for n in conn.execute(text("SELECT file_name FROM intake.files")).scalars()]
