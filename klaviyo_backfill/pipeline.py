"""The offline half of a run: inputs -> orders -> events, with every order accounted for.

    orders read = orders mapped + orders rejected + orders skipped

Skipped orders are duplicates (the same order id in an earlier row or file), orders outside
--since/--until, and orders a checkpoint already holds as sent.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import IO, Any

from .convert import Converter, Settings
from .distinct import DistinctCount, SeenIds
from .errors import FieldError
from .layout import Layout
from .mapping import PLACED, map_order
from .model import Event, RawOrder, Rejection
from .read import Input, Start, read_orders

__all__ = ["Failures", "Filters", "MappedOrder", "Stats", "map_inputs"]


@dataclass(frozen=True, slots=True)
class Filters:
    since: datetime | None = None
    until: datetime | None = None
    limit: int | None = None


@dataclass(slots=True)
class MappedOrder:
    key: str  # the order's id: what dedupe and the checkpoint know it by
    events: list[Event]
    source: str = ""
    line: int = 0
    at: Position = (0, 0)  # where a resumed run would pick this order up
    after: Position = (0, 0)  # where it would pick up the order after it


Position = tuple[int, int]  # (input index, byte offset); JSON inputs have offset 0


def position(index: int, raw: RawOrder) -> tuple[Position, Position]:
    """Resume points before and after an order: exact for CSV, the file's start for JSON."""
    if raw.end is None:
        return (index, 0), (index, 0)
    return (index, raw.offset), (index, raw.end)


@dataclass
class Stats:
    orders_read: int = 0
    orders_mapped: int = 0
    orders_rejected: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)  # reason -> a few file:line
    events: Counter[str] = field(default_factory=Counter)
    revenue: dict[str, Decimal] = field(default_factory=dict)
    warnings: Counter[str] = field(default_factory=Counter)
    first: datetime | None = None
    last: datetime | None = None
    profiles: DistinctCount = field(default_factory=DistinctCount)
    line_items: int = 0
    resumed_at: str | None = None  # file:line where a resumed run picked up
    bytes_total: int = 0  # of every input
    bytes_done: int = 0  # of the inputs read so far, and of the current one up to here

    def estimated_events(self) -> int:
        """Events the whole run will hold, extrapolated from the bytes read so far."""
        done = sum(self.events.values())
        if not self.bytes_done or not self.bytes_total:
            return done
        return max(done, int(done * self.bytes_total / self.bytes_done))

    month_revenue: dict[tuple[str, str], Decimal] = field(default_factory=dict)

    @property
    def orders_skipped(self) -> int:
        return sum(self.skipped.values())

    def balanced(self) -> bool:
        return self.orders_read == self.orders_mapped + self.orders_rejected + self.orders_skipped

    def example(self, key: str, raw: RawOrder) -> None:
        """Keep the first few file:line places of a reason or warning."""
        places = self.examples.setdefault(key, [])
        if len(places) < 3:
            places.append(f"{raw.source}:{raw.line}")

    def count_order(self, events: list[Event], lines: int) -> None:
        placed = events[0]
        self.orders_mapped += 1
        self.line_items += lines
        self.events.update([event.metric for event in events])
        if placed.metric == PLACED and placed.value is not None and placed.currency:
            cur = placed.currency
            self.revenue[cur] = self.revenue.get(cur, Decimal(0)) + placed.value
            when = placed.time
            month = (f"{when.year:04d}-{when.month:02d}", cur)
            self.month_revenue[month] = self.month_revenue.get(month, Decimal(0)) + placed.value
        when = placed.time
        self.first = when if self.first is None or when < self.first else self.first
        self.last = when if self.last is None or when > self.last else self.last
        p = placed.profile
        self.profiles.add(hash((p.get("email"), p.get("phone_number"), p.get("external_id"))))


class Failures:
    """The failures file: one JSON line per rejected order or event, opened on first use."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.count = 0
        self._fh: IO[str] | None = None

    def write(self, rejection: Rejection) -> None:
        self.count += 1
        if self.path is None:
            return
        if self._fh is None:
            self._fh = open(self.path, "w", encoding="utf-8")  # noqa: SIM115
        self._fh.write(json.dumps(rejection.as_json(), ensure_ascii=False) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _in_window(when: datetime, filters: Filters) -> bool:
    if filters.since is not None and when < filters.since:
        return False
    return not (filters.until is not None and when >= filters.until)


class _Mapper:
    def __init__(
        self,
        settings: Settings,
        filters: Filters,
        stats: Stats,
        failures: Failures,
        already_sent: Callable[[str], bool] | None,
        on_reject: Callable[[Rejection, Position], None] | None,
    ) -> None:
        self.settings, self.filters, self.stats, self.failures = settings, filters, stats, failures
        self.already_sent = already_sent
        self.on_reject = on_reject
        self.seen = SeenIds()
        self.converters: dict[int, Converter] = {}

    def reject(self, raw: RawOrder, order_id: str | None, exc: FieldError, index: int) -> None:
        self.stats.orders_rejected += 1
        reason = f"{exc.field}: {exc.reason}"
        self.stats.rejected[reason] += 1
        self.stats.example(reason, raw)
        rejection = Rejection(raw.source, raw.line, order_id, exc.reason, str(exc))
        self.failures.write(rejection)
        if self.on_reject is not None:
            self.on_reject(rejection, position(index, raw)[0])

    def one(self, raw: RawOrder, layout: Layout, index: int) -> MappedOrder | None:
        stats = self.stats
        stats.orders_read += 1
        if raw.already_sent:
            stats.skipped["already sent (checkpoint)"] += 1
            return None
        raw_id = raw.get("id")
        order_id = None if raw_id is None else str(raw_id).strip()
        if order_id:
            if not self.seen.add(order_id):
                stats.skipped["duplicate order id"] += 1
                stats.warnings["duplicate order id skipped"] += 1
                stats.example("duplicate order id skipped", raw)
                return None
            # a CSV reader asked the checkpoint already (raw.already_sent); JSON asks here
            checked = layout.kind == "csv"
            if not checked and self.already_sent is not None and self.already_sent(order_id):
                stats.skipped["already sent (checkpoint)"] += 1
                return None
        try:
            converter = self.converters.get(index)
            if converter is None:
                converter = self.converters[index] = Converter(layout, self.settings)
            order = converter.order(raw)
            if not _in_window(order.created_at, self.filters):
                stats.skipped["outside --since/--until"] += 1
                return None
            events = map_order(order)
        except FieldError as exc:
            self.reject(raw, order_id, exc, index)
            return None
        for warning in dict.fromkeys(order.warnings):
            stats.warnings[warning] += 1
            stats.example(warning, raw)
        stats.count_order(events, len(order.lines))
        at, after = position(index, raw)
        return MappedOrder(order.id, events, raw.source, raw.line, at, after)


def map_inputs(
    inputs: list[Input],
    settings: Settings,
    filters: Filters,
    stats: Stats,
    failures: Failures,
    already_sent: Callable[[str], bool] | None = None,
    resume_at: Position | None = None,
    on_reject: Callable[[Rejection, Position], None] | None = None,
) -> Iterator[MappedOrder]:
    """Mapped orders from every input in turn; rejections go to `failures`.

    A resumed run starts at `resume_at`: inputs before it are passed over whole, and a CSV
    input is picked up at the byte offset of the first order not yet settled.
    """
    mapper = _Mapper(settings, filters, stats, failures, already_sent, on_reject)
    taken = 0
    stats.bytes_total = sum(os.path.getsize(source.path) for source in inputs)
    before = 0
    for index, source in enumerate(inputs):
        start = _start(source, index, resume_at)
        if start is None and resume_at is not None and index < resume_at[0]:
            before += os.path.getsize(source.path)
            continue
        if start is not None:
            stats.resumed_at = f"{source.path}:{start.line}"
        for raw in read_orders(source, already_sent, start):
            stats.bytes_done = before + raw.offset
            if filters.limit is not None and taken >= filters.limit:
                return
            mapped = mapper.one(raw, source.layout, index)
            if mapped is not None:
                taken += 1
                yield mapped
        before += os.path.getsize(source.path)


def _start(source: Input, index: int, resume_at: Position | None) -> Start | None:
    if resume_at is None or resume_at[0] != index or resume_at[1] == 0:
        return None
    return Start(resume_at[1], _line_at(source.path, resume_at[1]))


def _line_at(path: str, offset: int) -> int:
    """The line number of the line starting at `offset` (counting newline bytes: fast)."""
    lines, left = 1, offset
    with open(path, "rb") as fh:
        while left > 0:
            chunk = fh.read(min(left, 1 << 20))
            if not chunk:
                break
            lines += chunk.count(b"\n")
            left -= len(chunk)
    return lines


def describe(stats: Stats) -> dict[str, Any]:
    """The summary as plain data (for --summary-json and inspect --json)."""
    return {
        "orders_read": stats.orders_read,
        "orders_mapped": stats.orders_mapped,
        "orders_rejected": stats.orders_rejected,
        "orders_skipped": stats.orders_skipped,
        "skipped": dict(stats.skipped),
        "rejected": dict(stats.rejected),
        "rejected_examples": stats.examples,
        "revenue_by_month": {
            f"{month} {cur}": str(v) for (month, cur), v in sorted(stats.month_revenue.items())
        },
        "events": dict(stats.events),
        "revenue": {k: str(v) for k, v in sorted(stats.revenue.items())},
        "first_order": stats.first.isoformat() if stats.first else None,
        "last_order": stats.last.isoformat() if stats.last else None,
        "profiles": len(stats.profiles),
        "profiles_estimated": stats.profiles.estimated,
        "line_items": stats.line_items,
        "warnings": dict(stats.warnings),
        "balanced": stats.balanced(),
        "resumed_at": stats.resumed_at,
    }
