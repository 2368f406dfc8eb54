"""The library-callable core: a dry run, and (send.py) a real one."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from .encode import Request, encoder_for
from .job import Job
from .pipeline import Failures, MappedOrder, Stats, map_inputs

__all__ = ["dry_run", "open_output"]


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


def _events(orders: Iterator[MappedOrder]) -> Iterator[list]:  # type: ignore[type-arg]
    for mapped in orders:
        yield mapped.events


def dry_run(job: Job, preview: int = 1) -> tuple[Stats, list[Request], int]:
    """Map and encode everything, send nothing: (stats, first requests, failures written)."""
    stats = Stats()
    failures = Failures(job.failures)
    encoder = encoder_for(job.endpoint, job.backfill)
    first: list[Request] = []
    try:
        with open_output(job.output) as out:
            orders = map_inputs(job.inputs, job.settings, job.filters, stats, failures)
            for request in encoder.requests(_events(orders)):
                if len(first) < preview:
                    first.append(request)
                if out is not None:
                    out.write(request.body + b"\n")
    finally:
        failures.close()
    return stats, first, failures.count
