"""Encode events as the exact request bodies of each endpoint.

    bulk     POST /api/event-bulk-create-jobs   <= 1,000 events and 5 MB, grouped by profile
    single   POST /api/events                   one event
    legacy   GET  /api/track?data=<base64>      the retired v1 Track API payload of the guide

Money is a Decimal up to here and becomes a JSON number; times become ISO 8601 in UTC
(legacy: UNIX seconds). Each event's JSON is built once; a bulk body joins those bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from itertools import repeat
from typing import Any

import orjson

from ..model import Event, identity

__all__ = [
    "BULK_MAX_BYTES",
    "BULK_MAX_EVENTS",
    "BulkEncoder",
    "Encoder",
    "LegacyEncoder",
    "Part",
    "Request",
    "SingleEncoder",
    "dumps",
    "event_attributes",
    "legacy_payload",
]

BULK_MAX_EVENTS = 1000
BULK_MAX_BYTES = 5 * 1000 * 1000 - 64 * 1024  # Klaviyo's 5 MB, read as decimal, with room


def _default(value: Decimal) -> float:
    """orjson calls this for what it cannot encode: money, which becomes a JSON number."""
    return float(value)


def dumps(value: Any) -> bytes:
    """Compact JSON, Decimals as numbers, non-ASCII kept as UTF-8 (orjson: 5x the stdlib)."""
    return orjson.dumps(value, default=_default)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


class _Times:
    """ISO times of one order's events, which mostly share one datetime object."""

    __slots__ = ("last", "text")

    def __init__(self) -> None:
        self.last: datetime | None = None
        self.text = ""

    def __call__(self, moment: datetime) -> str:
        if moment is not self.last:
            self.last, self.text = moment, _iso(moment)
        return self.text


@lru_cache(maxsize=64)
def _metric(name: str) -> dict[str, Any]:
    return {"data": {"type": "metric", "attributes": {"name": name}}}


def event_attributes(
    event: Event, backfill: bool, iso: Callable[[datetime], str] = _iso
) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "properties": event.properties,
        "time": iso(event.time),
        "unique_id": event.unique_id,
        "metric": _metric(event.metric),
    }
    if event.value is not None:
        attributes["value"] = float(event.value)  # as `_default` would, without its call
        attributes["value_currency"] = event.currency
    if backfill:
        attributes["backfill"] = True
    return attributes


def _profile(attributes: dict[str, Any]) -> dict[str, Any]:
    return {"data": {"type": "profile", "attributes": attributes}}


@dataclass(slots=True)
class Request:
    """One request: its body exactly as sent, and the events it carries."""

    endpoint: str
    body: bytes
    events: list[Event]
    entries: list[list[Event]] = field(default_factory=list)  # bulk: events per profile entry

    @property
    def size(self) -> int:
        return len(self.body)


@dataclass(slots=True)
class Part:
    """A piece of a request, encoded once: a bulk profile entry, or a whole single body.

    Its events' keys are (profile, metric, unique_id): two parts that share one may not go in
    the same request. They are kept as plain strings and tuples (cheap to build, and to send
    between processes). `events` is empty when the part was encoded in another process (a dry
    run on several cores), which needs only the bytes.
    """

    body: bytes
    who: str  # the profile its events share
    metrics: tuple[str, ...]
    unique_ids: tuple[str, ...]
    events: list[Event]

    @classmethod
    def of(cls, body: bytes, events: list[Event]) -> Part:
        metrics = tuple(e.metric for e in events)
        return cls(body, _who(events[0]), metrics, tuple(e.unique_id for e in events), events)

    @property
    def count(self) -> int:
        return len(self.metrics)

    def keys(self) -> tuple[tuple[str, str, str], ...]:
        return tuple(zip(repeat(self.who), self.metrics, self.unique_ids))


class Encoder:
    endpoint = ""
    max_events = 1  # events one request carries at most

    def __init__(self, backfill: bool = True, public_key: str | None = None) -> None:
        self.backfill = backfill
        self.public_key = public_key

    def requests(self, orders: Iterable[list[Event]]) -> Iterator[Request]:
        """Each order's events, encoded and gathered into requests."""
        return self.assemble(self.parts(events) for events in orders)

    def parts(self, events: list[Event]) -> list[Part]:
        """An order's events, encoded (the per-order half of `requests`)."""
        raise NotImplementedError

    def assemble(self, orders: Iterable[list[Part]]) -> Iterator[Request]:
        """Requests from each order's encoded parts, in order."""
        raise NotImplementedError

    def rebuild(self, entries: list[list[Event]]) -> Request:
        """A request for these events again (after some were isolated out of it)."""
        raise NotImplementedError


class SingleEncoder(Encoder):
    endpoint = "single"

    def body(self, event: Event) -> bytes:
        attributes = event_attributes(event, self.backfill)
        attributes["profile"] = _profile(event.profile)
        return dumps({"data": {"type": "event", "attributes": attributes}})

    def parts(self, events: list[Event]) -> list[Part]:
        return [Part.of(self.body(e), [e]) for e in events]

    def assemble(self, orders: Iterable[list[Part]]) -> Iterator[Request]:
        for parts in orders:
            for part in parts:
                yield Request(self.endpoint, part.body, part.events, [part.events])

    def rebuild(self, entries: list[list[Event]]) -> Request:
        event = entries[0][0]
        return Request(self.endpoint, self.body(event), [event], [[event]])


def legacy_payload(event: Event, token: str) -> dict[str, Any]:
    """The guide's Track API payload: $-prefixed customer properties, UNIX time."""
    profile = event.profile
    customer: dict[str, Any] = {}
    for key, legacy in (
        ("email", "$email"),
        ("phone_number", "$phone_number"),
        ("external_id", "$id"),
        ("first_name", "$first_name"),
        ("last_name", "$last_name"),
    ):
        if key in profile:
            customer[legacy] = profile[key]
    for key, value in profile.get("location", {}).items():
        customer[f"${key}"] = value
    properties: dict[str, Any] = {"$event_id": event.unique_id}
    if event.value is not None:
        properties["$value"] = event.value
    properties.update(event.properties)
    return {
        "token": token,
        "event": event.metric,
        "customer_properties": customer,
        "properties": properties,
        "time": int(event.time.timestamp()),
    }


class LegacyEncoder(SingleEncoder):
    endpoint = "legacy"

    def body(self, event: Event) -> bytes:
        return dumps(legacy_payload(event, self.public_key or "PUBLIC_API_KEY"))


class BulkEncoder(Encoder):
    endpoint = "bulk"
    max_events = BULK_MAX_EVENTS
    _HEAD = b'{"data":{"type":"event-bulk-create-job","attributes":{"events-bulk-create":{"data":['
    _TAIL = b"]}}}}"

    def entry(self, events: list[Event]) -> bytes:
        iso, backfill = _Times(), self.backfill
        data = [{"type": "event", "attributes": event_attributes(e, backfill, iso)} for e in events]
        return dumps(
            {
                "type": "event-bulk-create",
                "attributes": {"profile": _profile(events[0].profile), "events": {"data": data}},
            }
        )

    def parts(self, events: list[Event]) -> list[Part]:
        """An order's events as profile entries that each fit in one body."""
        parts = []
        for start in range(0, len(events), BULK_MAX_EVENTS):
            for chunk, body in self._fit(events[start : start + BULK_MAX_EVENTS]):
                parts.append(Part.of(body, chunk))
        return parts

    def _fit(self, part: list[Event]) -> Iterator[tuple[list[Event], bytes]]:
        encoded = self.entry(part)
        if len(encoded) + len(self._HEAD) + len(self._TAIL) <= BULK_MAX_BYTES or len(part) == 1:
            yield part, encoded
            return
        half = len(part) // 2
        yield from self._fit(part[:half])
        yield from self._fit(part[half:])

    def _join(self, entries: list[list[Event]], encoded: list[bytes]) -> Request:
        body = self._HEAD + b",".join(encoded) + self._TAIL
        events = [e for entry in entries for e in entry]
        return Request(self.endpoint, body, events, entries)

    def assemble(self, orders: Iterable[list[Part]]) -> Iterator[Request]:
        entries: list[list[Event]] = []
        encoded: list[bytes] = []
        count = size = 0
        seen: set[tuple[str, str, str]] = set()
        room = BULK_MAX_BYTES - len(self._HEAD) - len(self._TAIL)
        for parts in orders:
            for part in parts:
                keys = part.keys()
                full = count + part.count > BULK_MAX_EVENTS or size + len(part.body) + 1 > room
                if encoded and (full or not seen.isdisjoint(keys)):
                    yield self._join(entries, encoded)
                    entries, encoded, count, size = [], [], 0, 0
                    seen = set()
                entries.append(part.events)
                encoded.append(part.body)
                count += part.count
                size += len(part.body) + 1
                seen.update(keys)
        if encoded:
            yield self._join(entries, encoded)

    def rebuild(self, entries: list[list[Event]]) -> Request:
        return self._join(entries, [self.entry(entry) for entry in entries])


def _who(event: Event) -> str:
    return identity(event.profile)
