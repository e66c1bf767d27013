"""`routing/decisions` and `coexistence/registry`: where each policy of the canonical book goes, and who owns it.

Thin: read the current canonical book, evaluate the versioned rule set (`routing/`, vectorized), store
the decisions and update the registry through the WAL, and describe the split in the UI.
"""

from pathlib import Path

import dagster as dg

from resources.book_store import BookStore
from resources.coexistence_store import CoexistenceStore
from resources.database import DatabaseResource
from resources.wal import WriteAheadLog

BOOK = dg.AssetKey(["canonical", "book"])
DECISIONS = dg.AssetKey(["routing", "decisions"])
REGISTRY = dg.AssetKey(["coexistence", "registry"])


def default_rules_path() -> Path:
    return Path(__file__).resolve().parents[1] / "routing" / "rules" / "default.yaml"


class RoutingConfig(dg.Config):
    """rules: the rule set YAML to route with; empty means routing/rules/default.yaml."""

    rules: str = ""


def _split_markdown(counts: dict[str, int], label: str) -> str:
    total = sum(counts.values()) or 1
    lines = [f"| {label} | policies | share |", "|---|---:|---:|"]
    lines += [f"| {k} | {v:,} | {v / total:.1%} |" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])]
    return "\n".join(lines)


def build_routing_assets(canonical_policy_keys: list[dg.AssetKey]) -> list[dg.AssetsDefinition]:
    @dg.asset(
        key=BOOK,
        deps=canonical_policy_keys,
        group_name="routing",
        kinds={"postgres"},
        description=("The canonical book: the latest version of each policy over every mapped drop, full extracts "
                     "and deltas, in landing order (`canonical.current`). Each drop not yet applied is compared with "
                     "the book by per-policy content hash: new, changed and cancelled policies are recorded in "
                     "`canonical.changes`."),
    )
    def canonical_book(context: dg.AssetExecutionContext, database: DatabaseResource,
                       wal: WriteAheadLog) -> dg.MaterializeResult:
        store = BookStore(database.engine())
        applied = []
        for drop in store.pending():
            with wal.intent(context, namespace="canonical", operation="apply_drop_to_book", target="canonical.current",
                            key=f"book:{drop['drop_key']}:{drop['mapping_hash']}:{drop['wal_id']}",
                            payload={k: drop[k] for k in ("drop_key", "mapping_hash", "wal_id", "drop_seq")}) as intent:
                result = store.apply(drop, intent.id)
                intent.result = result.__dict__
            applied.append(result)
        lines = ["| drop | policies | new | changed | cancelled | unchanged |", "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {a.drop_key} | {a.policies:,} | {a.new:,} | {a.changed:,} | {a.cancelled:,} | {a.unchanged:,} |"
                  for a in applied]
        return dg.MaterializeResult(metadata={
            "dagster/row_count": store.size(),
            "drops_applied": len(applied),
            "changes": dg.MetadataValue.md("\n".join(lines) if applied else "no drop to apply: the book is current"),
        })

    @dg.asset(
        key=DECISIONS,
        deps=[BOOK],
        group_name="routing",
        kinds={"postgres", "pyarrow"},
        description=("One routing decision per policy of the canonical book (the latest version of each policy): "
                     "target, rule and rule-set version, from the versioned YAML rules. Changes are kept in "
                     "`routing.decision_history`."),
    )
    def routing_decisions(context: dg.AssetExecutionContext, config: RoutingConfig, database: DatabaseResource,
                          wal: WriteAheadLog) -> dg.MaterializeResult:
        from routing.rules import evaluate, load_rule_set

        rules = load_rule_set(Path(config.rules) if config.rules else default_rules_path())
        store = CoexistenceStore(database.engine())
        book = store.book_fingerprint()
        with wal.intent(context, namespace="routing", operation="route_book", target="routing.decisions",
                        key=f"routing:{rules.hash}:{book}",
                        payload={"rule_set": rules.name, "version": rules.version, "hash": rules.hash,
                                 "book": store.book_drops()}) as intent:
            def decided():
                for block in store.read_book():
                    decisions = evaluate(rules, block)
                    yield decisions.append_column("source_system", block.column("source_system"))

            result = store.apply_decisions(decided(), intent.id)
            intent.result = {"decisions": result.decisions, "changed": result.changed, "by_target": result.by_target}
        return dg.MaterializeResult(metadata={
            "dagster/row_count": result.decisions,
            "changed_since_last_run": result.changed,
            "by_target": dg.MetadataValue.md(_split_markdown(result.by_target, "target")),
            "by_rule": dg.MetadataValue.md(_split_markdown(result.by_rule, "rule")),
            "rule_set": f"{rules.name} {rules.version}",
            "rule_set_hash": rules.hash[:16],
            "wal_entry_id": intent.id,
            "wal_status": intent.status,
        })

    @dg.asset(
        key=REGISTRY,
        deps=[DECISIONS],
        group_name="coexistence",
        kinds={"postgres"},
        description=("The coexistence registry: per policy its system of record (its legacy source until a wave moves "
                     "it), planned target, wave, rule and since when, with full history in `coexistence.history`. "
                     "Pinned or migrated policies are never moved by routing: disagreements go to "
                     "`coexistence.conflicts`."),
    )
    def coexistence_registry(context: dg.AssetExecutionContext, database: DatabaseResource,
                             wal: WriteAheadLog) -> dg.MaterializeResult:
        store = CoexistenceStore(database.engine())
        with store.engine.connect() as conn:
            from sqlalchemy import text

            fingerprint = conn.execute(text(
                "SELECT coalesce(max(id), 0) FROM routing.decision_history")).scalar_one()
        with wal.intent(context, namespace="coexistence", operation="apply_routing", target="coexistence.registry",
                        key=f"coexistence:routing:{fingerprint}", payload={"decision_history_upto": fingerprint}) as intent:
            result = store.update_registry(intent.id)
            intent.result = {"added": result.added, "moved": result.moved, "new_conflicts": result.new_conflicts}
        return dg.MaterializeResult(metadata={
            "dagster/row_count": sum(result.by_system.values()),
            "added": result.added,
            "moved_by_routing": result.moved,
            "new_conflicts": result.new_conflicts,
            "open_conflicts": result.open_conflicts,
            "by_system_of_record": dg.MetadataValue.md(_split_markdown(result.by_system, "system of record")),
            "by_planned_target": dg.MetadataValue.md(_split_markdown(result.by_target, "planned target")),
            "wal_entry_id": intent.id,
            "wal_status": intent.status,
        })

    return [canonical_book, routing_decisions, coexistence_registry]
