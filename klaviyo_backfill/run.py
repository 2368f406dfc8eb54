"""The library-callable core: a dry run, `inspect`, a send and `status`, from typed options.

Every run is the same two stages, and they differ only in what consumes the requests:

    orders(job, ...)              read -> convert -> events -> encode, settled in file order
    requests(orders, encoder)     the encoded orders gathered into request bodies

    dry run    writes the bodies (--output) and keeps the first few for a preview
    inspect    keeps only the statistics
    send       hands them to the Klaviyo client, and each answer to the checkpoint

So "a dry run is the send minus the network" holds by construction.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

from .checkpoint import (
    Finished,
    Landmarks,
    Ledger,
    checkpoints_dir,
    discard,
    found_for,
    locate,
    open_ledger,
)
from .errors import BackfillError, CheckpointError, OutputError, SendError, UsageError
from .failures import Failures
from .model import METRICS
from .options import SendOptions

if TYPE_CHECKING:  # the pipeline and the client are imported where they run: `status` and
    # `--help` need neither (start-up time)
    from .account_ledger import AccountLedger
    from .delta import Delta
    from .encode import Encoder, Request
    from .job import Job
    from .klaviyo.client import SendConfig, Sender, SendStats
    from .klaviyo.throttle import Wait, Window
    from .model import Event, Position
    from .orders import MappedOrder, Resume
    from .summary import Stats
    from .tracker import Tracker

__all__ = [
    "DryRun",
    "Finished",
    "SendOutcome",
    "Unwatched",
    "Watcher",
    "dry_run",
    "inspect",
    "open_status",
    "orders",
    "requests",
    "send",
    "send_job",
]

# what a checkpoint's fingerprint covers, besides the exports: named when they differ
FINGERPRINTED = (
    "endpoint, timezone, currency, since, until, revision, trigger-flows, layout, "
    "profile-attributes"
)


# ---------------------------------------------------------------- the two stages


def orders(
    job: Job, encoder: Encoder, stats: Stats, failures: Failures, resume: Resume | None = None
) -> Iterator[MappedOrder]:
    """Stage one: every order of the job's exports, mapped and encoded, in file order."""
    from .orders import mapped_orders

    return mapped_orders(job, encoder, stats, failures, resume)


def requests(encoded: Iterable[MappedOrder], encoder: Encoder) -> Iterator[Request]:
    """Stage two: the orders' encoded parts gathered into request bodies."""
    return encoder.assemble(mapped.parts for mapped in encoded)


@contextmanager
def profiles_for(
    job: Job, delta: Delta | None = None, account: AccountLedger | None = None
) -> Iterator[Job]:
    """The job with its rule for which orders carry profile attributes (`--profile-attributes`):
    `latest` reads the exports once first (latest.py)."""
    from dataclasses import replace

    from .latest import Latest, Never

    if job.profile_attributes == "all":
        yield job
        return
    if job.profile_attributes == "none":
        yield replace(job, settings=replace(job.settings, attributes=Never()))
        return
    latest = Latest.build(job, delta)
    latest.account = account
    try:
        yield replace(job, settings=replace(job.settings, attributes=latest))
    finally:
        latest.close()


@contextmanager
def open_output(path: str | None) -> Iterator[IO[bytes] | None]:
    """--output: every request body as one JSON line ('-' is stdout)."""
    if path is None:
        yield None
    elif path == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
    else:
        with open(path, "wb") as fh:
            yield fh


def _outputting(
    bodies: Iterator[Request], out: IO[bytes] | None, sending: str | None = None
) -> Iterator[Request]:
    """Write each body to --output before it goes on. In a real send (`sending` names the
    output), a failed write stops the send as an OutputError; in a dry run it is left to the
    caller (`| head` closing the pipe is a preview that has what it wanted)."""
    for request in bodies:
        if out is not None:
            try:
                out.write(request.body + b"\n")
            except OSError as exc:
                if sending is None:
                    raise
                raise OutputError(sending, exc) from None
        yield request


# ---------------------------------------------------------------- offline runs


@dataclass
class DryRun:
    stats: Stats
    first: list[Request]  # the first requests, for a preview (`preview` N)
    failures: int  # lines written to the failures file
    endpoint: str
    failures_path: str | None
    failure_kinds: dict[str, int] = field(default_factory=dict)  # lines by failures.kind_of
    samples: list[dict[str, Any]] = field(default_factory=list)  # `preview` None: see dry_run


def dry_run(options: SendOptions, preview: int | None = None) -> DryRun:
    """Read, map and encode everything, send nothing (the bodies a send would make). For a
    preview, keep the first `preview` requests, or (None) the first event of each metric, as
    its attributes go in a body, with its profile."""
    from .job import job_from
    from .summary import Stats

    job = job_from(options)
    stats, failures = Stats(), Failures(job.failures)
    encoder = job.endpoint.encoder(job.backfill)
    first: list[Request] = []
    seen: dict[str, Event] = {}
    try:
        with profiles_for(job) as job, open_output(job.output) as out:
            bodies = requests(orders(job, encoder, stats, failures), encoder)
            for request in _outputting(bodies, out):
                if preview is not None and len(first) < preview:
                    first.append(request)
                elif preview is None and len(seen) < len(METRICS):
                    seen.update((e.metric, e) for e in request.events if e.metric not in seen)
    finally:
        failures.close()
    kinds = dict(failures.kinds)
    samples = [_sample(seen[metric], job.backfill) for metric in METRICS if metric in seen]
    return DryRun(stats, first, failures.count, job.endpoint.name, job.failures, kinds, samples)


def _sample(event: Event, backfill: bool) -> dict[str, Any]:
    """An event as its attributes go in a request body, with its profile (plain JSON data)."""
    import json

    from .encode import dumps, event_attributes

    attributes = event_attributes(event, backfill) | {"profile": event.profile}
    sample: dict[str, Any] = json.loads(dumps(attributes))
    return sample


def inspect(options: SendOptions) -> Stats:
    """Read, map and encode everything; keep only the statistics."""
    from .job import job_from
    from .summary import Stats

    job = job_from(options)
    stats = Stats()
    encoder = job.endpoint.encoder(job.backfill)
    for _ in requests(orders(job, encoder, stats, Failures(None)), encoder):
        pass
    return stats


@contextmanager
def open_status(
    paths: tuple[str, ...], checkpoint: str | None
) -> Iterator[list[tuple[Path, Ledger]]]:
    """The checkpoints of these exports (one per Klaviyo account they were sent to), or the
    one named, open for reading."""
    if not checkpoint and not paths:
        raise UsageError("give the export PATHS the run used, or --checkpoint PATH")
    found = [Path(checkpoint)] if checkpoint else found_for(list(paths))
    if not found or not found[0].exists():
        if checkpoint:
            raise CheckpointError(f"no checkpoint at {checkpoint}")
        raise CheckpointError(
            f"no checkpoint for {', '.join(paths)} in {checkpoints_dir()} (nor in "
            ".klaviyo-backfill/ here, where earlier versions kept them)",
            "A checkpoint is keyed by the exports' full paths: name them as the send did, "
            "or pass --checkpoint FILE.",
        )
    ledgers = [(path, Ledger(path)) for path in found]
    try:
        yield ledgers
    finally:
        for _, ledger in ledgers:
            ledger.close()


# ---------------------------------------------------------------- a send


@dataclass
class SendOutcome:
    stats: Stats
    send: SendStats
    elapsed: float
    interrupted: bool = False
    error: BackfillError | None = None
    failures: int = 0  # lines in the failures file: this job's rejections, earlier runs' too
    failures_path: str | None = None
    failure_kinds: dict[str, int] = field(default_factory=dict)  # lines by failures.kind_of


class Watcher(Protocol):
    """Whoever watches a send (progress.py renders it): told of progress, of the pace the rate
    limits allow, of every wait, and of a stop. Called from the sending thread."""

    def update(self, stats: Stats, send: SendStats) -> None: ...

    def pacing(self, windows: tuple[Window, ...], per_request: int, whose: str) -> None:
        """The windows requests are paced to, at most `per_request` events each; `whose`
        names their source ("Klaviyo's", or "--rate-limit's")."""

    def waiting(self, wait: Wait) -> None: ...

    def stopping(self, in_flight: int) -> None:
        """The first Ctrl-C (or SIGTERM): requests in flight finish, nothing new starts."""


class Unwatched:
    """A send no one watches (a library caller's default)."""

    def update(self, stats: Stats, send: SendStats) -> None:
        pass

    def pacing(self, windows: tuple[Window, ...], per_request: int, whose: str) -> None:
        pass

    def waiting(self, wait: Wait) -> None:
        pass

    def stopping(self, in_flight: int) -> None:
        pass


def send_config(job: Job, options: SendOptions, ask_key: Callable[[], str | None]) -> SendConfig:
    """Where and how fast to send: checked before any checkpoint is touched."""
    from .klaviyo.client import SendConfig, loopback_only
    from .klaviyo.throttle import parse_rate_limit

    loopback_only(options.base_url)
    endpoint = job.endpoint
    windows = parse_rate_limit(options.rate_limit) if options.rate_limit else endpoint.windows
    if not endpoint.versioned:
        if not options.public_key:
            raise UsageError(
                "--endpoint legacy needs a public key: set KLAVIYO_PUBLIC_KEY or pass --public-key"
            )
        key = None
    else:
        key = options.api_key or ask_key()
        if not key:
            raise UsageError(
                "no API key: set KLAVIYO_API_KEY (a private key with the events:write scope)"
            )
    return SendConfig(
        base_url=options.base_url, endpoint=endpoint, windows=windows, api_key=key,
        public_key=options.public_key, revision=job.revision,
        concurrency=options.concurrency or endpoint.concurrency,
    )  # fmt: skip


def send(
    options: SendOptions,
    progress: Watcher | None = None,
    ask_key: Callable[[], str | None] = lambda: None,
) -> SendOutcome | Finished:
    """Send everything the checkpoint does not hold yet, or say there is nothing to do."""
    from .account_ledger import AccountLedger, account_ledger_path
    from .job import job_from

    job = job_from(options)
    config = send_config(job, options, ask_key)
    account = config.account
    path = locate(list(options.inputs.paths), account, options.mode, options.checkpoint)
    ledger = open_ledger(path, options.mode, job.fingerprint(), FINGERPRINTED, account)
    if isinstance(ledger, Finished):
        return ledger
    try:
        held = AccountLedger(account_ledger_path(account))
    except BaseException:
        ledger.close()
        raise
    try:
        outcome = send_job(job, config, ledger, progress, options.mode == "resume", held,
                           skip_held=not options.resend)  # fmt: skip
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
) -> bool:
    """Run the sender; Ctrl-C stops new work (waits end at once), lets in-flight requests
    finish, and says so at once. True if interrupted."""
    loop = asyncio.get_running_loop()
    interrupted = False

    def on_sigint() -> None:
        nonlocal interrupted
        if interrupted:  # a second Ctrl-C abandons what is in flight
            for task in asyncio.all_tasks(loop):
                task.cancel()
        else:
            watcher.stopping(sender.stats.in_flight)
        interrupted = True
        sender.halt()

    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, on_sigint)
        loop.add_signal_handler(signal.SIGTERM, on_sigint)
    sender.on_progress = progress
    try:
        await sender.run(bodies)
    except asyncio.CancelledError:
        interrupted = True
    finally:
        await sender.client.aclose()
    return interrupted


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
) -> SendOutcome:
    """Send the job with an open ledger; record each acknowledgement (in the account's
    ledger too, given one, whose events are skipped unless `skip_held` is False)."""
    from .delta import Delta
    from .klaviyo.client import SendStats
    from .orders import Resume
    from .summary import Stats
    from .tracker import Tracker

    stats, send_stats = Stats(), SendStats()
    failures = Failures(job.failures)
    landmarks = Landmarks([source.path for source in job.inputs])
    tracker = Tracker(ledger, failures, send_stats, landmarks, account)
    reader = ledger.reader()
    point = _resume_point(ledger, landmarks, stats) if resume else None
    if resume:  # rejections this run will not meet again come from the ledger; those it
        ledger.forget_from(point)  # meets again, it records again
        for rejection in ledger.rejections(before=point):
            failures.write(rejection)
            tracker.reported.add((rejection.order_id, rejection.detail))
    delta = Delta(account, job.payload_salt()) if account is not None and skip_held else None
    is_done = reader.is_done if ledger.has_orders() else None  # a new job asks nothing
    checked = Resume(is_done, point, tracker.input_rejected, delta)
    try:
        with profiles_for(job, delta, account) as job:  # latest: one pass over the exports
            return _sending(job, config, ledger, progress or Unwatched(), checked, tracker,
                            stats)  # fmt: skip
    finally:
        failures.close()
        reader.close()


def _sending(
    job: Job,
    config: SendConfig,
    ledger: Ledger,
    progress: Watcher,
    checked: Resume,
    tracker: Tracker,
    stats: Stats,
) -> SendOutcome:
    from .klaviyo.client import Sender, client_for

    send_stats, failures = tracker.stats, tracker.failures
    encoder = config.endpoint.encoder(job.backfill, config.public_key)
    started = time.monotonic()
    outcome = SendOutcome(stats, send_stats, 0.0, failures_path=job.failures)
    ledger.mark_running([source.path for source in job.inputs])
    ended = False  # an exception that escapes leaves the run "stopped", never "finished"
    try:
        with open_output(job.output) as out:
            tracked = _track(orders(job, encoder, stats, failures, checked), tracker)
            bodies = _outputting(requests(tracked, encoder), out, job.output)
            sender = Sender(config, encoder, tracker, client_for(config))
            _watch(sender, config, progress)
            try:
                updated = partial(progress.update, stats, send_stats)
                outcome.interrupted = asyncio.run(_send_async(sender, bodies, updated, progress))
            except BackfillError as exc:
                outcome.error = exc
        ended = True
    finally:
        tracker.flush()
        failures.close()
        outcome.failures = failures.count
        outcome.failure_kinds = dict(failures.kinds)
        outcome.elapsed = time.monotonic() - started
        _close(ledger, job, outcome, ended)
    return outcome


def _watch(sender: Sender, config: SendConfig, watcher: Watcher) -> None:
    """Tell the watcher the pace the sender will keep, and each wait it meets."""
    whose = "Klaviyo's" if config.windows == config.endpoint.windows else "--rate-limit's"
    watcher.pacing(config.windows, sender.encoder.max_events, whose)
    sender.limiter.observer = watcher.waiting


def _close(ledger: Ledger, job: Job, outcome: SendOutcome, ended: bool) -> None:
    from .summary import describe

    stopped = not ended or outcome.interrupted or outcome.error is not None
    limited = job.filters.limit is not None and outcome.stats.orders_mapped >= job.filters.limit
    state = "stopped" if stopped else ("limited" if limited else "finished")
    stats, send = outcome.stats, outcome.send
    summary = describe(stats) | {
        "sent": dict(send.events_sent),
        "orders_settled": send.orders_sent + send.orders_with_rejections,
        "bytes_read": stats.bytes_done,
        "bytes_total": stats.bytes_total,
    }
    ledger.put(state=state, ended=str(time.time()), last_run=summary)
