"""The pipeline, assembled once for every command: exports -> orders -> events -> request
bodies.

    orders(job, ...)              read -> convert -> events -> encode, settled in file order
    requests(orders, encoder)     the encoded orders gathered into request bodies

A dry run writes the bodies, `inspect` keeps the statistics, a send hands them to the
Klaviyo client: they differ only in what consumes the requests, so "a dry run is the send
minus the network" holds by construction."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import IO, TYPE_CHECKING

from ..errors import (
    OutputError,
)
from ..mapping.events import Never
from ..presend.latest import Latest
from ..state.failures import Failures
from ..state.files import open_private
from .orders import mapped_orders
from .summary import Stats

if TYPE_CHECKING:  # annotations only
    from ..mapping.encode import Encoder, Request
    from ..presend.delta import Delta
    from ..presend.stores import StoresCheck
    from ..presend.survey import Survey
    from ..state.account_ledger import AccountLedger
    from .job import Job
    from .orders import MappedOrder, Resume
    from .summary import Stats


def orders(
    job: Job, encoder: Encoder, stats: Stats, failures: Failures, resume: Resume | None = None
) -> Iterator[MappedOrder]:
    """Stage one: every order of the job's exports, mapped and encoded, in file order."""

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
    built: Latest | None = None,
    stores: StoresCheck | None = None,
) -> Iterator[Job]:
    """The job with its rule for which orders carry profile attributes (`--profile-attributes`):
    `latest` reads the exports once first (latest.py), unless a `survey` read them already or
    the overlap check `built` the table in its own pass (the table is closed here). Given
    the `stores` check, that first reading shows it each order (a pass of its own where
    there is no table to build)."""

    if stores is not None and (job.profile_attributes != "latest" or survey or built):
        stores.read(job)
        stores = None
    if job.profile_attributes == "all":
        yield job
        return
    if job.profile_attributes == "none":
        yield replace(job, attributes=Never())
        return
    if survey is not None and survey.latest is not None:
        latest = survey.latest
        if built is not None:
            built.close()
    elif built is not None:
        latest = built
    else:
        latest = Latest.build(
            job, delta if delta is not None and not delta.empty else None, None, stores
        )
    latest.account = account
    try:
        yield replace(job, attributes=latest)
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


def outputting(
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


@contextmanager
def assembled(
    job: Job,
    stats: Stats,
    failures: Failures,
    ids: set[str] | None = None,
    keep: Callable[[MappedOrder], bool] | None = None,
    stores: StoresCheck | None = None,
) -> Iterator[Iterator[Request]]:
    """Stage one and two as every command that sends nothing runs them (a dry run, `inspect`,
    `preflight`): the job's request bodies, with the profile rule a send applies (the
    `latest` pass first), so each sees what the send sends. A send adds its checkpoint, the
    account and its resume point to the same stages (commands/send.py)."""
    encoder = job.endpoint.encoder(job.backfill)
    with profiles_for(job, stores=stores) as ready:
        mapped = orders(ready, encoder, stats, failures)
        yield requests(mapped if ids is None else _noting(mapped, ids, keep), encoder)


def _noting(
    mapped: Iterator[MappedOrder], ids: set[str], keep: Callable[[MappedOrder], bool] | None
) -> Iterator[MappedOrder]:
    for order in mapped:
        if keep is None or keep(order):
            ids.add(order.key)
        yield order


def export_pass(
    job: Job,
    ids: set[str] | None = None,
    keep: Callable[[MappedOrder], bool] | None = None,
    stores: StoresCheck | None = None,
) -> tuple[Stats, int]:
    """The export read as a dry run reads it: its statistics (events per metric and UTC
    month among them) and the request bodies a send would make; the ids of the orders it
    would send into `ids`, given a set, those `keep` says (preflight: the orders another API
    sender may hold, not those whose Placed Order this tool sent)."""
    stats = Stats()
    with assembled(job, stats, Failures(None), ids, keep, stores) as bodies:
        count = sum(1 for _ in bodies)
    return stats, count


def months_pass(job: Job) -> Stats:
    """The export read, converted and mapped, not encoded: events per metric and UTC month
    (`Stats.metric_months`), on every core for a large CSV."""

    stats = Stats()
    for _ in mapped_orders(job, None, stats, Failures(None)):
        pass
    return stats
