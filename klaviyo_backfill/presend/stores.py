"""Stores: a send whose orders the account holds under another store, or under none.

An order's events are keyed by its store and id (model.order_key): "1001" sent without a
store, "eu:1001" with `--store eu`. The same order sent again under another store, or
without the one it was sent with (`--store` forgotten next month), would get new unique ids:
Klaviyo would hold it twice, its revenue counted twice. So before a send, where the account's
ledger knows stores other than this send's (or orders sent without one), each order the send
would map is looked up under each of them: one the account holds for the same profile at the
same creation time is the same order, and the send is refused (nothing sent), naming the
store it was sent under. Another shop's order with the same number (WooCommerce numbers
start at 1 in every shop) has another customer or time: it is no reason to refuse. An order
the account holds (as this one) under its own key too keeps its unique ids: sending it adds
nothing, and the survey passes over it unread where it is unchanged.

The check reads nothing itself: it is shown each order in the reading before the send
(tables.py: the survey, the profile table's pass, or a pass of stamps alone), so a send reads
its exports twice at most. An account whose sends all name the same stores as before (or
none, always) never pays for it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UsageError
from ..inputs.values import store_problem
from ..model import order_key
from ..state.account_ledger import AccountLedger, HeldOrder

if TYPE_CHECKING:
    from ..pipeline.job import Job
    from ..pipeline.parallel import Stamp

__all__ = ["StoresCheck", "rows_name_stores"]

_BATCH = 500  # orders looked up in the ledger at once


def rows_name_stores(job: Job) -> bool:
    """Whether a layout of the job names a `store` column (its rows may name any store)."""
    return any("store" in source.layout.order for source in job.inputs)


class StoresCheck:
    """Shown each order of the reading before a send (`see`), then `end`: refuses the send
    (UsageError, exit 2) where the account holds some of them as sent under another store or
    without one, else notes in the account's ledger the stores the rows named."""

    def __init__(self, job: Job, ledger: AccountLedger) -> None:
        self.job = job
        self.ledger = ledger
        self.known = ledger.stores()
        self.named: set[str] = set()  # the stores the rows name
        self.found: Counter[str] = Counter()  # orders held under another store, per store
        self.ids: list[str] = []  # the first few of them
        self.rows: Counter[str] = Counter()  # the stores their rows name ("": none)
        self._batch: list[tuple[str, str, str, float]] = []  # store, id, who, time

    @classmethod
    def needed(cls, job: Job, account: Path, read_only: bool = False) -> StoresCheck | None:
        """The check for a send to the account whose ledger is at `account`, where it can
        find anything: the ledger knows a store other than the job's (or orders sent without
        one), or a layout names a store column. `read_only`: to tell (preflight), noting
        nothing. The caller closes it (`close`)."""
        if not account.exists() and (read_only or not rows_name_stores(job)):
            return None  # a new account holds nothing
        ledger = AccountLedger(account, read_only=read_only)
        check = cls(job, ledger)
        if check.known - {job.store or ""} or rows_name_stores(job):
            return check
        ledger.close()
        return None

    def read(self, job: Job, months: Counter[tuple[str, str]] | None = None) -> None:
        """A pass of stamps alone over `job`'s exports (the check's job, or it past a
        --limit) shows the check each order, where no reading the send makes anyway
        serves it (--profile-attributes all or none); counting `months` too, given them."""
        from .latest import stamps

        for _ in stamps(job, None, months, self):
            pass

    def see(self, stamp: Stamp) -> None:
        """An order of the reading (parallel.stamp): the first of its id, in file order."""
        _, key, who, at, _, _, store = stamp
        if store and store not in self.named and store_problem(store) is None:
            self.named.add(store)
        if key is None or who is None:  # nobody to send it to, or outside the window
            return
        self._batch.append((store, key[len(store) + 1 :] if store else key, who, at))
        if len(self._batch) >= _BATCH:
            self._look_up()

    def _look_up(self) -> None:
        # key -> every (order, store asked under): rows of several stores (a layout's store
        # column) share an id, and each is asked about
        asks: dict[str, list[tuple[int, str]]] = {}
        for n, (mine, bare, _, _) in enumerate(self._batch):
            for store in self.known - {mine}:
                asks.setdefault(order_key(store or None, bare), []).append((n, store))
        owns = {order_key(mine or None, bare) for mine, bare, _, _ in self._batch}
        held = self.ledger.held_orders([*asks, *owns]) if asks else {}
        for key, known in held.items():
            for n, store in asks.get(key, ()):
                mine, bare, who, at = self._batch[n]
                own = held.get(order_key(mine or None, bare))
                if _same(known, who, at) and (own is None or not _same(own, who, at)):
                    self.found[store] += 1
                    self.rows[mine] += 1
                    if len(self.ids) < 5:
                        self.ids.append(bare)
        self._batch.clear()

    def end(self) -> None:
        """After the reading: refuse the send, or note the stores its rows named."""
        refused = self.refusal()
        if refused is not None:
            raise refused
        for store in self.named - self.known:
            self.ledger.sending_for(store)

    def refusal(self) -> UsageError | None:
        """After the reading: why the send is refused, if it is."""
        self._look_up()
        if not self.found:
            return None
        count = sum(self.found.values())
        store, _ = self.found.most_common(1)[0]
        job = self.job
        row, _ = self.rows.most_common(1)[0]
        if row and row != job.store:  # a layout's store column named it
            this = f"as store {row} (their rows' store column)"
            again = f"Name {store} in" if store else "Leave blank"
            again += " the store column of this shop's rows, as before"
        else:
            this = f"with --store {job.store}" if job.store else "without --store"
            again = f"Send this shop {'with --store ' + store if store else 'without --store'}"
            again += ", as before"
        return UsageError(
            f"this account holds {count:,} of these orders (e.g. {', '.join(self.ids)}) as "
            f"sent {_sent(store)}: sent {this} they would get new unique ids, and Klaviyo "
            "would hold each twice",
            f"{again} (the account's ledger then skips what it holds): a shop keeps the "
            "store it was first sent with, or none; name a store with --store for the other "
            "shops.",
        )

    def close(self) -> None:
        self.ledger.close()


def _same(known: HeldOrder, who: str, at: float) -> bool:
    """Whether the order the ledger holds is this one: the same profile, created then."""
    return known.who == who and (known.at is None or known.at == at)


def _sent(store: str) -> str:
    return f"with --store {store}" if store else "without a store"
