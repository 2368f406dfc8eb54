"""Which orders still wait for Klaviyo: an order is recorded in the checkpoint once every
one of its events is settled (taken, or refused), never before.

With each order it records the events Klaviyo acknowledged, per metric, UTC month and
currency (`checkpoint.Total`), in the transaction that records the order: `verify` compares
those with what Klaviyo holds.

It also keeps the resume point: the position of the first order not yet settled (or, with
none pending, the position after the last order handed to the encoder), committed with each
acknowledgement so that a resumed run can seek straight to it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace

from ..klaviyo.sender import SendStats
from ..model import Event, Position, Rejection, identity, item_key, utc_month
from ..presend.delta import facts_of
from ..state.account_ledger import AccountLedger, OrderFacts, event_key, journal
from ..state.checkpoint import Acked, Landmarks, Ledger, Total, TotalKey
from ..state.failures import KLAVIYO_REJECTED, Failures
from .orders import MappedOrder
from .prepare import Held

__all__ = ["Tracker"]

log = logging.getLogger("klaviyo_backfill.checkpoint")


@dataclass(slots=True)
class _Pending:
    """An order handed to the sender whose events are not all settled yet."""

    left: int  # events not yet settled
    source: str
    line: int
    at: Position  # where a resumed run would pick it up
    rejected: bool = False  # Klaviyo refused one of its events
    held: Held | None = None  # for the account's ledger: digest, facts, events held before
    stamp: tuple[str, float, str] | None = None  # it carries its profile's attributes
    sent: int = 0  # events Klaviyo acknowledged
    # its events Klaviyo acknowledged so far, per metric, UTC month and currency
    totals: dict[TotalKey, Total] = field(default_factory=dict)
    acked: list[Acked] = field(default_factory=list)  # the same events, one by one


class Tracker:
    """The sender's `Settler`: settles events into orders, and orders into the checkpoint."""

    def __init__(
        self,
        ledger: Ledger | None,
        failures: Failures,
        stats: SendStats,
        landmarks: Landmarks | None = None,  # recorded with each resume point
        account: AccountLedger | None = None,  # what the account acknowledged, across exports
    ) -> None:
        self.ledger, self.failures, self.stats = ledger, failures, stats
        self.landmarks = landmarks
        self.account = account
        self.lock = threading.Lock()
        self.pending: dict[str, _Pending] = {}  # in the order they were handed over
        self.frontier: Position | None = None
        self.inputs_rejected: list[tuple[Rejection, Position | None]] = []
        # (order id, detail) of Klaviyo's rejections in the failures file already: a resumed
        # run's earlier ones, so an order resent after a kill is not listed twice
        self.reported: set[tuple[str | None, str]] = set()

    def register(self, mapped: MappedOrder) -> None:
        with self.lock:
            entry = self.pending.get(mapped.key)
            if entry is None:
                entry = self.pending[mapped.key] = _Pending(
                    0, mapped.source, mapped.line, mapped.at
                )
            entry.left += len(mapped.events)
            if self.account is not None and mapped.events:
                entry.held = mapped.held or Held(b"", facts_of(mapped.events))
                entry.stamp = mapped.stamp
                for event in entry.held.already:  # acknowledged before: counted with the rest
                    self._count(event, entry, time.time())
            self.frontier = mapped.after

    def input_rejected(self, rejection: Rejection, at: Position) -> None:
        """An order the export itself could not give: kept for a resumed run's failures file."""
        with self.lock:
            self.inputs_rejected.append((rejection, at))

    def _watermark(self) -> Position | None:
        for entry in self.pending.values():
            return entry.at  # the first pending order is the earliest
        return self.frontier

    def settle(self, sent: list[Event], rejected: list[tuple[Event, str]]) -> None:
        done: list[tuple[str, bool]] = []
        bad: list[tuple[Rejection, Position | None]] = []
        whole: list[tuple[str, bytes | None, OrderFacts]] = []  # for the account's ledger
        stamps: list[tuple[str, float, str]] = []  # profiles whose attributes were taken
        totals: dict[str, dict[TotalKey, Total]] = {}
        acked: dict[str, list[Acked]] = {}
        now = time.time()
        with self.lock:
            for event, reason in rejected:
                bad.append((self._klaviyo_rejected(event, reason), None))
            for event in sent:
                self.stats.events_sent[event.metric] += 1
                entry = self.pending.get(event.order_id)
                if entry is not None:
                    entry.sent += 1
                    self._count(event, entry, now)
            for event in [*sent, *(e for e, _ in rejected)]:
                entry = self.pending.get(event.order_id)
                if entry is None:
                    continue
                entry.left -= 1
                if entry.left <= 0:
                    del self.pending[event.order_id]
                    done.append((event.order_id, entry.rejected))
                    totals[event.order_id] = entry.totals
                    acked[event.order_id] = entry.acked
                    if entry.rejected:
                        self.stats.orders_with_rejections += 1
                    else:
                        self.stats.orders_sent += 1
                        whole.extend(_whole(event.order_id, entry))
                        if entry.stamp is not None:
                            stamps.append(entry.stamp)
            bad.extend(self.inputs_rejected)
            self.inputs_rejected = []
            watermark = self._watermark()
        keys: list[bytes] = []
        if self.account is not None and (sent or whole):
            keys = [event_key(identity(e.profile), e.metric, e.unique_id) for e in sent]
        if self.ledger is not None and (done or bad):
            # the checkpoint first, with what the account's ledger records next: a run that
            # stops between the two loses neither (events of orders not settled yet need no
            # journal: the checkpoint does not hold them, a resumed run sends them again)
            written = journal(keys, whole, stamps) if keys or whole else None
            mark = self.landmarks.at(watermark) if self.landmarks and watermark else ""
            self.ledger.record(done, bad, watermark, mark, totals, acked, written)
            log.debug("checkpoint: %d orders done, %d rejections, resume point %s",
                      len(done), len(bad), watermark)  # fmt: skip
        if self.account is not None and (keys or whole):
            self.account.record(keys, whole, stamps)

    @staticmethod
    def _count(event: Event, entry: _Pending, now: float) -> None:
        """An acknowledged event of the order, in its totals and its events one by one."""
        key = (event.metric, utc_month(event.time), event.currency or "")
        entry.totals.setdefault(key, Total()).add(event.value, now)
        entry.acked.append(_acked(event, entry))

    def flush(self) -> None:
        """Commit what is settled but not yet recorded (input rejections at the end of a run)."""
        self.settle([], [])

    def _klaviyo_rejected(self, event: Event, reason: str) -> Rejection:
        entry = self.pending.get(event.order_id)
        if entry:
            entry.rejected = True
        source, line = (entry.source, entry.line) if entry else ("", None)
        rejection = Rejection(source, line, event.order_id, KLAVIYO_REJECTED,
                              f"{event.metric} {event.unique_id}: {reason}")  # fmt: skip
        if (rejection.order_id, rejection.detail) not in self.reported:
            self.reported.add((rejection.order_id, rejection.detail))
            self.failures.write(rejection)
        self.stats.events_rejected += 1
        self.stats.rejected[reason[:80]] += 1
        return rejection


def _acked(event: Event, entry: _Pending) -> Acked:
    """An acknowledged event as the checkpoint keeps it, for the per-order proof."""
    value = None if event.value is None else str(event.value)
    return (event.metric, int(event.time.timestamp()), event.order_id, event.unique_id,
            item_key(event.properties), value, event.currency or "", entry.source,
            entry.line)  # fmt: skip


def _whole(order_id: str, entry: _Pending) -> list[tuple[str, bytes | None, OrderFacts]]:
    """An order all of whose events the account now holds: its digest skips it next time."""
    if entry.held is None:
        return []
    held = entry.held
    facts = replace(held.facts, events=held.events + entry.sent)
    return [(order_id, held.digest or None, facts)]
