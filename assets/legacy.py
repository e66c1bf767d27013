"""`legacy/<source>/drop` and `legacy/<source>/<kind>` assets: a drop checked whole, then each of its files staged.

A drop is taken whole or not at all. `legacy/<source>/drop` runs first in every ingest run: it checks
the whole drop with `legacy.integrity.verify_drop` (sizes, control file, trailer, a sample of each
file's head) and records the verdict and manifest in `intake.drops`; a refused drop fails the run
before any file is staged, naming each file, offset and reason. Every file asset depends on it.

The file assets are thin: find the drop in the landing folder, call `legacy.intake.ingest_file`, and
describe the result in the UI (counts, quarantine reasons, column schema, profile). If a file still
fails while it is staged (a count or total that only a full read can prove, a late layout problem),
the drop's other staged files are undone in a WAL intent, so nothing of the drop stays staged. Each
file asset has a blocking check proving that every record read is staged or quarantined, exactly once.
"""

import shutil
from typing import NoReturn

import dagster as dg

from legacy.integrity import DropManifest, DropRefused, FileCheck, verify_drop
from legacy.intake import ingest_file, locate_file
from legacy.sources import DROP_KIND, SourceConfig, find_drop_files
from resources.database import DatabaseResource
from resources.intake_store import (DropNotTaken, IntakeStore, file_sha256, pg_type, sql_name,
                                    staging_table_name)
from resources.landing import LandingResource, content_hash
from resources.wal import IntentBusyError, WriteAheadLog
from dagster_project.partitions import drops_partitions, reports_dir


def landed(landing: LandingResource, source: str, drop_id: str):
    """The drop's folder in the landing folder; the run fails, saying how to land it, when it is not there."""
    drop_dir = landing.drop_dir(source, drop_id)
    if not drop_dir.is_dir():
        raise dg.Failure(f"drop {drop_id!r} of source {source} is not in the landing folder ({drop_dir}). "
                         f"Put it there with `data-mash ingest PATH --source {source}`.")
    return drop_dir


def intake_asset_key(source: str, kind: str) -> dg.AssetKey:
    return dg.AssetKey(["legacy", source, kind])


def drop_asset_key(source: str) -> dg.AssetKey:
    return dg.AssetKey(["legacy", source, DROP_KIND])


def _quarantine_markdown(examples: list[dict], pii: set[str]) -> str:
    if not examples:
        return "No record quarantined."
    lines = ["| record | field | reason | detail |", "|---:|---|---|---|"]
    for ex in examples:
        detail = "(personal data: see intake.quarantine)" if ex["field"] in pii else ex["detail"]
        lines.append(f"| {ex['record_no']} | {ex['field'] or ''} | {ex['reason']} | {detail.replace('|', '/')} |")
    return "\n".join(lines)


def _problems_markdown(refused: DropRefused) -> str:
    lines = ["| file | where | reason | detail |", "|---|---|---|---|"]
    for p in refused.problems:
        where = ", ".join(w for w in (f"line {p.line}" if p.line is not None else "",
                                      f"record {p.record}" if p.record is not None else "",
                                      f"byte {p.offset}" if p.offset is not None else "",
                                      p.field or "") if w)
        lines.append(f"| {p.file} | {where} | {p.reason} | {p.detail.replace('|', '/')}; {p.advice} |")
    return "\n".join(lines)


def _manifest_markdown(manifest: DropManifest) -> str:
    lines = ["| kind | file | bytes | records declared | declared by | head sampled | head unreadable |",
             "|---|---|---:|---:|---|---:|---:|"]
    for check in manifest.files.values():
        declared = "" if check.records is None else f"{check.records:,}"
        lines.append(f"| {check.kind} | {check.file} | {check.bytes:,} | {declared} | "
                     f"{', '.join(check.records_from)} | {check.head_records:,} | {check.head_unreadable:,} |")
    return "\n".join(lines)


def build_intake_assets(source: SourceConfig) -> "tuple[list[dg.AssetsDefinition], list[dg.AssetChecksDefinition]]":
    partitions = drops_partitions(source.name)
    assets, checks = [_drop_asset(source, partitions)], []
    for spec in source.files:
        assets.append(_intake_asset(source, spec.kind, partitions))
        checks.append(_accounted_check(source, spec.kind, partitions))
    return assets, checks


def _drop_asset(source: SourceConfig, partitions) -> dg.AssetsDefinition:
    key = drop_asset_key(source.name)

    @dg.asset(
        key=key,
        group_name=f"legacy_{source.name}",
        partitions_def=partitions,
        kinds={"postgres"},
        description=(
            f"Each {source.name} drop checked whole before any of its files is staged: every required file present, "
            "sizes and record counts as its control file and trailer declare, and the head of each file readable. "
            "The verdict and the drop's manifest are in `intake.drops`; a refused drop fails the run here, naming "
            "each file, byte offset or line, and reason, and nothing of it is staged."
        ),
        tags={"layer": "legacy"},
    )
    def _asset(context: dg.AssetExecutionContext, database: DatabaseResource, landing: LandingResource,
               wal: WriteAheadLog):
        drop_id = context.partition_key
        drop_dir = landed(landing, source.name, drop_id)
        digest = context.run.tags.get("data_mash/content_hash") or content_hash(drop_dir)
        manifest, refused = None, None
        try:
            manifest = verify_drop(source, drop_dir, drop_id)
            files = {kind: check.file for kind, check in manifest.files.items()}
        except DropRefused as error:
            refused = error
            try:
                files = {kind: p.name for kind, p in find_drop_files(source, drop_dir).items()}
            except FileNotFoundError:
                files = {}
        status = "refused" if refused else "verified"
        with wal.intent(
            context,
            namespace="intake",
            operation="verify_drop",
            target="intake.drops",
            key=f"intake:{source.name}:{DROP_KIND}:{drop_id}:{digest}",
            payload={"source": source.name, "drop_id": drop_id, "content_hash": digest, "files": files},
        ) as intent:
            IntakeStore(database.engine()).record_drop_check(
                source=source.name, drop_id=drop_id, content_hash=digest, path=drop_dir, files=files, status=status,
                manifest=manifest.as_json() if manifest else None, error=str(refused) if refused else None,
                wal_id=intent.id)
            intent.result = {"status": status, "problems": len(refused.problems) if refused else 0}
        if refused is not None:
            # the verdict is recorded (its intent committed); the run stops here, before any file is staged
            raise dg.Failure(description=str(refused), metadata={
                "problems": dg.MetadataValue.md(_problems_markdown(refused)),
                "reasons": dg.MetadataValue.json(sorted({p.reason for p in refused.problems})),
                "wal_entry_id": intent.id})
        context.log.info(f"{source.name} drop {drop_id} verified: {len(manifest.files)} files")
        return dg.MaterializeResult(metadata={
            "dagster/row_count": len(manifest.files),  # one row per file of the drop
            "files": dg.MetadataValue.md(_manifest_markdown(manifest)),
            "control_file": manifest.control_file or "none",
            "content_hash": digest,
            "drop": drop_id,
            "wal_entry_id": intent.id,
        })

    return _asset


def _undo_drop(context, source: SourceConfig, drop_id: str, kind: str, file_name: str, store: IntakeStore,
               wal: WriteAheadLog, error: BaseException) -> NoReturn:
    """A file failed while it was staged: remove what the drop's files staged (in a WAL intent), then fail."""
    reason = str(error) if isinstance(error, (ValueError, OSError)) else f"{type(error).__name__}: {error}"
    message = (f"{source.name} drop {drop_id}: the {kind} file {file_name} failed while it was staged, so the whole "
               f"drop is undone and nothing of it stays staged. {reason}")
    with wal.intent(
        context,
        namespace="intake",
        operation="undo_drop",
        target=f"staging.{sql_name(source.name)}__*, intake.files, intake.quarantine",
        key=f"intake:{source.name}:undo:{drop_id}:{context.run.run_id}:{kind}",
        payload={"source": source.name, "drop_id": drop_id, "failed_kind": kind, "file": file_name,
                 "reason": reason[:1000]},
    ) as intent:
        removed = store.undo_drop(source.name, drop_id, [f.kind for f in source.files], message, intent.id)
        wal_store = wal.store()
        settled = []  # the drop's staging intents are settled: their rows are gone, recovery must not rerun them
        for intent_id, key, status in store.drop_stage_intents(source.name, drop_id, [f.kind for f in source.files]):
            if status == "pending" and wal_store.owner_alive(key):
                continue
            wal_store.compensated(intent_id, {"undone_by": intent.id, "reason": "the drop was undone"})
            settled.append(intent_id)
        intent.result = {"removed": removed, "compensated_intents": settled}
    shutil.rmtree(reports_dir() / source.name / drop_id, ignore_errors=True)
    context.log.error(message)
    raise dg.Failure(description=message, metadata={
        "removed": dg.MetadataValue.json(removed), "undo_wal_entry_id": intent.id})


def _intake_asset(source: SourceConfig, kind: str, partitions) -> dg.AssetsDefinition:
    key = intake_asset_key(source.name, kind)
    pii = set(source.pii)

    @dg.asset(
        key=key,
        name=None,
        deps=[drop_asset_key(source.name)],
        group_name=f"legacy_{source.name}",
        partitions_def=partitions,
        kinds={"postgres", "cobol" if source.format == "copybook" else "csv"},
        description=(
            f"The {kind} file of each {source.name} drop ({source.description}), decoded and staged in "
            f"`staging.{source.name}__{kind}`; undecodable records go to `intake.quarantine` with field and reason."
        ),
        tags={"layer": "legacy"},
    )
    def _asset(context: dg.AssetExecutionContext, database: DatabaseResource, landing: LandingResource,
               wal: WriteAheadLog):
        drop_id = context.partition_key
        drop_dir = landed(landing, source.name, drop_id)
        store = IntakeStore(database.engine())
        state = store.drop_state(source.name, drop_id)
        if state is not None and state.status in ("refused", "undone"):
            raise dg.Failure(f"{source.name} drop {drop_id} was {state.status}, so its {kind} file is not staged. "
                             f"{state.error or ''}")
        try:  # a file missing or gone unreadable since the drop check fails the drop like any other failure
            path = locate_file(source, kind, drop_dir)
            sha = file_sha256(path) if path is not None else None
        except Exception as error:  # noqa: BLE001
            _undo_drop(context, source, drop_id, kind, source.file(kind).pattern, store, wal, error)
        if path is None:
            context.log.info(f"drop {drop_id} of {source.name} has no {kind} file (optional)")
            return dg.MaterializeResult(metadata={"dagster/row_count": 0, "file": "absent"})
        entry = ((state.manifest or {}).get("files") or {}).get(kind) if state is not None else None
        check = FileCheck.from_json(entry) if entry else None  # what the drop check declared this file holds
        asset_key = key.to_user_string()
        try:
            with wal.intent(
                context,
                namespace="intake",
                operation="stage_file",
                target=f"staging.{staging_table_name(source.name, kind)}",
                key=f"intake:{source.name}:{kind}:{drop_id}:{sha}",
                payload={"source": source.name, "kind": kind, "drop_id": drop_id, "file": path.name,
                         "file_sha256": sha, "file_bytes": path.stat().st_size},
            ) as intent:
                ingested = ingest_file(
                    store, source, kind, drop_id, drop_dir, path=path, sha256=sha, wal_id=intent.id,
                    on_block=lambda _load: wal.maybe_crash("mid_load", asset_key), check=check,
                )
                load = ingested.load
                intent.result = {"records_read": load.records_read, "records_parsed": load.records_parsed,
                                 "records_quarantined": load.records_quarantined}
        except (IntentBusyError, dg.DagsterExecutionInterruptedError):
            raise  # another live run owns this file, or the run is being stopped: nothing of this run to undo
        except DropNotTaken as error:
            raise dg.Failure(str(error)) from None
        except Exception as error:  # noqa: BLE001 - any failure of a file fails the whole drop
            _undo_drop(context, source, drop_id, kind, path.name, store, wal, error)
        profile = ingested.profile
        report = profile.write_json(reports_dir() / source.name / drop_id / f"{kind}.profile.json")
        context.log.info(
            f"{source.name}/{kind} drop {drop_id}: read {load.records_read}, parsed {load.records_parsed}, "
            f"quarantined {load.records_quarantined}"
        )
        schema = dg.TableSchema(
            columns=[dg.TableColumn(sql_name(name), pg_type(dtype), description=name) for name, dtype in ingested.columns]
        )
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": load.records_parsed,
                "dagster/column_schema": schema,
                "records_read": load.records_read,
                "records_parsed": load.records_parsed,
                "records_quarantined": load.records_quarantined,
                "quarantine_by_reason": dg.MetadataValue.json(load.quarantine_by_reason),
                "quarantine_examples": dg.MetadataValue.md(
                    _quarantine_markdown(store.quarantine_examples(source.name, kind, drop_id), pii)
                ),
                "profile": dg.MetadataValue.md(profile.markdown()),
                "profile_report": dg.MetadataValue.path(str(report)),
                "file": ingested.path.name,
                "control_totals": dg.MetadataValue.json(ingested.controls or {"declared": "none"}),
                "staging_table": load.staging_table,
                "drop": drop_id,
                "wal_entry_id": intent.id,
                "wal_status": intent.status,
                "wal_attempt": intent.attempts,
            }
        )

    return _asset


def _accounted_check(source: SourceConfig, kind: str, partitions) -> dg.AssetChecksDefinition:
    key = intake_asset_key(source.name, kind)

    @dg.asset_check(
        asset=key,
        name=f"legacy_{source.name}_{kind}_accounted",
        blocking=True,
        description="Every record read is staged or quarantined exactly once: record numbers 1..N, no gap, no repeat.",
    )
    def _check(context: dg.AssetCheckExecutionContext, database: DatabaseResource) -> dg.AssetCheckResult:
        # Checks on partitioned assets run in the same run as the materialization they check.
        drop_id = context.run.tags.get("dagster/partition")
        store = IntakeStore(database.engine())
        state = store.drop_state(source.name, drop_id)
        if state is not None and state.status == "undone":  # nothing of the drop is staged: nothing to account for
            return dg.AssetCheckResult(passed=True, description="the drop was undone: nothing of it is staged",
                                       metadata={"drop": "undone"})
        counts = store.accounting(source.name, kind, drop_id)
        read = counts["recorded_read"]
        if read == -1:  # the optional file was absent from this drop
            return dg.AssetCheckResult(passed=True, metadata={"file": "absent"})
        accounted = counts["staged"] + counts["quarantined"]
        passed = read == accounted == counts["distinct_records"] == counts["max_record_no"]
        return dg.AssetCheckResult(
            passed=passed,
            severity=dg.AssetCheckSeverity.ERROR,
            description=None if passed else (
                f"read {read} records but {counts['staged']} staged + {counts['quarantined']} quarantined "
                f"({counts['distinct_records']} distinct record numbers, highest {counts['max_record_no']})"
            ),
            metadata={k: dg.MetadataValue.int(v) for k, v in counts.items()},
        )

    return _check
