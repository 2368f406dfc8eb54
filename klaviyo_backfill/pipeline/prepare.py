"""Prepare one order: convert, map and encode it, with nothing but the order itself.

Pure, so it can be done in any process and in any order (parallel.py prepares large CSV
exports on every core); what depends on the orders before it (duplicates, the checkpoint,
--limit, the summary) is settled in file order by orders.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from ..errors import FieldError
from ..mapping.convert import Converter
from ..mapping.encode import Encoder, Part
from ..mapping.events import AttributeRule, identity_of, map_order
from ..model import Event, Filters, Order, Position, RawOrder, order_key
from ..state.account_ledger import OrderFacts
from .summary import Tally

__all__ = ["Held", "Prepared", "in_window", "position", "prepare", "raw_id"]


@dataclass(slots=True)
class Prepared:
    """One order after the work that needs nothing but the order: convert, map, encode.

    What depends on the orders before it is settled by `orders._Mapper.settle`.
    """

    source: str
    line: int
    at: Position
    after: Position
    raw_id: str | None  # the id as read (with its store: model.order_key): duplicates' key
    key: str = ""  # the order's key once converted (its id, or "<store>:<id>")
    rejected: tuple[str, str, str] | None = None  # field, reason, message
    outside: bool = False  # outside --since/--until
    lines: int = 0
    warnings: list[str] = field(default_factory=list)
    tally: Tally | None = None
    events: list[Event] = field(default_factory=list)  # empty when prepared elsewhere
    parts: list[Part] = field(default_factory=list)
    held: Held | None = None  # what the account held of it already (a send: account_ledger)
    stamp: tuple[str, float, str] | None = None  # (profile, time, id): it carries attributes


@dataclass(slots=True)
class Held:
    """An order as the account's ledger sees it: the digest it is skipped by next time, what
    the ledger keeps of it, and how many of its events the account held already."""

    digest: bytes
    facts: OrderFacts
    events: int = 0
    # those events themselves, where the order is sent in part (a run stopped part-way
    # through it, a new event of an old order): the job's checkpoint counts them as
    # acknowledged with the rest, so `verify` expects them, never sees them as extra
    already: tuple[Event, ...] = ()


def raw_id(raw: RawOrder) -> str | None:
    """The order's key as read: its id, with its store where one is named (`--store`)."""
    value = raw.get("id")
    found = (None if value is None else str(value).strip()) or None
    store = raw.fields.get("store")
    return order_key(str(store), found) if store and found else found


def prepare(
    raw: RawOrder,
    converter: Converter,
    filters: Filters,
    index: int,
    encoder: Encoder | None,
    rule: AttributeRule | None = None,
) -> Prepared:
    """Convert, map and (given an encoder) encode one order, its events' profile with its
    attributes where `rule` says so (None: always); a FieldError becomes `rejected`."""
    at, after = position(index, raw)
    prepared = Prepared(raw.source, raw.line, at, after, raw_id(raw))
    try:
        order = converter.order(raw)
        if not in_window(order.created_at, filters):
            prepared.outside = True
            return prepared
        events = _mapped(order, rule, prepared)
    except FieldError as exc:
        prepared.rejected = (exc.field, exc.reason, str(exc))
        return prepared
    prepared.key, prepared.lines, prepared.warnings = order.key, len(order.lines), order.warnings
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


def _mapped(order: Order, rule: AttributeRule | None, prepared: Prepared) -> list[Event]:
    """The order's events, their profile with its attributes where `rule` says so."""
    if rule is None:
        return map_order(order)
    who = identity_of(order)
    carries = rule(who, order)
    if carries:
        prepared.stamp = (who, order.created_at.timestamp(), order.key)
    return map_order(order, carries)


def in_window(when: datetime, filters: Filters) -> bool:
    if filters.since is not None and when < filters.since:
        return False
    return not (filters.until is not None and when >= filters.until)
