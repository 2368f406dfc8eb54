"""Before the first request of a new job: does another integration's metric of the same name
hold events in the months the job sends? (`preflight` shows the same reading.)"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from ..errors import (
    OverlapError,
    ScopeError,
    UsageError,
)
from ..klaviyo.http import loopback_only
from ..klaviyo.reading import ReadConfig, Reader, gather_limited
from ..model import METRICS
from ..options import SendOptions
from ..pipeline.job import check_revision
from ..proof.reconcile import OtherCounts, describe_overlaps, overlaps, years_of

if TYPE_CHECKING:  # annotations only
    from ..klaviyo.reading import Metric, ReadConfig, Reader
    from ..klaviyo.sender import SendConfig
    from ..klaviyo.throttle import Wait
    from ..proof.reconcile import OtherCounts


log = logging.getLogger("klaviyo_backfill.run")


def read_config(options: SendOptions, ask_key: Callable[[], str | None]) -> ReadConfig:
    """Where to read from, with which key: checked before anything is read."""

    loopback_only(options.base_url)
    check_revision(options.revision, False)
    key = options.api_key or ask_key()
    if not key:
        raise UsageError(
            "no API key: set KLAVIYO_API_KEY (a private key with the metrics:read scope)"
        )
    return ReadConfig(options.base_url, key, options.revision)


async def other_metrics(config: ReadConfig) -> list[Metric]:
    """Other integrations' metrics of the names this tool sends, read page by page (only
    those kept)."""

    async with Reader(config) as reader:
        return [m async for m in reader.each_metric() if not m.via_api and m.name in METRICS]


async def other_counts(
    reader: Reader, others: list[Metric], months: dict[tuple[str, str], int]
) -> list[OtherCounts]:
    """Each other integration's metric: its events per UTC month, in the years the export
    has events of that metric in (one query per year)."""

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


def overlap_check(
    config: SendConfig,
    notify: Callable[[str], None],
    counted: Callable[[], Counter[tuple[str, str]]],
    waiting: Callable[[Wait], None] | None = None,
) -> str:
    """Before the first request of a new job: refuse (OverlapError) where another
    integration's metric of the same name holds events in months the job would send. Reads
    the export only when such a metric exists: `counted` gives the job's events per metric
    and UTC month, in the reading before the send (tables.py: the survey, or the pass that
    finds each customer's latest order, whose results the send takes as they are). Returns
    what the checkpoint keeps of the check."""

    assert config.api_key is not None
    read = ReadConfig(config.base_url, config.api_key, config.revision, timeout=config.timeout,
                      retry=config.retry, observer=waiting)  # fmt: skip
    started = time.monotonic()
    try:
        others = asyncio.run(other_metrics(read))
    except ScopeError:
        notify("Warning: this key cannot read metrics (no metrics:read scope), so whether "
               "another integration already holds these orders was not checked.")  # fmt: skip
        return "not checked: the key cannot read metrics"
    if not others:
        return "checked: none"
    months = counted()

    async def count() -> list[OtherCounts]:
        async with Reader(read) as reader:
            return await other_counts(reader, others, months)

    found = overlaps(months, asyncio.run(count()))
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
