"""`canonical/<source>/<table>` assets: a drop's staged files mapped to Canonical Policy Model v1.

Partitioned like the intake (one partition per drop), so a mapping change is reprocessed with a
Dagster backfill over past drops (`data-mash reprocess`). Their backfill policy is a single run: a
range of drops is mapped in one run, drop after drop, each drop its own WAL intent; a run of one
partition (ingest, `remap`, WAL recovery) is a range of one. Thin: read staged blocks,
`canonical.mapping.map_block` them, write through the WAL, describe the result. A blocking check
proves mapped + quarantined = parsed, for every drop of the run.

The graph (which tables, from which file kinds) comes from the built-in mapping; what each run maps
with is the source's active mapping (`resources.mapping_store`: an installed one, else the built-in).
"""

import warnings

import dagster as dg

from canonical.mapping import load_mapping, lookup_specs, map_block, mapping_for_source
from canonical.tables import V1_TABLES
from dagster_project.partitions import drops_partitions
from legacy.sources import SourceConfig, output_columns
from resources.canonical_store import CanonicalStore
from resources.database import DatabaseResource
from resources.intake_store import pg_type
from resources.landing import LandingResource
from resources.mapping_store import active_mapping_path
from resources.wal import WriteAheadLog
from assets.legacy import intake_asset_key


# backfill policies are beta in Dagster; the single-run policy is what reprocessing relies on (the CLI says nothing
# about it on every command)
warnings.filterwarnings("ignore", message="Parameter `backfill_policy` of function `asset`", category=dg.BetaWarning)


def canonical_asset_key(source: str, table: str) -> dg.AssetKey:
    return dg.AssetKey(["canonical", source, table])


def build_canonical_assets(source: SourceConfig) -> "tuple[list[dg.AssetsDefinition], list[dg.AssetChecksDefinition]]":
    mapping = load_mapping(mapping_for_source(source.name))
    assets, checks = [], []
    for table, table_map in mapping.spec.tables.items():
        assets.append(_canonical_asset(source, table, table_map.from_))
        checks.append(_accounted_check(source, table, table_map.from_, table_map.present_columns()))
    return assets, checks


def _canonical_asset(source: SourceConfig, table: str, kind: str) -> dg.AssetsDefinition:
    canonical = V1_TABLES[table]
    # a drop is mapped once it is taken whole: after every one of its files is staged (a file that fails undoes the
    # drop, and the mapping of it is skipped), not as soon as the one file this table is mapped from is
    deps = [intake_asset_key(source.name, kind)] + [intake_asset_key(source.name, f.kind) for f in source.files
                                                     if f.kind != kind]
    if table != "policies":
        deps.append(canonical_asset_key(source.name, "policies"))

    @dg.asset(
        key=canonical_asset_key(source.name, table),
        deps=deps,
        group_name=f"canonical_{source.name}",
        partitions_def=drops_partitions(source.name),
        backfill_policy=dg.BackfillPolicy.single_run(),
        kinds={"postgres", "pyarrow"},
        description=(
            f"{canonical.description} Mapped from the {source.name} {kind} file with the versioned mapping "
            f"`canonical/mappings/{source.name}.yaml` (or the one `data-mash reprocess` installed); records that cannot "
            "be mapped (impossible dates, unknown codes, duplicates, orphans) go to `canonical.quarantine` with field "
            f"and reason. Stored in `canonical.{table}` with a data-quality score per record. A backfill maps a range "
            "of drops in one run."
        ),
        tags={"layer": "canonical"},
    )
    def _asset(context: dg.AssetExecutionContext, database: DatabaseResource, landing: LandingResource,
               wal: WriteAheadLog) -> dg.MaterializeResult:
        store = CanonicalStore(database.engine())
        for drop_id in context.partition_keys:  # one drop, or a backfill's range of them, in partition order
            context.add_asset_metadata(_map_drop(context, source, table, kind, drop_id, store, landing, wal),
                                       partition_key=drop_id)
        return dg.MaterializeResult()

    return _asset


def _map_drop(context: dg.AssetExecutionContext, source: SourceConfig, table: str, kind: str, drop_id: str,
              store: CanonicalStore, landing: LandingResource, wal: WriteAheadLog) -> dict:
    """Map one drop's staged `kind` rows to `canonical.<table>` through its own WAL intent; return its metadata."""
    canonical = V1_TABLES[table]
    drop_dir = landing.drop_dir(source.name, drop_id)
    where = drop_dir if drop_dir.is_dir() else None
    columns = output_columns(source, source.file(kind), where)
    mapping = load_mapping(active_mapping_path(source.name), {
        spec.kind: {n for n, _ in output_columns(source, spec, where)} for spec in source.files})
    if mapping.spec.draft:
        raise dg.Failure(f"{mapping.path} is a draft: review it (`data-mash validate-mapping`) and set "
                         "`draft: false` before the pipeline uses it")
    model_hash = store.record_mapping(mapping)
    with wal.intent(
        context,
        namespace="canonical",
        operation="map_table",
        target=f"canonical.{table}",
        key=f"canonical:{source.name}:{table}:{drop_id}:{mapping.hash}",
        payload={"source": source.name, "drop_id": drop_id, "table": table, "from": kind,
                 "mapping": mapping.name, "mapping_version": mapping.version, "mapping_hash": mapping.hash},
        partition_key=drop_id,
    ) as intent:
        lookups = {spec: store.lookup_table(source.name, drop_id, spec, output_columns(source, source.file(spec[0]), where))
                   for spec in lookup_specs(mapping, table)}
        blocks = (map_block(mapping, table, block, lookups=lookups)
                  for block in store.read_staged(source.name, kind, drop_id, columns))
        load = store.load_table(source=source.name, drop_id=drop_id, table=table, mapping=mapping,
                                blocks=blocks, wal_id=intent.id)
        intent.result = {"records_in": load.records_in, "records_mapped": load.records_mapped,
                         "records_quarantined": load.records_quarantined}
    context.log.info(f"{source.name} {table} drop {drop_id}: {load.records_in} in, {load.records_mapped} mapped, "
                     f"{load.records_quarantined} quarantined")
    metadata = {
        "dagster/row_count": load.records_mapped,
        "dagster/column_schema": dg.TableSchema(columns=[
            dg.TableColumn(c.name, pg_type(c.type), description=("personal data; " if c.pii else "") + c.description)
            for c in canonical.columns]),
        "records_in": load.records_in,
        "records_mapped": load.records_mapped,
        "records_quarantined": load.records_quarantined,
        "quarantine_by_reason": dg.MetadataValue.json(load.quarantine_by_reason),
        "mean_dq_score": dg.MetadataValue.float(load.mean_dq_score or 0.0),
        "mapping": f"{mapping.name} {mapping.version}",
        "model_version": mapping.spec.model_version,
        "model_schema_hash": model_hash[:16],
        "mapping_hash": mapping.hash[:16],
        "mean_mapping_confidence": dg.MetadataValue.float(round(mapping.confidence(table), 3)),
        "wal_entry_id": intent.id,
        "wal_status": intent.status,
        "wal_attempt": intent.attempts,
    }
    if table == "policies":
        metadata["premium_summary"] = dg.MetadataValue.md(_premium_summary(store, source.name, drop_id))
    return metadata


def _premium_summary(store: CanonicalStore, source: str, drop_id: str) -> str:
    from sqlalchemy import text

    from resources.canonical_store import drop_key

    with store.engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT line_of_business, status, count(*), sum(annual_premium) FROM canonical.policies "
            "WHERE drop_key = :k GROUP BY 1, 2 ORDER BY 1, 2"), {"k": drop_key(source, drop_id)}).all()
    lines = ["| line of business | status | policies | annual premium |", "|---|---|---:|---:|"]
    lines += [f"| {lob} | {status} | {n:,} | {total:,.2f} |" for lob, status, n, total in rows]
    return "\n".join(lines)


def run_drops(tags: "dict[str, str]", source: str, instance: dg.DagsterInstance) -> list[str]:
    """The drops a run is for: its partition, or every drop of a single-run backfill's range, in the order of the
    source's dynamic partitions on the instance (what the range means)."""
    if tags.get("dagster/partition"):
        return [tags["dagster/partition"]]
    start, end = tags.get("dagster/asset_partition_range_start"), tags.get("dagster/asset_partition_range_end")
    if not (start and end):
        raise dg.Failure("the run names no drop: launch it for a partition (a drop) or a range of them")
    keys = list(instance.get_dynamic_partitions(drops_partitions(source).name))
    if start not in keys or end not in keys or keys.index(start) > keys.index(end):
        raise dg.Failure(f"drops {start!r} to {end!r} are not a range of {source}'s drops on this instance")
    return keys[keys.index(start):keys.index(end) + 1]


def _accounted_check(source: SourceConfig, table: str, kind: str, present: list[str]) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=canonical_asset_key(source.name, table),
        name=f"canonical_{source.name}_{table}_accounted",
        blocking=True,
        description=("Every staged record is mapped or quarantined at mapping: mapped + quarantined = parsed"
                     + (f" (here: one row per present {', '.join(present)})." if present else ".")
                     + " Checked for every drop of the run (all of a backfill's range)."),
    )
    def _check(context: dg.AssetCheckExecutionContext, database: DatabaseResource) -> dg.AssetCheckResult:
        drops = run_drops(context.run.tags, source.name, context.instance)
        table_map = load_mapping(active_mapping_path(source.name)).spec.tables[table]
        store = CanonicalStore(database.engine())
        counts = {drop_id: store.accounting(source.name, drop_id, table, kind, table_map.present_columns() or None)
                  for drop_id in drops}
        failing = [d for d, c in counts.items() if not c["staged"] == c["recorded_in"] == c["mapped"] + c["quarantined"]]
        totals = {k: sum(c[k] for c in counts.values()) for k in ("staged", "recorded_in", "mapped", "quarantined")}
        metadata = {k: dg.MetadataValue.int(v) for k, v in (counts[drops[0]] if len(drops) == 1 else totals).items()}
        if len(drops) > 1:
            metadata["drops_checked"] = dg.MetadataValue.int(len(drops))
            metadata["failing_drops"] = dg.MetadataValue.json(failing[:20])
        return dg.AssetCheckResult(
            passed=not failing,
            severity=dg.AssetCheckSeverity.ERROR,
            description=None if not failing else "; ".join(
                f"drop {d}: {counts[d]['staged']} records staged, {counts[d]['recorded_in']} read by the mapping, but "
                f"{counts[d]['mapped']} mapped + {counts[d]['quarantined']} quarantined" for d in failing[:5]),
            metadata=metadata,
        )

    return _check
