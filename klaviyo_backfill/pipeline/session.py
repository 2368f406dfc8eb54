"""What a send holds for its length, opened in order and closed in the reverse order on every
way out (an error, Ctrl-C, SIGTERM):

    the job's checkpoint     its ledger (state/checkpoint.py), and a second connection the
                             thread that reads the export asks
    the account's ledger     what the account acknowledged across exports (none for a repair)
    the failures file        every order or event refused, one JSON line each
    the tracker              settles Klaviyo's acknowledgements into all three

`SendSession.open` opens the checkpoint (or says the export was sent completely), notes the
run in it, then opens the rest; `with session:` closes them. `send` runs the send: stage one
and two (pipeline/stages.py) into the Klaviyo client, each acknowledgement settled by the
tracker, Ctrl-C and SIGTERM answered; `end` records how the run ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from ..errors import BackfillError, CheckpointError, ExportChanged
from ..klaviyo.sender import SendConfig, Sender, SendStats, client_for
from ..results import Finished, SendOutcome, Watcher
from ..state.account_ledger import AccountLedger, account_ledger_path
from ..state.account_ledger import replay as replay_journal
from ..state.checkpoint import Landmarks, Ledger, open_ledger
from ..state.failures import Failures
from ..state.locate import files_print
from .job import FINGERPRINTED
from .orders import MappedOrder, Resume
from .stages import open_output, orders, outputting, requests
from .summary import Stats, describe
from .tracker import Tracker

if TYPE_CHECKING:  # annotations only
    from types import TracebackType

    from ..mapping.encode import Request
    from ..model import Position
    from ..options import Mode
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
        if mode != "restart":
            _refuse_a_changed_export(job, path, fingerprint)
        ledger = open_ledger(path, mode, fingerprint, FINGERPRINTED, account, not resend)
        if isinstance(ledger, Finished) and resend:  # sent completely; --resend: again
            ledger = open_ledger(path, "restart", fingerprint, FINGERPRINTED, account, keep=False)
        if isinstance(ledger, Finished):
            return ledger
        try:  # the run's notes, and what tells its exports from a later one saved there
            files = _files_print(job)
            ledger.put(**(notes or {}), **({"files_print": files} if files else {}))
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

    def held_elsewhere(self) -> frozenset[str]:
        """The ids of the orders another API sender holds, as the job's check found them
        (presend/overlap.py): skipped by every run of the job, a resumed one too."""
        ledger = self.ledger
        stored = ledger.get("api_held")
        try:
            ids = json.loads(stored) if stored else []
        except ValueError:
            ids = None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise CheckpointError(
                f"the checkpoint {ledger.path} holds no readable list of the orders another API "
                "sender holds (api_held)", "Start the job again with --restart.",
            )  # fmt: skip
        return frozenset(ids)

    def send(self, job: Job, config: SendConfig, progress: Watcher, checked: Resume) -> SendOutcome:
        """Send the job's orders (`job` with its profile rule), as `checked` says which: its
        checkpoint marked running, each acknowledgement recorded as it comes, and how the
        run ended (`end`) whatever ends it."""

        tracker, stats = self.tracker, self.stats
        send_stats, failures = tracker.stats, tracker.failures
        encoder = config.endpoint.encoder(job.backfill, config.public_key)
        started = time.monotonic()
        outcome = SendOutcome(stats, send_stats, 0.0, failures_path=job.failures)
        self.ledger.mark_running([source.path for source in job.inputs])
        ended = False  # an exception that escapes leaves the run "stopped", never "finished"
        try:
            with open_output(job.output) as out:
                tracked = _track(orders(job, encoder, stats, failures, checked), tracker)
                bodies = outputting(requests(tracked, encoder), out, job.output)
                sender = Sender(config, encoder, tracker, client_for(config))
                _watch(sender, config, progress)
                try:
                    updated = partial(progress.update, stats, send_stats)
                    outcome.signal = asyncio.run(_send_async(sender, bodies, updated, progress))
                except BackfillError as exc:
                    outcome.error = exc
                outcome.interrupted = outcome.signal != 0
            ended = True
        finally:
            # a checkpoint that failed during the run (a full disk) may fail again here: the
            # first error is the one reported, and the ledger keeps its last good commit
            _noting(outcome, tracker.flush)
            failures.close()
            outcome.failures = failures.count
            outcome.failure_kinds = dict(failures.kinds)
            outcome.elapsed = time.monotonic() - started
            _noting(outcome, lambda: self.end(outcome, ended))
        return outcome


def _refuse_a_changed_export(job: Job, path: Path, fingerprint: str) -> None:
    """An unfinished job at `path` whose export changed since it began (a later export saved
    over the file): not this run's to continue (ExportChanged, naming the fix), where the
    job says what its exports were; a job some process is sending is left to open_ledger."""
    if not path.exists():
        return
    ledger = Ledger(path)
    try:
        if ledger.get("fingerprint") == fingerprint or ledger.state == "finished":
            return
        was, live = ledger.get("files_print"), ledger.runner_alive()
    finally:
        ledger.close()
    if was is None or live or was == _files_print(job):
        return
    named = ", ".join("standard input" if source.shown == "-" else
                      str(Path(source.shown).absolute()) for source in job.inputs)  # fmt: skip
    raise ExportChanged(
        f"{named} changed since the unfinished job of checkpoint {path} began (a later "
        "export saved over it?): that job cannot go on with another export",
        "Send this export as a new job with --restart: the account's ledger skips every "
        "order Klaviyo holds already, the stopped job's among them, and sends the rest.",
    )


def _files_print(job: Job) -> str | None:
    """The job's exports as `status` tells them from a later one (locate.files_print), each
    by its absolute path, or standard input by its name ('-') with the data it brought."""
    paths = [os.path.abspath(source.path) for source in job.inputs]
    return files_print(
        paths, [source.name or os.path.abspath(source.path) for source in job.inputs]
    )


def _track(encoded: Iterator[MappedOrder], tracker: Tracker) -> Iterator[MappedOrder]:
    for mapped in encoded:
        tracker.register(mapped)
        yield mapped


async def _send_async(
    sender: Sender, bodies: Iterator[Request], progress: Callable[[], None], watcher: Watcher
) -> int:
    """Run the sender. Ctrl-C or SIGTERM stops new work (waits end at once), says so at once,
    and gives in-flight requests a few seconds (a second one abandons them). The signal that
    stopped the run, or 0."""
    loop = asyncio.get_running_loop()
    received = 0

    def on_signal(signum: int) -> None:
        nonlocal received
        if received:
            sender.abandon()
            return
        received = signum
        watcher.stopping(sender.stats.in_flight)
        sender.interrupt()

    with contextlib.suppress(NotImplementedError, RuntimeError):
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal, signum)
    sender.on_progress = progress
    # the feeder thread maps while this loop sends: the loop gets the GIL 1 ms (not 5) after
    # a socket is ready, as each request's time, answer included, counts against the windows
    switching = sys.getswitchinterval()
    sys.setswitchinterval(min(switching, 0.001))
    try:
        await sender.run(bodies)
    finally:
        sys.setswitchinterval(switching)
        await sender.client.aclose()
    return received


def _watch(sender: Sender, config: SendConfig, watcher: Watcher) -> None:
    """Tell the watcher the pace the sender will keep, and each wait it meets."""
    whose = "Klaviyo's" if config.windows == config.endpoint.windows else "--rate-limit's"
    watcher.pacing(config.windows, sender.encoder.max_events, whose)
    sender.limiter.observer = watcher.waiting


def _noting(outcome: SendOutcome, step: Callable[[], None]) -> None:
    """Run a closing step; a checkpoint error in it becomes the outcome's error, if none is."""
    try:
        step()
    except BackfillError as exc:
        if outcome.error is None:
            outcome.error = exc
