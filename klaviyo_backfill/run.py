"""The library-callable core: a dry run, and (send.py) a real one."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO

from .checkpoint import Landmarks, Ledger
from .encode import Encoder, Request, encoder_for
from .errors import BackfillError, OutputError
from .job import Job
from .model import Event
from .parallel import prepared_pieces, splittable, workers_for
from .pipeline import Elsewhere, Failures, MappedOrder, Prepared, Stats, describe, map_inputs
from .read import Input
from .send import SendConfig, Sender, SendStats, Tracker, client_for

__all__ = ["SendOutcome", "dry_run", "inspect_job", "open_output", "send_job"]


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


def _elsewhere(job: Job, encoder: Encoder | None) -> Elsewhere:
    """Large CSV inputs are prepared on every core (--jobs); the rest in this process."""
    workers = workers_for(job.jobs)

    def prepared(source: Input, index: int) -> Generator[Prepared, None, None] | None:
        if not splittable(source, workers):
            return None
        return prepared_pieces(source, index, job.settings, job.filters, encoder, workers)

    return prepared


def dry_run(job: Job, preview: int = 1) -> tuple[Stats, list[Request], int]:
    """Map and encode everything, send nothing: (stats, first requests, failures written).

    The bodies are those a send would make (`send_job` encodes the same orders the same way).
    """
    stats = Stats()
    failures = Failures(job.failures)
    encoder = encoder_for(job.endpoint, job.backfill)
    elsewhere = _elsewhere(job, encoder)  # the workers encode with this same encoder
    first: list[Request] = []
    try:
        with open_output(job.output) as out:
            orders = map_inputs(
                job.inputs, job.settings, job.filters, stats, failures,
                encoder=encoder, elsewhere=elsewhere,
            )  # fmt: skip
            requests = encoder.assemble(mapped.parts for mapped in orders)
            for request in _outputting(requests, out):
                if len(first) < preview:
                    first.append(request)
    finally:
        failures.close()
    return stats, first, failures.count


def inspect_job(job: Job) -> Stats:
    """Read and map everything; keep only the statistics."""
    stats = Stats()
    elsewhere = _elsewhere(job, None)
    for _ in map_inputs(
        job.inputs, job.settings, job.filters, stats, Failures(None), elsewhere=elsewhere
    ):
        pass
    return stats


@dataclass
class SendOutcome:
    stats: Stats
    send: SendStats
    elapsed: float
    interrupted: bool = False
    error: BackfillError | None = None
    failures: int = 0  # lines in the failures file: this job's rejections, earlier runs' too


def _track(orders: Iterator[MappedOrder], tracker: Tracker) -> Iterator[list[Event]]:
    for mapped in orders:
        tracker.register(mapped)
        yield mapped.events


def _outputting(
    requests: Iterator[Request], out: IO[bytes] | None, sending: str | None = None
) -> Iterator[Request]:
    """Write each body to --output before it goes on. In a real send (`sending` names the
    output), a failed write stops the send as an OutputError; in a dry run it is left to the
    CLI (`| head` closing the pipe is a preview that has what it wanted)."""
    for request in requests:
        if out is not None:
            try:
                out.write(request.body + b"\n")
            except OSError as exc:
                if sending is None:
                    raise
                raise OutputError(sending, exc) from None
        yield request


async def _send_async(
    sender: Sender, requests: Iterator[Request], progress: Callable[[], None]
) -> bool:
    """Run the sender; Ctrl-C stops new work, lets in-flight requests finish. True if interrupted."""
    loop = asyncio.get_running_loop()
    interrupted = False

    def on_sigint() -> None:
        nonlocal interrupted
        if interrupted:  # a second Ctrl-C abandons what is in flight
            for task in asyncio.all_tasks(loop):
                task.cancel()
        interrupted = True
        sender.halt()

    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, on_sigint)
        loop.add_signal_handler(signal.SIGTERM, on_sigint)
    sender.on_progress = progress
    try:
        await sender.run(requests)
    except asyncio.CancelledError:
        interrupted = True
    finally:
        await sender.client.aclose()
    return interrupted


def send_job(
    job: Job,
    config: SendConfig,
    ledger: Ledger,
    progress: Callable[[Stats, SendStats], None] = lambda s, t: None,
    resume: bool = False,
) -> SendOutcome:
    """Send everything the checkpoint does not hold yet; record each acknowledgement."""
    stats, send_stats = Stats(), SendStats()
    failures = Failures(job.failures)
    landmarks = Landmarks([source.path for source in job.inputs])
    resume_at = ledger.watermark() if resume else None
    if resume_at is not None and not ledger.still_there(resume_at, landmarks):
        resume_at = None  # read from the start, skipping sent orders by id
        stats.resumed_at = (
            "the start (the export changed before its resume point: sent orders skipped by id)"
        )
    tracker = Tracker(ledger, failures, send_stats, landmarks)
    if resume:  # rejections this run will not meet again come from the ledger
        for rejection in ledger.rejections(before=resume_at):
            failures.write(rejection)
            tracker.reported.add((rejection.order_id, rejection.detail))
    encoder = encoder_for(job.endpoint, job.backfill, config.public_key)
    reader = ledger.reader()
    started = time.monotonic()
    outcome = SendOutcome(stats, send_stats, 0.0)
    ledger.mark_running()
    ended = False  # an exception that escapes leaves the run "stopped", never "finished"
    try:
        with open_output(job.output) as out:
            orders = map_inputs(
                job.inputs, job.settings, job.filters, stats, failures, reader.is_done,
                resume_at, tracker.input_rejected,
            )  # fmt: skip
            requests = _outputting(encoder.requests(_track(orders, tracker)), out, job.output)
            sender = Sender(config, encoder, tracker, client_for(config))
            try:
                outcome.interrupted = asyncio.run(
                    _send_async(sender, requests, lambda: progress(stats, send_stats))
                )
            except BackfillError as exc:
                outcome.error = exc
        ended = True
    finally:
        tracker.flush()
        failures.close()
        outcome.failures = failures.count
        outcome.elapsed = time.monotonic() - started
        _close(ledger, job, outcome, ended)
        reader.close()
    return outcome


def _close(ledger: Ledger, job: Job, outcome: SendOutcome, ended: bool) -> None:
    stopped = not ended or outcome.interrupted or outcome.error is not None
    limited = job.filters.limit is not None and outcome.stats.orders_mapped >= job.filters.limit
    state = "stopped" if stopped else ("limited" if limited else "finished")
    summary = describe(outcome.stats) | {"sent": dict(outcome.send.events_sent)}
    ledger.put(state=state, ended=str(time.time()), last_run=summary)
