"""Order by order: what the account acknowledged against the events Klaviyo holds. Pure.

One window (a metric and a span of time, a month or part of one) at a time: the
acknowledged events of the window (the checkpoint's `acked`) and the events Klaviyo lists
for the API's metric of that name in it (GET /api/events). Klaviyo's listing does not return
the unique_id, so an event is matched by its `OrderId` (and line item, for Ordered
Product), then by value and time. Each order the job sent is then

    held        every event held as sent
    missing     an acknowledged event Klaviyo does not hold: resend it (same unique id)
    twice       Klaviyo holds another event of the metric for the order (another API
                sender, an earlier import with other ids): its revenue counts twice
    different   held, with another value or time than was sent

Events of orders the job did not send are not its to judge, and left alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

from ..klaviyo.shapes import HeldEvent, HeldKeys
from ..state.checkpoint import Acked, AckedKey

__all__ = [
    "DIFFERENT",
    "MISSING",
    "TWICE",
    "Finding",
    "HeldElsewhere",
    "MonthCount",
    "Proof",
    "Window",
    "WindowResult",
    "all_as_sent",
    "compare_window",
    "windows",
]

MISSING, TWICE, DIFFERENT = "missing", "twice", "different"
WINDOW_EVENTS = 5_000  # acknowledged events one window holds at most (a few pages: many
# windows in flight keep the pages coming at the rate limit, and memory flat)


@dataclass(frozen=True, slots=True)
class Window:
    """A metric's events with start <= time < end (UNIX seconds), within one UTC month."""

    metric: str
    month: str
    start: int
    end: int


def _month_bounds(month: str) -> tuple[int, int]:
    year, mon = int(month[:4]), int(month[5:7])
    start = datetime(year, mon, 1, tzinfo=UTC)
    end = datetime(year + mon // 12, mon % 12 + 1, 1, tzinfo=UTC)
    return int(start.timestamp()), int(end.timestamp())


def windows(counts: dict[tuple[str, str], int], most: int = WINDOW_EVENTS) -> list[Window]:
    """The windows to read: one per metric and month the job sent, a month cut into equal
    spans where it holds more than `most` acknowledged events."""
    out = []
    for (metric, month), count in sorted(counts.items()):
        start, end = _month_bounds(month)
        pieces = max(1, -(-count // most))
        step = -(-(end - start) // pieces)
        for lo in range(start, end, step):
            out.append(Window(metric, month, lo, min(end, lo + step)))
    return out


@dataclass(frozen=True, slots=True)
class Finding:
    """One order of one metric that is not held as sent."""

    kind: str  # MISSING, TWICE or DIFFERENT
    metric: str
    month: str
    order_id: str
    source: str
    line: int
    unique_ids: tuple[str, ...]  # missing: the events to resend; otherwise the order's own
    detail: str

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "metric": self.metric,
            "month": self.month,
            "order_id": self.order_id,
            "source": self.source,
            "line": self.line,
            "unique_ids": list(self.unique_ids),
            "detail": self.detail,
        }


@dataclass(slots=True)
class MonthCount:
    """One metric and month, order by order."""

    metric: str
    month: str
    sent: int = 0  # acknowledged events
    held: int = 0  # of them held as sent
    missing: int = 0  # events not held
    twice: int = 0  # orders held twice or more
    different: int = 0  # events held otherwise
    # events of orders the job did not send: of orders this tool sent from other exports
    # (the account's ledger holds them), and of other sources
    beyond_ours: int = 0
    beyond_other: int = 0
    # what Klaviyo holds of the job's orders, per currency: (events, value)
    held_by_currency: dict[str, tuple[int, float]] = field(default_factory=dict)

    def add(self, other: MonthCount) -> None:
        self.sent += other.sent
        self.held += other.held
        self.missing += other.missing
        self.twice += other.twice
        self.different += other.different
        self.beyond_ours += other.beyond_ours
        self.beyond_other += other.beyond_other
        for currency, (n, v) in other.held_by_currency.items():
            count, value = self.held_by_currency.get(currency, (0, 0.0))
            self.held_by_currency[currency] = (count + n, value + v)

    @property
    def clean(self) -> bool:
        return not (self.missing or self.twice or self.different)

    def as_json(self) -> dict[str, Any]:
        return {"metric": self.metric, "month": self.month, "sent": self.sent,
                "held": self.held, "missing": self.missing, "held_twice": self.twice,
                "different": self.different, "held_beyond_this_tool": self.beyond_ours,
                "held_beyond_other_sources": self.beyond_other}  # fmt: skip


@dataclass(slots=True)
class WindowResult:
    count: MonthCount
    findings: list[Finding]
    others: dict[str, int] = field(default_factory=dict)  # events of orders not the job's

    def beyond(self, ours: set[str]) -> None:
        """Count the events of orders the job did not send: of `ours` (orders this tool sent
        from other exports), and of other sources."""
        mine = sum(n for order_id, n in self.others.items() if order_id in ours)
        self.count.beyond_ours += mine
        self.count.beyond_other += sum(self.others.values()) - mine


def _same_value(a: float | None, b: float | None) -> bool:
    """To the cent (Klaviyo's values are floats): None and 0 alike."""
    return abs((a or 0.0) - (b or 0.0)) < 0.005


def compare_window(
    window: Window, acked: Iterable[Acked], held: Iterable[HeldEvent]
) -> WindowResult:
    """Each order the window's acknowledged events belong to, against the events held."""
    ours: dict[str, list[Acked]] = {}
    for event in acked:
        group = ours.get(event[2])
        if group is None:
            ours[event[2]] = [event]
        else:
            group.append(event)
    theirs: dict[str, list[HeldEvent]] = {}
    others: dict[str, int] = {}  # events of orders the job did not send, by order
    for one in held:
        order_id = one[1]
        if order_id in ours:
            found = theirs.get(order_id)
            if found is None:
                theirs[order_id] = [one]
            else:
                found.append(one)
        else:
            others[order_id] = others.get(order_id, 0) + 1
    count = MonthCount(window.metric, window.month)
    by_currency = count.held_by_currency
    findings: list[Finding] = []
    as_sent = 0
    for order_id, sent in ours.items():
        got = theirs.get(order_id)
        if got is not None and len(got) == len(sent):
            if len(sent) == 1:  # exactly as sent (item, time, value to the bit): settled here
                s, h = sent[0], got[0]
                same = h[2] == s[4] and h[4] == s[1] and (h[3] or 0.0) == float(s[5] or 0.0)
                value = h[3] or 0.0
            else:
                same = _as_sent(sent, got)
                value = sum([h[3] or 0.0 for h in got])
            if same:
                n, currency = len(sent), sent[0][6]
                as_sent += n
                events, total = by_currency.get(currency, (0, 0.0))
                by_currency[currency] = (events + n, total + value)
                continue
        findings.extend(_one_order(window, order_id, sent, got or [], count))  # the search
    count.sent += as_sent
    count.held += as_sent
    return WindowResult(count, findings, others)


def all_as_sent(
    window: Window, sent: list[AckedKey], currency: str | None, held: HeldKeys | list[HeldEvent]
) -> WindowResult | None:
    """The window's result when Klaviyo holds exactly the acknowledged events (`sent`, as
    Ledger.acked_keys gives them, in one `currency`) and nothing else: each event's order,
    item, time and value to the bit, each once; the common case, settled at once. None for
    every other (`compare_window` judges those order by order). `held`: Reader.held's keys
    (compared as they are), or the events."""
    keys = (
        held.keys if isinstance(held, HeldKeys) else [(h[1], h[2], h[4], h[3] or 0.0) for h in held]
    )
    if currency is None or len(sent) != len(keys) or not sent:
        return None
    left = set(sent)
    if len(left) != len(sent):
        return None
    # n distinct keys sent, n held, each held one of them: each sent key held exactly once
    left.difference_update(keys)
    if left:
        return None
    count = MonthCount(window.metric, window.month, sent=len(sent), held=len(sent))
    count.held_by_currency[currency] = (len(keys), sum(map(_value, keys)))
    return WindowResult(count, [])


_value = itemgetter(3)


def _as_sent(sent: list[Acked], held: list[HeldEvent]) -> bool:
    """Whether the held events are exactly the sent ones (item, time, value to the bit): the
    common case, settled without `_one_order`'s search (which judges every other)."""
    return sorted([(h[2], h[4], h[3] or 0.0) for h in held]) == sorted(
        [(s[4], s[1], float(s[5] or 0.0)) for s in sent]
    )


def _one_order(
    window: Window, order_id: str, sent: list[Acked], held: list[HeldEvent], count: MonthCount
) -> list[Finding]:
    count.sent += len(sent)
    left = list(held)
    unmatched: list[Acked] = []
    currency = sent[0][6]
    for event in sent:  # exactly as sent: item, value and time
        value = None if event[5] is None else float(event[5])
        match = next((h for h in left if h.item == event[4] and h.at == event[1]
                      and _same_value(h.value, value)), None)  # fmt: skip
        if match is None:
            unmatched.append(event)
        else:
            left.remove(match)
            count.held += 1
    differ: list[tuple[Acked, HeldEvent]] = []
    missing: list[Acked] = []
    for event in unmatched:  # the same line item, held otherwise
        match = next((h for h in left if h.item == event[4]), None)
        if match is None:
            missing.append(event)
        else:
            left.remove(match)
            differ.append((event, match))
    held_count = len(held)
    if held:
        n, v = count.held_by_currency.get(currency, (0, 0.0))
        total = sum(h.value or 0.0 for h in held)
        count.held_by_currency[currency] = (n + held_count, v + total)
    first = sent[0]
    where = (window.metric, window.month, order_id, first[7], first[8])
    out = []
    if missing:
        count.missing += len(missing)
        ids = tuple(e[3] for e in missing)
        out.append(Finding(MISSING, *where, ids, f"{len(missing)} of {len(sent)} missing"))
    if left:
        count.twice += 1
        ids = tuple(e[3] for e in sent)
        out.append(Finding(TWICE, *where, ids,
                           f"{held_count} held, {len(sent)} sent"))  # fmt: skip
    if differ:
        count.different += len(differ)
        event, match = differ[0]
        out.append(Finding(DIFFERENT, *where, tuple(e[3] for e, _ in differ),
                           _difference(event, match)))  # fmt: skip
    return out


def _difference(event: Acked, match: HeldEvent) -> str:
    said = []
    if not _same_value(match.value, None if event[5] is None else float(event[5])):
        said.append(f"value {match.value} held, {event[5]} sent")
    if match.at != event[1]:
        held_at = datetime.fromtimestamp(match.at, UTC).strftime("%Y-%m-%d %H:%M:%S")
        sent_at = datetime.fromtimestamp(event[1], UTC).strftime("%Y-%m-%d %H:%M:%S")
        said.append(f"time {held_at} held, {sent_at} sent")
    return "; ".join(said) or "held otherwise"


NAMED = 10_000  # orders named per kind in a result (all counted; a repair lists every event)


@dataclass
class Proof:
    """The per-order proof of a job, window by window."""

    months: dict[tuple[str, str], MonthCount] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)  # the first NAMED of each kind
    orders: dict[str, int] = field(default_factory=dict)  # kind -> orders (each once)
    entries: dict[str, int] = field(default_factory=dict)  # kind -> findings (order, metric, month)
    missing: list[tuple[str, str, str]] = field(default_factory=list)  # (metric, uid, order)
    reads: int = 0
    _seen: dict[str, set[str]] = field(default_factory=dict, repr=False)  # kind -> order ids

    def add(self, result: WindowResult) -> None:
        c = result.count
        self.months.setdefault((c.metric, c.month), MonthCount(c.metric, c.month)).add(c)
        for finding in result.findings:
            # an order is a finding in each window (metric, month) it lacks events of:
            # counted once as an order, named once for each
            seen = self._seen.setdefault(finding.kind, set())
            if finding.order_id not in seen:
                seen.add(finding.order_id)
                self.orders[finding.kind] = len(seen)
            n = self.entries.get(finding.kind, 0)
            self.entries[finding.kind] = n + 1
            if n < NAMED:
                self.findings.append(finding)
            if finding.kind == MISSING:
                self.missing.extend((finding.metric, uid, finding.order_id)
                                    for uid in finding.unique_ids)  # fmt: skip

    def sorted(self) -> None:
        self.findings.sort(key=lambda f: (f.kind, f.source, f.line, f.metric))

    def named(self, kind: str) -> list[Finding]:
        return [f for f in self.findings if f.kind == kind]

    @property
    def clean(self) -> bool:
        return not self.orders

    def totals(self) -> MonthCount:
        total = MonthCount("", "")
        for count in self.months.values():
            total.add(count)
        return total

    def as_json(self) -> dict[str, Any]:
        t = self.totals()
        return {
            "events_sent": t.sent, "events_held": t.held, "events_missing": t.missing,
            "events_different": t.different,
            "orders_missing": self.orders.get(MISSING, 0),
            "orders_held_twice": self.orders.get(TWICE, 0),
            "orders_different": self.orders.get(DIFFERENT, 0),
            "months": [m.as_json() for _, m in sorted(self.months.items())],
            "orders": [f.as_json() for f in self.findings],
        }  # fmt: skip


@dataclass
class HeldElsewhere:
    """Orders of an export that another API sender holds already (the same OrderId in the
    API's metric, not sent by this tool): sent, they would count twice."""

    months: dict[str, int] = field(default_factory=dict)  # UTC month -> orders
    sample: list[str] = field(default_factory=list)  # a few of their ids

    @property
    def orders(self) -> int:
        return sum(self.months.values())

    @classmethod
    def of(cls, held: dict[str, str], limit: int = 5) -> HeldElsewhere:
        """From order id -> month."""
        out = cls()
        for order_id, month in sorted(held.items(), key=lambda item: (item[1], item[0])):
            out.months[month] = out.months.get(month, 0) + 1
            if len(out.sample) < limit:
                out.sample.append(order_id)
        return out

    def describe(self, limit: int = 6) -> str:
        months = sorted(self.months.items())
        shown = ", ".join(f"{m} ({n:,})" for m, n in months[:limit])
        more = f" and {len(months) - limit} more month(s)" if len(months) > limit else ""
        return (f"{self.orders:,} order(s) in {shown}{more}; e.g. order(s) "
                f"{', '.join(self.sample)}")  # fmt: skip

    def as_json(self) -> dict[str, Any]:
        return {"orders": self.orders, "months": dict(sorted(self.months.items())),
                "sample_ids": self.sample}  # fmt: skip
