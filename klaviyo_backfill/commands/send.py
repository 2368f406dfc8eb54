"""`send`: everything the account lacks, throttled, retried, each acknowledgement recorded.

A new job first checks that no other integration's metric of the same name holds events in
the months it sends (presend/overlap.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import (
    BackfillError,
    CheckpointError,
    SendError,
    UnfinishedRun,
    UsageError,
)
from ..klaviyo.http import clean_key, loopback_only
from ..klaviyo.sender import SendConfig, Sender, SendStats, client_for, tuned
from ..klaviyo.throttle import parse_rate_limit
from ..options import SendOptions
from ..pipeline.job import FINGERPRINTED, job_from
from ..pipeline.orders import Resume
from ..pipeline.stages import open_output, orders, outputting, profiles_for, requests
from ..pipeline.summary import Stats, describe
from ..pipeline.tracker import Tracker
from ..presend.delta import Delta
from ..presend.latest import Latest
from ..presend.overlap import overlap_check
from ..presend.survey import Survey
from ..results import Finished, SendOutcome, Unwatched, Watcher
from ..state.account_ledger import AccountLedger, account_ledger_path
from ..state.account_ledger import replay as replay_journal
from ..state.checkpoint import Landmarks, Ledger, open_ledger, superseded
from ..state.failures import Failures
from ..state.locate import discard, found_for, locate
from ..state.lock import JobLock
from .continuation import continuation
from .repair import Only, replay_args

if TYPE_CHECKING:  # annotations only
    from ..klaviyo.sender import SendConfig, Sender
    from ..mapping.encode import Request
    from ..model import Position
    from ..pipeline.job import Job
    from ..pipeline.orders import MappedOrder, Resume
    from ..pipeline.summary import Stats
    from ..pipeline.tracker import Tracker
    from ..state.account_ledger import AccountLedger


def send_config(job: Job, options: SendOptions, ask_key: Callable[[], str | None]) -> SendConfig:
    """Where and how fast to send: checked before any checkpoint is touched."""

    loopback_only(options.base_url)
    endpoint = job.endpoint
    windows = parse_rate_limit(options.rate_limit) if options.rate_limit else endpoint.windows
    public = options.public_key
    if not endpoint.versioned:
        public = clean_key(public, "the public key (KLAVIYO_PUBLIC_KEY)")
        if not public:
            raise UsageError(
                "--endpoint legacy needs a public key: set KLAVIYO_PUBLIC_KEY or pass --public-key"
            )
        key = None
    else:
        key = clean_key(options.api_key or ask_key(), "the API key (KLAVIYO_API_KEY)")
        if not key:
            raise UsageError(
                "no API key: set KLAVIYO_API_KEY (a private key with the events:write scope)"
            )
    config = SendConfig(
        base_url=options.base_url, endpoint=endpoint, windows=windows, api_key=key,
        public_key=public, revision=job.revision,
        concurrency=options.concurrency or endpoint.concurrency,
    )  # fmt: skip
    return tuned(config, options.tuning) if options.tuning else config


def send(
    options: SendOptions,
    progress: Watcher | None = None,
    ask_key: Callable[[], str | None] = lambda: None,
    notify: Callable[[str], None] = lambda message: None,
) -> SendOutcome | Finished:
    """Send everything the checkpoint does not hold yet, or say there is nothing to do.

    A new job first checks that no other integration's metric of the same name holds events
    in the months it sends (OverlapError, nothing sent), unless `allow_overlap`."""

    job = job_from(options)
    config = send_config(job, options, ask_key)
    if options.repair is not None:  # the events verify found missing, and no others
        from .repair import repair

        return repair(job, config, options, progress)
    account = config.account
    path = locate(list(options.inputs.paths), account, options.mode, options.checkpoint)
    if options.mode == "resume" and not path.exists():
        raise _no_job(options, account, path)
    if not options.failures:  # one failures file per job, beside its checkpoint
        job = replace(job, failures=str(failures_beside(path)))
    command = continuation(options)
    try:
        with JobLock(path):  # a job runs once: a second run of it is refused here, at once
            outcome = _send_locked(job, config, options, path, progress, notify, command)
    except UnfinishedRun as exc:
        exc.command = command
        raise
    if isinstance(outcome, SendOutcome):
        outcome.continuation = outcome.continuation or command
    return outcome


@contextlib.contextmanager
def _stoppable() -> Iterator[list[int]]:
    """SIGTERM raised as Ctrl-C is, while a new job reads Klaviyo before its first request
    (the overlap check may wait minutes on a 429): the run then says how to continue, where
    it was killed without a word. Yields the signal that came (SIGINT unless SIGTERM)."""
    got = [int(signal.SIGINT)]
    if threading.current_thread() is not threading.main_thread():  # a library caller's
        yield got
        return

    def terminated(signum: int, frame: object) -> None:
        got[0] = signum
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield got
    finally:
        signal.signal(signal.SIGTERM, previous)


def failures_beside(checkpoint: Path) -> Path:
    """The job's failures file: <checkpoint>.failures.jsonl, beside it."""
    return checkpoint.with_name(checkpoint.name.removesuffix(".sqlite") + ".failures.jsonl")


def _no_job(options: SendOptions, account: str, path: Path) -> CheckpointError:
    """--resume, and this key's account holds no job of these exports: say whether another
    account does (the key is then the likely cause), never "run without --resume"."""
    named = ", ".join(os.path.abspath(p) for p in options.inputs.paths)
    if options.checkpoint:
        return CheckpointError(f"no checkpoint at {path} to resume", "Run without --resume "
                               "to start, or name the checkpoint the send used.")  # fmt: skip
    others = sorted({_account_of(p) for p in found_for(list(options.inputs.paths))} - {account})
    if others:
        return CheckpointError(
            f"this key matches no job of {named}: it is account {account} here, and the "
            f"job{'s' if len(others) > 1 else ''} of this export belong{'' if len(others) > 1 else 's'} "
            f"to account {', '.join(others)}",
            "Is the key right? Use the key the send used (a job is kept under a keyed hash of "
            "its key: a new key of the same account does not find it).",
        )
    return CheckpointError(
        f"no job of {named} to resume (for this key's Klaviyo account {account}, nor any other)",
        "Run without --resume to start (the account's ledger skips what it holds already).",
    )


def _window(options: SendOptions) -> str:
    since, until = options.inputs.since, options.inputs.until
    if since and until:
        return f"--since {since} --until {until}"
    return f"--since {since}" if since else f"--until {until}" if until else "every order"


def _account_of(checkpoint: Path) -> str:
    return checkpoint.name.removesuffix(".sqlite").rsplit("-", 1)[-1]


def continues_limited(path: Path, mode: str, fingerprint: str) -> bool:
    """A new run (`mode` new) of a job a --limit stopped: it continues that job, as --resume
    would (a plain rerun continues; the limit was a trial, not a reason to refuse)."""
    if mode != "new" or not path.exists():
        return False
    ledger = Ledger(path)
    try:
        return ledger.state == "limited" and ledger.get("fingerprint") == fingerprint
    finally:
        ledger.close()


def _send_locked(
    job: Job,
    config: SendConfig,
    options: SendOptions,
    path: Path,
    progress: Watcher | None,
    notify: Callable[[str], None],
    command: str,
) -> SendOutcome | Finished:

    account = config.account
    fingerprint = job.fingerprint()
    mode = options.mode
    if continues_limited(path, mode, fingerprint):  # a plain rerun continues a limited run
        mode = "resume"
    new_job = (
        mode == "restart"
        or (mode == "new" and not path.exists())
        or superseded(path, mode, fingerprint)
    )
    overlap, built = None, None
    if new_job and config.endpoint.versioned and options.allow_overlap:
        overlap = "allowed"
    elif new_job and config.endpoint.versioned:
        watcher = progress or Unwatched()  # the reads' waits told as the sends' are
        try:
            with _stoppable() as got:
                overlap, built = overlap_check(
                    job, config, notify, watcher.preparing, watcher.waiting
                )
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM in the check: nothing sent, no job yet
            return SendOutcome(Stats(), SendStats(), 0.0, interrupted=True, signal=got[0],
                               continuation=continuation(options, resume=False))  # fmt: skip
    try:
        ledger = open_ledger(path, mode, fingerprint, FINGERPRINTED, account, not options.resend)
        if isinstance(ledger, Finished) and options.resend:  # sent completely; --resend: again
            ledger = open_ledger(path, "restart", fingerprint, FINGERPRINTED, account, keep=False)
    except BaseException:
        if built is not None:
            built.close()
        raise
    if isinstance(ledger, Finished):
        if built is not None:
            built.close()
        return ledger
    ledger.put(command=command, failures=os.path.abspath(job.failures or ""),
               window=_window(options))  # fmt: skip
    if overlap is not None:
        ledger.put(overlap=overlap)
    ledger.put(send_args=replay_args(options))  # what `verify` prints a repair with
    try:
        held = AccountLedger(account_ledger_path(account))
    except BaseException:
        ledger.close()
        if built is not None:
            built.close()
        raise
    try:
        outcome = send_job(job, config, ledger, progress, mode == "resume", held,
                           skip_held=not options.resend, built=built)  # fmt: skip
        unused = isinstance(outcome.error, SendError) and not ledger.has_orders()
    finally:
        ledger.close()
        held.close()
    if unused:  # the job was refused (a wrong key) before Klaviyo acknowledged anything:
        discard(path)  # a checkpoint would only stand in the way of the corrected run
    return outcome


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


def _resume_point(ledger: Ledger, landmarks: Landmarks, stats: Stats) -> Position | None:
    """Where a resumed run seeks to; None (read from the start, skipping sent orders by id)
    where there is none, or the export changed before it."""
    point = ledger.watermark()
    if point is not None and not ledger.still_there(point, landmarks):
        point = None
        stats.resumed_at = (
            "the start (the export changed before its resume point: sent orders skipped by id)"
        )
    return point


def send_job(
    job: Job,
    config: SendConfig,
    ledger: Ledger,
    progress: Watcher | None = None,
    resume: bool = False,
    account: AccountLedger | None = None,
    skip_held: bool = True,
    built: Latest | None = None,
    only: Only | None = None,
) -> SendOutcome:
    """Send the job with an open ledger; record each acknowledgement (in the account's
    ledger too, given one, whose events are skipped unless `skip_held` is False). `built`:
    the table of each customer's latest order, where the overlap check's pass made it (it
    is closed here)."""

    stats, send_stats = Stats(), SendStats()
    failures = Failures(job.failures)
    landmarks = Landmarks([source.path for source in job.inputs])
    tracker = Tracker(ledger, failures, send_stats, landmarks, account)
    reader = ledger.reader()
    point = _resume_point(ledger, landmarks, stats) if resume else None
    written = ledger.get("journal")
    if account is not None and written:  # the last acknowledgements the checkpoint recorded:
        replay_journal(account, written)  # the account's ledger may have stopped short of them
    if resume:  # rejections this run will not meet again come from the ledger; those it
        ledger.forget_from(point)  # meets again, it records again
        for rejection in ledger.rejections(before=point):
            failures.write(rejection)
            tracker.reported.add((rejection.order_id, rejection.detail))
    delta = Delta(account, job.payload_salt()) if account is not None and skip_held else None
    is_done: Callable[[str], bool] | None = reader.is_done if ledger.has_orders() else None
    if only is not None:  # a repair: the orders it lists, not yet done
        is_done = _either(only.skip_order, is_done)
    survey, watcher = None, progress or Unwatched()
    latest = job.profile_attributes == "latest"
    try:
        ahead = ExitStack()
        try:
            fresh = is_done is None and point is None  # from the start, asking no checkpoint
            # to an account that holds orders: one reading for both (a resumed run replays
            # nothing, it reads from its resume point: it surveys for its profile table)
            needed = latest and built is None  # the profile table, unless the overlap check's
            if delta is not None and not delta.empty and Survey.suits(job) and (fresh or needed):
                watcher.preparing("Reading the export against what this account holds")
                survey = Survey.take(job, delta, needed)
            elif needed:
                watcher.preparing("Reading the export for each customer's latest order")
            # latest: a pass over the exports (or the survey's, or the overlap check's)
            ready = ahead.enter_context(profiles_for(job, delta, account, survey, built))
            built = None  # profiles_for closes it
        except KeyboardInterrupt:  # Ctrl-C while reading, before the first request
            return SendOutcome(stats, send_stats, 0.0, interrupted=True, signal=signal.SIGINT,
                               failures_path=job.failures)  # fmt: skip
        replay = survey if fresh else None  # a resumed run reads from its resume point
        checked = Resume(is_done, point, tracker.input_rejected, delta, replay,
                         only.keeps if only is not None else None)  # fmt: skip
        with ahead:
            return _sending(ready, config, ledger, watcher, checked, tracker, stats)
    finally:
        if survey is not None:
            survey.close()
        if built is not None:  # not handed on (an error before the send began)
            built.close()
        failures.close()
        reader.close()


def _either(
    first: Callable[[str], bool], second: Callable[[str], bool] | None
) -> Callable[[str], bool]:
    return first if second is None else lambda order_id: first(order_id) or second(order_id)


def _sending(
    job: Job,
    config: SendConfig,
    ledger: Ledger,
    progress: Watcher,
    checked: Resume,
    tracker: Tracker,
    stats: Stats,
) -> SendOutcome:

    send_stats, failures = tracker.stats, tracker.failures
    encoder = config.endpoint.encoder(job.backfill, config.public_key)
    started = time.monotonic()
    outcome = SendOutcome(stats, send_stats, 0.0, failures_path=job.failures)
    ledger.mark_running([source.path for source in job.inputs])
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
        _noting(outcome, lambda: _close(ledger, job, outcome, ended))
    return outcome


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


def _close(ledger: Ledger, job: Job, outcome: SendOutcome, ended: bool) -> None:

    stopped = not ended or outcome.interrupted or outcome.error is not None
    limited = job.filters.limit is not None and outcome.stats.orders_mapped >= job.filters.limit
    state = "stopped" if stopped else ("limited" if limited else "finished")
    outcome.limited = state == "limited"
    stats, send = outcome.stats, outcome.send
    summary = describe(stats) | {
        "sent": dict(send.events_sent),
        "orders_settled": send.orders_sent + send.orders_with_rejections,
        "bytes_read": stats.bytes_done,
        "bytes_total": stats.bytes_total,
    }
    ledger.put(state=state, ended=str(time.time()), last_run=summary)
