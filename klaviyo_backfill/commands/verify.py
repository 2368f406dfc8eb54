"""`verify`: what a job sent against what Klaviyo holds (proof/ compares).

    monthly    the checkpoint's totals of acknowledged events per metric, UTC month and
               currency, against the monthly aggregates of the API's metric of each name
               (proof/reconcile.py): the fast summary, and all there is without events:read
    per order  the acknowledged events of the job and its earlier jobs (state/history.py:
               both windows, an export saved over the file, a job before --restart), window
               by window, against the events
               Klaviyo lists (GET /api/events; proof/orders.py): each order held, missing,
               held twice or different; the missing ones written to a repair file, and the
               one command that resends them printed (repair.py)

Months the aggregates refuse (older than their reach) are verified through the events."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from ..errors import (
    CheckpointError,
    QueryError,
    ScopeError,
    UsageError,
)
from ..klaviyo.endpoints import API_INTEGRATION
from ..klaviyo.reading import Reader, gather_limited
from ..options import SendOptions
from ..presend.overlap import read_config
from ..proof.orders import Proof, Window, all_as_sent, compare_window, windows
from ..proof.reconcile import MetricTotal, compare, metric_order, money, years_of
from ..results import Verification
from ..state.account_ledger import account_ledger_path
from ..state.checkpoint import Ledger, Total, TotalKey
from ..state.files import private_folder
from ..state.history import History
from ..state.locate import (
    archived,
    checkpoints_dir,
    default_path,
    found_for,
    restarted,
    saved_over,
)
from ..state.sqlite import BAD_VALUES, trouble
from .account import history_of
from .repair import command, replay_args, without_window, write

if TYPE_CHECKING:  # annotations only
    from ..klaviyo.reading import Metric, MonthTotal, ReadConfig
    from ..proof.reconcile import Held


log = logging.getLogger("klaviyo_backfill.verify")
A = TypeVar("A")
B = TypeVar("B")


def verify(options: SendOptions, ask_key: Callable[[], str | None] = lambda: None) -> Verification:
    """Compare what Klaviyo acknowledged for the export's checkpoint (this key's account)
    with what Klaviyo holds now."""

    config = read_config(options, ask_key)
    _no_job_at_all(options)  # said before any request
    account = history_of(config)  # Klaviyo's id where the key may read it (account.py)
    started = time.monotonic()
    path = _verify_checkpoint(options, account)
    ledger = Ledger(path, read_only=True)
    per_order: History | None = None
    try:
        try:
            ledger.check_account(account)
            sent, reread = _with_earlier_jobs(path, _sent_totals(ledger)), False
            running = ledger.condition().startswith("running")
            summary = json.loads(ledger.get("last_run") or "{}")
            result = Verification(path, ledger.condition(), [], [], [], running, reread,
                                  summary, ledger.rejected_rows())  # fmt: skip
            result.unfinished = ledger.unfinished()
            result.account = account
            result.continuation = ledger.get("command") if result.unfinished else None
            if result.continuation and saved_over(ledger.get("inputs"), ledger.get("files_print")):
                result.continuation = restarted(result.continuation)  # as status says
            if ledger.has_acked():
                held_by = account_ledger_path(account)
                per_order = History(ledger, _resent_as, held_by if held_by.is_file() else None)
        except BAD_VALUES as exc:  # a value no checkpoint holds: it was edited or damaged
            raise trouble(path, exc) from None
        if per_order is None:
            result.proof_note = ("per order: not checked (this checkpoint, of an earlier "
                                 "version, keeps no events one by one)")  # fmt: skip
        with _few_collections():
            held, result.missing, result.reads, refused, proof = asyncio.run(
                _held(config, sent, per_order)
            )
        if proof is not None and per_order is not None:
            _repair(result, proof, path, per_order, options)
    finally:
        if per_order is not None:
            per_order.close()
        ledger.close()
    result.rows, result.totals = compare(sent, held)
    result.beyond_reach = sorted(refused)
    if proof is None and per_order is not None:
        result.proof_note = ("per order: not checked: the key lacks the events:read scope "
                             "(the monthly aggregates only)")  # fmt: skip
    if proof is not None:
        _by_events(result, proof, refused)
        result.proof = proof
    elif refused:
        result.unverified = sorted(refused)
    now = time.time()
    result.processing = running or any(row.short and row.recent(now) for row in result.rows)
    result.elapsed = time.monotonic() - started
    return result


@contextmanager
def _few_collections() -> Iterator[None]:
    """Python's cyclic collector rarely, while the events are read: a page of 1,000 events
    is ~8,000 short-lived dicts, and a collection every 700 of them walked what the reads
    keep alive for half the run's CPU (3 s of 6 for 250,000 events). None of them forms a
    cycle: reference counting frees them; a collection still runs every 100,000."""
    before = gc.get_threshold()
    gc.set_threshold(100_000, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


def _with_earlier_jobs(path: Path, sent: dict[TotalKey, Total]) -> dict[TotalKey, Total]:
    """The job's totals and its earlier jobs' (another window, an export saved over the file,
    a --restart: locate.archive): everything the account acknowledged from this export."""
    for earlier in archived(path):
        old = Ledger(earlier, read_only=True)
        try:
            totals = old.totals() if old.has_totals() else {}
        finally:
            old.close()
        for key, total in totals.items():
            into = sent.setdefault(key, Total())
            into.events += total.events
            into.value += total.value
            into.last_at = max(into.last_at, total.last_at)
    return sent


def _no_job_at_all(options: SendOptions) -> None:
    """Refuse, before the key's account is read, a checkpoint named that is not there, or
    exports no account holds a job of."""
    if options.checkpoint:
        if not Path(options.checkpoint).is_file():
            raise CheckpointError(f"no checkpoint at {options.checkpoint}")
        return
    paths = list(options.inputs.paths)
    if not paths:
        raise UsageError("give the export PATHS the send used, or --checkpoint FILE")
    if not found_for(paths):
        raise CheckpointError(
            f"no checkpoint for {', '.join(paths)} in {checkpoints_dir()}",
            "A checkpoint is keyed by the exports' full paths: name them as the send did, or "
            "name the checkpoint with --checkpoint FILE.",
        )


def _verify_checkpoint(options: SendOptions, account: str) -> Path:
    """The checkpoint `send` kept for these exports and this key's account (as `status`
    finds them), or the one named."""
    if options.checkpoint:
        return Path(options.checkpoint)
    paths = list(options.inputs.paths)
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
    raise CheckpointError(f"no checkpoint for {', '.join(paths)} in {checkpoints_dir()}")


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


async def _held(
    config: ReadConfig, sent: dict[TotalKey, Total], ledger: History | None
) -> tuple[Held, list[str], int, set[int], Proof | None]:
    """Klaviyo's aggregates of the API's metric of each name the job sent, per UTC month and
    currency, in the years it sent, and (given a ledger that keeps the events one by one)
    the per-order proof: (held, metrics Klaviyo has no API metric of, requests, years the
    aggregates refused, the proof; None without events:read)."""
    held: Held = {}
    missing: list[str] = []
    refused: set[int] = set()
    async with Reader(config) as reader:
        api = await api_metrics(reader)
        jobs, names = [], []
        for name in sorted({key[0] for key in sent}, key=metric_order):
            found = api.get(name)
            if found is None:
                missing.append(name)
                continue
            for year in years_of(month for metric, month, _ in sent if metric == name):
                jobs.append(partial(_aggregate, reader, found.id, year))
                names.append(name)
        # at once: each paced to its own windows (a query counts from when it was written,
        # however long the pages of events keep the loop busy before it is)
        results, proof = await _both(gather_limited(jobs, config.concurrency),
                                     _per_order(reader, ledger, api, sent))  # fmt: skip
        for name, totals in zip(names, results, strict=True):
            if isinstance(totals, int):
                refused.add(totals)
                continue
            for t in totals:
                key = (name, t.month, t.currency or "")
                count, value = held.get(key, (0, Decimal(0)))
                held[key] = (count + t.count, value + (t.value or Decimal(0)))
        return held, missing, reader.stats.requests, refused, proof


async def _both(first: Awaitable[A], second: Awaitable[B]) -> tuple[A, B]:
    """Both results; the first error cancels the other and is raised."""
    tasks = (asyncio.ensure_future(first), asyncio.ensure_future(second))
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    return tasks[0].result(), tasks[1].result()


async def api_metrics(reader: Reader) -> dict[str, Metric]:
    """The API's metric of each name (every private-key sender's events land there)."""
    api: dict[str, Metric] = {}
    async for metric in reader.each_metric(API_INTEGRATION):
        if metric.via_api:
            api.setdefault(metric.name, metric)
    return api


async def _aggregate(reader: Reader, metric_id: str, year: int) -> list[MonthTotal] | int:
    """A year of a metric's aggregate, or the year itself where Klaviyo refuses to aggregate
    it (older than the aggregates' reach): those months are verified through the events."""
    try:
        return await reader.aggregate(metric_id, year)
    except QueryError as exc:
        log.warning("aggregates of %d refused: %s", year, exc.message)
        return year


async def _per_order(
    reader: Reader, ledger: History | None, api: dict[str, Metric], sent: dict[TotalKey, Total]
) -> Proof | None:
    """Each window's acknowledged events (of every job of the export) against the events Klaviyo lists in it; None when
    the key may not list events (events:read)."""
    if ledger is None:
        return None
    proof = Proof()
    counts: dict[tuple[str, str], int] = {}
    for (metric, month, _), total in sent.items():
        if metric in api:
            counts[(metric, month)] = counts.get((metric, month), 0) + total.events

    async def one(window: Window) -> None:
        held = await reader.held(api[window.metric].id, window.start, window.end)
        sent, currency = ledger.acked_keys(window.metric, window.start, window.end)
        found = all_as_sent(window, sent, currency, held)
        if found is None:  # not all held as sent: order by order
            acked = ledger.acked(window.metric, window.start, window.end)
            found = compare_window(window, acked, held.events())
        if found.others:  # what the account holds beyond the job: whose
            found.beyond(ledger.sent_elsewhere(list(found.others)))
        proof.add(found)

    try:
        await gather_limited([partial(one, w) for w in windows(counts)],
                             reader.config.event_windows)  # fmt: skip
    except ScopeError as exc:
        if "events:read" not in exc.scopes:
            raise
        return None
    proof.sorted()
    return proof


def _by_events(result: Verification, proof: Proof, refused: set[int]) -> None:
    """Rows of months the aggregates refused: what Klaviyo holds of the job's orders there,
    from the events (`via` "events")."""
    rows = []
    for row in result.rows:
        if int(row.month[:4]) in refused:
            count = proof.months.get((row.metric, row.month))
            n, v = count.held_by_currency.get(row.currency, (0, 0.0)) if count else (0, 0.0)
            held = Decimal(repr(round(v, 6)))
            row = replace(row, klaviyo_count=n, klaviyo_value=money(held, row.currency),
                          via="events")  # fmt: skip
        rows.append(row)
    result.rows = rows
    totals: dict[tuple[str, str], MetricTotal] = {}
    for t in result.totals:
        totals[(t.metric, t.currency)] = replace(t, klaviyo_count=0, klaviyo_value=Decimal(0),
                                                 short_rows=0)  # fmt: skip
    for row in rows:
        t = totals[(row.metric, row.currency)]
        t.klaviyo_count += row.klaviyo_count
        t.klaviyo_value += row.klaviyo_value
        t.short_rows += row.short
    result.totals = list(totals.values())


def _resent_as(ledger: Ledger) -> str:
    """How a job's events are sent again: its send's arguments without its window (a repair
    sends the events it lists, whichever window they were in); "" where the job kept none."""
    args = ledger.get("send_args")
    return json.dumps(without_window(json.loads(args))) if args else ""


def _repair(
    result: Verification, proof: Proof, checkpoint: Path, history: History, options: SendOptions
) -> None:
    """Write the missing events, whichever job of the export sent them, to the repair file
    beside the checkpoint (in the state's checkpoints folder where the checkpoint's own
    cannot be written: verify reads a read-only one), and the command that resends them; a
    clean proof removes earlier repair files. Jobs sent with other options than the
    current one (not the window) get a repair file each, and the commands are chained."""
    path = Path(f"{checkpoint.resolve()}.repair.json")
    if not os.access(path.parent, os.W_OK):
        if not proof.missing:
            return
        private_folder(checkpoints_dir())
        path = checkpoints_dir() / path.name
    for stale in [path, *path.parent.glob(f"{path.name.removesuffix('.json')}-*.json")]:
        stale.unlink(missing_ok=True)
    if not proof.missing:
        return
    groups: dict[str, list[tuple[str, str, str]]] = {}
    for event in proof.missing:
        groups.setdefault(history.group_of(event[0], event[1]), []).append(event)
    commands, files = [], []
    mine = history.mine
    for n, (group, missing) in enumerate(sorted(groups.items(), key=lambda g: g[0] != mine)):
        stem = path.name.removesuffix(".json")
        named = path if n == 0 else path.with_name(f"{stem}-{n + 1}.json")
        write(named, history.ledger_of[group].path.resolve(), missing)
        files.append(str(named))
        replay = json.loads(group) if group else None
        if replay is None and options.inputs.paths:
            replay = without_window(replay_args(options))
        if replay is not None:
            commands.append(command(named, replay, options.base_url))
    if len(commands) < len(files):
        result.repair_hint = (f"the missing events are listed in {', '.join(files)}; resend "
                              "them with `klaviyo-backfill send EXPORT... [the send's options] "
                              "--repair FILE`")  # fmt: skip
        return
    result.repair = " && ".join(commands)
