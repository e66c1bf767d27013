"""`data-mash` routing and the coexistence registry: route, where, history, changes, overrides, conflicts."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from dagster_project.cli.common import app, console, dumps_exact, fail, out
from dagster_project.cli.waves import open_waves


@app.command()
def route(
    rules: Optional[Path] = typer.Option(None, "--rules", exists=True, dir_okay=False,
                                         help="Rule set YAML (default: routing/rules/default.yaml)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only report what would move, from which target to which."),
) -> None:
    """Route the current canonical book (or, with --dry-run, show what a rule set would change: nothing is written)."""
    from routing.rules import load_rule_set

    if rules is not None:
        load_rule_set(rules)  # a rule file that does not validate is refused (exit 2) before any run
    if dry_run:
        _route_what_if(rules)
        return
    from dagster_project.runner import route as run_route

    with console.status("Routing the book through Dagster…"):
        outcome = run_route(rules)
    print_route(outcome)
    if not outcome.success:
        raise typer.Exit(1)


def print_route(outcome) -> None:
    total = sum(outcome.by_target.values()) or 1
    table = Table(title="Routing: planned target of every policy in the canonical book")
    for col, justify in [("target", "left"), ("policies", "right"), ("share", "right")]:
        table.add_column(col, justify=justify)
    for target, n in sorted(outcome.by_target.items(), key=lambda kv: -kv[1]):
        table.add_row(target, f"{n:,}", f"{n / total:.1%}")
    out.print(table)
    out.print("system of record now: " + ", ".join(f"{k} {v:,}" for k, v in outcome.by_system.items())
              + f"; open conflicts: {outcome.open_conflicts:,}", highlight=False)
    status = "[green]succeeded[/]" if outcome.success else "[red]FAILED[/]"
    out.print(f"route_book_job run {outcome.run_id} {status}")
    if outcome.error:
        out.print(f"  [red]{outcome.error}[/]")


def _route_what_if(rules: Optional[Path]) -> None:
    import pyarrow as pa

    from assets.routing import default_rules_path
    from dagster_project.environment import resources_for_environment
    from resources.coexistence_store import CoexistenceStore
    from routing.rules import compare, evaluate, load_rule_set

    candidate = load_rule_set(rules or default_rules_path())
    store = CoexistenceStore(resources_for_environment(resolved=True)["database"].engine())
    current = store.current_decisions()
    if not current.num_rows:
        fail("no routing decisions yet: run `data-mash route` once first", 1)
    with console.status("Evaluating the candidate rules over the book…"):
        proposed = pa.concat_tables([evaluate(candidate, block) for block in store.read_book()])
    what_if = compare(current, proposed)
    table = Table(title=f"What if {candidate.name} {candidate.version} were applied (nothing written)")
    rows = what_if.to_rows()
    for col in (rows[0].keys() if rows else ["result"]):
        table.add_column(str(col))
    for row in rows:
        table.add_row(*[f"{v:,}" if isinstance(v, int) else str(v) for v in row.values()])
    out.print(table)


@app.command("validate-rules")
def validate_rules(file: Path = typer.Argument(..., exists=True, dir_okay=False, help="A routing rule set YAML.")) -> None:
    """Check a routing rule set without a database: shape, fields, codes and types, one default route, no rule
    shadowed by an earlier one. Exit 2 naming the file, line and rule of each problem."""
    from routing.rules import load_rule_set

    rule_set = load_rule_set(file)
    table = Table(title=f"Rule set {rule_set.name} {rule_set.version} ({file}), hash {rule_set.hash[:12]}: valid")
    for col in ("priority", "rule", "target", "condition"):
        table.add_column(col, justify="right" if col == "priority" else "left")
    for rule in rule_set.rules:
        condition = "true (default route)" if rule.is_default else dumps_exact(
            rule.model_dump(mode="json", by_alias=True)["condition"])
        table.add_row(str(rule.priority), rule.name, rule.target, condition)
    out.print(table)
    out.print(f"fields read: {', '.join(sorted(rule_set.fields)) or '-'}", highlight=False)


def open_coexistence():
    from dagster_project.environment import resources_for_environment
    from resources.coexistence_store import CoexistenceStore

    return CoexistenceStore(resources_for_environment(resolved=True)["database"].engine())


@app.command()
def where(policy: str = typer.Argument(..., help="Policy id.")) -> None:
    """Which system owns a policy, since when, its planned target, wave and rule, and its last changes."""
    store = open_coexistence()
    started = time.perf_counter()
    found = store.where(policy)
    elapsed = (time.perf_counter() - started) * 1000
    if found is None:
        fail(f"policy {policy} is not in the coexistence registry")
    table = Table(title=f"Policy {policy}", show_header=False)
    for key in ("system_of_record", "planned_target", "wave", "routing_rule", "rule_set_version", "pinned", "since",
                "updated_at", "source_system", "wal_id"):
        table.add_row(key, "" if found[key] is None else str(found[key]))
    out.print(table)
    for change in found["last_changes"]:
        out.print(f"  {change['at']:%Y-%m-%d %H:%M:%S} {change['change']}: {change['from_target'] or '-'} → "
                  f"{change['to_target']} ({change['reason']}, by {change['actor']}, WAL {change['wal_id']})", highlight=False)
    for conflict in found["open_conflicts"]:
        out.print(f"  [yellow]open conflict[/]: routed to {conflict['routed_target']} by {conflict['rule']} but "
                  f"{conflict['why']}", highlight=False)
    console.print(f"answered in {elapsed:.1f} ms", highlight=False)


@app.command()
def history(policy: str = typer.Argument(..., help="Policy id.")) -> None:
    """Every change of a policy's system of record or planned target: when, what, who, why, WAL entry."""
    changes = open_coexistence().history(policy)
    if not changes:
        fail(f"policy {policy} has no coexistence history")
    table = Table(title=f"History of policy {policy}")
    for col in ("at", "change", "system", "target", "rule", "rules", "why", "who", "WAL"):
        table.add_column(col)
    for c in changes:
        table.add_row(f"{c['at']:%Y-%m-%d %H:%M:%S}", c["change"], f"{c['from_system'] or '-'} → {c['to_system']}",
                      f"{c['from_target'] or '-'} → {c['to_target']}", c["rule"] or "", c["rule_set_version"] or "",
                      c["reason"], c["actor"], str(c["wal_id"] or ""))
    out.print(table)


@app.command()
def changes(
    drop: Optional[str] = typer.Option(None, "--drop", help="A drop key, e.g. pc_csv:day-2: list its changed policies."),
    limit: int = typer.Option(20, "--limit", min=1, help="Policies listed per kind of change."),
) -> None:
    """What each drop applied to the book brought: new, changed and cancelled policies, found by content hash."""
    from resources.book_store import BookStore

    store = BookStore(open_waves().engine)
    drops = store.applied()
    if not drops:
        fail("no drop applied to the book yet: ingest one and `data-mash route`", 1)
    table = Table(title="Drops applied to the book, in landing order")
    for col in ("drop", "policies", "new", "changed", "cancelled", "unchanged", "applied"):
        table.add_column(col, justify="left" if col in ("drop", "applied") else "right")
    for d in drops:
        table.add_row(d["drop_key"], *(f"{d[k]:,}" for k in ("policies", "new", "changed", "cancelled", "unchanged")),
                      f"{d['applied_at']:%Y-%m-%d %H:%M:%S}")
    out.print(table)
    if drop:
        if drop not in {d["drop_key"] for d in drops}:
            fail(f"drop {drop!r} is not in the book: one of {', '.join(d['drop_key'] for d in drops)}")
        owners = Table(title=f"{drop}: changes by the policy's system of record now")
        for col in ("change", "system of record", "policies"):
            owners.add_column(col, justify="right" if col == "policies" else "left")
        for (change, owner), n in store.changes_by_owner(drop).items():
            owners.add_row(change, owner, f"{n:,}")
        out.print(owners)
        out.print("Policies a wave already moved to the new platform keep what the wave loaded there: their legacy "
                  "changes are for the nightly sync to carry (not built yet), never a silent overwrite.",
                  highlight=False)
        for kind, ids in store.changes(drop).items():
            shown = ", ".join(ids[:limit]) + (f" … (+{len(ids) - limit:,})" if len(ids) > limit else "")
            out.print(f"{kind} ({len(ids):,}): {shown or '-'}", highlight=False)


@app.command()
def override(
    policy: str = typer.Argument(..., help="Policy id."),
    to: str = typer.Option(..., "--to", help="new_platform, legacy_batch, dq_queue or coexistence_bridge."),
    reason: str = typer.Option(..., "--reason", help="Why, for the audit trail."),
    actor: str = typer.Option(os.environ.get("USER", "operator"), "--actor", help="Who decides (default: $USER)."),
) -> None:
    """Pin a policy to a target by hand, through the WAL; routing then records conflicts instead of moving it."""
    from routing.rules import TARGETS

    if to not in TARGETS:  # refused before a WAL intent is written
        fail(f"--to {to!r}: not a target; one of {', '.join(TARGETS)}")
    if open_coexistence().where(policy, last=0) is None:
        fail(f"policy {policy} is not in the coexistence registry (route the book first; `data-mash where {policy}`)")
    try:
        change = open_coexistence().override(policy, to, reason, actor)
    except (LookupError, ValueError) as error:
        fail(str(error), 1)
    out.print(f"{policy}: {change['from_target']} → {change['to_target']}, pinned (WAL intent {change['wal_id']})", highlight=False)


@app.command()
def conflicts() -> None:
    """Open conflicts: policies routing would move but that are pinned or already migrated."""
    rows = open_coexistence().conflicts()
    if not rows:
        out.print("No open conflict.")
        return
    table = Table(title="Open routing conflicts")
    for col in ("policy", "system of record", "planned", "routed", "rule", "rules", "why", "since"):
        table.add_column(col)
    for c in rows:
        table.add_row(c["policy_id"], c["system_of_record"], c["planned_target"], c["routed_target"], c["rule"],
                      c["rule_set_version"], c["why"], f"{c['detected_at']:%Y-%m-%d %H:%M}")
    out.print(table)
