"""The shapes of Klaviyo's read answers: a document counts only once it is checked.

Each check names what is wrong with a document of the wrong shape (None: it is an answer);
reading.py retries such a document as it retries a 502 (`NotAnAnswer`), then gives up naming
the endpoint. A malformed answer is a fault, never a verdict: an aggregate whose dates repeat
or fall outside the range asked, rows repeated under one dimension value, a count that is not
a finite non-negative whole number, a sum that is not finite; an events page with an event of
another metric or outside the window asked.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

import httpx
import orjson

from ..model import STORE, item_key, order_key
from .retry import Retry

__all__ = [
    "EventsCheck",
    "HeldEvent",
    "HeldKey",
    "HeldKeys",
    "NotAnAnswer",
    "aggregate_answer",
    "document",
    "events_page",
    "listing",
    "metrics_page",
    "month_rows",
]

_MAX_COUNT = 10**12  # more events than any account holds in a month: a broken answer
_MAX_SUM = 1e15


class NotAnAnswer(Retry):
    """A 2xx whose body is not the JSON:API document asked for (a proxy's page): retried."""

    def __init__(self, why: str) -> None:
        super().__init__(f"not a JSON:API answer ({why})")


def document(response: httpx.Response, check: Any) -> dict[str, Any]:
    """The answer's JSON:API document, once `check` finds nothing wrong with it. NaN,
    Infinity and integers beyond 64 bits are not JSON here: an answer holding them is not
    one (orjson refuses them, and reads a page of 1,000 events 3x as fast as the stdlib)."""
    kind = response.headers.get("Content-Type", "").split(";")[0].strip() or "no content type"
    read = getattr(check, "read", None)
    if read is not None:  # it reads the bytes itself (EventsCheck)
        got = read(check, response.content)
        if got == "":
            raise NotAnAnswer(f"{kind}, {len(response.content):,} bytes")
        if type(got) is str:
            raise NotAnAnswer(got)
        return got  # type: ignore[no-any-return]
    try:
        doc = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        raise NotAnAnswer(f"{kind}, {len(response.content):,} bytes") from None
    if not isinstance(doc, dict) or "data" not in doc:
        raise NotAnAnswer("no data")
    wrong = check(doc)
    if wrong is not None:
        raise NotAnAnswer(wrong)
    return doc


def listing(doc: dict[str, Any], kind: str, at_least: int = 0) -> str | None:
    data = doc["data"]
    if not isinstance(data, list) or len(data) < at_least:
        return f"data is not a list of {kind} objects"
    for item in data:
        if not isinstance(item, dict) or item.get("type") != kind or not item.get("id"):
            return f"an item of data is not a {kind}"
        if not isinstance(item.get("attributes", {}), dict):
            return f"a {kind}'s attributes are not an object"
    return None


def metrics_page(doc: dict[str, Any]) -> str | None:
    wrong = listing(doc, "metric")
    if wrong is None:
        for item in doc["data"]:
            integration = (item.get("attributes") or {}).get("integration")
            if integration is not None and not isinstance(integration, dict):
                return "a metric's integration is not an object"
    return wrong


# ---------------------------------------------------------------- aggregates


def _utc(text: Any) -> datetime | None:
    """An ISO time in UTC (no offset, or a zero one); None for anything else."""
    try:
        when = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is not None and when.utcoffset() != timedelta(0):
        return None
    return when.replace(tzinfo=None)


def aggregate_answer(
    doc: dict[str, Any], measurements: list[str], start: datetime, end: datetime
) -> str | None:
    """A metric-aggregate of months in [start, end) (naive UTC): each date once, inside the
    range, in UTC; one row per dimension value; counts finite non-negative whole numbers,
    sums finite."""
    data = doc["data"]
    if not isinstance(data, dict) or data.get("type") != "metric-aggregate":
        return "data is not a metric-aggregate"
    attrs = data.get("attributes")
    if not isinstance(attrs, dict):
        return "no attributes"
    dates, rows = attrs.get("dates"), attrs.get("data")
    if not isinstance(dates, list) or not isinstance(rows, list):
        return "attributes.dates or attributes.data is not a list"
    seen: set[datetime] = set()
    for text in dates:
        when = _utc(text)
        if when is None:
            return f"a date that is not an ISO 8601 time in UTC ({str(text)[:40]!r})"
        if not start <= when < end:
            return f"a date outside the range asked ({str(text)[:40]!r})"
        if when in seen:
            return f"a date listed twice ({str(text)[:40]!r})"
        seen.add(when)
    groups: set[tuple[str, ...]] = set()
    for row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("dimensions"), list):
            return "a row without dimensions"
        group = tuple(str(d) for d in row["dimensions"])
        if group in groups:
            return f"two rows for one dimension value ({', '.join(group)[:40]!r})"
        groups.add(group)
        values = row.get("measurements")
        if not isinstance(values, dict):
            return "a row without measurements"
        for name in measurements:
            wrong = _series(name, values.get(name), len(dates))
            if wrong is not None:
                return wrong
    return None


def _series(name: str, series: Any, length: int) -> str | None:
    if not isinstance(series, list) or len(series) != length:
        return f"{name} is not a list aligned with dates"
    for v in series:
        if type(v) is int and abs(v) > _MAX_SUM:  # before math: a 4,001-digit int overflows
            return f"{name} holds a value that is not a finite number"
        if type(v) not in (int, float) or not math.isfinite(v) or abs(v) > _MAX_SUM:
            return f"{name} holds a value that is not a finite number"
        if name == "count" and (v < 0 or v != int(v) or v > _MAX_COUNT):
            return "count holds a value that is not a whole number of events"
    return None


def month_rows(
    doc: dict[str, Any], values: bool
) -> list[tuple[str, list[Any], list[int], list[Decimal] | None]]:
    """(month 'YYYY-MM' per date, dimensions, counts, sums) of a checked aggregate: per row,
    (months, dims, counts, sums) with the months shared."""
    attrs = doc["data"]["attributes"]
    months = []
    for text in attrs["dates"]:
        when = _utc(text)
        assert when is not None  # checked
        months.append(f"{when.year:04d}-{when.month:02d}")
    out = []
    for row in attrs["data"]:
        measured = row["measurements"]
        counts = [int(v) for v in measured["count"]]
        sums = [Decimal(repr(float(v))) for v in measured["sum_value"]] if values else None
        out.append(("|".join(months), list(row["dimensions"]), counts, sums))
    return out


# ---------------------------------------------------------------- events


class HeldEvent(NamedTuple):
    """One stored event, as much of it as the per-order proof needs."""

    uuid: str
    order_id: str  # its OrderId property ('' when it has none), "<Store>:<OrderId>" with a store
    item: str  # its line item (model.item_key) for Ordered Product, else ''
    value: float | None  # its $value
    at: int  # its time, UNIX seconds


# what the proof compares of an event: (order id, line item, time, value; 0.0 for none), as
# Ledger.acked_keys gives the acknowledged ones (checkpoint.AckedKey)
HeldKey = tuple[str, str, int, float]


class HeldKeys:
    """Held events as the proof compares them, in the order read: each one's uuid (no event
    twice across pages) and its key (`HeldKey`), side by side; one tuple per event, compared
    as it is with the checkpoint's keys. `values` marks, by position, the events without a
    $value (the key's 0.0), so `events` gives back each HeldEvent exactly as read. A list
    handed out is never changed after: `clear` starts new ones."""

    __slots__ = ("keys", "uuids", "values")

    def __init__(self) -> None:
        self.uuids: list[str] = []
        self.keys: list[HeldKey] = []
        self.values: dict[int, None] = {}

    def __len__(self) -> int:
        return len(self.keys)

    def clear(self) -> None:
        self.uuids, self.keys, self.values = [], [], {}

    def add(self, event: HeldEvent) -> None:
        uid, order, item, value, at = event
        if value is None:
            self.values[len(self.keys)] = None
        self.uuids.append(uid)
        self.keys.append((order, item, at, 0.0 if value is None else value))

    def extend(self, other: HeldKeys) -> None:
        if other.values:
            n = len(self.keys)
            self.values.update({n + i: v for i, v in other.values.items()})
        self.uuids += other.uuids
        self.keys += other.keys

    def handed(self) -> HeldKeys:
        """The same events in another HeldKeys (the lists shared: nothing copied)."""
        out = HeldKeys()
        out.uuids, out.keys, out.values = self.uuids, self.keys, self.values
        return out

    def events(self) -> list[HeldEvent]:
        """Each event as a HeldEvent, as read."""
        values = self.values
        return [
            _new(HeldEvent, (u, k[0], k[1], None if values and i in values else k[3], k[2]))
            for i, (u, k) in enumerate(zip(self.uuids, self.keys, strict=True))
        ]


def _fill(into: list[HeldEvent] | HeldKeys, out: HeldKeys) -> None:
    """A page read (`out`) handed to its check's `into`, emptied before it was read."""
    if isinstance(into, HeldKeys):
        into.uuids, into.keys, into.values = out.uuids, out.keys, out.values
    else:
        into.extend(out.events())


def events_page(
    doc: dict[str, Any], metric_id: str, start: int, end: int, into: list[HeldEvent] | HeldKeys
) -> str | None:
    """A page of events of `metric_id` with start <= time < end (UNIX seconds), read into
    `into`; or what is wrong with it (a page at once: checked and read in one pass, as a
    million events are a thousand pages; only the fields the proof reads are looked at)."""
    data = doc["data"]
    if type(data) is not list:
        return "data is not a list of event objects"
    out = HeldKeys()
    for item in data:
        if type(item) is not dict or item.get("type") != "event":
            return "an item of data is not an event"
        attrs = item.get("attributes")
        props = attrs.get("event_properties") if type(attrs) is dict else None
        if type(props) is not dict:
            return "an event without event_properties"
        metric = item.get("relationships")
        metric = metric.get("metric") if type(metric) is dict else None
        metric = metric.get("data") if type(metric) is dict else None
        metric = metric.get("id") if type(metric) is dict else None
        held = _event(attrs.get("uuid") or item.get("id"), attrs.get("timestamp"),  # type: ignore[union-attr]
                      attrs.get("datetime"), metric, props.get("$value"), props.get("OrderId"),  # type: ignore[union-attr]
                      props.get(STORE), props.get("SKU"), props.get("ProductID"),
                      metric_id, start, end)  # fmt: skip
        if type(held) is str:
            return held
        out.add(held)  # type: ignore[arg-type]
    _fill(into, out)
    return None


def _event(
    uid: Any, at: Any, when: Any, metric: Any, value: Any, order: Any, store: Any, sku: Any,
    product: Any, metric_id: str, start: int, end: int,
) -> HeldEvent | str:  # fmt: skip
    """One event from the fields the proof reads, whichever way its page was decoded; or
    what is wrong with it."""
    if type(uid) is not str:
        return "an event without a uuid"
    if type(at) is not int:
        at = _when(when)
        if at is None:
            return "an event time that is not ISO 8601"
    if not start <= at < end:
        return "an event outside the window asked"
    if metric is not None and metric != metric_id:
        return f"an event of another metric ({str(metric)[:20]!r})"
    if value is not None:
        if type(value) is not float and type(value) is not int:
            return "an event whose $value is not a finite number"
        if not -_MAX_SUM <= value <= _MAX_SUM:
            return "an event whose $value is not a finite number"
        value = float(value)
    if order is not None:  # with its store, as the job keys it (two shops' order 1001)
        order = str(order) if store is None else order_key(str(store), str(order))
    key = "" if sku is None and product is None else item_key({"SKU": sku, "ProductID": product})
    return _new(HeldEvent, (uid, "" if order is None else order, key, value, at))


_new = tuple.__new__


class EventsCheck:
    """The check of a page of GET /api/events, reading its events into `into` (emptied
    first: a retried page is read afresh): a list of HeldEvent, or a HeldKeys (what the
    per-order proof compares, without a HeldEvent per event). Called with the page's
    document, as every check is; or, with msgspec, `read` from its bytes, decoding only the
    fields the proof reads (an event's links, its profile and its other properties are
    skipped, not built: half the time of a page). The same verdicts either way."""

    def __init__(
        self, metric_id: str, start: int, end: int, into: list[HeldEvent] | HeldKeys
    ) -> None:
        self.metric_id, self.start, self.end, self.into = metric_id, start, end, into
        self.read = _read_page if _PAGE is not None else None

    def __call__(self, doc: dict[str, Any]) -> str | None:
        self.into.clear()
        return events_page(doc, self.metric_id, self.start, self.end, self.into)


def _read_page(check: EventsCheck, content: bytes) -> dict[str, Any] | str:
    """A page decoded into structs (msgspec), checked and read into `check.into`: its
    links (the next page), or what is wrong with it."""
    check.into.clear()
    assert _PAGE is not None
    if not content.isascii():  # a field skipped is not checked: invalid UTF-8 anywhere is
        try:  # no JSON, as orjson says
            content.decode()
        except UnicodeDecodeError:
            return ""
    try:
        page = _PAGE.decode(content)
    except (msgspec.DecodeError, RecursionError):  # nested beyond orjson's 1,024 levels too
        return ""  # not JSON: `document` says what it is
    except msgspec.ValidationError as exc:
        return f"not an events page ({str(exc)[:80]})"
    out = HeldKeys()
    uid_of, key_of = out.uuids.append, out.keys.append
    metric_id, start, end = check.metric_id, check.start, check.end
    for item in page.data:
        attrs = item.attributes
        if item.type != "event":
            return "an item of data is not an event"
        props = None if attrs is None else attrs.event_properties
        if props is None:
            return "an event without event_properties"
        assert attrs is not None
        rels: Any = item.relationships
        rel: Any = rels.metric if type(rels) is _Rels else None
        data: Any = rel.data if type(rel) is _Rel else None
        metric = data.id if type(data) is _Data else None
        uid, at, value, order = attrs.uuid or item.id, attrs.timestamp, props.value, props.order
        if (type(uid) is str and type(at) is int and start <= at < end and metric == metric_id
                and type(value) is float and -_MAX_SUM <= value <= _MAX_SUM
                and type(order) is str and props.store is None):  # fmt: skip
            sku, product = props.sku, props.product  # the common event, as `_event` reads it
            if sku is None and product is None:
                line = ""
            else:  # model.item_key, without a dict
                line = f"{'' if sku is None else sku}\x1f{'' if product is None else product}"[:300]
            uid_of(uid)
            key_of((order, line, at, value))
            continue
        held = _event(uid, at, attrs.datetime, metric, value, order, props.store, props.sku,
                      props.product, metric_id, start, end)  # fmt: skip
        if type(held) is str:
            return held
        out.add(held)  # type: ignore[arg-type]
    _fill(check.into, out)
    return {"data": None, "links": page.links}


try:  # structs of a page are trees, never cycles: the collector need not track them
    import msgspec
except ImportError:  # installed before it was a dependency: pages are read as documents
    _PAGE = None
else:
    _Other = list[Any] | str | int | float | bool | None  # what the dicts' way also ignores

    class _Data(msgspec.Struct, gc=False):
        id: Any = None

    class _Rel(msgspec.Struct, gc=False):
        data: _Data | _Other = None

    class _Rels(msgspec.Struct, gc=False):
        metric: _Rel | _Other = None

    class _Props(msgspec.Struct, gc=False):
        order: Any = msgspec.field(name="OrderId", default=None)
        store: Any = msgspec.field(name=STORE, default=None)
        sku: Any = msgspec.field(name="SKU", default=None)
        product: Any = msgspec.field(name="ProductID", default=None)
        value: Any = msgspec.field(name="$value", default=None)

    class _Attrs(msgspec.Struct, gc=False):
        event_properties: _Props | None = None
        uuid: Any = None
        timestamp: Any = None
        datetime: Any = None

    class _Item(msgspec.Struct, gc=False):
        type: Any = None
        id: Any = None
        attributes: _Attrs | None = None
        relationships: _Rels | _Other = None

    class _Page(msgspec.Struct, gc=False):
        data: list[_Item]
        links: Any = None

    _PAGE = msgspec.json.Decoder(_Page)


def _when(text: Any) -> int | None:
    try:
        when = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return int(when.timestamp())
