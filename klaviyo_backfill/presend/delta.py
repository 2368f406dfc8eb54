"""What of an export is new for the account it goes to (a send, unless --resend).

Stage one asks this of every order it reads:

1. `rows` (the CSV reader asks it) and `unchanged(raw)` (JSON): the order as read is the one
   the account's ledger holds (the same digest of its rows or fields, under the job's payload
   settings): skip it unread (CSV: not even extracted from its rows), unconverted.
2. `sift(prepared)`: otherwise, after mapping, keep only the events the account does not
   hold. Where the order changed in a way Klaviyo cannot take (it keeps the first event per
   profile, metric and unique_id, and Cancelled/Refunded reuse the order's id), send nothing
   for the change and say so: an order now under another profile, or with another total, is
   not sent at all; a refund other than the one sent is withheld, the rest goes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from decimal import Decimal
from itertools import islice
from pathlib import Path

import orjson

from ..model import PLACED, REFUNDED, Event, RawOrder, identity
from ..pipeline.prepare import Held, Prepared, raw_id
from ..pipeline.summary import Tally
from ..state.account_ledger import AccountLedger, HeldOrder, OrderFacts, event_key

__all__ = ["KEEPS_FIRST", "Delta", "Elsewhere", "facts_of"]

KEEPS_FIRST = "not sent: Klaviyo keeps the first event for this order"


class Delta:
    BATCH = 500  # orders looked up in the ledger at once
    extract = False  # the CSV reader extracts an order held unchanged too (survey.py: months)

    def __init__(self, ledger: AccountLedger, salt: bytes) -> None:
        self.ledger = ledger
        self.salt = salt  # the job's payload settings: another zone or layout maps otherwise
        self._keyed = hashlib.blake2b(digest_size=12, key=salt[:64])
        # the account held no event when the run began (it records only what this run sends,
        # which its export never meets again: duplicates are skipped by id)
        self.empty = not ledger.holds_anything()
        self.asked: set[str] = set()  # the ids of the batch looked up last
        self.found: dict[str, HeldOrder] = {}  # what the ledger held of them

    def __getstate__(self) -> dict[str, object]:
        """For a worker process (survey.py): the ledger's path, reopened there read-only."""
        return {"path": self.ledger.path, "salt": self.salt, "empty": self.empty,
                "extract": self.extract}  # fmt: skip

    def __setstate__(self, state: dict[str, object]) -> None:
        path, salt = state["path"], state["salt"]
        assert isinstance(path, Path) and isinstance(salt, bytes)
        self.__init__(AccountLedger(path, read_only=True), salt)  # type: ignore[misc]
        self.empty, self.extract = bool(state["empty"]), bool(state["extract"])
        # a worker reads a batch of orders ahead of what it asks about, past its piece's end
        # too: small batches keep that (read for nothing) to a few percent of a piece
        self.BATCH = 32

    def batched(self, raws: Iterator[RawOrder]) -> Iterator[RawOrder]:
        """JSON orders as read, with the ledger asked about each batch of them in one query
        (CSV orders are asked about in the reader, as rows: `rows`)."""
        if self.empty:
            yield from raws
            return
        while batch := list(islice(raws, self.BATCH)):
            ids = [order_id for raw in batch if (order_id := raw_id(raw)) is not None]
            self.asked, self.found = set(ids), self.ledger.held_orders(ids)
            yield from batch

    def rows(
        self, orders: list[tuple[str | None, list[list[str]]]]
    ) -> list[tuple[bytes, HeldOrder | None]]:
        """For the CSV reader (read.HeldRows): each order's digest of its rows as read, and
        what the account holds of it where it holds it unchanged; one query a batch."""
        digests = [self._hash("\x1e".join(map("\x1f".join, rows)).encode()) for _, rows in orders]
        if self.empty:  # a first send to this account: nothing to look up
            return [(digest, None) for digest in digests]
        found = self.ledger.held_orders([oid for oid, _ in orders if oid is not None])
        verdicts: list[tuple[bytes, HeldOrder | None]] = []
        for (oid, _), digest in zip(orders, digests, strict=True):
            held = found.get(oid) if oid is not None else None
            verdicts.append((digest, held if held is not None and held.digest == digest else None))
        return verdicts

    def _hash(self, data: bytes) -> bytes:
        hasher = self._keyed.copy()
        hasher.update(data)
        return hasher.digest()

    def digest(self, raw: RawOrder) -> bytes:
        """The order exactly as read (every field, line and refund), under the job's salt:
        a CSV order's rows (`rows`), or the fields a JSON order was read into."""
        if raw.digest is not None:
            return raw.digest
        return self._hash(
            orjson.dumps((raw.fields, raw.lines, raw.refunds, raw.zones), default=str)
        )

    def unchanged(self, raw: RawOrder) -> tuple[bytes, HeldOrder | None]:
        """The order's digest, and what the account holds of it when the order is exactly
        as it was sent (None: it must be mapped)."""
        digest = self.digest(raw)
        order_id = raw_id(raw)
        if order_id is None or self.empty:
            return digest, None
        if order_id in self.asked:
            held = self.found.get(order_id)
        else:
            held = self.ledger.held_order(order_id)
        if held is None or held.digest != digest:
            return digest, None
        return digest, held

    def sift(self, prepared: Prepared, digest: bytes) -> list[str]:
        """Drop the events the account holds; mark a change it cannot take. Returns what was
        withheld (each a failure line's detail)."""
        events = prepared.events
        if prepared.rejected is not None or prepared.outside or not events:
            return []
        facts = facts_of(events)
        if self.empty:  # nothing held: every event goes
            prepared.held = Held(digest, facts, 0)
            return []
        known = self.ledger.facts(prepared.key)
        change = _changed(known, facts) if known is not None else None
        if change is not None:
            prepared.rejected = ("order", "changed since it was sent", f"{change}: {KEEPS_FIRST}")
            prepared.events, prepared.parts = [], []
            return []
        keys = [event_key(identity(e.profile), e.metric, e.unique_id) for e in events]
        held = self.ledger.held(keys)
        withheld = _refund_changed(known, events, keys, held)
        fresh = [e for e, k in zip(events, keys, strict=True) if k not in held]
        fresh = [e for e in fresh if not (withheld and e.metric == REFUNDED)]
        already = tuple(e for e, k in zip(events, keys, strict=True) if k in held)
        prepared.held = Held(digest, facts, len(events) - len(fresh), already)
        prepared.events = fresh
        if fresh:
            prepared.tally = Tally.of(fresh)
        return withheld


class Elsewhere:
    """The orders another API sender holds (the shop's own integration): those of `ids` (the
    OrderIds the check before the job found in the API's Placed Order, presend/overlap.py)
    whose Placed Order, as this tool makes it, the account's ledger does not hold. The one
    rule for "this tool's own", an order sent in part (a refused line item) included: the
    ledger keeps each event it acknowledged, and Klaviyo's listing has no unique_id."""

    def __init__(self, ids: frozenset[str], ledger: AccountLedger | None) -> None:
        self.ids, self.ledger = ids, ledger

    def holds(self, prepared: Prepared) -> bool:
        """Whether another API sender holds this order: skip it."""
        if prepared.key not in self.ids:
            return False
        return not self.ours(prepared.events, prepared.held.already if prepared.held else ())

    def ours(self, events: Sequence[Event], already: Sequence[Event] = ()) -> bool:
        """Whether the account holds this order's Placed Order as this tool sent it (its
        `events` as mapped; `already`: those the account's ledger holds, sifted out)."""
        if any(e.metric == PLACED for e in already):
            return True
        placed = next((e for e in events if e.metric == PLACED), None)
        if placed is None or self.ledger is None:
            return False
        return bool(self.ledger.held([event_key(identity(placed.profile), PLACED,
                                                placed.unique_id)]))  # fmt: skip


def _value(events: list[Event], metric: str) -> Decimal | None:
    return next((e.value for e in events if e.metric == metric), None)


def facts_of(events: list[Event]) -> OrderFacts:
    placed = events[0]
    return OrderFacts(
        identity(placed.profile), _value(events, PLACED), _value(events, REFUNDED),
        placed.currency, len(events), placed.time.timestamp(),
    )  # fmt: skip


def _changed(known: OrderFacts, now: OrderFacts) -> str | None:
    if known.who != now.who:
        return f"sent for profile {known.who}, now {now.who}"
    if known.total is not None and now.total is not None and known.total != now.total:
        return f"total {known.total} {known.currency}, now {now.total} {now.currency}"
    return None


def _refund_changed(
    known: OrderFacts | None, events: list[Event], keys: list[bytes], held: set[bytes]
) -> list[str]:
    """A Refunded Order the account holds with another amount: Klaviyo keeps the first."""
    if known is None or known.refunded is None:
        return []
    for event, key in zip(events, keys, strict=True):
        if event.metric == REFUNDED and key in held and event.value != known.refunded:
            return [f"refund {known.refunded}, now {event.value} {event.currency}: {KEEPS_FIRST}"]
    return []
