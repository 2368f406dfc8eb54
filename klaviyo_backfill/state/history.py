"""A job and its earlier jobs, read as one: everything the account acknowledged from an
export, whichever job sent it (another window, an earlier export saved over the file, a job
before a --restart: locate.archive keeps each aside).

`verify` proves them order by order together: `acked` is the union of every job's
acknowledged events, each once (by metric and unique id; the newest job's record first, so
an order is named with the file:line of the latest job that sent it)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

from ..errors import CheckpointError
from .account_ledger import AccountLedger
from .checkpoint import Acked, AckedKey, Ledger
from .locate import archived

__all__ = ["History"]


class History:
    """The current job's ledger and its earlier jobs' (newest first), read only.

    `group` sorts jobs by how their events are sent again (a repair's arguments): an event
    acknowledged only by a job of another group than the current job's is remembered
    (`origin`), so a repair can resend it as that job would; the common case, every job
    alike, remembers nothing."""

    def __init__(
        self,
        current: Ledger,
        group: Callable[[Ledger], str] = lambda _: "",
        account: Path | None = None,
    ) -> None:
        """`account`: the account's ledger, if there is one (`sent_elsewhere`)."""
        self.current = current
        self.account: AccountLedger | None = None
        with suppress(CheckpointError):  # only to say whose the events beyond the job are
            self.account = AccountLedger(account, read_only=True) if account else None
        self.earlier: list[Ledger] = []
        try:
            for path in reversed(archived(current.path)):
                self.earlier.append(Ledger(path, read_only=True))
        except BaseException:
            self.close()
            raise
        self.groups = {id(ledger): group(ledger) for ledger in self.jobs}
        self.origin: dict[tuple[str, str], str] = {}  # (metric, unique id) -> group
        self.ledger_of: dict[str, Ledger] = {}  # group -> its newest job
        for ledger in reversed(self.jobs):
            self.ledger_of[self.groups[id(ledger)]] = ledger

    @property
    def jobs(self) -> list[Ledger]:
        return [self.current, *self.earlier]

    def per_order(self) -> list[Ledger]:
        """The jobs that keep their events one by one (a checkpoint of an earlier version
        keeps none: its orders are proved by month only)."""
        return [ledger for ledger in self.jobs if ledger.has_acked()]

    def acked(self, metric: str, start: int, end: int) -> list[Acked]:
        """Every job's acknowledged events of a metric with start <= time < end (UNIX
        seconds), each event once."""
        jobs = self.per_order()
        if len(jobs) == 1:
            return jobs[0].acked(metric, start, end)
        mine = self.mine
        seen: dict[str, Acked] = {}
        for ledger in jobs:
            group = self.groups[id(ledger)]
            for event in ledger.acked(metric, start, end):
                if event[3] in seen:
                    continue
                seen[event[3]] = event
                if group != mine:
                    self.origin[(metric, event[3])] = group
        return list(seen.values())

    def acked_keys(self, metric: str, start: int, end: int) -> tuple[list[AckedKey], str | None]:
        """Ledger.acked_keys of the one job that keeps its events (([], None) where several
        do: their events are read as rows, each once, by `acked`)."""
        jobs = self.per_order()
        return jobs[0].acked_keys(metric, start, end) if len(jobs) == 1 else ([], None)

    @property
    def mine(self) -> str:
        """The current job's group."""
        return self.groups[id(self.current)]

    def group_of(self, metric: str, unique_id: str) -> str:
        """The group of the job an event is resent as (the current job's unless `origin`)."""
        return self.origin.get((metric, unique_id), self.mine)

    def sent_elsewhere(self, order_ids: list[str]) -> set[str]:
        """Of these orders (none of the export's jobs sent them), those this tool sent the
        account from other exports."""
        if self.account is None or not order_ids:
            return set()
        return set(self.account.held_orders(order_ids))

    def close(self) -> None:
        if self.account is not None:
            self.account.close()
        for ledger in self.earlier:
            ledger.close()
