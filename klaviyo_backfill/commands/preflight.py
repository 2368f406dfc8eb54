"""`preflight`: before a send, the key, the export, the overlap with other integrations and
the time the send will take."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import ScopeError
from ..klaviyo.account import account_id, klaviyo_id
from ..klaviyo.reading import Reader
from ..klaviyo.throttle import ideal_seconds, parse_rate_limit
from ..model import METRICS, PLACED
from ..options import SendOptions
from ..pipeline.job import job_from
from ..pipeline.stages import export_pass
from ..presend.delta import Elsewhere
from ..presend.overlap import held_by_api, other_counts, read_config
from ..presend.stores import StoresCheck
from ..proof.orders import HeldElsewhere
from ..proof.reconcile import overlaps
from ..results import Preflight
from ..state.account_ledger import AccountLedger, account_ledger_path
from ..state.identity import known
from .account import settled, unread

if TYPE_CHECKING:  # annotations only
    from ..klaviyo.reading import Account, Flow, Metric, ReadConfig
    from ..pipeline.orders import MappedOrder
    from ..pipeline.summary import Stats
    from ..proof.reconcile import OtherCounts


def preflight(options: SendOptions, ask_key: Callable[[], str | None] = lambda: None) -> Preflight:
    """Check the key and what it may read, read the export as a dry run does, and set its
    months against other integrations' metrics of the same names."""

    job = job_from(options)
    config = read_config(options, ask_key)
    account, metrics, scopes = asyncio.run(_key_check(config))
    history = _history(config, account)  # the account send, status and verify name
    ids: set[str] = set()  # the orders another API sender may hold: not this tool's own
    path = account_ledger_path(history)
    api_placed = any(m.via_api and m.name == PLACED for m in metrics)
    ledger = AccountLedger(path) if api_placed and (path.exists() or path.is_symlink()) else None
    stores = StoresCheck.needed(job, path, read_only=True)  # the send's stores check
    held_here = 0  # orders this tool sent the account already: a send skips them unchanged

    def not_ours(order: MappedOrder) -> bool:
        nonlocal held_here
        ours = rule.ours(order.events)
        held_here += ours
        return not ours

    try:
        rule = Elsewhere(frozenset(), ledger)  # the send's rule (presend/delta.py)
        stats, bodies = export_pass(job, ids, not_ours, stores)
        refused = None if stores is None else stores.refusal()
    finally:
        if ledger is not None:
            ledger.close()
        if stores is not None:
            stores.close()
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
    report.history = history
    report.held_here = held_here
    if refused is not None:
        report.stores = f"{refused.message}. {refused.hint}"
    placed = api.get(PLACED)
    if placed is not None:
        placed_months = {k: n for k, n in stats.metric_months.items() if k[0] == PLACED}
        held = asyncio.run(held_by_api(config, placed, placed_months, ids, path, job.store))
        scopes["events:read"] = held is not None
        if held:
            report.api_held = HeldElsewhere.of(held)
    return report


def _history(config: ReadConfig, account: Account | None) -> str:
    """The account id a send of this key keeps its history under, as `send` and `status`
    name it (account.py): the account just read, else the one remembered, else the hash."""
    hashed = account_id(config.base_url, config.api_key)
    if account is not None and klaviyo_id(account.id):
        return settled(hashed, account.id)
    return known(hashed, klaviyo_id) or unread(hashed, warn=False)


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
