"""What `verify` shows in a terminal: the rows that are short (those that hold more, in a
line per metric: --json and --html list them), the totals per metric, the orders
Klaviyo lacks or holds twice, and the verdict with the command that repairs it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.cells import cell_len
from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from .terminal import _money

if TYPE_CHECKING:
    from ..proof.orders import Proof
    from ..proof.reconcile import Row
    from ..results import Verification

__all__ = ["verify_html", "verify_report"]


def verify_report(console: Console, result: Verification) -> None:
    """The rows that differ, the totals per metric, and a verdict that says whether it is final."""

    source = "the export, read again" if result.reread else "the checkpoint"
    console.print(f"Verify: checkpoint ({result.state or 'new'}), what was sent from {source}; "
                  f"{result.reads} request(s) to Klaviyo in {result.elapsed:.1f} s")  # fmt: skip
    console.print(f"  {result.checkpoint}", soft_wrap=True, highlight=False)  # never cut
    if result.account:
        console.print(f"  Klaviyo account {result.account}", soft_wrap=True, highlight=False)
    short = [row for row in result.rows if row.short]
    if short:  # every one: each is a failure
        rows: list[tuple[list[str], str | None]] = []
        for row in short:
            diff = row.klaviyo_count - row.sent_count
            rows.append(([row.month, row.metric, f"{diff:+,}" if diff else "=",
                          row.currency or "-", f"{row.sent_count:,}", f"{row.klaviyo_count:,}",
                          _money(row.sent_value, row.currency),
                          _money(row.klaviyo_value, row.currency)], "red"))  # fmt: skip
        console.print(_fitted("Rows that are short (UTC month x metric x currency; diff: held - "
                              "sent)", ["month", "metric", "diff", "cur", "sent", "held",
                              "value sent", "value held"], rows, console.width))  # fmt: skip
    _held_more(console, result)
    totals: list[tuple[list[str], str | None]] = [([t.metric, t.currency or "-", f"{t.sent_count:,}", f"{t.klaviyo_count:,}",
              _money(t.sent_value, t.currency), _money(t.klaviyo_value, t.currency),
              f"{t.short_rows:,}", f"{t.elsewhere:,}"], "red" if t.short_rows else None)
            for t in result.totals]  # fmt: skip
    console.print(_fitted("Totals per metric (short: rows; other: Klaviyo's in other months)",
                          ["metric", "cur", "sent", "held", "value", "held", "short", "other"],
                          totals, console.width))  # fmt: skip
    for metric in result.missing:
        console.print(f"[red]Klaviyo has no metric {metric!r} of the API integration[/red]: "
                      "none of its events is there (yet).")  # fmt: skip
    _reach(console, result)
    if result.proof is not None:
        _per_order(console, result.proof)
    elif result.proof_note:
        console.print(f"[yellow]Warning[/yellow]: {result.proof_note}.")
    _verdict(console, result)


def _held_more(console: Console, result: Verification, listed: int = 3) -> None:
    """Rows that only hold more than the job sent (the account holds other events of those
    months: this tool's from other exports, another API sender's): not a failure, so one
    line per metric (its rows, their months, the events beyond what was sent); --json and
    --html list every row."""
    by_metric: dict[str, list[Row]] = {}
    for row in result.rows:
        if row.more:
            by_metric.setdefault(row.metric, []).append(row)
    if not by_metric:
        return
    n = sum(map(len, by_metric.values()))
    console.print(f"Rows that hold more than the job sent: {n:,} (not a failure: the account "
                  "holds other events in those months; --json or --html lists every row)")  # fmt: skip
    for metric, rows in by_metric.items():
        months = sorted({row.month for row in rows})
        when = (", ".join(months) if len(months) <= listed
                else f"{months[0]} to {months[-1]}")  # fmt: skip
        extra = sum(max(0, row.klaviyo_count - row.sent_count) for row in rows)
        line = Text(f"{metric}: {len(rows):,} row(s) ({when}), {extra:+,} event(s)")
        console.print(Padding(line, (0, 0, 0, 2), expand=False))  # a folded line keeps its indent
        whose = _whose(result.proof, metric, months)
        if whose:
            console.print(Padding(Text(whose), (0, 0, 0, 4), expand=False))


def _whose(proof: Proof | None, metric: str, months: list[str]) -> str:
    """Whose the events of other orders in those months are, as the per-order read found
    them (every currency): this tool's from other exports (the account's ledger holds their
    orders), or other sources'."""
    if proof is None:
        return ""
    counts = [proof.months[(metric, m)] for m in months if (metric, m) in proof.months]
    ours, other = sum(c.beyond_ours for c in counts), sum(c.beyond_other for c in counts)
    if not ours + other:
        return ""
    return (f"held more in those months: {ours:,} event(s) this tool sent from other "
            f"exports, {other:,} from other sources")  # fmt: skip


def _fitted(
    title: str, names: list[str], rows: Sequence[tuple[list[str], str | None]], width: int
) -> Table:
    """Every cell whole (a month cut to "2019-…" told nothing): each column as wide as its
    widest cell, a header wrapped at its spaces if need be; wider than `width` only when the
    cells themselves are (then the terminal folds the lines, never a number)."""
    cells = [max([0] + [len(row[i]) for row, _ in rows]) for i in range(len(names))]
    full = [max(len(name), c) for name, c in zip(names, cells, strict=True)]
    least = [max(max(map(len, n.split())), c) for n, c in zip(names, cells, strict=True)]
    n = len(names)
    widths = full if sum(full) + 3 * n + 1 <= width else least
    table = _compact(title)
    if sum(widths) + 3 * n + 1 > width:  # two spaces between columns, no rule
        table = Table(title=title, title_justify="left", box=None, padding=(0, 1), pad_edge=False)
    for name, fixed in zip(names, widths, strict=True):
        table.add_column(name, justify="left" if name in ("metric", "month") else "right",
                         width=fixed, no_wrap=False)  # fmt: skip
    for row, style in rows:
        table.add_row(*row, style=style)
    return table


def _compact(title: str) -> Table:
    """A table that fits 80 columns: a rule under the header, one space between columns."""
    from rich import box

    return Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1),
                 pad_edge=False)  # fmt: skip


def _reach(console: Console, result: Verification) -> None:
    if result.beyond_reach:
        years = ", ".join(map(str, result.beyond_reach))
        how = ("verified through the events instead" if result.proof is not None
               else "[red]not verified[/red]: the key cannot read events (events:read)")  # fmt: skip
        console.print(f"Klaviyo's aggregates refused {years} (older than their reach): {how}.")


_KINDS = (("missing", "Orders Klaviyo lacks (missing)", "red"),
          ("twice", "Orders Klaviyo holds twice or more", "yellow"),
          ("different", "Orders held with another value or time", "yellow"))  # fmt: skip


def _per_order(console: Console, proof: Proof, shown: int = 20) -> None:
    """Per order: counts per month where any order is not held as sent, then the orders."""
    t = proof.totals()
    console.print(f"Per order (Klaviyo's events): {t.sent:,} event(s) sent, {t.held:,} held as "
                  f"sent, {t.missing:,} missing, {proof.orders.get('twice', 0):,} order(s) held "
                  f"twice, {t.different:,} different.")  # fmt: skip
    months = [m for _, m in sorted(proof.months.items()) if not m.clean]
    if months:
        table = _compact("Months with orders not held as sent")
        for name in ("metric", "month", "sent", "held", "missing", "twice", "differ"):
            table.add_column(name, justify="left" if name in ("metric", "month") else "right")
        for m in months:
            table.add_row(m.metric, m.month, f"{m.sent:,}", f"{m.held:,}", f"{m.missing:,}",
                          f"{m.twice:,}", f"{m.different:,}")  # fmt: skip
        console.print(table)
    for kind, title, style in _KINDS:
        named = proof.named(kind)
        if not named:
            continue
        console.print(f"[{style}]{title}[/{style}]: {proof.orders[kind]:,}")
        listed = [(f"{Path(f.source).name}:{f.line}  order {f.order_id}",
                   f"{f.metric} {f.month}: {f.detail}") for f in named[:shown]]  # fmt: skip
        whole = all(cell_len(f"  {order}  {what}") <= console.width for order, what in listed)
        for order, what in listed:
            if whole:
                console.print(Text(f"  {order}  {what}"), overflow="fold")
            else:  # each order on its line, what it lacks below: never folded to column 0
                console.print(Padding(Text(order), (0, 0, 0, 2), expand=False))
                console.print(Padding(Text(what), (0, 0, 0, 4), expand=False))
        more = proof.entries[kind] - min(shown, len(named))
        if more > 0:
            console.print(f"  ... and {more:,} more (--json or --html lists them).")
    if proof.orders.get("twice"):
        console.print("Klaviyo's API cannot delete events: stop the other sender (the "
                      "merchant's own integration) for these months, or leave them out of "
                      "this export (--since/--until) and send again. A doubled order counts "
                      "its revenue twice.")  # fmt: skip


def _verdict(console: Console, result: Verification) -> None:
    from ..proof.reconcile import PROCESSING_SECONDS

    short = result.short
    proof = result.proof.orders if result.proof is not None else {}
    missing_orders = proof.get("missing", 0)
    if result.repair:
        console.print("Repair: this one command sends the missing events again (same unique "
                      "ids; from any folder):")  # fmt: skip
        console.print(f"  {result.repair}", soft_wrap=True, highlight=False, markup=False)
    elif result.repair_hint:
        console.print(f"Repair: {result.repair_hint}", soft_wrap=True)
    if result.unfinished:
        _unfinished_verdict(console, result)
    elif not result.rows:
        console.print("Nothing to verify: the checkpoint holds no acknowledged events.")
    elif not short and not missing_orders:
        more = sum(row.more for row in result.rows)
        ok = (
            "[green]OK[/green]"
            if result.status == "ok"
            else f"[yellow]{result.status.upper()}[/yellow]"
        )
        console.print(f"{ok}: Klaviyo holds everything the job sent "
                      f"({sum(r.sent_count for r in result.rows):,} events in "
                      f"{len(result.rows):,} rows)" + (f"; {more:,} row(s) hold more, not a "
                      "failure (see above)" if more else "") + ".")  # fmt: skip
        if result.unverified:
            console.print(f"[red]UNVERIFIED[/red]: {', '.join(map(str, result.unverified))}.")
    else:
        lost = sum(max(0, r.sent_count - r.klaviyo_count) for r in short)
        if result.proof is not None:  # exact: a month's other events hide a shortfall in its row
            lost = max(lost, result.proof.totals().missing)
        said = (f"[red]SHORT[/red]: {len(short):,} of {len(result.rows):,} rows hold less than "
                f"the job sent ({lost:,} event(s) missing"
                + (f"; {missing_orders:,} order(s) named above" if missing_orders else "")
                + ").")  # fmt: skip
        if result.final:
            console.print(f"{said} Final: the last acknowledgement of those rows is over "
                          f"{PROCESSING_SECONDS // 60} minutes old.")  # fmt: skip
        else:
            console.print(f"{said} [yellow]Not final[/yellow]: some of them were acknowledged "
                          f"in the last {PROCESSING_SECONDS // 60} minutes (or a send is still "
                          "running), and Klaviyo processes accepted events with a delay.")  # fmt: skip
            _command(console, "Verify again in a few minutes:", result.again,
                     "Run `klaviyo-backfill verify` again in a few minutes.")  # fmt: skip


def _unfinished_verdict(console: Console, result: Verification) -> None:
    """An unfinished job: what it sent so far is compared, and the verdict says it is not all;
    the command that continues it on a line of its own (whole, to be pasted)."""
    sent = sum(r.sent_count for r in result.rows)
    short = result.short
    missing = sum(max(0, r.sent_count - r.klaviyo_count) for r in short)
    if result.proof is not None:  # exact: a month's other events hide a shortfall in its row
        missing = max(missing, result.proof.totals().missing)
    so_far = (f"{len(short):,} of {len(result.rows):,} rows hold less than it sent so far "
              f"({missing:,} event(s) missing)" if short or missing else
              f"Klaviyo holds the {sent:,} events it sent so far")  # fmt: skip
    console.print(f"[yellow]UNFINISHED[/yellow]: the job is {result.unfinished}; {so_far}. Not "
                  "final: verify again once it has finished.")  # fmt: skip
    replaced = bool(result.continuation and result.continuation.endswith(" --restart"))
    label = ("Its export changed since it began (a later export saved over it?); send it as "
             "a new job with:" if replaced else "Continue it with:")  # fmt: skip
    _command(console, label, result.continuation, "Continue it with `send ... --resume`.")


def _command(console: Console, label: str, command: str | None, instead: str) -> None:
    """A command to paste, on a line of its own under its `label` (whole, never folded into
    prose or read as markup); `instead` where there is none."""
    if command:
        console.print(label)
        console.print(f"  {command}", soft_wrap=True, highlight=False, markup=False)
    else:
        console.print(instead)


def verify_html(result: Verification) -> str:
    from .html import verify_page

    return verify_page(result)
