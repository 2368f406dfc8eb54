"""The offline half of a run: inputs -> orders -> events, with every order accounted for.

    orders read = orders mapped + orders rejected + orders skipped

Skipped orders are duplicates (the same order id in an earlier row or file), orders outside
--since/--until, and orders a checkpoint already holds as sent.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from functools import partial
from typing import IO, Any

from .convert import Converter, Settings
from .distinct import DistinctCount, SeenIds, stable_hash
from .encode import Encoder, Part
from .errors import FieldError
from .layout import Layout
from .mapping import PLACED, map_order
from .model import Event, RawOrder, Rejection
from .read import Input, Start, read_orders

__all__ = [
    "Elsewhere",
    "Failures",
    "Filters",
    "MappedOrder",
    "Prepared",
    "Stats",
    "Tally",
    "map_inputs",
    "prepare",
    "raw_id",
]


@dataclass(frozen=True, slots=True)
class Filters:
    since: datetime | None = None
    until: datetime | None = None
    limit: int | None = None


Position = tuple[int, int]  # (input index, byte offset); JSON inputs have offset 0


@dataclass(slots=True)
class MappedOrder:
    key: str  # the order's id: what dedupe and the checkpoint know it by
    events: list[Event]
    source: str = ""
    line: int = 0
    at: Position = (0, 0)  # where a resumed run would pick this order up
    after: Position = (0, 0)  # where it would pick up the order after it
    parts: list[Part] = field(default_factory=list)  # its events encoded, when asked for


@dataclass(slots=True)
class Tally:
    """What the summary needs of a mapped order's events (which may stay in another process)."""

    metrics: tuple[str, ...]
    time: datetime  # of its first event, the Placed Order
    revenue: Decimal | None  # the Placed Order's value, with its currency
    currency: str | None
    who: int  # the profile (email, phone, external id), as its `stable_hash`

    @classmethod
    def of(cls, events: list[Event]) -> Tally:
        placed, p = events[0], events[0].profile
        revenue = placed.value if placed.metric == PLACED and placed.currency else None
        who = stable_hash((p.get("email"), p.get("phone_number"), p.get("external_id")))
        return cls(tuple(e.metric for e in events), placed.time, revenue, placed.currency, who)


@dataclass(slots=True)
class Prepared:
    """One order after the work that needs nothing but the order: convert, map, encode.

    Pure, so it can be done in any process and in any order; what depends on the orders
    before it (duplicates, the checkpoint, --limit, the summary) is `_Mapper.settle`'s.
    """

    source: str
    line: int
    at: Position
    after: Position
    raw_id: str | None  # the id as read: what duplicates are found by
    key: str = ""  # the order's id once converted
    rejected: tuple[str, str, str] | None = None  # field, reason, message
    outside: bool = False  # outside --since/--until
    lines: int = 0
    warnings: list[str] = field(default_factory=list)
    tally: Tally | None = None
    events: list[Event] = field(default_factory=list)  # empty when prepared elsewhere
    parts: list[Part] = field(default_factory=list)


def raw_id(raw: RawOrder) -> str | None:
    value = raw.get("id")
    return (None if value is None else str(value).strip()) or None


def prepare(
    raw: RawOrder, converter: Converter, filters: Filters, index: int, encoder: Encoder | None
) -> Prepared:
    """Convert, map and (given an encoder) encode one order; a FieldError becomes `rejected`."""
    at, after = position(index, raw)
    prepared = Prepared(raw.source, raw.line, at, after, raw_id(raw))
    try:
        order = converter.order(raw)
        if not _in_window(order.created_at, filters):
            prepared.outside = True
            return prepared
        events = map_order(order)
    except FieldError as exc:
        prepared.rejected = (exc.field, exc.reason, str(exc))
        return prepared
    prepared.key, prepared.lines, prepared.warnings = order.id, len(order.lines), order.warnings
    prepared.tally = Tally.of(events)
    prepared.events = events
    if encoder is not None:
        prepared.parts = encoder.parts(events)
    return prepared


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

    def example(self, key: str, source: str, line: int) -> None:
        """Keep the first few file:line places of a reason or warning."""
        places = self.examples.setdefault(key, [])
        if len(places) < 3:
            places.append(f"{source}:{line}")

    def count_order(self, tally: Tally, lines: int) -> None:
        self.orders_mapped += 1
        self.line_items += lines
        self.events.update(tally.metrics)
        when = tally.time
        if tally.revenue is not None and tally.currency:
            cur, value = tally.currency, tally.revenue
            self.revenue[cur] = self.revenue.get(cur, Decimal(0)) + value
            month = (f"{when.year:04d}-{when.month:02d}", cur)
            self.month_revenue[month] = self.month_revenue.get(month, Decimal(0)) + value
        self.first = when if self.first is None or when < self.first else self.first
        self.last = when if self.last is None or when > self.last else self.last
        self.profiles.add(tally.who)


class Failures:
    """The failures file: one JSON line per rejected order or event, opened on first use.

    It lists this run's rejections (a resumed run writes the earlier ones again first): a file
    left by an earlier run goes at once, so a clean rerun leaves none behind."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.count = 0
        self._fh: IO[str] | None = None
        if path is not None and os.path.isfile(path):
            os.unlink(path)

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
        encoder: Encoder | None = None,
    ) -> None:
        self.settings, self.filters, self.stats, self.failures = settings, filters, stats, failures
        self.already_sent = already_sent
        self.on_reject = on_reject
        self.encoder = encoder
        self.seen = SeenIds()
        self.converters: dict[int, Converter] = {}

    def one(self, raw: RawOrder, layout: Layout, index: int) -> MappedOrder | None:
        """Read, prepare and settle one order here (skipped ones are not even converted)."""
        self.stats.orders_read += 1
        if raw.already_sent:
            self.stats.skipped["already sent (checkpoint)"] += 1
            return None
        # a CSV reader asked the checkpoint already (raw.already_sent); JSON asks here
        if not self.first_sight(raw_id(raw), raw.source, raw.line, layout.kind != "csv"):
            return None
        converter = self.converters.get(index)
        if converter is None:
            converter = self.converters[index] = Converter(layout, self.settings)
        return self.settle(prepare(raw, converter, self.filters, index, self.encoder))

    def prepared(self, prepared: Prepared) -> MappedOrder | None:
        """Settle an order prepared elsewhere (a dry run on several cores: no checkpoint)."""
        self.stats.orders_read += 1
        if not self.first_sight(prepared.raw_id, prepared.source, prepared.line, False):
            return None
        return self.settle(prepared)

    def first_sight(self, order_id: str | None, source: str, line: int, ask: bool) -> bool:
        """False for an order to skip: a duplicate id, or (when `ask`) one already sent."""
        if not order_id:
            return True
        stats = self.stats
        if not self.seen.add(order_id):
            stats.skipped["duplicate order id"] += 1
            stats.warnings["duplicate order id skipped"] += 1
            stats.example("duplicate order id skipped", source, line)
            return False
        if ask and self.already_sent is not None and self.already_sent(order_id):
            stats.skipped["already sent (checkpoint)"] += 1
            return False
        return True

    def settle(self, prepared: Prepared) -> MappedOrder | None:
        stats = self.stats
        if prepared.rejected is not None:
            self.reject(prepared)
            return None
        if prepared.outside:
            stats.skipped["outside --since/--until"] += 1
            return None
        for warning in dict.fromkeys(prepared.warnings):
            stats.warnings[warning] += 1
            stats.example(warning, prepared.source, prepared.line)
        assert prepared.tally is not None  # every mapped order has one
        stats.count_order(prepared.tally, prepared.lines)
        p = prepared
        return MappedOrder(p.key, p.events, p.source, p.line, p.at, p.after, p.parts)

    def reject(self, prepared: Prepared) -> None:
        assert prepared.rejected is not None
        field_name, reason, message = prepared.rejected
        self.stats.orders_rejected += 1
        key = f"{field_name}: {reason}"
        self.stats.rejected[key] += 1
        self.stats.example(key, prepared.source, prepared.line)
        rejection = Rejection(prepared.source, prepared.line, prepared.raw_id, reason, message)
        self.failures.write(rejection)
        if self.on_reject is not None:
            self.on_reject(rejection, prepared.at)


Elsewhere = Callable[[Input, int], "Generator[Prepared, None, None] | None"]


def map_inputs(
    inputs: list[Input],
    settings: Settings,
    filters: Filters,
    stats: Stats,
    failures: Failures,
    already_sent: Callable[[str], bool] | None = None,
    resume_at: Position | None = None,
    on_reject: Callable[[Rejection, Position], None] | None = None,
    encoder: Encoder | None = None,
    elsewhere: Elsewhere | None = None,
) -> Iterator[MappedOrder]:
    """Mapped orders from every input in turn; rejections go to `failures`.

    A resumed run starts at `resume_at`: inputs before it are passed over whole, and a CSV
    input is picked up at the byte offset of the first order not yet settled. Given an
    encoder, each order comes with its events encoded (`MappedOrder.parts`). `elsewhere` may
    prepare an input's orders in other processes (parallel.py; not with a checkpoint): they
    are settled here, in file order, as if prepared here.
    """
    if elsewhere is not None and (already_sent is not None or resume_at is not None):
        raise ValueError("orders prepared elsewhere cannot be checked against a checkpoint")
    mapper = _Mapper(settings, filters, stats, failures, already_sent, on_reject, encoder)
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
        prepared = elsewhere(source, index) if elsewhere is not None else None
        with closing(_orders_of(mapper, source, index, already_sent, start, prepared)) as orders:
            for offset, settle in orders:
                stats.bytes_done = before + offset
                if filters.limit is not None and taken >= filters.limit:
                    return
                mapped = settle()
                if mapped is not None:
                    taken += 1
                    yield mapped
        before += os.path.getsize(source.path)


def _orders_of(
    mapper: _Mapper,
    source: Input,
    index: int,
    already_sent: Callable[[str], bool] | None,
    start: Start | None,
    prepared: Generator[Prepared, None, None] | None,
) -> Generator[tuple[int, Callable[[], MappedOrder | None]], None, None]:
    """Each order's offset, and what settles it: read and prepared here, or prepared elsewhere
    (`closing` this stops the workers when --limit ends the run early)."""
    if prepared is not None:
        with closing(prepared):
            for order in prepared:
                yield order.at[1], partial(mapper.prepared, order)
        return
    layout = source.layout
    for raw in read_orders(source, already_sent, start):
        yield raw.offset, partial(mapper.one, raw, layout, index)


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
        "rejected_examples": {k: v for k, v in stats.examples.items() if k in stats.rejected},
        "warning_examples": {k: v for k, v in stats.examples.items() if k in stats.warnings},
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
