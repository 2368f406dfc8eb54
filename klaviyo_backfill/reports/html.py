"""One-file HTML reports: `verify --html` and `inspect --html`.

Self-contained: inline CSS and inline SVG, no script, no font, no fetch of any kind, so the
file opens the same offline, mailed, or years later. Readable on a phone (the tables scroll
sideways, the charts scale to the screen) and printable (sections do not break across
pages, colours print).

    verify    status, per-metric monthly bars of sent vs in Klaviyo, the rows that differ,
              totals per metric and currency, the export's summary and its rejections
    inspect   the export's summary, per-metric monthly bars of its events, revenue per month
              and currency, rejected orders and warnings with examples
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping
from decimal import Decimal
from html import escape
from typing import TYPE_CHECKING, Any

from ..model import METRICS

if TYPE_CHECKING:
    from ..pipeline.summary import Stats
    from ..proof.reconcile import Row
    from ..results import Verification

__all__ = ["inspect_page", "verify_page"]

SENT, HELD, SHORT = "#4a6fa5", "#9bbf85", "#c0392b"

_CSS = f"""
:root {{ color-scheme: light; }}
* {{ box-sizing: border-box; }}
body {{ font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222;
       margin: 0 auto; padding: 16px; max-width: 980px; background: #fff; }}
h1 {{ font-size: 1.4em; margin: 0 0 4px; }}
h2 {{ font-size: 1.1em; margin: 28px 0 8px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }}
h3 {{ font-size: 1em; margin: 16px 0 4px; }}
p.meta {{ color: #666; margin: 0 0 12px; font-size: .9em; }}
.badge {{ display: inline-block; padding: 2px 10px; border-radius: 12px; color: #fff;
         font-weight: 600; }}
.badge.ok {{ background: #2e7d32; }} .badge.short {{ background: {SHORT}; }}
.badge.pending {{ background: #b26a00; }}
.note {{ background: #fff6e0; border-left: 4px solid #b26a00; padding: 8px 12px; }}
.cards {{ display: flex; flex-wrap: wrap; gap: 8px; }}
.card {{ border: 1px solid #ddd; border-radius: 6px; padding: 8px 12px; min-width: 130px; }}
.card b {{ display: block; font-size: 1.3em; }}
.scroll {{ overflow-x: auto; }}
table {{ border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }}
th, td {{ padding: 4px 8px; border-bottom: 1px solid #eee; text-align: left;
          white-space: nowrap; }}
td.n, th.n {{ text-align: right; }}
tr.short td {{ color: {SHORT}; }} tr.more td {{ color: #8a6d00; }}
svg {{ width: 100%; height: auto; display: block; }}
.chart {{ overflow-x: auto; }} .chart svg {{ min-width: 560px; }}
.legend span {{ display: inline-block; width: 10px; height: 10px; margin: 0 4px 0 10px; }}
section {{ break-inside: avoid; page-break-inside: avoid; }}
@media (max-width: 600px) {{ body {{ padding: 10px; font-size: 14px; }} }}
@media print {{ body {{ max-width: none; padding: 0; }} * {{ -webkit-print-color-adjust: exact;
               print-color-adjust: exact; }} .scroll, .chart {{ overflow: visible; }}
               .chart svg {{ min-width: 0; }} }}
"""


def _page(title: str, body: Iterable[str]) -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def _num(n: int | Decimal) -> str:
    return f"{n:,}"


def _money(amount: Decimal | float | int | str, currency: str) -> str:
    from ..proof.reconcile import money

    return f"{money(Decimal(str(amount)), currency):,} {escape(currency)}".strip()


def _table(head: list[str], rows: Iterable[tuple[list[str], str]], numeric: set[int]) -> str:
    """Cells are HTML already; `numeric` columns are right-aligned; each row has a class."""
    cls = [' class="n"' if i in numeric else "" for i in range(len(head))]
    out = ['<div class="scroll"><table><thead><tr>']
    out += [f"<th{cls[i]}>{escape(h)}</th>" for i, h in enumerate(head)]
    out.append("</tr></thead><tbody>")
    for cells, row_class in rows:
        out.append(f'<tr class="{row_class}">' if row_class else "<tr>")
        out += [f"<td{cls[i]}>{c}</td>" for i, c in enumerate(cells)]
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _months_between(first: str, last: str) -> list[str]:
    year, month = int(first[:4]), int(first[5:7])
    out = []
    while f"{year:04d}-{month:02d}" <= last:
        out.append(f"{year:04d}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


def _bars(
    label: str,
    series: list[tuple[str, str, Mapping[str, int | Decimal]]],
    months: list[str],
    marked: Iterable[str] = (),
) -> str:
    """Monthly bars, one per series and month, in an inline SVG that scales to its box
    (the same shape for every chart of a page: pass the same `months`). `series` is (name,
    colour, month -> amount); months in `marked` are outlined in red."""
    if not months:
        return ""
    marked = set(marked)
    top = max((float(v) for _, _, values in series for v in values.values()), default=0.0) or 1.0
    width, left, height, base = 800.0, 48.0, 110.0, 122.0
    step = (width - left - 28) / len(months)
    bar = step * 0.8 / len(series)
    out = [f'<svg viewBox="0 0 {width:.0f} {base + 18:.0f}" role="img" aria-label="{escape(label)}">',
           f'<line x1="{left}" y1="{base}" x2="{width - 2}" y2="{base}" stroke="#999" stroke-width="0.6"/>',
           f'<text x="{left - 4}" y="{base - height + 9}" font-size="11" text-anchor="end" '
           f'fill="#666">{_short(top)}</text>',
           f'<text x="{left - 4}" y="{base}" font-size="11" text-anchor="end" fill="#666">0</text>']  # fmt: skip
    every = max(1, -(-len(months) // 12 // 10)) if len(months) > 24 else 0
    for i, month in enumerate(months):
        x = left + 2 + i * step
        tip = "; ".join(f"{name} {_num(values.get(month, 0))}" for name, _, values in series)
        out.append(f"<g><title>{month}: {escape(tip)}</title>")
        if month in marked:
            out.append(f'<rect x="{x - 1:.1f}" y="{base - height - 2}" width="{step * 0.8 + 2:.1f}" '
                       f'height="{height + 2}" fill="#fde2e0" stroke="{SHORT}" stroke-width="0.8"/>')  # fmt: skip
        for j, (_, colour, values) in enumerate(series):
            h = float(values.get(month, 0)) / top * height
            if h > 0:
                out.append(f'<rect x="{x + j * bar:.1f}" y="{base - h:.1f}" width="{bar:.2f}" '
                           f'height="{h:.1f}" fill="{colour}"/>')  # fmt: skip
        out.append("</g>")
        year, mo = int(month[:4]), month[5:]
        if (every and mo == "01" and year % every == 0) or (not every and (mo == "01" or i == 0)):
            label_text = month[:4] if every else month
            out.append(
                f'<text x="{x:.1f}" y="{base + 14}" font-size="11" fill="#444">{label_text}</text>'
            )
    out.append("</svg>")
    legend = "".join(f'<span style="background:{c}"></span>{escape(n)}' for n, c, _ in series)
    return f'<div class="legend">{legend}</div><div class="chart">' + "".join(out) + "</div>"


def _span(months: Iterable[str]) -> list[str]:
    """Every month from the first to the last of these."""
    seen = sorted(set(months))
    return _months_between(seen[0], seen[-1]) if seen else []


def _short(value: float) -> str:
    """An axis label: 1.2M, 41.8k, 252, 0.5."""
    for size, unit in ((1e6, "M"), (1e3, "k")):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:.0f}" if value >= 10 else f"{value:g}"


# ---------------------------------------------------------------- verify


def verify_page(result: Verification) -> str:
    from ..proof.reconcile import PROCESSING_SECONDS, metric_order

    short = result.short
    if result.status not in ("ok", "short", "unfinished"):
        badge = f'<span class="badge pending">{escape(result.status.upper())}</span>'
    elif not short and result.status != "short":
        badge = '<span class="badge ok">OK</span>'
    elif result.final:
        badge = '<span class="badge short">SHORT</span>'
    else:
        badge = '<span class="badge pending">SHORT, not final</span>'
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    sent = sum(r.sent_count for r in result.rows)
    held = sum(r.klaviyo_count for r in result.rows)
    body = [
        f"<h1>Klaviyo backfill: verify {badge}</h1>",
        f'<p class="meta">Checkpoint {escape(str(result.checkpoint))} ({escape(result.state or "new")})'
        f" &middot; generated {when} &middot; what was sent from "
        f"{'the export, read again' if result.reread else 'the checkpoint'}</p>",
        '<div class="cards">'
        f'<div class="card">rows<b>{_num(len(result.rows))}</b></div>'
        f'<div class="card">rows short<b>{_num(len(short))}</b></div>'
        f'<div class="card">events sent<b>{_num(sent)}</b></div>'
        f'<div class="card">in Klaviyo<b>{_num(held)}</b></div></div>',
    ]  # fmt: skip
    if short and not result.final:
        body.append(
            '<p class="note">Some of the short rows were acknowledged in the last '
            f"{PROCESSING_SECONDS // 60} minutes (or a send is still running): Klaviyo may still "
            "be processing them. This is not final: run <code>klaviyo-backfill verify</code> "
            "again in a few minutes.</p>"
        )
    for metric in result.missing:
        body.append(f'<p class="note">Klaviyo has no metric {escape(metric)} of the API '
                    "integration: none of its events is there (yet).</p>")  # fmt: skip
    body.append("<section><h2>Sent vs in Klaviyo, per month (UTC)</h2>")
    months = _span(r.month for r in result.rows)
    for metric in sorted({r.metric for r in result.rows}, key=metric_order):
        rows = [r for r in result.rows if r.metric == metric]
        body.append(f"<h3>{escape(metric)}</h3>")
        body.append(_bars(f"{metric}: events sent and in Klaviyo per month", [
            ("sent", SENT, _per_month(rows, "sent_count")),
            ("in Klaviyo", HELD, _per_month(rows, "klaviyo_count")),
        ], months, {r.month for r in rows if r.short}))  # fmt: skip
    body.append("</section>")
    body.append(_per_order(result))
    body.append(_differ(result.rows))
    body.append(_totals(result))
    body.append(_summary(result.summary))
    body.append(_rejections(result))
    return _page("Klaviyo backfill: verify", body)


_KINDS = {"missing": "missing: Klaviyo lacks these events (the repair command resends them)",
          "twice": "held twice or more (another API sender, an earlier import)",
          "different": "held with another value or time"}  # fmt: skip


def _per_order(result: Verification) -> str:
    """Per order: the counts per month, every order named (file:line, id), the repair."""
    proof = result.proof
    if proof is None:
        note = escape(result.proof_note or "per order: not checked")
        return f'<section><h2>Per order</h2><p class="note">{note}</p></section>'
    out = ["<section><h2>Per order (Klaviyo's events, order by order)</h2>"]
    months = [m for _, m in sorted(proof.months.items())]
    out.append(_table(["metric", "month", "sent", "held", "missing", "held twice", "different"],
                      (([escape(m.metric), m.month, _num(m.sent), _num(m.held), _num(m.missing),
                         _num(m.twice), _num(m.different)], "" if m.clean else "short")
                       for m in months), {2, 3, 4, 5, 6}))  # fmt: skip
    for kind, title in _KINDS.items():
        named = proof.named(kind)
        if not named:
            continue
        out.append(f"<h3>{_num(proof.orders[kind])} order(s) {escape(title)}</h3>")
        out.append(_table(["file:line", "order", "metric", "month", "what", "unique ids"],
                          (([escape(f"{f.source}:{f.line}"), escape(f.order_id), escape(f.metric),
                             f.month, escape(f.detail), escape(", ".join(f.unique_ids))], "short")
                           for f in named), set()))  # fmt: skip
    if result.repair:
        out.append("<p>Repair: this one command sends the missing events again (same unique "
                   f"ids, from any folder):</p><pre>{_text(result.repair)}</pre>")  # fmt: skip
    out.append("</section>")
    return "".join(out)


def _text(text: str) -> str:
    """Text that may name an address (--base-url): shown as text, never a link a reader
    or a mail client would follow (the colon as a character reference: it reads the same)."""
    return escape(text).replace("://", "&#58;//")


def _per_month(rows: list[Row], attr: str) -> Counter[str]:
    out: Counter[str] = Counter()
    for r in rows:
        out[r.month] += getattr(r, attr)
    return out


def _differ(rows: list[Row]) -> str:
    differ = [r for r in rows if r.short or r.more]
    if not differ:
        return "<section><h2>Rows that differ</h2><p>None: every row holds what was sent.</p></section>"
    table = _table(
        [
            "metric",
            "month",
            "currency",
            "sent",
            "in Klaviyo",
            "difference",
            "value sent",
            "value in Klaviyo",
            "value difference",
        ],
        (
            (
                [
                    escape(r.metric),
                    r.month,
                    escape(r.currency or "-"),
                    _num(r.sent_count),
                    _num(r.klaviyo_count),
                    f"{r.klaviyo_count - r.sent_count:+,}",
                    _money(r.sent_value, r.currency),
                    _money(r.klaviyo_value, r.currency),
                    _money(r.klaviyo_value - r.sent_value, r.currency),
                ],
                "short" if r.short else "more",
            )
            for r in differ
        ),
        {3, 4, 5, 6, 7, 8},
    )
    return (f"<section><h2>Rows that differ ({len(differ)})</h2>{table}<p class=\"meta\">"
            "Red: Klaviyo holds less than was sent. Amber: it holds more (other API sources, "
            "an earlier import): shown, not a failure.</p></section>")  # fmt: skip


def _totals(result: Verification) -> str:
    per_metric = _table(
        [
            "metric",
            "currency",
            "sent",
            "in Klaviyo",
            "value sent",
            "value in Klaviyo",
            "rows short",
        ],
        (
            (
                [
                    escape(t.metric),
                    escape(t.currency or "-"),
                    _num(t.sent_count),
                    _num(t.klaviyo_count),
                    _money(t.sent_value, t.currency),
                    _money(t.klaviyo_value, t.currency),
                    _num(t.short_rows),
                ],
                "short" if t.short_rows else "",
            )
            for t in result.totals
        ),
        {2, 3, 4, 5, 6},
    )
    currencies: dict[str, list[Any]] = {}
    for t in result.totals:
        c = currencies.setdefault(t.currency, [0, 0, Decimal(0), Decimal(0)])
        c[0] += t.sent_count
        c[1] += t.klaviyo_count
        c[2] += t.sent_value
        c[3] += t.klaviyo_value
    per_currency = _table(
        ["currency", "events sent", "in Klaviyo", "value sent", "value in Klaviyo"],
        (
            (
                [escape(cur or "-"), _num(a), _num(b), _money(v, cur), _money(w, cur)],
                "short" if b < a or w < v else "",
            )
            for cur, (a, b, v, w) in sorted(currencies.items())
        ),
        {1, 2, 3, 4},
    )
    return (f"<section><h2>Totals per currency</h2>{per_currency}"
            f"<h3>Per metric</h3>{per_metric}</section>")  # fmt: skip


def _summary(summary: Mapping[str, Any]) -> str:
    if not summary:
        return ""
    rows: list[tuple[list[str], str]] = []
    for key, label in (("orders_read", "Orders read"), ("orders_mapped", "mapped"),
                       ("orders_rejected", "rejected"), ("orders_skipped", "skipped"),
                       ("line_items", "Line items"), ("profiles", "Distinct profiles")):  # fmt: skip
        if key in summary:
            rows.append(([escape(label), _num(int(summary[key]))], ""))
    for metric, n in sorted((summary.get("events") or {}).items(), key=lambda i: _order(i[0])):
        sent = (summary.get("sent") or {}).get(metric)
        done = f" ({_num(int(sent))} sent)" if sent is not None else ""
        rows.append(([f"Events: {escape(metric)}", f"{_num(int(n))}{done}"], ""))
    for currency, amount in sorted((summary.get("revenue") or {}).items()):
        rows.append(([f"Revenue {escape(currency)}", _money(amount, currency)], ""))
    if summary.get("first_order"):
        rows.append((["Orders from", escape(str(summary["first_order"]))], ""))
        rows.append((["Orders to", escape(str(summary.get("last_order")))], ""))
    for reason, n in (summary.get("rejected") or {}).items():
        rows.append(([f"Rejected: {escape(reason)}", _num(int(n))], "short"))
    return f"<section><h2>The export (the last run's summary)</h2>{_table(['', ''], rows, {1})}</section>"


def _order(metric: str) -> tuple[int, str]:
    return (METRICS.index(metric) if metric in METRICS else len(METRICS), metric)


def _rejections(result: Verification) -> str:
    if not result.rejections:
        return "<section><h2>Rejections</h2><p>None.</p></section>"
    table = _table(
        ["where", "order", "reason", "detail"],
        (
            (
                [
                    escape(f"{r.source}:{r.line}" if r.line else r.source),
                    escape(r.order_id or "-"),
                    escape(r.reason),
                    escape(r.detail[:300]),
                ],
                "",
            )
            for r in result.rejections
        ),
        set(),
    )
    return f"<section><h2>Rejections ({len(result.rejections):,})</h2>{table}</section>"


# ---------------------------------------------------------------- inspect


def inspect_page(stats: Stats) -> str:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    about = "about " if stats.profiles.estimated else ""
    cards = [("orders", _num(stats.orders_read)), ("would be sent", _num(stats.orders_mapped)),
             ("rejected", _num(stats.orders_rejected)), ("events", _num(sum(stats.events.values()))),
             ("customers", f"{about}{len(stats.profiles):,}")]  # fmt: skip
    body = [
        "<h1>Klaviyo backfill: inspect</h1>",
        f'<p class="meta">Nothing was sent &middot; generated {when}'
        + (f" &middot; orders from {stats.first:%Y-%m-%d} to {stats.last:%Y-%m-%d}"
           if stats.first and stats.last else "") + "</p>",
        '<div class="cards">' + "".join(f'<div class="card">{escape(k)}<b>{v}</b></div>'
                                        for k, v in cards) + "</div>",
    ]  # fmt: skip
    body.append("<section><h2>Events per month (UTC)</h2>")
    span = _span([mo for _, mo in stats.metric_months] + [mo for mo, _ in stats.month_revenue])
    for metric in sorted({m for m, _ in stats.metric_months}, key=_order):
        months = {mo: n for (m, mo), n in stats.metric_months.items() if m == metric}
        body.append(f"<h3>{escape(metric)}: {_num(sum(months.values()))}</h3>")
        body.append(_bars(f"{metric} events per month", [("events", SENT, months)], span))
    body.append("</section><section><h2>Revenue per month</h2>")
    for currency, total in sorted(stats.revenue.items()):
        months_rev = {mo: v for (mo, c), v in stats.month_revenue.items() if c == currency}
        body.append(f"<h3>{escape(currency)}: {_money(total, currency)}</h3>")
        body.append(_bars(f"Revenue per month, {currency}", [("revenue", HELD, months_rev)], span))
    body.append("</section>")
    for title, counts in (("Rejected orders", stats.rejected), ("Warnings", stats.warnings)):
        if counts:
            table = _table(["reason", "orders", "for example"], (
                ([escape(what), _num(n), escape(", ".join(stats.examples.get(what, [])))],
                 "short" if title.startswith("Rejected") else "")
                for what, n in counts.most_common()), {1})  # fmt: skip
            body.append(f"<section><h2>{title}</h2>{table}</section>")
    return _page("Klaviyo backfill: inspect", body)
