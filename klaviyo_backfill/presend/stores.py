"""Stores: a send whose orders the account holds under another store, or under none.

An order's events are keyed by its store and id (model.order_key): "1001" sent without a
store, "eu:1001" with `--store eu`. The same order sent again under another store, or
without the one it was sent with (`--store` forgotten next month), would get new unique ids:
Klaviyo would hold it twice, its revenue counted twice. So before a send, where the account's
ledger knows stores other than this send's (or orders sent without one), each order of the
exports is looked up under each of them: one the account holds for the same profile at the
same creation time is the same order, and the send is refused (nothing sent), naming the
store it was sent under. Another shop's order with the same number (WooCommerce numbers
start at 1 in every shop) has another customer or time: it is no reason to refuse.

One reading of the exports, only then: an account whose sends all name the same stores as
before (or none, always) never pays for it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from itertools import islice
from typing import TYPE_CHECKING

from ..errors import FieldError, UsageError
from ..inputs.export import read_orders
from ..inputs.values import store_problem
from ..mapping.convert import Converter
from ..mapping.events import identity_of
from ..model import RawOrder, order_key
from ..pipeline.prepare import in_window
from ..state.account_ledger import AccountLedger

if TYPE_CHECKING:
    from ..pipeline.job import Job

__all__ = ["held_elsewhere", "refuse_held_elsewhere", "rows_name_stores"]

_BATCH = 500  # orders looked up in the ledger at once


def _bare_id(raw: RawOrder) -> str | None:
    value = raw.get("id")
    return (None if value is None else str(value).strip()) or None


def rows_name_stores(job: Job) -> bool:
    """Whether a layout of the job names a `store` column (its rows may name any store)."""
    return any("store" in source.layout.order for source in job.inputs)


def held_elsewhere(
    job: Job,
    ledger: AccountLedger,
    stores: set[str],
    sample: int = 5,
    named: set[str] | None = None,
) -> tuple[Counter[str], list[str]]:
    """How many orders of the job the account holds as sent under another of these `stores`
    ('': without a store), per store, with the ids of the first few; the stores the orders
    name are added to `named`, given a set."""
    found: Counter[str] = Counter()
    ids: list[str] = []
    for store, order_id in _same_orders(job, ledger, stores, set() if named is None else named):
        found[store] += 1
        if len(ids) < sample:
            ids.append(order_id)
    return found, ids


def _same_orders(
    job: Job, ledger: AccountLedger, stores: set[str], named: set[str]
) -> Iterator[tuple[str, str]]:
    for source in job.inputs:
        converter = Converter(source.layout, job.settings)
        raws = read_orders(source)
        while batch := list(islice(raws, _BATCH)):
            asks: dict[str, tuple[RawOrder, str]] = {}
            for raw in batch:
                bare = _bare_id(raw)
                mine = str(raw.fields.get("store") or "")
                if mine and mine not in named and store_problem(mine) is None:
                    named.add(mine)
                if bare is None:
                    continue
                for store in stores - {mine}:
                    asks[order_key(store or None, bare)] = (raw, store)
            for key, known in ledger.held_orders(list(asks)).items():
                raw, store = asks[key]
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
                    yield store, order.id


def _sent(store: str) -> str:
    return f"with --store {store}" if store else "without a store"


def refuse_held_elsewhere(job: Job, ledger: AccountLedger) -> None:
    """Refuse a send (UsageError, exit 2) whose orders the account holds as sent under
    another store or without one: sent again, they would be held twice. A job whose layout
    names a store column is read whatever the account holds, and the stores its rows name
    are noted in the account's ledger (a later send under another store is checked against
    them)."""
    known = ledger.stores()
    if not known - {job.store or ""} and not rows_name_stores(job):
        return
    named: set[str] = set()
    found, ids = held_elsewhere(job, ledger, known, named=named)
    if not found:
        for store in named - known:
            ledger.sending_for(store)
        return
    count = sum(found.values())
    store, _ = found.most_common(1)[0]
    this = f"with --store {job.store}" if job.store else "without --store"
    again = f"with --store {store}" if store else "without --store"
    raise UsageError(
        f"this account holds {count:,} of these orders (e.g. {', '.join(ids)}) as sent "
        f"{_sent(store)}: sent {this} they would get new unique ids, and Klaviyo would hold "
        "each twice",
        f"Send this shop {again}, as before (the account's ledger then skips what it holds): "
        "a shop keeps the store it was first sent with, or none; name a store with --store "
        "for the other shops.",
    )
