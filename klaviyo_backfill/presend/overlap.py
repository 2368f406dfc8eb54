"""Before the first request of a new job: does another integration's metric of the same name
hold events in the months the job sends, and which of its orders does another API sender
(the shop's own live integration, in the same `Placed Order` metric) hold already?
(`preflight` shows the same readings.)"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import (
    OverlapError,
    ScopeError,
    UsageError,
)
from ..klaviyo.http import loopback_only
from ..klaviyo.reading import ReadConfig, Reader, gather_limited
from ..model import METRICS, PLACED, order_key
from ..options import SendOptions
from ..pipeline.job import check_revision
from ..proof.orders import windows
from ..proof.reconcile import OtherCounts, describe_overlaps, overlaps, years_of
from ..state.account_ledger import AccountLedger

if TYPE_CHECKING:  # annotations only
    from ..klaviyo.reading import HeldEvent, Metric, ReadConfig, Reader
    from ..klaviyo.sender import SendConfig
    from ..klaviyo.throttle import Wait
    from ..proof.orders import Window
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

    return (await api_and_other_metrics(config))[1]


async def api_and_other_metrics(config: ReadConfig) -> tuple[Metric | None, list[Metric]]:
    """The API's Placed Order (every private-key sender's), and other integrations' metrics
    of the names this tool sends, read page by page (only those kept)."""

    placed, others = None, []
    async with Reader(config) as reader:
        async for m in reader.each_metric():
            if m.via_api and m.name == PLACED:
                placed = m
            elif not m.via_api and m.name in METRICS:
                others.append(m)
    return placed, others


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


async def held_by_api(
    config: ReadConfig,
    placed: Metric,
    counts: dict[tuple[str, str], int],
    ids: set[str] | None,
    ledger: Path | None,
    store: str | None = None,
) -> dict[str, str] | None:
    """Orders the API's Placed Order holds in the months of `counts` (the export's Placed
    Order events per month) that this tool did not send to this account (its `ledger`), as
    order key -> UTC month; only those in `ids`, given a set (the export's orders). With a
    `store`, an event of that store, or of none (a sender that names no store may be this
    shop's). Read window by window, a few at once, page by page: only order keys are kept.
    None when the key cannot read events (events:read). (An order sent in part is this
    tool's too: the send asks `delta.Elsewhere`, which knows its events.)"""
    # (opened as a send opens it: a link in its place, or another file, refused by name)
    ours = AccountLedger(ledger) if ledger and (ledger.exists() or ledger.is_symlink()) else None

    async def one(reader: Reader, window: Window) -> dict[str, str]:
        seen: set[str] = set()

        def take(page: list[HeldEvent]) -> None:
            seen.update(e.order_id for e in page if e.order_id)  # a page at a time

        await reader.scan_events(placed.id, window.start, window.end, take, seen.clear)
        theirs = _theirs(seen, ours)
        found: dict[str, str] = {}
        for order_id in theirs:  # (an event of no store: this store's too, unless ours)
            for key in (order_id, order_key(store, order_id)):
                if ids is None or key in ids:
                    found[key] = window.month
        if store:  # a store's keys, asked of the ledger in turn
            keep = _theirs(set(found), ours)
            found = {key: month for key, month in found.items() if key in keep}
        return found

    held: dict[str, str] = {}
    try:
        async with Reader(config) as reader:
            spans = [w for w in windows(counts) if w.metric == PLACED]
            for found in await gather_limited([partial(one, reader, w) for w in spans],
                                              config.event_windows):  # fmt: skip
                for order_id, month in found.items():
                    held.setdefault(order_id, month)
    except ScopeError as exc:
        if "events:read" not in exc.scopes:
            raise
        return None
    finally:
        if ours is not None:
            ours.close()
    return held


def _theirs(ids: set[str], ours: AccountLedger | None) -> set[str]:
    """Those of these order keys that this tool did not send whole to this account."""
    return ids - set(ours.held_orders(list(ids))) if ours is not None and ids else ids


@dataclass
class Checked:
    """What the check before a new job found: what its checkpoint keeps of it (`said`), and
    the orders another API sender holds (the send skips them)."""

    said: str
    elsewhere: set[str] = field(default_factory=set)


NO_EVENTS_READ = ("Warning: this key cannot read events (no events:read scope), so whether "
                  "another API sender (the shop's own integration) already holds these orders "
                  "was not checked.")  # fmt: skip


def overlap_check(
    config: SendConfig,
    notify: Callable[[str], None],
    counted: Callable[[], Counter[tuple[str, str]]],
    waiting: Callable[[Wait], None] | None = None,
    ledger: Path | None = None,
    store: str | None = None,
) -> Checked:
    """Before the first request of a new job: refuse (OverlapError) where another
    integration's metric of the same name holds events in months the job would send, and
    find the orders another API sender holds in the months of its Placed Order events (not
    sent by this tool to this account: its `ledger`). Reads the export only when such a
    metric exists: `counted` gives the job's events per metric and UTC month, in the reading
    before the send (tables.py: the survey, or the pass that finds each customer's latest
    order, whose results the send takes as they are). Returns what the checkpoint keeps of
    the check, and the orders another API sender holds."""

    assert config.api_key is not None
    read = ReadConfig(config.base_url, config.api_key, config.revision, timeout=config.timeout,
                      retry=config.retry, observer=waiting)  # fmt: skip
    started = time.monotonic()
    try:
        placed, others = asyncio.run(api_and_other_metrics(read))
    except ScopeError:
        notify("Warning: this key cannot read metrics (no metrics:read scope), so whether "
               "another integration already holds these orders was not checked.")  # fmt: skip
        return Checked("not checked: the key cannot read metrics")
    if not others and placed is None:
        return Checked("checked: none")
    months = counted()

    async def count() -> list[OtherCounts]:
        async with Reader(read) as reader:
            return await other_counts(reader, others, months)

    found = overlaps(months, asyncio.run(count())) if others else []
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
    checked = Checked("checked: none")
    if placed is not None:
        counts = {key: n for key, n in months.items() if key[0] == PLACED}
        held = asyncio.run(held_by_api(read, placed, counts, None, ledger, store))
        if held is None:
            notify(NO_EVENTS_READ)
            checked.said += "; other API senders not checked (no events:read scope)"
        else:
            checked.elsewhere = set(held)
            log.info("another API sender holds %d order id(s) in the export's months "
                     "(%.1f s)", len(held), time.monotonic() - started)  # fmt: skip
            if held:
                checked.said += (
                    f"; another API sender holds {len(held):,} order id(s) "
                    "of these months: the export's are skipped"
                )
    return checked
