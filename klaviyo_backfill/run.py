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
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from .checkpoint import Finished, Landmarks, Ledger, found_for, locate, open_ledger
from .errors import BackfillError, CheckpointError, OutputError, UsageError
from .failures import Failures
from .files import open_private, write_private
from .options import SendOptions

if TYPE_CHECKING:  # the pipeline and the client are imported where they run: `status` and
    # `--help` need neither (start-up time)
    from .account_ledger import AccountLedger
    from .delta import Delta
    from .encode import Encoder, Request
    from .job import Job
    from .klaviyo.client import SendConfig, Sender, SendStats
    from .model import Position
    from .orders import MappedOrder, Resume
    from .summary import Stats
    from .tracker import Tracker

__all__ = [
    "DryRun",
    "Finished",
    "SendOutcome",
    "dry_run",
    "inspect",
    "open_private",
    "open_status",
    "orders",
    "requests",
    "send",
    "send_job",
    "write_private",
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
        with open_private(path, "--output") as fh:
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
    first: list[Request]  # the first requests, for a preview
    failures: int  # lines written to the failures file
    endpoint: str
    failures_path: str | None


def dry_run(options: SendOptions, preview: int = 1) -> DryRun:
    """Read, map and encode everything, send nothing (the bodies a send would make)."""
    from .job import job_from
    from .summary import Stats

    job = job_from(options)
    stats, failures = Stats(), Failures(job.failures)
    encoder = job.endpoint.encoder(job.backfill)
    first: list[Request] = []
    try:
        with profiles_for(job) as job, open_output(job.output) as out:
            bodies = requests(orders(job, encoder, stats, failures), encoder)
            for request in _outputting(bodies, out):
                if len(first) < preview:
                    first.append(request)
    finally:
        failures.close()
    return DryRun(stats, first, failures.count, job.endpoint.name, job.failures)


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
        where = checkpoint or f"for {', '.join(paths)} in .klaviyo-backfill/"
        raise CheckpointError(f"no checkpoint {'at ' if checkpoint else ''}{where}")
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
    signal: int = 0  # the signal that interrupted it (SIGINT, SIGTERM), if one did
    error: BackfillError | None = None
    failures: int = 0  # lines in the failures file: this job's rejections, earlier runs' too
    failures_path: str | None = None


Progress = Callable[["Stats", "SendStats"], None]


def send_config(job: Job, options: SendOptions, ask_key: Callable[[], str | None]) -> SendConfig:
    """Where and how fast to send: checked before any checkpoint is touched."""
    from .klaviyo.client import SendConfig, clean_key, loopback_only, tuned
    from .klaviyo.throttle import parse_rate_limit

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
    progress: Progress = lambda s, t: None,
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
        return send_job(job, config, ledger, progress, options.mode == "resume", held,
                        skip_held=not options.resend)  # fmt: skip
    finally:
        ledger.close()
        held.close()


def _track(encoded: Iterator[MappedOrder], tracker: Tracker) -> Iterator[MappedOrder]:
    for mapped in encoded:
        tracker.register(mapped)
        yield mapped


async def _send_async(
    sender: Sender, bodies: Iterator[Request], progress: Callable[[], None]
) -> int:
    """Run the sender. Ctrl-C or SIGTERM stops new work and gives in-flight requests a few
    seconds (a second one abandons them). The signal that stopped the run, or 0."""
    loop = asyncio.get_running_loop()
    received = 0

    def on_signal(signum: int) -> None:
        nonlocal received
        if received:
            sender.abandon()
            return
        received = signum
        sender.interrupt()

    with contextlib.suppress(NotImplementedError, RuntimeError):
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal, signum)
    sender.on_progress = progress
    try:
        await sender.run(bodies)
    finally:
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
    progress: Progress = lambda s, t: None,
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
            return _sending(job, config, ledger, progress, checked, tracker, stats)
    finally:
        failures.close()
        reader.close()


def _sending(
    job: Job,
    config: SendConfig,
    ledger: Ledger,
    progress: Progress,
    checked: Resume,
    tracker: Tracker,
    stats: Stats,
) -> SendOutcome:
    from .klaviyo.client import Sender, client_for

    send_stats, failures = tracker.stats, tracker.failures
    encoder = config.endpoint.encoder(job.backfill, config.public_key)
    started = time.monotonic()
    outcome = SendOutcome(stats, send_stats, 0.0, failures_path=job.failures)
    ledger.mark_running()
    ended = False  # an exception that escapes leaves the run "stopped", never "finished"
    try:
        with open_output(job.output) as out:
            tracked = _track(orders(job, encoder, stats, failures, checked), tracker)
            bodies = _outputting(requests(tracked, encoder), out, job.output)
            sender = Sender(config, encoder, tracker, client_for(config))
            try:
                outcome.signal = asyncio.run(
                    _send_async(sender, bodies, lambda: progress(stats, send_stats))
                )
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
        outcome.elapsed = time.monotonic() - started
        _noting(outcome, lambda: _close(ledger, job, outcome, ended))
    return outcome


def _noting(outcome: SendOutcome, step: Callable[[], None]) -> None:
    """Run a closing step; a checkpoint error in it becomes the outcome's error, if none is."""
    try:
        step()
    except BackfillError as exc:
        if outcome.error is None:
            outcome.error = exc


def _close(ledger: Ledger, job: Job, outcome: SendOutcome, ended: bool) -> None:
    from .summary import describe

    stopped = not ended or outcome.interrupted or outcome.error is not None
    limited = job.filters.limit is not None and outcome.stats.orders_mapped >= job.filters.limit
    state = "stopped" if stopped else ("limited" if limited else "finished")
    summary = describe(outcome.stats) | {"sent": dict(outcome.send.events_sent)}
    ledger.put(state=state, ended=str(time.time()), last_run=summary)
