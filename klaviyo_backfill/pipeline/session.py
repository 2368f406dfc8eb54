"""What a send holds for its length, opened in order and closed in the reverse order on every
way out (an error, Ctrl-C, SIGTERM):

    the job's checkpoint     its ledger (state/checkpoint.py), and a second connection the
                             thread that reads the export asks
    the account's ledger     what the account acknowledged across exports (none for a repair)
    the failures file        every order or event refused, one JSON line each
    the tracker              settles Klaviyo's acknowledgements into all three

`SendSession.open` opens the checkpoint (or says the export was sent completely), notes the
run in it, then opens the rest; `with session:` closes them. `end` records how the run ended.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from ..klaviyo.sender import SendStats
from ..results import Finished
from ..state.account_ledger import AccountLedger, account_ledger_path
from ..state.account_ledger import replay as replay_journal
from ..state.checkpoint import Landmarks, Ledger, open_ledger
from ..state.failures import Failures
from .job import FINGERPRINTED
from .summary import Stats, describe
from .tracker import Tracker

if TYPE_CHECKING:  # annotations only
    from types import TracebackType

    from ..model import Position
    from ..options import Mode
    from ..results import SendOutcome
    from .job import Job

__all__ = ["SendSession"]

T = TypeVar("T")


class SendSession:
    """A send's checkpoint, account ledger, failures file and tracker: a context manager that
    owns them from the moment it is made (the ledger it is given included)."""

    def __init__(self, job: Job, ledger: Ledger, account: str | None = None) -> None:
        """Own `ledger`; open the ledger of the Klaviyo `account` (given one), the job's
        failures file and a reader of the checkpoint; make the tracker. Whatever was opened is
        closed again if a later step fails."""
        self.job, self.ledger = job, ledger
        self._stack = ExitStack()
        self._stack.callback(ledger.close)
        try:
            self.account: AccountLedger | None = None
            if account is not None:
                self.account = AccountLedger(account_ledger_path(account))
                self._stack.callback(self.account.close)
            self.failures = Failures(job.failures)
            self._stack.callback(self.failures.close)
            self.reader = ledger.reader()
            self._stack.callback(self.reader.close)
            self.stats, self.send_stats = Stats(), SendStats()
            self.landmarks = Landmarks([source.path for source in job.inputs])
            self.tracker = Tracker(ledger, self.failures, self.send_stats, self.landmarks,
                                   self.account)  # fmt: skip
            written = ledger.get("journal")
            if self.account is not None and written:  # the last acknowledgements the
                # checkpoint recorded: the account's ledger may have stopped short of them
                replay_journal(self.account, written)
        except BaseException:
            self._stack.close()
            raise

    @classmethod
    def open(
        cls,
        job: Job,
        path: Path,
        mode: Mode,
        account: str,
        *,
        resend: bool = False,
        shared: bool = True,
        notes: Mapping[str, object] | None = None,
    ) -> SendSession | Finished:
        """The session of the job's checkpoint at `path`, bound to `account`, with the run's
        `notes` in its meta table; the account's ledger too where `shared`. Finished where
        the checkpoint says the export was sent completely (with `resend`: it starts over)."""
        fingerprint = job.fingerprint()
        ledger = open_ledger(path, mode, fingerprint, FINGERPRINTED, account, not resend)
        if isinstance(ledger, Finished) and resend:  # sent completely; --resend: again
            ledger = open_ledger(path, "restart", fingerprint, FINGERPRINTED, account, keep=False)
        if isinstance(ledger, Finished):
            return ledger
        try:
            if notes:
                ledger.put(**notes)
        except BaseException:
            ledger.close()
            raise
        return cls(job, ledger, account if shared else None)

    def __enter__(self) -> SendSession:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close what it opened, the last opened first (each once)."""
        self._stack.close()

    def hold(self, resource: AbstractContextManager[T]) -> T:
        """Enter a resource the send reads from (the survey, the profile table): it is closed
        with the session, before what the session opened itself."""
        return self._stack.enter_context(resource)

    def resume_point(self, resume: bool) -> Position | None:
        """Where a resumed run seeks to; None (read from the start, skipping sent orders by
        id) for a run from the start, or where the export changed before the point. The
        rejections the run will not meet again come from the ledger into the failures file;
        those it meets again, it records again."""
        if not resume:
            return None
        ledger = self.ledger
        point = ledger.watermark()
        if point is not None and not ledger.still_there(point, self.landmarks):
            point = None
            self.stats.resumed_at = (
                "the start (the export changed before its resume point: sent orders skipped by id)"
            )
        ledger.forget_from(point)
        for rejection in ledger.rejections(before=point):
            self.failures.write(rejection)
            self.tracker.reported.add((rejection.order_id, rejection.detail))
        return point

    def end(self, outcome: SendOutcome, ended: bool) -> None:
        """Record how the run ended in the checkpoint: stopped (an escaped exception, Ctrl-C,
        an error), limited (at its --limit) or finished, with its summary."""
        stopped = not ended or outcome.interrupted or outcome.error is not None
        limit = self.job.filters.limit
        limited = limit is not None and outcome.stats.orders_mapped >= limit
        state = "stopped" if stopped else ("limited" if limited else "finished")
        outcome.limited = state == "limited"
        stats, send = outcome.stats, outcome.send
        summary = describe(stats) | {
            "sent": dict(send.events_sent),
            "orders_settled": send.orders_sent + send.orders_with_rejections,
            "bytes_read": stats.bytes_done,
            "bytes_total": stats.bytes_total,
        }
        self.ledger.put(state=state, ended=str(time.time()), last_run=summary)
