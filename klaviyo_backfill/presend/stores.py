"""Stores: a send with `--store` to an account that holds orders sent without one.

An order sent without a store is keyed by its id alone, and so are its events' unique ids.
The same order sent again with `--store` would get new unique ids ("<store>:<id>"): Klaviyo
would hold it twice, its revenue counted twice. So before a send that names a store, to an
account whose ledger holds orders sent without one, each order of the exports is looked up
by its bare id: one the account holds for the same profile at the same creation time is the
same order, sent before without a store, and the send is refused (nothing sent). That shop
goes on being sent without `--store`; `--store` is for the other shops. Another shop's order
with the same number (WooCommerce numbers start at 1 in every shop) has another customer or
time: it is no reason to refuse.

One reading of the exports, only then (the account holds orders sent without a store, and
this send names one): an account whose every send named its store never pays for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from typing import TYPE_CHECKING

from ..errors import FieldError, UsageError
from ..inputs.export import read_orders
from ..mapping.convert import Converter
from ..mapping.events import identity_of
from ..model import RawOrder
from ..pipeline.prepare import in_window
from ..state.account_ledger import AccountLedger

if TYPE_CHECKING:
    from ..pipeline.job import Job

__all__ = ["refuse_storeless", "storeless_held"]

_BATCH = 500  # orders looked up in the ledger at once


def _bare_id(raw: RawOrder) -> str | None:
    value = raw.get("id")
    return (None if value is None else str(value).strip()) or None


def storeless_held(job: Job, ledger: AccountLedger, sample: int = 5) -> tuple[int, list[str]]:
    """How many orders of the job that name a store the account holds as sent without one
    (the same id, profile and creation time), and the ids of the first few."""
    count, ids = 0, list[str]()
    for order_id in _same_orders(job, ledger):
        count += 1
        if len(ids) < sample:
            ids.append(order_id)
    return count, ids


def _same_orders(job: Job, ledger: AccountLedger) -> Iterator[str]:
    for source in job.inputs:
        converter = Converter(source.layout, job.settings)
        raws = (raw for raw in read_orders(source) if raw.fields.get("store"))
        while batch := list(islice(raws, _BATCH)):
            ids = [order_id for raw in batch if (order_id := _bare_id(raw)) is not None]
            held = ledger.held_orders(ids)
            for raw in batch:
                known = held.get(_bare_id(raw) or "")
                if known is None:
                    continue
                try:
                    order = converter.order(raw, who_and_when=True)
                    who = identity_of(order)
                except FieldError:
                    continue
                at = order.created_at.timestamp()
                if (
                    in_window(order.created_at, job.filters)
                    and known.who == who
                    and (known.at is None or known.at == at)
                ):
                    yield order.id


def refuse_storeless(job: Job, ledger: AccountLedger) -> None:
    """Refuse a send that names a store (UsageError, exit 2) when the account holds any of
    its orders as sent without one: sent again, they would be held twice."""
    if job.store is None and not any("store" in s.layout.order for s in job.inputs):
        return
    if not ledger.holds_storeless():
        return
    count, ids = storeless_held(job, ledger)
    if count == 0:
        return
    named = f"--store {job.store}" if job.store else "a store (the layout's store field)"
    raise UsageError(
        f"this account holds {count:,} of these orders (e.g. {', '.join(ids)}) as sent "
        f"without a store: sent with {named} they would get new unique ids, and Klaviyo "
        "would hold each twice",
        "Send this shop without --store, as before (the account's ledger then skips what "
        "it holds); name a store with --store only for the other shops sent to this account.",
    )
