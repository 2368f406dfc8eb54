"""`preflight`: before a send, the key, the export, the overlap with other integrations and
the time the send will take."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import ScopeError
from ..klaviyo.account import account_id
from ..klaviyo.reading import Reader
from ..klaviyo.throttle import ideal_seconds, parse_rate_limit
from ..model import METRICS, PLACED, order_key
from ..options import SendOptions
from ..pipeline.job import job_from
from ..pipeline.stages import export_pass
from ..presend.overlap import other_counts, read_config
from ..proof.orders import HeldElsewhere, windows
from ..proof.reconcile import overlaps
from ..results import Preflight
from ..state.account_ledger import AccountLedger, account_ledger_path

if TYPE_CHECKING:  # annotations only
    from ..klaviyo.reading import Account, Flow, HeldEvent, Metric, ReadConfig
    from ..pipeline.summary import Stats
    from ..proof.reconcile import OtherCounts


def preflight(options: SendOptions, ask_key: Callable[[], str | None] = lambda: None) -> Preflight:
    """Check the key and what it may read, read the export as a dry run does, and set its
    months against other integrations' metrics of the same names."""

    job = job_from(options)
    config = read_config(options, ask_key)
    account, metrics, scopes = asyncio.run(_key_check(config))
    ids: set[str] = set()
    stats, bodies = export_pass(job, ids)
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
    placed = api.get(PLACED)
    if placed is not None:
        months = sorted({month for metric, month in stats.metric_months if metric == PLACED})
        held = asyncio.run(held_by_api(config, placed, months, ids, job.store))
        scopes["events:read"] = held is not None
        theirs = _not_ours(held, config) if held else {}
        if theirs:
            report.api_held = HeldElsewhere.of(theirs)
    return report


async def held_by_api(
    config: ReadConfig, placed: Metric, months: list[str], ids: set[str], store: str | None = None
) -> dict[str, str] | None:
    """The export's orders whose OrderId the API's Placed Order holds in the export's months
    (order key -> month): this tool's, or another API sender's (the merchant's own live
    integration). With a `store`, an event of that store, or of none (a sender that names
    no store may be this shop's). None when the key cannot read events (events:read)."""
    held: dict[str, str] = {}
    async with Reader(config) as reader:
        try:
            for window in windows({(PLACED, month): 1 for month in months}):

                def take(page: list[HeldEvent], month: str = window.month) -> None:
                    for event in page:  # a page at a time: a month's events are never kept
                        key = event.order_id
                        if store and key not in ids:
                            key = order_key(store, key)
                        if key in ids:
                            held.setdefault(key, month)

                await reader.scan_events(placed.id, window.start, window.end, take)
        except ScopeError as exc:
            if "events:read" not in exc.scopes:
                raise
            return None
    return held


def _not_ours(held: dict[str, str], config: ReadConfig) -> dict[str, str]:
    """Those of the orders that this tool did not send to this account (its ledger)."""
    path = account_ledger_path(account_id(config.base_url, config.api_key))
    if not path.exists():
        return held
    ledger = AccountLedger(path, read_only=True)
    try:
        ours = ledger.held_orders(list(held))
    finally:
        ledger.close()
    return {order: month for order, month in held.items() if order not in ours}


async def _key_check(config: ReadConfig) -> tuple[Account | None, list[Metric], dict[str, bool]]:
    """The key: the metrics of the names this tool sends (401 and 403 stop here), and the account if it may read it."""

    async with Reader(config) as reader:
        metrics = [m async for m in reader.each_metric() if m.name in METRICS]
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

    async with Reader(config) as reader:
        counts = await other_counts(reader, others, stats.metric_months)
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
