"""What a job sent against what Klaviyo holds: pure comparisons, no I/O.

    verify      the ledger's sent totals (per metric, UTC month, currency) against the
                monthly aggregates of the API's metric of each name
    overlap     the months an export has events of a metric in, against the events another
                integration's metric of the same name (Shopify's own Placed Order) holds then

Money stays Decimal: Klaviyo's float sums are read as the decimal they print as, and both
sides are compared rounded to the currency's minor unit ("to the cent").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from ..model import METRICS
from ..state.checkpoint import Total, TotalKey

__all__ = [
    "PROCESSING_SECONDS",
    "Held",
    "MetricTotal",
    "OtherCounts",
    "Overlap",
    "Row",
    "compare",
    "describe_overlaps",
    "metric_order",
    "money",
    "overlaps",
    "years_of",
]

# Klaviyo processes accepted events asynchronously, "usually seconds to minutes, longer under
# load": a shortfall in a month with acknowledgements younger than this may still fill in.
PROCESSING_SECONDS = 30 * 60

# (metric, month, currency) -> (count, value sum) that Klaviyo holds
Held = dict[TotalKey, tuple[int, Decimal]]


def money(amount: Decimal, currency: str) -> Decimal:
    """Rounded half-up to the currency's minor unit (2 places where the code is unknown)."""
    from ..inputs.values import quantum  # phonenumbers and dateutil: imported where they are needed

    return amount.quantize(quantum(currency or "USD"), rounding=ROUND_HALF_UP)


def metric_order(metric: str) -> tuple[int, str]:
    """The guide's metrics in their order, then any other by name."""
    return (METRICS.index(metric) if metric in METRICS else len(METRICS), metric)


def years_of(months: Iterable[str]) -> list[int]:
    """The calendar years of 'YYYY-MM' months: one aggregate query each (a query spans at
    most one year)."""
    return sorted({int(month[:4]) for month in months})


@dataclass(frozen=True)
class Row:
    """One metric, month and currency the job sent, against what Klaviyo holds."""

    metric: str
    month: str
    currency: str
    sent_count: int
    klaviyo_count: int
    sent_value: Decimal  # rounded to the currency's minor unit
    klaviyo_value: Decimal
    last_at: float = 0.0  # when the latest of its events was acknowledged
    via: str = "aggregates"  # or "events": a month the aggregates refuse (out of their reach)

    @property
    def short(self) -> bool:
        return self.klaviyo_count < self.sent_count or self.klaviyo_value < self.sent_value

    @property
    def more(self) -> bool:
        """Klaviyo holds more than the job sent (other API sources, an earlier import)."""
        return not self.short and (
            self.klaviyo_count > self.sent_count or self.klaviyo_value > self.sent_value
        )

    def recent(self, now: float) -> bool:
        return now - self.last_at < PROCESSING_SECONDS

    def as_json(self) -> dict[str, Any]:
        doc = {
            "metric": self.metric,
            "month": self.month,
            "currency": self.currency,
            "sent_count": self.sent_count,
            "klaviyo_count": self.klaviyo_count,
            "sent_value": _number(self.sent_value),
            "klaviyo_value": _number(self.klaviyo_value),
        }
        if self.via != "aggregates":
            doc["via"] = self.via
        return doc


def _number(amount: Decimal) -> int | float:
    """A rounded amount as a JSON number: whole units as an integer (JPY)."""
    return int(amount) if amount == amount.to_integral_value() else float(amount)


@dataclass
class MetricTotal:
    """A metric's rows summed, per currency."""

    metric: str
    currency: str
    sent_count: int = 0
    klaviyo_count: int = 0
    sent_value: Decimal = Decimal(0)
    klaviyo_value: Decimal = Decimal(0)
    short_rows: int = 0
    elsewhere: int = 0  # events Klaviyo holds in months or currencies the job did not send

    def as_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "currency": self.currency,
            "sent_count": self.sent_count,
            "klaviyo_count": self.klaviyo_count,
            "sent_value": _number(self.sent_value),
            "klaviyo_value": _number(self.klaviyo_value),
            "short_rows": self.short_rows,
            "klaviyo_count_in_other_months": self.elsewhere,
        }


def compare(sent: Mapping[TotalKey, Total], held: Held) -> tuple[list[Row], list[MetricTotal]]:
    """One row per metric, month and currency the job sent, and totals per metric and
    currency (with what Klaviyo holds in months the job did not send, shown apart)."""
    rows = []
    for key in sorted(sent, key=lambda k: (metric_order(k[0]), k[1], k[2])):
        total, currency = sent[key], key[2]
        count, value = held.get(key, (0, Decimal(0)))
        rows.append(Row(*key, total.events, count, money(total.value, currency),
                        money(value, currency), total.last_at))  # fmt: skip
    totals: dict[tuple[str, str], MetricTotal] = {}
    for row in rows:
        t = totals.setdefault((row.metric, row.currency), MetricTotal(row.metric, row.currency))
        t.sent_count += row.sent_count
        t.klaviyo_count += row.klaviyo_count
        t.sent_value += row.sent_value
        t.klaviyo_value += row.klaviyo_value
        t.short_rows += row.short
    sent_metrics = {key[0] for key in sent}
    for key, (count, _) in held.items():
        metric, _, currency = key
        if metric in sent_metrics and key not in sent:
            target = totals.setdefault((metric, currency), MetricTotal(metric, currency))
            target.elsewhere += count
    ordered = sorted(totals.values(), key=lambda t: (metric_order(t.metric), t.currency))
    return rows, ordered


@dataclass(frozen=True)
class Overlap:
    """Another integration's metric of the same name holds events in a month the export
    has events of that metric in."""

    metric: str
    integration: str
    month: str
    count: int  # events the other integration's metric holds that month
    export_count: int  # events of the metric the export would send that month

    def as_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "integration": self.integration,
            "month": self.month,
            "count": self.count,
            "export_count": self.export_count,
        }


@dataclass
class OtherCounts:
    """Monthly event counts of one other integration's metric."""

    metric: str
    integration: str
    months: Counter[str] = field(default_factory=Counter)


def overlaps(export: Mapping[tuple[str, str], int], others: Iterable[OtherCounts]) -> list[Overlap]:
    """One entry per metric, integration and month where both hold events."""
    found = []
    for other in others:
        for month, count in sorted(other.months.items()):
            mine = export.get((other.metric, month), 0)
            if count and mine:
                found.append(Overlap(other.metric, other.integration, month, count, mine))
    return sorted(found, key=lambda o: (metric_order(o.metric), o.integration, o.month))


def describe_overlaps(found: list[Overlap], limit: int = 6) -> list[str]:
    """One line per metric and integration: its months, with counts (the first few)."""
    lines = []
    groups: dict[tuple[str, str], list[Overlap]] = {}
    for o in found:
        groups.setdefault((o.metric, o.integration), []).append(o)
    for (metric, integration), months in groups.items():
        shown = ", ".join(
            f"{o.month} ({o.count:,} there, {o.export_count:,} in the export)"
            for o in months[:limit]
        )
        more = f" and {len(months) - limit} more month(s)" if len(months) > limit else ""
        lines.append(f"{metric} of {integration}: {shown}{more}")
    return lines
