"""What a person reads: the dry-run preview and the summary tables (rich)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from ..errors import printable
from ..klaviyo.account import is_hashed
from ..model import METRICS
from ..pipeline.summary import Stats, describe, window_text
from .plain import Tail, console

if TYPE_CHECKING:
    from ..results import Preflight, SendOutcome
    from ..state.checkpoint import Ledger

__all__ = [
    "console",
    "describe",
    "inspect_html",
    "inspect_report",
    "lit",
    "outcome_json",
    "preflight_report",
    "rejections",
    "send_summary",
    "status_json",
    "status_report",
    "status_table",
    "summary_table",
]


def _money(amount: Decimal, currency: str) -> str:
    """In the currency's minor unit (12.50 USD, 1,250 JPY), or exactly as summed if finer."""
    from ..inputs.values import minor_units, quantum  # phonenumbers and dateutil: not for `status`

    places = minor_units(currency)
    if amount == amount.quantize(quantum(currency)):
        return f"{amount:,.{places}f}"
    return f"{amount:,}"


def _skipped_files(table: Table, stats: Stats) -> None:
    """What the folders given held that is no export: not read, said."""
    for path, why in stats.skipped_files:
        kind = "folder" if why.startswith("a folder") else "file"
        table.add_row(f"Skipped {kind}: {lit(Path(path).name)}", lit(why))


def _revenue(table: Table, stats: Stats) -> None:
    """Per currency: gross (every order placed: pending and voided ones too), less the totals
    of cancelled orders and the refunds of the others, and the net that leaves."""
    zero = Decimal(0)
    for currency, gross in sorted(stats.revenue.items()):
        cancelled, refunded = (
            stats.cancelled.get(currency, zero),
            stats.refunded.get(currency, zero),
        )
        table.add_row(f"Revenue {currency}: gross (every order)", _money(gross, currency))
        table.add_row("  less cancelled orders", _money(cancelled, currency))
        table.add_row("  less refunds", _money(refunded, currency))
        table.add_row(f"  net {currency}", _money(stats.net(currency), currency))


def summary_table(stats: Stats, title: str, sent: dict[str, int] | None = None) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    if stats.resumed_at:
        table.add_row("Resumed at", Tail(stats.resumed_at, style="", justify="right"))
    table.add_row("Orders read", f"{stats.orders_read:,}")
    table.add_row("  mapped", f"{stats.orders_mapped:,}")
    table.add_row("  rejected", f"{stats.orders_rejected:,}")
    for reason, n in stats.skipped.most_common():
        table.add_row(f"  skipped: {reason}", f"{n:,}")
    _skipped_files(table, stats)
    if stats.already_in_klaviyo:
        table.add_row("Already in Klaviyo (this account)", f"{stats.already_in_klaviyo:,} events")
    table.add_row("Line items", f"{stats.line_items:,}")
    for metric in METRICS:
        if stats.events[metric]:
            done = f" ({sent.get(metric, 0):,} sent)" if sent is not None else ""
            table.add_row(f"Events: {metric}", f"{stats.events[metric]:,}{done}")
    partly = stats.orders_mapped - stats.events[METRICS[0]]
    if partly > 0:  # why "mapped" is more than Placed Order: one each, unless Klaviyo holds it
        table.add_row("  mapped orders Klaviyo holds: new events only", f"{partly:,}")
    for reason, n in stats.rejected.most_common():
        table.add_row(f"Rejected: {lit(reason)}", f"{n:,}")
    _revenue(table, stats)
    if (window := window_text(stats.since, stats.until)) is not None:
        table.add_row("Window (--since/--until)", window)
    if stats.first and stats.last:
        table.add_row("Orders from", stats.first.isoformat(sep=" "))
        table.add_row("Orders to", stats.last.isoformat(sep=" "))
    about = "about " if stats.profiles.estimated else ""
    table.add_row("Distinct customers", f"{about}{len(stats.profiles):,}")
    for warning, n in stats.warnings.most_common():
        table.add_row(f"[yellow]Warning[/yellow]: {lit(warning)}", f"{n:,}")
        places = stats.examples.get(warning)
        if places:  # the file it is about (and a line), where a folder holds many
            table.add_row(Tail(places[0], lead="  first at "), "")
    if not stats.balanced():  # a bug: said, never hidden
        table.add_row("[red]Orders read do not add up[/red]", "mapped + rejected + skipped")
    return table


def send_summary(outcome: SendOutcome) -> Table:
    stats, send = outcome.stats, outcome.send
    table = summary_table(stats, "Send summary", dict(send.events_sent))
    sent = sum(send.events_sent.values())
    if outcome.account:
        table.add_row("Klaviyo account", outcome.account)
    table.add_row("Orders sent completely", f"{send.orders_sent:,}")
    table.add_row("Orders with events Klaviyo rejected", f"{send.orders_with_rejections:,}")
    unsettled = stats.orders_mapped - send.orders_sent - send.orders_with_rejections
    if unsettled:
        table.add_row("Orders not acknowledged (resent by --resume)", f"{unsettled:,}")
    for reason, n in send.rejected.most_common():
        table.add_row(f"Rejected by Klaviyo: {lit(reason)}", f"{n:,}")
    table.add_row("Requests", f"{send.requests:,} ({send.acknowledged:,} acknowledged)")
    bare = send.acknowledged - send.corroborated
    if bare > 0:  # a proxy that answers 202 itself looks like this: said, never refused
        table.add_row("[yellow]Acknowledged without Klaviyo's rate-limit headers[/yellow]",
                      f"{bare:,} (`verify` shows what Klaviyo holds)")  # fmt: skip
    causes = ", ".join(f"{c} x{n}" for c, n in send.retry_causes.most_common())
    table.add_row("Retries", f"{send.retries:,}" + (f" ({causes})" if causes else ""))
    table.add_row("Throttled (429)", f"{send.throttled:,}")
    table.add_row("Elapsed", f"{outcome.elapsed:,.1f} s")
    rate = sent / outcome.elapsed if outcome.elapsed else 0.0
    table.add_row("Throughput", f"{rate:,.1f} events/s")
    return table


def held_elsewhere(stats: Stats) -> str | None:
    """The orders a send skipped as another API sender holds them: how many, which months,
    up to 10 ids (--summary-json lists every one); None where it skipped none."""
    from ..proof.orders import HeldElsewhere  # (not for `status`: it reads no server)

    if not stats.held_elsewhere:
        return None
    held = HeldElsewhere.of(stats.held_elsewhere, limit=10)
    return (f"Not sent, held by another API sender (the same OrderId in Klaviyo's API "
            f"Placed Order, not sent by this tool; sent, they would count twice): "
            f"{held.describe()}. To send them anyway: the same command with --restart "
            f"--allow-overlap (what this account holds already is skipped).")  # fmt: skip


def outcome_json(outcome: SendOutcome) -> dict[str, Any]:
    send = outcome.send
    return describe(outcome.stats) | {
        "account": outcome.account,
        "events_sent": dict(send.events_sent),
        "events_rejected_by_klaviyo": send.events_rejected,
        "orders_sent": send.orders_sent,
        "orders_with_rejected_events": send.orders_with_rejections,
        "requests": send.requests,
        "retries": send.retries,
        "throttled": send.throttled,
        "elapsed_seconds": round(outcome.elapsed, 3),
        "interrupted": outcome.interrupted,
        "error": None if outcome.error is None else outcome.error.message,
    }


def _count(n: int, what: str) -> str:
    return f"{n:,} {what}" + ("" if n == 1 else "s")


def rejections(orders: int, events: int, changed: int = 0) -> str:
    """'45 rejected orders, 2 events Klaviyo refused and 1 changed order not sent': orders
    and events counted apart, never summed."""
    parts = [
        _count(orders, "rejected order") if orders else "",
        _count(events, "event") + " Klaviyo refused" if events else "",
        _count(changed, "changed order") + " not sent" if changed else "",
    ]
    parts = [p for p in parts if p]
    return ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else "".join(parts)


def _when(value: str | None) -> str | None:
    if not value:
        return None
    return f"{datetime.fromtimestamp(float(value), UTC):%Y-%m-%d %H:%M:%S} UTC"


def _left(ledger: Ledger) -> str:
    """What a resumed run would still read, from the resume point the checkpoint holds."""
    if ledger.state == "finished":
        return "nothing"
    from .jobs import saved_over

    if saved_over(ledger):  # its resume point is in the old export, not in this one
        return "the whole export: it changed since the job began (--restart sends it)"
    inputs = json.loads(ledger.get("inputs") or "[]")
    point = ledger.watermark()
    try:
        sizes = [Path(name).stat().st_size for name in inputs]
    except OSError:
        sizes = []
    if point is None or not sizes or point[0] >= len(sizes) or point[1] <= 0:
        return "the orders not counted above: --resume reads the export again, skipping those"
    index, offset = point
    left = sizes[index] - offset + sum(sizes[index + 1 :])
    share = 100 * left / (sum(sizes) or 1)
    where = f"byte {offset:,} of {Path(inputs[index]).name}"
    return f"about {share:.0f}% of the export, from its resume point ({where})"


def status_table(path: Path, ledger: Ledger) -> Table:
    """One checkpoint: the job's totals from the ledger, then its last run."""
    counts = ledger.counts()
    orders_rejected, events_rejected = ledger.rejected_apart()
    table = Table(title="Checkpoint", show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value")
    state = ledger.condition()
    if state.startswith("stopped abruptly"):
        from .jobs import saved_over

        state += ": its export changed since" if saved_over(ledger) else ": --resume continues"
    table.add_row("State", state)
    table.add_row("Window", ledger.get("window") or "every order")
    overlap = ledger.get("overlap")
    if overlap:
        table.add_row("Overlap with other integrations", overlap)
    account = ledger.get("account")
    if account:
        table.add_row("Klaviyo account", account + (" (a keyed hash of the key and base URL)"
                                                     if is_hashed(account) else ""))  # fmt: skip
    store = ledger.get("store")
    if store:
        table.add_row("Store (--store)", store)
    table.add_row("Orders sent", f"{counts.get('sent', 0):,}")
    table.add_row("Orders with events Klaviyo rejected", f"{counts.get('rejected', 0):,}")
    table.add_row("Orders rejected (not sent)", f"{orders_rejected:,}")
    table.add_row("Events rejected by Klaviyo", f"{events_rejected:,}")
    started, ended = _when(ledger.get("started")), _when(ledger.get("ended"))
    if started:
        table.add_row("Last run started", started)
    if ended:
        table.add_row("Last run ended", ended)
    last = ledger.last_run()
    if last:
        read, rejected = last.get("orders_read", 0), last.get("orders_rejected", 0)
        skipped = last.get("orders_skipped", 0)
        table.add_row(
            "Last run read",
            f"{read:,} orders: {last.get('orders_settled', 0):,} acknowledged, "
            f"{rejected:,} rejected, {skipped:,} skipped",
        )
    table.add_row("Left", _left(ledger))
    return table


def status_report(console: Console, path: Path, ledger: Ledger) -> None:
    """The checkpoint's table, then its file, failures file and the command that continues
    it, each on a line of its own: a path or a command is never folded mid-word."""
    from .jobs import continuation_lines, earlier_lines

    console.print(status_table(path, ledger))
    failures = ledger.get("failures")
    for label, value in (("Checkpoint file", str(path)), ("Failures file", failures)):
        if value:
            console.print(f"{label}:\n  {value}", soft_wrap=True, highlight=False, markup=False)
    earlier = earlier_lines(path)
    if earlier:
        console.print(earlier, soft_wrap=True, highlight=False, markup=False)
    console.print(continuation_lines(ledger), soft_wrap=True, highlight=False, markup=False)


def status_json(path: Path, ledger: Ledger) -> dict[str, Any]:
    """`status --json`: what the table says, as data."""
    from .jobs import continue_with, earlier_jobs

    counts = ledger.counts()
    orders_rejected, events_rejected = ledger.rejected_apart()
    return {
        "checkpoint": str(path),
        "state": ledger.condition(),
        "account": ledger.get("account"),
        "store": ledger.get("store"),
        "overlap": ledger.get("overlap"),
        "orders_sent": counts.get("sent", 0),
        "orders_with_rejected_events": counts.get("rejected", 0),
        "orders_rejected": orders_rejected,
        "events_rejected_by_klaviyo": events_rejected,
        "last_run_started": _when(ledger.get("started")),
        "last_run_ended": _when(ledger.get("ended")),
        "last_run": ledger.last_run() or None,
        "left": _left(ledger),
        "failures": ledger.get("failures"),
        "continue_with": continue_with(ledger)[1],
        "earlier_jobs": earlier_jobs(path),
    }


def _bars(stats: Stats) -> Iterator[Table]:
    currencies = sorted({cur for _, cur in stats.month_revenue})
    for currency in currencies:
        months = sorted((m, v) for (m, c), v in stats.month_revenue.items() if c == currency)
        top = max((v for _, v in months), default=Decimal(0)) or Decimal(1)
        table = Table(
            title=f"Revenue per month, {currency}",
            show_header=False,
            title_justify="left",
            box=None,
        )
        table.add_column("month", style="bold")
        table.add_column("amount", justify="right")
        table.add_column("bar")
        for month, value in months:
            width = int(40 * value / top) if value > 0 else 0
            table.add_row(month, _money(value, currency), "█" * width or "·")
        yield table


def inspect_report(console: Console, stats: Stats, monthly: bool = False) -> None:
    """What a merchant checks before a backfill: counts, money, time, problems."""
    overview = Table(title="Inspect: nothing was sent", show_header=False, title_justify="left")
    overview.add_column("what", style="bold")
    overview.add_column("value", justify="right")
    overview.add_row("Orders", f"{stats.orders_read:,} ({stats.orders_mapped:,} would be sent)")
    overview.add_row("Line items", f"{stats.line_items:,}")
    about = "about " if stats.profiles.estimated else ""
    overview.add_row("Distinct customers", f"{about}{len(stats.profiles):,}")
    if (window := window_text(stats.since, stats.until)) is not None:
        overview.add_row("Window (--since/--until)", window)
    if stats.first and stats.last:
        overview.add_row(
            "Date range", f"{stats.first:%Y-%m-%d %H:%M %z} .. {stats.last:%Y-%m-%d %H:%M %z}"
        )
    for metric in METRICS:
        if stats.events[metric]:
            overview.add_row(f"Events: {metric}", f"{stats.events[metric]:,}")
    _revenue(overview, stats)
    undated = sum(n for w, n in stats.warnings.items() if w.startswith("refund without a date"))
    if undated:  # a Shopify CSV has no refund dates: the refund lands in the order's month
        overview.add_row(
            "Refunds without a date",
            f"{undated:,} (dated at the order's time, so counted in its month; a JSON or "
            "GraphQL export has the dates)",
        )
    for reason, n in stats.skipped.most_common():
        overview.add_row(f"Skipped: {reason}", f"{n:,}")
    _skipped_files(overview, stats)
    console.print(overview)
    if monthly:
        for table in _bars(stats):
            console.print(table)
    elif stats.month_revenue:
        months = len({month for month, _ in stats.month_revenue})
        console.print(f"Revenue per month: {months:,} month(s); --monthly shows them.")
    for title, label, counts in (
        ("Rejected orders", "reason", stats.rejected),
        ("Warnings", "warning", stats.warnings),
    ):
        if counts:
            console.print(_with_examples(title, label, counts, stats.examples))


def _not_sent(table: Table, stats: Stats, shown: int = 5) -> None:
    """Why orders read will not be sent: each reason with its count, the commonest first."""
    reasons = [(f"rejected: {why}", n) for why, n in stats.rejected.most_common()]
    reasons += [(f"skipped: {why}", n) for why, n in stats.skipped.most_common()]
    reasons.sort(key=lambda item: -item[1])
    for why, n in reasons[:shown]:
        table.add_row(f"  not sent, {why}", f"{n:,}")
    if len(reasons) > shown:
        rest = sum(n for _, n in reasons[shown:])
        table.add_row(f"  not sent, {len(reasons) - shown} other reasons", f"{rest:,}")


def _with_examples(
    title: str, label: str, counts: Counter[str], examples: dict[str, list[str]]
) -> Table:
    """Each reason with its count, and its examples below it, one `file:line` a line, never
    broken (a path has no place to break; cut at its start if wider than the screen)."""
    table = Table(title=title, title_justify="left")
    table.add_column("orders", justify="right")
    table.add_column(f"{label} (for example, file:line)")
    for what, n in counts.most_common():
        places = [Tail(place, lead="  ") for place in examples.get(what, [])]
        table.add_row(f"{n:,}", Group(Text(what), *places))
    return table


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def lit(text: object) -> str:
    """Text from a file or a server, shown literally: rich markup in it (`[/]` in a name, a
    path `out[x/y]z.jsonl`) escaped, control characters (terminal escapes) taken out."""
    from rich.markup import escape

    return escape(printable(str(text), keep_lines=False))


def preflight_report(console: Console, report: Preflight) -> None:
    from ..proof.reconcile import metric_order

    stats = report.stats
    table = Table(title="Preflight: nothing was sent", show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value")
    table.add_row("Key", "valid; may read metrics")
    for scope, ok in report.scopes.items():
        table.add_row(f"  {scope}", "yes" if ok else "[yellow]no[/yellow]")
    if report.account is not None:
        a = report.account
        table.add_row("Account", lit(f"{a.id} (time zone {a.timezone}, currency {a.currency})"))
    elif report.history and is_hashed(report.history):
        table.add_row("Account", f"{report.history}: a hash of this key, which may not read "
                      "accounts:read (a new key will start a new history)")  # fmt: skip
    elif report.history:  # remembered from a run when the key could read it
        table.add_row("Account", f"{lit(report.history)} (this key's, as read before: it may "
                      "not read accounts:read now)")  # fmt: skip
    held = (f"; {report.held_here:,} of them this account holds already: a send skips those "
            "unchanged" if report.held_here else "")  # fmt: skip
    table.add_row("Orders", f"{stats.orders_read:,} ({stats.orders_mapped:,} would be sent{held})")
    _not_sent(table, stats)
    for metric in METRICS:
        if stats.events[metric]:
            table.add_row(f"Events: {metric}", f"{stats.events[metric]:,}")
    if (window := window_text(stats.since, stats.until)) is not None:
        table.add_row("Window (--since/--until)", window)
    if stats.first and stats.last:
        table.add_row("Orders from .. to", f"{stats.first:%Y-%m-%d} .. {stats.last:%Y-%m-%d}")
    table.add_row("Send", f"{report.requests:,} request(s) to the {report.endpoint} endpoint: "
                  f"about {_duration(report.seconds)} at its rate limit")  # fmt: skip
    others = ", ".join(f"{m.name} ({m.integration or m.category})" for m in report.others)
    table.add_row("Other integrations' metrics of these names", lit(others or "none"))
    if report.flows == {}:
        table.add_row("Flows", "none: the account has no API metric of these names yet")
    elif report.flows is not None:
        for metric, flows in sorted(report.flows.items(), key=lambda i: metric_order(i[0])):
            names = ", ".join(f"{f.name} ({f.status})" for f in flows) or "none"
            table.add_row(f"Flows {metric} triggers", lit(names))
    elif report.scopes.get("flows:read") is False:
        table.add_row(
            "Flows", "[yellow]not listed: the key cannot read flows (flows:read)[/yellow]"
        )
    console.print(table)
    if report.overlaps:
        overlap = Table(title="Overlap: months another integration holds events of these metrics",
                        title_justify="left")  # fmt: skip
        for name in ("metric", "integration", "month", "its events", "the export's"):
            overlap.add_column(
                name, justify="right" if "events" in name or "'s" in name else "left"
            )
        for o in report.overlaps:
            overlap.add_row(lit(o.metric), lit(o.integration), o.month, f"{o.count:,}",
                            f"{o.export_count:,}")  # fmt: skip
        console.print(overlap)
        console.print("[red]Overlap[/red]: sending would count these orders twice in Klaviyo. "
                      "Send other months (--since/--until), or send with --allow-overlap.")  # fmt: skip
    else:
        console.print("[green]No overlap[/green] with other integrations' events.")
    if report.api_held is not None:
        console.print(f"[red]Held by another API sender[/red]: {report.api_held.describe()}. "
                      "The same OrderId is in the API's Placed Order, not sent by this tool "
                      "(the merchant's own integration?): sent, these orders would count "
                      "twice. Leave their months out (--since/--until), or stop that sender "
                      "for them.")  # fmt: skip
    elif report.scopes.get("events:read") is False:
        console.print("[yellow]Warning[/yellow]: the key cannot read events (events:read): "
                      "orders another API sender holds were not looked for.")  # fmt: skip
    if report.stores is not None:  # the send's refusal, as it would say it
        console.print(f"[red]Held under another store[/red]: the send would be refused: "
                      f"{lit(report.stores)}")  # fmt: skip


def inspect_html(stats: Stats) -> str:
    from .html import inspect_page

    return inspect_page(stats)
