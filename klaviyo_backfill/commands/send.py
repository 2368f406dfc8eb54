"""`send`: everything the account lacks, throttled, retried, each acknowledgement recorded.

A new job first checks that no other integration's metric of the same name holds events in
the months it sends (presend/overlap.py)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from ..errors import (
    CheckpointError,
    ExportChanged,
    SendError,
    UnfinishedRun,
    UsageError,
)
from ..klaviyo.http import clean_key, loopback_only
from ..klaviyo.reading import ReadConfig
from ..klaviyo.sender import SendConfig, SendStats, tuned
from ..klaviyo.throttle import parse_rate_limit
from ..options import SendOptions
from ..pipeline.job import job_from
from ..pipeline.orders import Resume
from ..pipeline.session import SendSession
from ..pipeline.summary import Stats
from ..presend.delta import Delta, Elsewhere
from ..presend.overlap import overlap_check
from ..presend.stores import StoresCheck
from ..presend.tables import Tables
from ..results import Finished, SendOutcome, Unwatched, Watcher
from ..state.account_ledger import account_ledger_path
from ..state.checkpoint import Ledger, superseded
from ..state.locate import discard, failures_beside, found_for, locate, restarted
from ..state.lock import JobLock
from .account import history_of
from .continuation import continuation
from .repair import Only, replay_args

if TYPE_CHECKING:  # annotations only
    from ..pipeline.job import Job


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
    config = tuned(config, options.tuning) if options.tuning else config
    if key:  # the account: Klaviyo's own id where the key may read it (commands/account.py)
        read = ReadConfig(config.base_url, key, config.revision, timeout=config.timeout,
                          retry=config.retry)  # fmt: skip
        config = replace(config, history=history_of(read))
    return config


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
    except ExportChanged as exc:
        exc.command = restarted(command)  # as status and verify print it
        raise
    if isinstance(outcome, SendOutcome):
        outcome.continuation = outcome.continuation or command
        outcome.account = account
    return outcome


@contextlib.contextmanager
def _stoppable() -> Iterator[list[int]]:
    """SIGTERM raised as Ctrl-C is, while a job reads before its first request (Klaviyo: the
    overlap check may wait minutes on a 429; the export: the survey or the profile table's
    pass): the run then says how to continue, where it was killed without a word. Yields the
    signal that came (SIGINT unless SIGTERM)."""
    got = [int(signal.SIGINT)]
    if threading.current_thread() is not threading.main_thread():  # a library caller's
        yield got
        return

    def terminated(signum: int, frame: FrameType | None) -> None:
        got[0] = signum
        on_sigint = signal.getsignal(signal.SIGINT)
        if callable(on_sigint) and on_sigint is not signal.default_int_handler:
            # asyncio.run's own (a read runs): it cancels the read, which then raises
            # KeyboardInterrupt; raised here, inside one of its tasks, the task kept it and
            # asyncio printed its traceback ("Task exception was never retrieved")
            on_sigint(signal.SIGINT, frame)
            return
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield got
    finally:
        signal.signal(signal.SIGTERM, previous)


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
            "Is the key right? Use the key the send used (a job is kept under Klaviyo's id of "
            "the account, or, for a key that may not read it (accounts:read), a keyed hash of "
            "the key: a new key of that account does not find it).",
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
    watcher = progress or Unwatched()  # the readings' waits told as the sends' are
    held = None if options.resend else account_ledger_path(account)  # what the send skips
    checks = new_job and config.endpoint.versioned and not options.allow_overlap
    stores = StoresCheck.needed(job, account_ledger_path(account))
    with Tables(job, watcher.preparing, stores) as tables:  # the reading before the send
        overlap, elsewhere = None, set[str]()
        if new_job and config.endpoint.versioned and options.allow_overlap:
            overlap = "allowed"
            notify("--allow-overlap: orders other integrations or API senders hold already "
                   "are sent anyway (they count twice in Klaviyo).")  # fmt: skip
        try:
            with _stoppable() as got:
                tables.check_stores(held, months=checks)  # refused here: nothing sent
                if checks:
                    checked = overlap_check(config, notify, partial(tables.months, held),
                                            watcher.waiting, account_ledger_path(account),
                                            job.store)  # fmt: skip
                    overlap, elsewhere = checked.said, checked.elsewhere
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM before the send: nothing sent, no job
            return SendOutcome(Stats(), SendStats(), 0.0, interrupted=True, signal=got[0],
                               continuation=continuation(options, resume=not new_job))  # fmt: skip
        notes: dict[str, object] = {"command": command, "window": _window(options),
                                    "failures": os.path.abspath(job.failures or "")}  # fmt: skip
        if overlap is not None:  # a new job: what it skips as another API sender's, remembered
            notes["overlap"], notes["api_held"] = overlap, json.dumps(sorted(elsewhere))
        notes["send_args"] = replay_args(options)  # what `verify` prints a repair with
        if job.store is not None:
            notes["store"] = job.store
        session = SendSession.open(job, path, mode, account, resend=options.resend, notes=notes)
        if isinstance(session, Finished):
            return session
        with session:
            if session.account is not None:
                session.account.sending_for(job.store)
            outcome = send_job(job, config, session, progress, mode == "resume",
                               skip_held=not options.resend, tables=tables)  # fmt: skip
            unused = isinstance(outcome.error, SendError) and not session.ledger.has_orders()
    if unused:  # the job was refused (a wrong key) before Klaviyo acknowledged anything:
        discard(path)  # a checkpoint would only stand in the way of the corrected run
        outcome.kept = False
    return outcome


def send_job(
    job: Job,
    config: SendConfig,
    session: SendSession,
    progress: Watcher | None = None,
    resume: bool = False,
    skip_held: bool = True,
    tables: Tables | None = None,
    only: Only | None = None,
) -> SendOutcome:
    """Send the job in an open session; record each acknowledgement (in the account's
    ledger too, where the session holds it: its events are skipped unless `skip_held` is
    False). `tables`: what the reading before the send made (the overlap check's), if any."""

    ledger, account, stats = session.ledger, session.account, session.stats
    point = session.resume_point(resume)
    delta = Delta(account, job.payload_salt()) if account is not None and skip_held else None
    # another API sender's orders, skipped (a repair resends only what this tool sent)
    elsewhere = Elsewhere(session.held_elsewhere(), account) if only is None else None
    is_done: Callable[[str], bool] | None = session.reader.is_done if ledger.has_orders() else None
    if only is not None:  # a repair: the orders it lists, not yet done
        is_done = _either(only.skip_order, is_done)
    watcher = progress or Unwatched()
    if tables is None:
        tables = session.hold(Tables(job, watcher.preparing))
    fresh = is_done is None and point is None  # from the start, asking no checkpoint
    try:
        with _stoppable() as got:  # SIGTERM too: the reading may take minutes
            ready, replay = session.hold(tables.ready(delta, account, fresh))
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM while reading, before the first request
        return SendOutcome(stats, session.send_stats, 0.0, interrupted=True,
                           signal=got[0], failures_path=job.failures)  # fmt: skip
    checked = Resume(is_done, point, session.tracker.input_rejected, delta, replay,
                     only.keeps if only is not None else None, elsewhere)  # fmt: skip
    return session.send(ready, config, watcher, checked)


def _either(
    first: Callable[[str], bool], second: Callable[[str], bool] | None
) -> Callable[[str], bool]:
    return first if second is None else lambda order_id: first(order_id) or second(order_id)
