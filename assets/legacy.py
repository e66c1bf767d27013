"""`legacy/<source>/<kind>` assets: one per file kind of each legacy source, one partition per drop.

Thin by design: find the drop in the landing folder, call `legacy.intake.ingest_file`, and
describe the result in the UI (counts, quarantine reasons, column schema, profile). Each asset has
a blocking check proving that every record read is staged or quarantined, exactly once.
"""


import dagster as dg

from legacy.intake import ingest_file, locate_file
from legacy.sources import SourceConfig
from resources.database import DatabaseResource
from resources.intake_store import IntakeStore, file_sha256, pg_type, sql_name, staging_table_name
from resources.landing import LandingResource
from resources.wal import WriteAheadLog
from dagster_project.partitions import drops_partitions, reports_dir


def intake_asset_key(source: str, kind: str) -> dg.AssetKey:
    return dg.AssetKey(["legacy", source, kind])


def _quarantine_markdown(examples: list[dict], pii: set[str]) -> str:
    if not examples:
        return "No record quarantined."
    lines = ["| record | field | reason | detail |", "|---:|---|---|---|"]
    for ex in examples:
        detail = "(personal data: see intake.quarantine)" if ex["field"] in pii else ex["detail"]
        lines.append(f"| {ex['record_no']} | {ex['field'] or ''} | {ex['reason']} | {detail.replace('|', '/')} |")
    return "\n".join(lines)


def build_intake_assets(source: SourceConfig) -> "tuple[list[dg.AssetsDefinition], list[dg.AssetChecksDefinition]]":
    partitions = drops_partitions(source.name)
    assets, checks = [], []
    for spec in source.files:
        assets.append(_intake_asset(source, spec.kind, spec.required, partitions))
        checks.append(_accounted_check(source, spec.kind, partitions))
    return assets, checks


def _intake_asset(source: SourceConfig, kind: str, required: bool, partitions) -> dg.AssetsDefinition:
    key = intake_asset_key(source.name, kind)
    pii = set(source.pii)

    @dg.asset(
        key=key,
        name=None,
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
        drop_dir = landing.drop_dir(source.name, drop_id)
        if not drop_dir.is_dir():
            raise dg.Failure(
                f"drop {drop_id!r} of source {source.name} is not in the landing folder ({drop_dir}). "
                "Put it there with `data-mash ingest PATH --source " + source.name + "`."
            )
        store = IntakeStore(database.engine())
        path = locate_file(source, kind, drop_dir)
        if path is None:
            if required:
                raise dg.Failure(f"drop {drop_id!r} of {source.name} has no {kind} file")
            context.log.info(f"drop {drop_id} of {source.name} has no {kind} file (optional)")
            return dg.MaterializeResult(metadata={"dagster/row_count": 0, "file": "absent"})
        sha = file_sha256(path)
        asset_key = key.to_user_string()
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
                on_block=lambda _load: wal.maybe_crash("mid_load", asset_key),
            )
            load = ingested.load
            intent.result = {"records_read": load.records_read, "records_parsed": load.records_parsed,
                             "records_quarantined": load.records_quarantined}
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
        counts = IntakeStore(database.engine()).accounting(source.name, kind, drop_id)
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
