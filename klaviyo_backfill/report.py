"""What a person reads: the dry-run preview and the summary tables (rich)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table

from .mapping import METRICS
from .pipeline import Stats

__all__ = ["preview", "summary_table"]


def _shorten(body: dict[str, Any], entries: int) -> tuple[dict[str, Any], int]:
    """A bulk body cut to its first `entries` profile entries, and how many were cut."""
    try:
        data = body["data"]["attributes"]["events-bulk-create"]["data"]
    except (KeyError, TypeError):
        return body, 0
    body["data"]["attributes"]["events-bulk-create"]["data"] = data[:entries]
    return body, max(0, len(data) - entries)


def preview(console: Console, endpoint: str, bodies: list[bytes], entries: int = 1) -> None:
    console.rule(f"[bold]Preview: the first request{'s' if len(bodies) > 1 else ''} ({endpoint})")
    for raw in bodies:
        body, cut = _shorten(json.loads(raw), entries)
        text = json.dumps(body, indent=2, ensure_ascii=False)
        console.print(Syntax(text, "json", theme="ansi_dark", word_wrap=True))
        if cut:
            console.print(f"[dim]... and {cut} more profile entries in this request[/dim]")


def _money(amount: Decimal) -> str:
    return f"{amount:,.2f}" if amount == amount.quantize(Decimal("0.01")) else f"{amount:,}"


def summary_table(stats: Stats, title: str, sent: dict[str, int] | None = None) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    table.add_row("Orders read", f"{stats.orders_read:,}")
    table.add_row("  mapped", f"{stats.orders_mapped:,}")
    table.add_row("  rejected", f"{stats.orders_rejected:,}")
    for reason, n in stats.skipped.most_common():
        table.add_row(f"  skipped: {reason}", f"{n:,}")
    table.add_row("Line items", f"{stats.line_items:,}")
    for metric in METRICS:
        if stats.events[metric]:
            done = f" ({sent.get(metric, 0):,} sent)" if sent is not None else ""
            table.add_row(f"Events: {metric}", f"{stats.events[metric]:,}{done}")
    for reason, n in stats.rejected.most_common():
        table.add_row(f"Rejected: {reason}", f"{n:,}")
    for currency, amount in sorted(stats.revenue.items()):
        table.add_row(f"Revenue {currency}", _money(amount))
    if stats.first and stats.last:
        table.add_row("Orders from", stats.first.isoformat(sep=" "))
        table.add_row("Orders to", stats.last.isoformat(sep=" "))
    table.add_row("Distinct profiles", f"{len(stats.profiles):,}")
    for warning, n in stats.warnings.most_common():
        table.add_row(f"[yellow]Warning[/yellow]: {warning}", f"{n:,}")
    balance = "yes" if stats.balanced() else "[red]NO[/red]"
    table.add_row("read = mapped + rejected + skipped", balance)
    return table
