"""What every `data-mash` command shares: the Typer app, the two consoles, errors and exact JSON."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Optional

import typer
from rich.console import Console

app = typer.Typer(
    help="Data Mash: move an insurer's book of policies from legacy systems to a new platform, wave by wave.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


console = Console(stderr=True)


out = Console()


def fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def dumps_exact(value) -> str:
    """JSON with decimals written as exact numbers (never through float)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))}: {dumps_exact(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(dumps_exact(v) for v in value) + "]"
    return json.dumps(str(value))


def when_option(value: Optional[str], option: str):
    from datetime import datetime, timezone

    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        fail(f"{option} {value!r} is not an ISO date or time (e.g. 2026-11-01 or 2026-11-01T02:00:00+00:00)")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
