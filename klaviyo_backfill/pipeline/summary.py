"""The summary of a run: what was read, mapped, rejected and skipped, and what it is worth.

    orders read = orders mapped + orders rejected + orders skipped

`Stats` is filled as orders settle, in file order, whichever process prepared them; a
`Tally` is what it needs of one order's events (small, so it can cross processes).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from decimal import Decimal
from typing import Any

from ..model import CANCELLED, PLACED, REFUNDED, Event, utc_month
from .distinct import DistinctCount, stable_hash

__all__ = ["Stats", "Tally", "describe", "window_text"]


@dataclass(slots=True)
class Tally:
    """What the summary needs of a mapped order's events (which may stay in another process)."""

    metrics: tuple[str, ...]
    time: datetime  # of its first event, the Placed Order
    revenue: Decimal | None  # the Placed Order's value, with its currency
    currency: str | None
    who: int  # the profile (email, phone, external id), as its `stable_hash`
    months: tuple[str, ...] = ()  # each event's UTC month ('YYYY-MM'), as `metrics`
    cancelled: Decimal | None = None  # the Cancelled Order's value (the order total)
    refunded: Decimal | None = None  # the Refunded Order's value

    @classmethod
    def of(cls, events: list[Event]) -> Tally:
        placed, p = events[0], events[0].profile
        revenue = placed.value if placed.metric == PLACED and placed.currency else None
        who = stable_hash((p.get("email"), p.get("phone_number"), p.get("external_id")))
        months, last, month = [], None, ""
        for e in events:  # most events share the order's time (the same object)
            if e.time is not last:
                last, month = e.time, utc_month(e.time)
            months.append(month)
        metrics = tuple(e.metric for e in events)
        values = {e.metric: e.value for e in events[1:] if e.metric in (CANCELLED, REFUNDED)}
        return cls(metrics, placed.time, revenue, placed.currency, who, tuple(months),
                   values.get(CANCELLED), values.get(REFUNDED))  # fmt: skip


@dataclass
class Stats:
    orders_read: int = 0
    orders_mapped: int = 0
    orders_rejected: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)  # reason -> a few file:line
    events: Counter[str] = field(default_factory=Counter)
    revenue: dict[str, Decimal] = field(default_factory=dict)  # gross: every order placed
    cancelled: dict[str, Decimal] = field(default_factory=dict)  # totals of cancelled orders
    refunded: dict[str, Decimal] = field(default_factory=dict)  # refunds of the others
    warnings: Counter[str] = field(default_factory=Counter)
    first: datetime | None = None
    last: datetime | None = None
    profiles: DistinctCount = field(default_factory=DistinctCount)
    line_items: int = 0
    resumed_at: str | None = None  # file:line where a resumed run picked up
    bytes_total: int = 0  # of every input
    already_in_klaviyo: int = 0  # events the account held already (a later export's send)
    bytes_done: int = 0  # of the inputs read so far, and of the current one up to here
    skipped_files: list[tuple[str, str]] = field(default_factory=list)  # (path, why): no export
    since: datetime | None = None  # the window --since/--until applied: orders at or after
    until: datetime | None = None  # ... and before
    # orders skipped as another API sender holds them: order id -> UTC month (overlap.py)
    held_elsewhere: dict[str, str] = field(default_factory=dict)

    limit: int | None = None  # --limit: the run ends after this many mapped orders
    read_all: bool = False  # the reading ended (the inputs, or --limit): `events` is whole

    def estimated_events(self) -> int:
        """Events the whole run will hold: exact once the reading ended; until then
        extrapolated from the bytes read so far, and (--limit) from the orders mapped."""
        done = sum(self.events.values())
        if self.read_all or not self.bytes_done or not self.bytes_total:
            return done
        estimate = int(done * self.bytes_total / self.bytes_done)
        if self.limit and self.orders_mapped:
            estimate = min(estimate, int(done * self.limit / self.orders_mapped))
        return max(done, estimate)

    month_revenue: dict[tuple[str, str], Decimal] = field(default_factory=dict)
    # events per (metric, UTC month): what `preflight` sets against other integrations' metrics
    metric_months: Counter[tuple[str, str]] = field(default_factory=Counter)

    def net(self, currency: str) -> Decimal:
        """Gross, less cancelled orders and the refunds of orders not cancelled."""
        zero = Decimal(0)
        return (
            self.revenue.get(currency, zero)
            - self.cancelled.get(currency, zero)
            - self.refunded.get(currency, zero)
        )

    @property
    def orders_skipped(self) -> int:
        return sum(self.skipped.values())

    def balanced(self) -> bool:
        return self.orders_read == self.orders_mapped + self.orders_rejected + self.orders_skipped

    def example(self, key: str, source: str, line: int) -> None:
        """Keep the first few file:line places of a reason or warning."""
        places = self.examples.setdefault(key, [])
        if len(places) < 3:
            places.append(f"{source}:{line}")

    def count_order(self, tally: Tally, lines: int) -> None:
        self.orders_mapped += 1
        self.line_items += lines
        self.events.update(tally.metrics)
        self.metric_months.update(zip(tally.metrics, tally.months, strict=True))
        when = tally.time
        if tally.revenue is not None and tally.currency:
            cur, value = tally.currency, tally.revenue
            self.revenue[cur] = self.revenue.get(cur, Decimal(0)) + value
            if tally.cancelled is not None:  # void: its refund, if any, is no further loss
                self.cancelled[cur] = self.cancelled.get(cur, Decimal(0)) + value
            elif tally.refunded is not None:
                self.refunded[cur] = self.refunded.get(cur, Decimal(0)) + tally.refunded
            month = (f"{when.year:04d}-{when.month:02d}", cur)
            self.month_revenue[month] = self.month_revenue.get(month, Decimal(0)) + value
        self.first = when if self.first is None or when < self.first else self.first
        self.last = when if self.last is None or when > self.last else self.last
        self.profiles.add(tally.who)


def describe(stats: Stats) -> dict[str, Any]:
    """The summary as plain data (for --summary-json and inspect --json)."""
    return {
        "orders_read": stats.orders_read,
        "orders_mapped": stats.orders_mapped,
        "orders_rejected": stats.orders_rejected,
        "orders_skipped": stats.orders_skipped,
        "skipped": dict(stats.skipped),
        "rejected": dict(stats.rejected),
        "rejected_examples": {k: v for k, v in stats.examples.items() if k in stats.rejected},
        "warning_examples": {k: v for k, v in stats.examples.items() if k in stats.warnings},
        "revenue_by_month": {
            f"{month} {cur}": str(v) for (month, cur), v in sorted(stats.month_revenue.items())
        },
        "events": dict(stats.events),
        "events_by_month": _by_month(stats.metric_months),
        "revenue": {k: str(v) for k, v in sorted(stats.revenue.items())},  # gross
        "revenue_cancelled": {k: str(v) for k, v in sorted(stats.cancelled.items())},
        "revenue_refunded": {k: str(v) for k, v in sorted(stats.refunded.items())},
        "revenue_net": {k: str(stats.net(k)) for k in sorted(stats.revenue)},
        "first_order": stats.first.isoformat() if stats.first else None,
        "last_order": stats.last.isoformat() if stats.last else None,
        "profiles": len(stats.profiles),
        "profiles_estimated": stats.profiles.estimated,
        "line_items": stats.line_items,
        "warnings": dict(stats.warnings),
        "balanced": stats.balanced(),
        "resumed_at": stats.resumed_at,
        "events_already_in_klaviyo": stats.already_in_klaviyo,
        "skipped_files": [{"path": path, "why": why} for path, why in stats.skipped_files],
        "since": stats.since.isoformat() if stats.since else None,
        "until": stats.until.isoformat() if stats.until else None,
        "held_by_another_api_sender": _elsewhere(stats.held_elsewhere),
    }


def _elsewhere(held: dict[str, str]) -> dict[str, Any]:
    """The orders skipped as another API sender holds them: how many, in which UTC months,
    every id."""
    months: Counter[str] = Counter(held.values())
    return {"orders": len(held), "months": dict(sorted(months.items())),
            "order_ids": sorted(held)}  # fmt: skip


def window_text(since: datetime | None, until: datetime | None) -> str | None:
    """The window --since/--until applied, in ISO dates and the zone they were read in:
    "from 2024-01-05 through 2024-01-31 (Europe/Paris)"; None without one."""
    if since is None and until is None:
        return None
    parts = []
    if since is not None:
        parts.append(f"from {_moment(since)}")
    if until is not None:
        if until.timetz().replace(tzinfo=None) == time():
            parts.append(f"through {(until - timedelta(days=1)):%Y-%m-%d}")
        else:
            parts.append(f"before {_moment(until)}")
    moment = since or until
    return f"{' '.join(parts)} ({moment.tzinfo if moment else 'UTC'})"


def _moment(moment: datetime) -> str:
    """`2024-01-05` at midnight, else `2024-01-05 14:30`."""
    if moment.timetz().replace(tzinfo=None) == time():
        return f"{moment:%Y-%m-%d}"
    return moment.replace(tzinfo=None).isoformat(sep=" ", timespec="minutes")


def _by_month(counts: Counter[tuple[str, str]]) -> dict[str, dict[str, int]]:
    """metric -> UTC month -> events."""
    out: dict[str, dict[str, int]] = {}
    for (metric, month), n in sorted(counts.items()):
        out.setdefault(metric, {})[month] = n
    return out
