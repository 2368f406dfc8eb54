"""`verify`: what a job sent against what Klaviyo holds (proof/reconcile.py compares).

The checkpoint's totals of acknowledged events per metric, UTC month and currency, against
the monthly aggregates of the API's metric of each name."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
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
from ..options import SendOptions
from ..presend.overlap import read_config
from ..proof.reconcile import compare, metric_order, years_of
from ..results import Verification
from ..state.checkpoint import Ledger, Total, TotalKey
from ..state.locate import checkpoints_dir, default_path, found_for

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
        sent, reread = _sent_totals(ledger), False
        running = ledger.condition().startswith("running")
        summary = json.loads(ledger.get("last_run") or "{}")
        result = Verification(path, ledger.condition(), [], [], [], running, reread, summary,
                              ledger.rejected_rows())  # fmt: skip
        result.unfinished = ledger.unfinished()
        result.continuation = ledger.get("command") if result.unfinished else None
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
    path = default_path(paths, account)
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
        f"no checkpoint for {', '.join(paths)} in {checkpoints_dir()}",
        "A checkpoint is keyed by the exports' full paths: name them as the send did, or name "
        "the checkpoint with --checkpoint FILE.",
    )


def _sent_totals(ledger: Ledger) -> dict[TotalKey, Total]:
    """What Klaviyo acknowledged: the checkpoint's totals. A checkpoint of a pre-release
    version kept none, and is refused."""
    if not ledger.has_totals():
        raise CheckpointError(
            f"checkpoint {ledger.path} was written by a pre-release version, which kept no "
            "totals of what Klaviyo acknowledged: it cannot be verified",
            "Send the export again with --restart: the account's ledger skips what it holds, "
            "and the new checkpoint keeps the totals verify compares.",
        )
    return ledger.totals()


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
