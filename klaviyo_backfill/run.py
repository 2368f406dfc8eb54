"""The library-callable core: a dry run, `inspect`, a send, `status`, and reading back
(`verify`, `preflight`, and the overlap check a new send makes), from typed options.

Every run is the same two stages, and they differ only in what consumes the requests:

    orders(job, ...)              read -> convert -> events -> encode, settled in file order
    requests(orders, encoder)     the encoded orders gathered into request bodies

    dry run    writes the bodies (--output) and keeps the first few for a preview
    inspect    keeps only the statistics
    send       hands them to the Klaviyo client, and each answer to the checkpoint

So "a dry run is the send minus the network" holds by construction.

Reading back compares what a job sent with what Klaviyo holds (reconcile.py compares,
klaviyo/reading.py reads):

    verify      the checkpoint's totals of acknowledged events per metric, UTC month and
                currency, against the monthly aggregates of the API's metric of each name
    preflight   the export (read as a dry run reads it) against the metrics other
                integrations keep under the same names: months where both hold events
    send        makes that overlap check before the first request of a new job
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

from .checkpoint import (
    Finished,
    Landmarks,
    Ledger,
    Total,
    TotalKey,
    checkpoints_dir,
    default_path,
    discard,
    earlier_path,
    found_for,
    locate,
    open_ledger,
    superseded,
)
from .errors import (
    BackfillError,
    CheckpointError,
    OutputError,
    OverlapError,
    SendError,
    UsageError,
)
from .failures import Failures
from .files import open_private, write_private
from .model import METRICS, Rejection
from .options import SendOptions

if TYPE_CHECKING:  # the pipeline and the client are imported where they run: `status` and
    # `--help` need neither (start-up time)
    from .account_ledger import AccountLedger
    from .delta import Delta
    from .encode import Encoder, Request
    from .job import Job
    from .klaviyo.client import SendConfig, Sender, SendStats
    from .klaviyo.reading import Account, Flow, Metric, ReadConfig, Reader
    from .klaviyo.throttle import Wait, Window
    from .model import Event, Position
    from .orders import MappedOrder, Resume
    from .reconcile import Held, MetricTotal, OtherCounts, Overlap, Row
    from .summary import Stats
    from .survey import Survey
    from .tracker import Tracker

__all__ = [
    "DryRun",
    "Finished",
    "Preflight",
    "SendOutcome",
    "Unwatched",
    "Verification",
    "Watcher",
    "dry_run",
    "inspect",
    "open_private",
    "open_status",
    "orders",
    "preflight",
    "requests",
    "send",
    "send_job",
    "verify",
    "write_private",
]

log = logging.getLogger("klaviyo_backfill.run")

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
    job: Job,
    delta: Delta | None = None,
    account: AccountLedger | None = None,
    survey: Survey | None = None,
) -> Iterator[Job]:
    """The job with its rule for which orders carry profile attributes (`--profile-attributes`):
    `latest` reads the exports once first (latest.py), unless a `survey` read them already."""
    from .latest import Latest, Never

    if job.profile_attributes == "all":
        yield job
        return
    if job.profile_attributes == "none":
        yield replace(job, settings=replace(job.settings, attributes=Never()))
        return
    if survey is not None and survey.latest is not None:
        latest = survey.latest
    else:
        latest = Latest.build(job, delta if delta is not None and not delta.empty else None)
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
    signal: int = 0  # the signal that interrupted it (SIGINT, SIGTERM), if one did
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

    def preparing(self, what: str) -> None:
        """A reading of the exports before the first request (latest.py, survey.py)."""


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

    def preparing(self, what: str) -> None:
        pass


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
    progress: Watcher | None = None,
    ask_key: Callable[[], str | None] = lambda: None,
    notify: Callable[[str], None] = lambda message: None,
) -> SendOutcome | Finished:
    """Send everything the checkpoint does not hold yet, or say there is nothing to do.

    A new job first checks that no other integration's metric of the same name holds events
    in the months it sends (OverlapError, nothing sent), unless `allow_overlap`."""
    from .account_ledger import AccountLedger, account_ledger_path
    from .job import job_from

    job = job_from(options)
    config = send_config(job, options, ask_key)
    account = config.account
    path = locate(list(options.inputs.paths), account, options.mode, options.checkpoint)
    fingerprint = job.fingerprint()
    new_job = (
        options.mode == "restart"
        or (options.mode == "new" and not path.exists())
        or superseded(path, options.mode, fingerprint)
    )
    overlap = None
    if new_job and config.endpoint.versioned:
        overlap = "allowed" if options.allow_overlap else overlap_check(job, config, notify)
    ledger = open_ledger(path, options.mode, fingerprint, FINGERPRINTED, account)
    if isinstance(ledger, Finished):
        return ledger
    if overlap is not None:
        ledger.put(overlap=overlap)
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
) -> SendOutcome:
    """Send the job with an open ledger; record each acknowledgement (in the account's
    ledger too, given one, whose events are skipped unless `skip_held` is False)."""
    from .delta import Delta
    from .klaviyo.client import SendStats
    from .orders import Resume
    from .summary import Stats
    from .survey import Survey
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
    survey, watcher = None, progress or Unwatched()
    latest = job.profile_attributes == "latest"
    try:
        ahead = ExitStack()
        try:
            fresh = is_done is None and point is None  # from the start, asking no checkpoint
            # to an account that holds orders: one reading for both (a resumed run replays
            # nothing, it reads from its resume point: it surveys for its profile table)
            if delta is not None and not delta.empty and Survey.suits(job) and (fresh or latest):
                watcher.preparing("Reading the export against what this account holds")
                survey = Survey.take(job, delta, latest)
            elif latest:
                watcher.preparing("Reading the export for each customer's latest order")
            # latest: a pass over the exports (or the survey's)
            ready = ahead.enter_context(profiles_for(job, delta, account, survey))
        except KeyboardInterrupt:  # Ctrl-C while reading, before the first request
            return SendOutcome(stats, send_stats, 0.0, interrupted=True, signal=signal.SIGINT,
                               failures_path=job.failures)  # fmt: skip
        replay = survey if fresh else None  # a resumed run reads from its resume point
        checked = Resume(is_done, point, tracker.input_rejected, delta, replay)
        with ahead:
            return _sending(ready, config, ledger, watcher, checked, tracker, stats)
    finally:
        if survey is not None:
            survey.close()
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


# ---------------------------------------------------------------- reading back


def read_config(options: SendOptions, ask_key: Callable[[], str | None]) -> ReadConfig:
    """Where to read from, with which key: checked before anything is read."""
    from .job import check_revision
    from .klaviyo.client import loopback_only
    from .klaviyo.reading import ReadConfig

    loopback_only(options.base_url)
    check_revision(options.revision, False)
    key = options.api_key or ask_key()
    if not key:
        raise UsageError(
            "no API key: set KLAVIYO_API_KEY (a private key with the metrics:read scope)"
        )
    return ReadConfig(options.base_url, key, options.revision)


def _export_pass(job: Job) -> tuple[Stats, int]:
    """The export read as a dry run reads it: its statistics (events per metric and UTC
    month among them) and the request bodies a send would make."""
    from .summary import Stats

    stats = Stats()
    encoder = job.endpoint.encoder(job.backfill)
    with profiles_for(job) as job:
        bodies = sum(1 for _ in requests(orders(job, encoder, stats, Failures(None)), encoder))
    return stats, bodies


def _months_pass(job: Job) -> Stats:
    """The export read, converted and mapped, not encoded: events per metric and UTC month
    (`Stats.metric_months`), on every core for a large CSV."""
    from .orders import mapped_orders
    from .summary import Stats

    stats = Stats()
    for _ in mapped_orders(job, None, stats, Failures(None)):
        pass
    return stats


async def _metrics(config: ReadConfig, integration: str | None = None) -> list[Metric]:
    from .klaviyo.reading import Reader

    async with Reader(config) as reader:
        return await reader.metrics(integration)


async def _other_counts(
    reader: Reader, others: list[Metric], months: dict[tuple[str, str], int]
) -> list[OtherCounts]:
    """Each other integration's metric: its events per UTC month, in the years the export
    has events of that metric in (one query per year)."""
    from .klaviyo.reading import gather_limited
    from .reconcile import OtherCounts, years_of

    counts = [OtherCounts(m.name, m.integration or m.category or m.id) for m in others]
    jobs, into = [], []
    for metric, count in zip(others, counts, strict=True):
        for year in years_of(mo for name, mo in months if name == metric.name):
            jobs.append(partial(reader.aggregate, metric.id, year, False, False))
            into.append(count)
    for count, totals in zip(
        into, await gather_limited(jobs, reader.config.concurrency), strict=True
    ):
        for total in totals:
            count.months[total.month] += total.count
    return counts


def overlap_check(job: Job, config: SendConfig, notify: Callable[[str], None]) -> str:
    """Before the first request of a new job: refuse (OverlapError) where another
    integration's metric of the same name holds events in months the job would send. Reads
    the export only when such a metric exists. Returns what the checkpoint keeps of it."""
    from .errors import ScopeError
    from .klaviyo.reading import ReadConfig, Reader
    from .reconcile import describe_overlaps, overlaps

    assert config.api_key is not None
    read = ReadConfig(config.base_url, config.api_key, config.revision, timeout=config.timeout,
                      retry=config.retry)  # fmt: skip
    started = time.monotonic()
    try:
        others = [m for m in asyncio.run(_metrics(read)) if not m.via_api and m.name in METRICS]
    except ScopeError:
        notify("Warning: this key cannot read metrics (no metrics:read scope), so whether "
               "another integration already holds these orders was not checked.")  # fmt: skip
        return "not checked: the key cannot read metrics"
    if others:
        stats = _months_pass(job)

        async def count() -> list[OtherCounts]:
            async with Reader(read) as reader:
                return await _other_counts(reader, others, stats.metric_months)

        found = overlaps(stats.metric_months, asyncio.run(count()))
        log.info("overlap check: %d other integration metric(s), %d overlapping month(s), "
                 "%.1f s", len(others), len(found), time.monotonic() - started)  # fmt: skip
        if found:
            raise OverlapError(
                "another integration already holds events of the metrics this send would "
                "create, in the same months (they would count twice in Klaviyo):\n  "
                + "\n  ".join(describe_overlaps(found)),
                "Send only other months with --since/--until, or send anyway with "
                "--allow-overlap (a --resume of the job remembers it). `klaviyo-backfill "
                "preflight` lists every month.",
            )
    return "checked: none"


# ---------------------------------------------------------------- verify


@dataclass
class Verification:
    """What Klaviyo holds of what a job sent, per metric, UTC month and currency."""

    checkpoint: Path
    state: str | None  # the checkpoint's
    rows: list[Row]
    totals: list[MetricTotal]
    missing: list[str]  # metrics the job sent that Klaviyo has no API metric of
    processing: bool  # a short row may still fill in (recent acknowledgements, a live send)
    reread: bool  # what was sent was learnt by reading the export again (an older checkpoint)
    summary: dict[str, Any] = field(default_factory=dict)  # the last run's
    rejections: list[Rejection] = field(default_factory=list)
    reads: int = 0  # requests made to Klaviyo
    elapsed: float = 0.0

    @property
    def short(self) -> list[Row]:
        return [row for row in self.rows if row.short]

    @property
    def status(self) -> str:
        return "short" if self.short else "ok"

    @property
    def final(self) -> bool:
        """False while a shortfall may still be Klaviyo processing what it accepted."""
        return not (self.short and self.processing)

    def as_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "final": self.final,
            "rows": [row.as_json() for row in self.rows],
            "totals": [total.as_json() for total in self.totals],
            "missing_metrics": self.missing,
            "checkpoint": str(self.checkpoint),
            "sent_from": "the export, read again" if self.reread else "the checkpoint",
        }


def verify(options: SendOptions, ask_key: Callable[[], str | None] = lambda: None) -> Verification:
    """Compare what Klaviyo acknowledged for the export's checkpoint (this key's account)
    with what Klaviyo holds now."""
    from .klaviyo.account import account_id
    from .reconcile import compare

    config = read_config(options, ask_key)
    account = account_id(config.base_url, config.api_key)
    started = time.monotonic()
    path = _verify_checkpoint(options, account)
    ledger = Ledger(path)
    try:
        ledger.check_account(account)
        sent, reread = _sent_totals(options, ledger)
        running = ledger.state == "running" and ledger.runner_alive() is not False
        summary = json.loads(ledger.get("last_run") or "{}")
        result = Verification(path, ledger.state, [], [], [], running, reread, summary,
                              ledger.rejected_rows())  # fmt: skip
    finally:
        ledger.close()
    held, result.missing, result.reads = asyncio.run(_held(config, sent))
    result.rows, result.totals = compare(sent, held)
    now = time.time()
    result.processing = running or any(row.short and row.recent(now) for row in result.rows)
    result.elapsed = time.monotonic() - started
    return result


def _verify_checkpoint(options: SendOptions, account: str) -> Path:
    """The checkpoint `send` kept for these exports and this key's account (as `status`
    finds them), or the one named."""
    if options.checkpoint:
        named = Path(options.checkpoint)
        if not named.is_file():
            raise CheckpointError(f"no checkpoint at {named}")
        return named
    paths = list(options.inputs.paths)
    if not paths:
        raise UsageError("give the export PATHS the send used, or --checkpoint FILE")
    for path in (default_path(paths, account), earlier_path(paths, account), earlier_path(paths)):
        if path.exists():
            return path
    others = found_for(paths)
    if others:
        raise CheckpointError(
            f"no checkpoint of this Klaviyo account for {', '.join(paths)}: "
            f"{', '.join(map(str, others))} "
            + ("belongs to another account" if len(others) == 1 else "belong to other accounts"),
            "Use the key the send used, or name the checkpoint with --checkpoint FILE.",
        )
    raise CheckpointError(
        f"no checkpoint for {', '.join(paths)} in {checkpoints_dir()} (nor in "
        ".klaviyo-backfill/ here, where earlier versions kept them)",
        "A checkpoint is keyed by the exports' full paths: name them as the send did, or name "
        "the checkpoint with --checkpoint FILE.",
    )


def _sent_totals(options: SendOptions, ledger: Ledger) -> tuple[dict[TotalKey, Total], bool]:
    """What Klaviyo acknowledged: the checkpoint's totals, or (a checkpoint of a version that
    kept none) the export read again, counting the orders the checkpoint holds."""
    if ledger.has_totals():
        return ledger.totals(), False
    if not options.inputs.paths:
        raise CheckpointError(
            f"checkpoint {ledger.path} was written by an earlier version, which kept no "
            "monthly totals of what Klaviyo acknowledged",
            "Verify it by reading its export again: give the export PATHS with the options "
            f"of the send ({FINGERPRINTED}) and --checkpoint.",
        )
    return _reread(options, ledger), True


def _reread(options: SendOptions, ledger: Ledger) -> dict[TotalKey, Total]:
    from .job import job_from
    from .model import utc_month
    from .orders import mapped_orders
    from .summary import Stats

    job = job_from(options)
    if job.fingerprint() != ledger.get("fingerprint"):
        raise CheckpointError(
            f"checkpoint {ledger.path} was written by an earlier version, which kept no "
            "monthly totals, and these exports or options are not the send's: reading them "
            "would not tell what it sent",
            f"Give verify the send's files and options ({FINGERPRINTED}).",
        )
    totals: dict[TotalKey, Total] = {}
    # one process: the events must stay here to be counted
    for mapped in mapped_orders(replace(job, jobs=1), None, Stats(), Failures(None)):
        held = ledger.order_state(mapped.key)
        if held is None:
            continue
        refused = ledger.rejected_events(mapped.key) if held[0] == "rejected" else []
        for e in mapped.events:
            if any(d.startswith(f"{e.metric} {e.unique_id}:") for d in refused):
                continue
            key = (e.metric, utc_month(e.time), e.currency or "")
            totals.setdefault(key, Total()).add(e.value, held[1])
    return totals


async def _held(config: ReadConfig, sent: dict[TotalKey, Total]) -> tuple[Held, list[str], int]:
    """Klaviyo's aggregates of the API's metric of each name the job sent, per UTC month and
    currency, in the years it sent: (held, metrics Klaviyo has no API metric of, requests)."""
    from decimal import Decimal

    from .klaviyo.endpoints import API_INTEGRATION
    from .klaviyo.reading import Reader, gather_limited
    from .reconcile import metric_order, years_of

    held: Held = {}
    missing: list[str] = []
    async with Reader(config) as reader:
        api: dict[str, Metric] = {}
        for metric in await reader.metrics(API_INTEGRATION):
            if metric.via_api:
                api.setdefault(metric.name, metric)
        jobs, names = [], []
        for name in sorted({key[0] for key in sent}, key=metric_order):
            found = api.get(name)
            if found is None:
                missing.append(name)
                continue
            for year in years_of(month for metric, month, _ in sent if metric == name):
                jobs.append(partial(reader.aggregate, found.id, year))
                names.append(name)
        results = await gather_limited(jobs, config.concurrency)
        for name, totals in zip(names, results, strict=True):
            for t in totals:
                key = (name, t.month, t.currency or "")
                count, value = held.get(key, (0, Decimal(0)))
                held[key] = (count + t.count, value + (t.value or Decimal(0)))
        return held, missing, reader.stats.requests


# ---------------------------------------------------------------- preflight


@dataclass
class Preflight:
    """Before a send: the key, the export, the overlap with other integrations, the time."""

    stats: Stats
    endpoint: str
    requests: int  # bodies the send would make
    seconds: float  # the send at the endpoint's ceiling (its rate windows)
    account: Account | None  # None: the key cannot read it (accounts:read)
    scopes: dict[str, bool]  # scope -> whether the key may use it (those tried)
    others: list[Metric]  # other integrations' metrics named as the export's
    overlaps: list[Overlap]
    flows: dict[str, list[Flow]] | None = None  # --trigger-flows: metric -> flows it starts

    def as_json(self) -> dict[str, Any]:
        from .summary import describe

        flows = None
        if self.flows is not None:
            flows = {m: [{"id": f.id, "name": f.name, "status": f.status} for f in fs]
                     for m, fs in self.flows.items()}  # fmt: skip
        return {
            "overlaps": [o.as_json() for o in self.overlaps],
            "other_integrations": [
                {"metric": m.name, "integration": m.integration, "id": m.id} for m in self.others
            ],
            "scopes": self.scopes,
            "account": None
            if self.account is None
            else {
                "id": self.account.id,
                "timezone": self.account.timezone,
                "currency": self.account.currency,
            },
            "endpoint": self.endpoint,
            "requests": self.requests,
            "send_seconds_at_ceiling": round(self.seconds, 1),
            "flows_triggered": flows,
            "export": describe(self.stats),
        }


def preflight(options: SendOptions, ask_key: Callable[[], str | None] = lambda: None) -> Preflight:
    """Check the key and what it may read, read the export as a dry run does, and set its
    months against other integrations' metrics of the same names."""
    from .job import job_from
    from .klaviyo.throttle import ideal_seconds, parse_rate_limit
    from .reconcile import overlaps

    job = job_from(options)
    config = read_config(options, ask_key)
    account, metrics, scopes = asyncio.run(_key_check(config))
    stats, bodies = _export_pass(job)
    names = {metric for metric, _ in stats.metric_months}
    others = [m for m in metrics if not m.via_api and m.name in names]
    api = {m.name: m for m in metrics if m.via_api and m.name in names}
    windows = parse_rate_limit(options.rate_limit) if options.rate_limit else job.endpoint.windows
    report = Preflight(stats, job.endpoint.name, bodies, ideal_seconds(bodies, windows), account,
                       scopes, others, [])  # fmt: skip
    counts, report.flows = asyncio.run(
        _preflight_reads(config, others, stats, api if options.trigger_flows else None, scopes)
    )
    report.overlaps = overlaps(stats.metric_months, counts)
    return report


async def _key_check(config: ReadConfig) -> tuple[Account | None, list[Metric], dict[str, bool]]:
    """The key: every metric (401 and 403 stop here), and the account if it may read it."""
    from .errors import ScopeError
    from .klaviyo.reading import Reader

    async with Reader(config) as reader:
        metrics = await reader.metrics()
        scopes = {"metrics:read": True}
        try:
            account: Account | None = await reader.account()
            scopes["accounts:read"] = True
        except ScopeError:
            account, scopes["accounts:read"] = None, False
        return account, metrics, scopes


async def _preflight_reads(
    config: ReadConfig,
    others: list[Metric],
    stats: Stats,
    api: dict[str, Metric] | None,
    scopes: dict[str, bool],
) -> tuple[list[OtherCounts], dict[str, list[Flow]] | None]:
    from .errors import ScopeError
    from .klaviyo.reading import Reader

    async with Reader(config) as reader:
        counts = await _other_counts(reader, others, stats.metric_months)
        if api is None:
            return counts, None
        flows: dict[str, list[Flow]] = {}
        try:
            for name, metric in api.items():
                flows[name] = await reader.flow_triggers(metric.id)
            scopes["flows:read"] = True
        except ScopeError:
            scopes["flows:read"] = False
            return counts, None
        return counts, flows
