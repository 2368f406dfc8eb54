"""`verify`: what a job sent against what Klaviyo holds (proof/reconcile.py compares).

The checkpoint's totals of acknowledged events per metric, UTC month and currency, against
the monthly aggregates of the API's metric of each name."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import (
    CheckpointError,
    UsageError,
)
from ..klaviyo.account import account_id
from ..klaviyo.endpoints import API_INTEGRATION
from ..klaviyo.reading import Reader, gather_limited
from ..model import utc_month
from ..options import SendOptions
from ..pipeline.job import FINGERPRINTED, job_from
from ..pipeline.orders import mapped_orders
from ..pipeline.summary import Stats
from ..presend.overlap import read_config
from ..proof.reconcile import compare, metric_order, years_of
from ..results import Verification
from ..state.checkpoint import Ledger, Total, TotalKey
from ..state.failures import Failures
from ..state.locate import checkpoints_dir, default_path, earlier_path, found_for

if TYPE_CHECKING:  # annotations only
    from ..klaviyo.reading import Metric, ReadConfig
    from ..proof.reconcile import Held


def verify(options: SendOptions, ask_key: Callable[[], str | None] = lambda: None) -> Verification:
    """Compare what Klaviyo acknowledged for the export's checkpoint (this key's account)
    with what Klaviyo holds now."""

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
