"""What a dry run shows before its summary: the first event of each metric at a glance, or
(`--preview N`) the first N events in full."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table

from .plain import heading
from .terminal import _money

__all__ = ["preview", "samples"]


def preview(console: Console, endpoint: str, events: list[dict[str, Any]]) -> None:
    """`--preview N`: the first N events in full, each as its attributes go in a request
    body, with its profile (--output FILE writes the request bodies themselves)."""
    many = f"first {len(events):,} events" if len(events) != 1 else "first event"
    heading(console, f"[bold]Preview: the {many}, in full ({endpoint})")
    for attributes in events:
        text = json.dumps(attributes, indent=2, ensure_ascii=False)
        console.print(Syntax(text, "json", theme="ansi_dark", word_wrap=True))


def _glance(value: Any, depth: int = 0) -> Any:
    """A value cut for a glance: texts to 40 characters, lists to their first item, tables
    below the top to their size."""
    if isinstance(value, str) and len(value) > 40:
        return value[:39] + "…"
    if isinstance(value, list):
        head = [_glance(v, depth + 1) for v in value[:1]]
        return head + ([f"… {len(value) - 1} more"] if len(value) > 1 else [])
    if isinstance(value, dict):
        if depth > 0:
            return f"{{{len(value)} fields}}"
        return {k: _glance(v, depth + 1) for k, v in value.items()}
    return value


def _inline(value: Any) -> str:
    return json.dumps(_glance(value), ensure_ascii=False, separators=(", ", ": "))


def samples(console: Console, endpoint: str, events: list[dict[str, Any]]) -> None:
    """The default preview: the first event of each metric at a glance (a few lines each),
    in place of hundreds of lines of request body."""
    heading(console, f"[bold]Preview: the first event of each metric ({endpoint})")
    for attributes in events:
        metric = attributes.get("metric", {}).get("data", {}).get("attributes", {}).get("name")
        value = attributes.get("value")
        currency = attributes.get("value_currency") or ""
        worth = (
            f" · {_money(Decimal(str(value)), currency)} {currency}" if value is not None else ""
        )
        flag = " · backfill" if attributes.get("backfill") else ""
        console.print(
            f"[bold]{metric}[/bold] {attributes.get('unique_id')} · {attributes.get('time')}"
            f"{worth}{flag}",
            highlight=False,
        )
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="dim", no_wrap=True)
        grid.add_column()
        grid.add_row("  profile", _inline(attributes.get("profile", {})))
        grid.add_row("  properties", _inline(attributes.get("properties", {})))
        console.print(grid, highlight=False)
    console.print(
        "[dim]Texts, lists and nested fields cut here; --preview N shows the first N events "
        "in full, --output FILE writes every request body.[/dim]"
    )
