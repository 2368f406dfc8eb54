"""End to end: the real `klaviyo-backfill` console script, as a subprocess, against the Klaviyo
stand-in (tests/standin.py) on 127.0.0.1.

What "right" means is never hard-coded: every test derives the events Klaviyo must end up
holding, as (profile identity, metric, unique_id), from a `--dry-run --endpoint single
--output FILE` run over the same export, read with the stand-in's own parser. The stand-in
dedupes on that key, so "every event stored" is `standin.keys() == expected`, and a resend
after a kill or a lost answer shows up as `duplicates_skipped`, never as a second event.

Limits are scaled down (bulk: 10 per s, 60 per 6 s, the CLI told `--rate-limit 10/s,60/6s`).
A bulk request holds up to 1,000 events, so the 300-order corpus (~990 events) is a single
bulk request: the tests that need many requests in flight use a 1,000-order corpus for bulk,
or the single-event endpoint.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import secrets
import shlex
import shutil
import signal
import sqlite3
import stat
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import cli_helpers
import corpus
import httpx
import pytest
import standin as st
from cli_helpers import CLI, logs, said, wait_until

from klaviyo_backfill.errors import ExitCode, GaveUp
from klaviyo_backfill.klaviyo.endpoints import ENDPOINTS
from klaviyo_backfill.klaviyo.retry import RetryPolicy
from klaviyo_backfill.klaviyo.sender import SendConfig, Sender, SendStats
from klaviyo_backfill.klaviyo.throttle import Window
from klaviyo_backfill.model import Event
from klaviyo_backfill.pipeline.orders import MappedOrder
from klaviyo_backfill.pipeline.tracker import Tracker
from klaviyo_backfill.state.checkpoint import Ledger
from klaviyo_backfill.state.failures import Failures

KEY = "pk_e2e_" + secrets.token_hex(12)  # unique, so "appears nowhere" can be searched for
BULK_LIMITS = st.Limits(10, 1.0, 60, 6.0)
BULK_RATE = "10/s,60/6s"
SINGLE_RATE = "300/s,3000/m"  # under the stand-in's default 350/s, 3500/60 s
HOSTILE = st.Faults(server_error=0.08, reset=0.04, lost_ack=0.03, html_502=0.02,
                    throttle_no_retry_after=0.02, seed=35032)  # fmt: skip
# seed 35032 draws server_error, html_502, reset, -, lost_ack, -, throttle first: every fault
# kind is met within the first seven requests, so even the few bulk requests meet them all.
REVISION = date(2026, 7, 15)  # the CLI's default --revision
Key = tuple[str, str, str]


# ---------------------------------------------------------------- running the CLI


def cli(cwd: Path, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the console script with KLAVIYO_API_KEY=KEY, unless `env` names another."""
    return cli_helpers.run(cwd, KEY, *args, timeout=timeout, columns=None, **env)


def popen(cwd: Path, log: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
    return cli_helpers.start(cwd, KEY, log, *args, **env)


def wait_for_requests(
    s: st.StandIn, n: int, proc: subprocess.Popen[bytes], limit: float = 30, where: str = ""
) -> None:
    """Until the stand-in has logged `n` requests (or the process ended)."""
    wait_until(lambda: len(s.requests) >= n or proc.poll() is not None, limit=limit, what=where)


def settle(s: st.StandIn, where: str = "") -> None:
    """Until the stand-in has logged what a killed sender left in flight: it logs a request
    when it answers, after validating the body (~0.3 s for 1,000 bulk events here, more on
    a busy machine) and its latency, so no quiet period is long enough; every connection
    the dead sender opened being closed is."""
    deadline = time.monotonic() + 30
    while not s.idle():
        assert time.monotonic() < deadline, f"the stand-in still busy after 30 s {where}"
        time.sleep(0.01)


def checkpoints_of(cwd: Path) -> Path:
    """Where a run from `cwd` keeps its checkpoints: the state folder it was given (a module
    fixture's run: `cwd/state`; a test's: its own, from conftest), never `cwd` itself."""
    state = cwd / "state" if (cwd / "state").is_dir() else Path(os.environ["XDG_STATE_HOME"])
    return state / "klaviyo-backfill" / "checkpoints"


def checkpoint_in(cwd: Path, where: str = "") -> Path:
    found = sorted(checkpoints_of(cwd).glob("*.sqlite"))
    assert len(found) == 1, f"{found} {where}"
    return found[0]


def ledger_state(path: Path) -> str | None:
    db = sqlite3.connect(path)
    try:
        row = db.execute("SELECT value FROM meta WHERE key = 'state'").fetchone()
        return None if row is None else str(row[0])
    finally:
        db.close()


def ledger_orders(path: Path) -> set[str]:
    """Order ids the checkpoint holds (read with sqlite directly, after the writer is gone)."""
    db = sqlite3.connect(path)
    try:
        return {row[0] for row in db.execute("SELECT id FROM orders")}
    finally:
        db.close()


def sent_attributes(log: st.RequestLog) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(profile attributes, event attributes) of each event a bulk or single request carried."""
    doc = json.loads(log.body)
    if log.path == st.BULK_PATH:
        for group in doc["data"]["attributes"]["events-bulk-create"]["data"]:
            profile = group["attributes"]["profile"]["data"]["attributes"]
            for event in group["attributes"]["events"]["data"]:
                yield profile, event["attributes"]
    else:
        attrs = doc["data"]["attributes"]
        yield attrs["profile"]["data"]["attributes"], attrs


def truncated(log: st.RequestLog) -> bool:
    """The sender died while uploading: the stand-in got less than Content-Length."""
    length = {k.lower(): v for k, v in log.headers.items()}.get("content-length", "0")
    return len(log.body) < int(length)


def statuses(s: st.StandIn, since: int = 0) -> Counter[str]:
    """Answers (or drops) by kind; requests cut short by a killed sender are "truncated"."""
    return Counter("truncated" if truncated(r) else str(r.status) if r.outcome == "answered"
                   else r.outcome for r in s.requests[since:])  # fmt: skip


# ---------------------------------------------------------------- the exports and what they mean


@dataclass
class Export:
    csv: Path
    orders: list[corpus.TruthOrder]
    expected: frozenset[Key]  # what Klaviyo must hold after a complete run
    events: dict[Key, st.StoredEvent]
    invalid: dict[Key, str]  # events the dry run encodes but Klaviyo would refuse -> detail

    @property
    def unidentifiable(self) -> set[str]:
        return {o.id for o in self.orders if not o.identifiable}

    def copy_to(self, where: Path) -> Path:
        return Path(shutil.copy(self.csv, where / "orders.csv"))


def expected_from_dry_run(cwd: Path, export: str, revision: str = "2026-07-15") -> tuple[
    dict[Key, st.StoredEvent], dict[Key, str]
]:  # fmt: skip
    """--dry-run --endpoint single --output: each line one event, keyed as the stand-in keys it;
    events the stand-in would refuse at `revision` are returned apart, with its detail."""
    result = cli(cwd, "send", export, "--dry-run", "--endpoint", "single", "--output",
                 "dry.jsonl", "--failures", "dry.failures.jsonl", "--preview", "0",
                 "--revision", revision, KLAVIYO_API_KEY="")  # fmt: skip
    assert result.returncode in (0, 1), said(result)
    received = datetime.now(UTC).replace(microsecond=0).isoformat()
    rev = date.fromisoformat(revision)
    good: dict[Key, st.StoredEvent] = {}
    bad: dict[Key, str] = {}
    for line in (cwd / "dry.jsonl").read_text().splitlines():
        doc = json.loads(line)
        (event,), _ = st.parse_single(doc, REVISION, received)
        key = (event.identity, event.metric, event.key_uid)
        assert key not in good and key not in bad, f"two events share {key}"
        try:
            st.parse_single(doc, rev, received)
        except st.ApiError as exc:
            bad[key] = "; ".join(detail for detail, _ in exc.errors)
        else:
            good[key] = event
    return good, bad


def make_export(
    where: Path, orders: list[corpus.TruthOrder], revision: str = "2026-07-15"
) -> Export:
    csv = corpus.write_shopify_csv(orders, where / "orders.csv")
    good, bad = expected_from_dry_run(where, csv.name, revision)
    return Export(csv, orders, frozenset(good), good, bad)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Export:
    """300 Shopify orders (~990 events, ~45 unidentifiable orders): one bulk request."""
    return make_export(tmp_path_factory.mktemp("small"), corpus.make_orders(300, 7, "shopify"))


@pytest.fixture(scope="module")
def few(tmp_path_factory: pytest.TempPathFactory) -> Export:
    """100 Shopify orders (~330 events): for the single-event and Track endpoints, where
    every event is one request."""
    return make_export(tmp_path_factory.mktemp("few"), corpus.make_orders(100, 5, "shopify"))


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Export:
    """1,000 Shopify orders (~3,300 events): four bulk requests."""
    return make_export(tmp_path_factory.mktemp("big"), corpus.make_orders(1000, 11, "shopify"))


@pytest.mark.e2e
def test_dry_run_fixtures_are_meaningful(small: Export, few: Export) -> None:
    assert len(small.expected) > 900 and not small.invalid
    assert len(few.expected) > 250 and not few.invalid
    assert small.unidentifiable and few.unidentifiable, "the corpus must hold orders to reject"
    assert {m for _, m, _ in small.expected} == {
        "Placed Order", "Ordered Product", "Fulfilled Order", "Cancelled Order", "Refunded Order"
    }  # fmt: skip


# ---------------------------------------------------------------- 1. a complete bulk send


@pytest.mark.e2e
def test_complete_bulk_send_stores_every_event_exactly_once(small: Export, tmp_path: Path) -> None:
    small.copy_to(tmp_path)
    # the dry run a careful user makes first writes the same failures file: the send replaces it
    dry = cli(tmp_path, "send", "orders.csv", "--dry-run", "--failures", "failures.jsonl")
    assert dry.returncode == 1, said(dry)
    with st.StandIn(api_key=KEY, bulk_limits=BULK_LIMITS) as s:
        result = cli(tmp_path, "send", "orders.csv", "--base-url", s.url, "--rate-limit",
                     BULK_RATE, "--failures", "failures.jsonl", "--summary-json", "summary.json",
                     "-q")  # fmt: skip
        assert result.returncode == 1, said(result)  # finished, with rejected orders
        assert s.keys() == small.expected
        assert len(s.events) == len(small.expected)
        assert s.stats["duplicates_skipped"] == 0  # nothing was sent twice
        assert statuses(s) == Counter({"202": len(s.requests)})
        assert {e.endpoint for e in s.events} == {"bulk"}
        assert all(e.backfill is True for e in s.events)  # no flow fires for a past order

    failures = [json.loads(line) for line in (tmp_path / "failures.jsonl").read_text().splitlines()]
    assert len(failures) == len(small.unidentifiable)
    assert {f["order_id"] for f in failures} == small.unidentifiable

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["orders_read"] == len(small.orders)
    assert summary["orders_read"] == (
        summary["orders_mapped"] + summary["orders_rejected"] + summary["orders_skipped"]
    )
    assert summary["balanced"] is True
    assert summary["orders_rejected"] == len(failures)
    assert sum(summary["events_sent"].values()) == len(small.expected)
    assert summary["events_rejected_by_klaviyo"] == 0
    assert summary["requests"] == len(s.requests)
    assert summary["interrupted"] is False and summary["error"] is None


# ---------------------------------------------------------------- 2. kill -9, resume, repeat


def _no_resend_of(done: set[str], requests: list[st.RequestLog], where: str = "") -> None:
    """A resumed run sends no event of an order the checkpoint already holds."""
    for log in requests:
        if truncated(log):
            continue
        seen: set[Key] = set()
        for profile, attrs in sent_attributes(log):
            order = attrs["properties"]["OrderId"]
            assert order not in done, f"resent checkpointed order {order} {where}"
            who = str(profile.get("email") or profile.get("phone_number")).lower()
            key = (who, attrs["metric"]["data"]["attributes"]["name"], attrs["unique_id"])
            assert key not in seen, f"one request repeats the event {key} {where}"
            seen.add(key)


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.parametrize("endpoint", ["bulk", "single"])
def test_kill_9_at_random_moments_then_resume_loses_nothing(
    endpoint: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    if endpoint == "bulk":
        export: Export = request.getfixturevalue("big")
        standin = st.StandIn(api_key=KEY, bulk_limits=BULK_LIMITS, faults=st.Faults(latency=0.1))
        options = ["--rate-limit", BULK_RATE, "--concurrency", "2"]
        longest = 0.4  # four requests, two at a time, 0.1 s each: the kill lands mid-send
    else:
        export = request.getfixturevalue("few")
        standin = st.StandIn(api_key=KEY, faults=st.Faults(latency=0.02))
        options = ["--endpoint", "single", "--rate-limit", SINGLE_RATE, "--concurrency", "16"]
        longest = 0.6
    export.copy_to(tmp_path)
    seed = int(os.environ.get("E2E_KILL_SEED") or random.randrange(1 << 30))
    rng = random.Random(seed)
    base = ["send", "orders.csv", "--base-url", "", *options, "--failures", "failures.jsonl", "-q"]
    history: list[tuple[int, float, int | None, int]] = []
    step = "round 0"

    def where() -> str:
        """Every assertion says this: replay with E2E_KILL_SEED (the delays; a machine's
        speed decides where they land) and see what each round did."""
        return (
            f"\n[E2E_KILL_SEED={seed} endpoint={endpoint} at {step}; "
            f"rounds (round, delay, exit, requests): {history}]\n"
        )

    with standin as s:
        base[3] = s.url
        for round_ in range(3):
            step = f"round {round_}"
            done = ledger_orders(checkpoint_in(tmp_path, where())) if round_ else set()
            first = len(s.requests)
            proc = popen(tmp_path, f"round{round_}", *base, *(["--resume"] if round_ else []))
            delay = -1.0
            try:
                wait_for_requests(s, first + 1, proc, where=where())
                delay = rng.uniform(0, longest)
                time.sleep(delay)
                proc.send_signal(signal.SIGKILL)
            finally:
                proc.wait(10)
                settle(s, where())
            history.append((round_, round(delay, 3), proc.returncode, len(s.requests) - first))
            output = logs(tmp_path, f"round{round_}")
            assert proc.returncode in (-signal.SIGKILL, 1), where() + output
            state = ledger_state(checkpoint_in(tmp_path, where()))
            if proc.returncode == 1:  # it ran to its end before the kill: finished, not crashed
                assert state == "finished" and "Traceback" not in output, where() + output
            _no_resend_of(done, s.requests[first:], where())
            if round_ == 0 and proc.returncode == -signal.SIGKILL:
                # the killed run left its checkpoint "running": no silent second start
                step = "round 0's refused rerun"
                count = len(s.requests)
                refused = cli(tmp_path, *base)
                if state == "finished":  # the kill came after its last write, before its exit
                    # not sent again: nothing new to send exits 0 (docs/reference.md, since
                    # 1558fb9), the job's rejections named
                    rejected = len(export.unidentifiable) + len(export.invalid)
                    told = " ".join(refused.stdout.split())
                    assert refused.returncode == ExitCode.OK, where() + said(refused)
                    assert "Nothing to do" in told, where() + told
                    assert f"with {rejected} rejected" in told, where() + told
                else:
                    assert refused.returncode == 2, where() + said(refused)
                    assert "--resume" in refused.stderr, where() + said(refused)
                assert len(s.requests) == count, f"the refused rerun sent something {where()}"

        step = "the last resume"
        done = ledger_orders(checkpoint_in(tmp_path, where()))
        first = len(s.requests)
        result = cli(tmp_path, *base, "--resume")
        assert result.returncode == 1, where() + said(result)
        _no_resend_of(done, s.requests[first:], where())
        missing = export.expected - s.keys()
        assert not missing, f"{len(missing)} lost, e.g. {sorted(missing)[:3]} {where()}"
        assert s.keys() == export.expected, (
            f"{len(s.keys() - export.expected)} unexpected {where()}"
        )
        # no request repeated an event within itself (the stand-in answers that with a 400)
        assert statuses(s)["400"] == 0, f"{statuses(s)} {where()}"
        # only a killed sender cuts a body short
        assert statuses(s, first)["truncated"] == 0, f"{statuses(s, first)} {where()}"
    step = "status after the last resume"
    status = cli(tmp_path, "status", "--checkpoint", str(checkpoint_in(tmp_path, where())))
    assert status.returncode == 0 and "finished" in status.stdout, where() + said(status)


# ---------------------------------------------------------------- 3 + 7. a hostile network


@dataclass
class HostileRun:
    cwd: Path
    result: subprocess.CompletedProcess[str]
    standin: st.StandIn
    export: Export


@pytest.fixture(scope="module")
def hostile(big: Export, tmp_path_factory: pytest.TempPathFactory) -> HostileRun:
    """One complete bulk run through resets, lost answers, HTML 502s, 5xx and bare 429s."""
    cwd = tmp_path_factory.mktemp("hostile")
    big.copy_to(cwd)
    state = cwd / "state"  # its own (conftest's is the first test's), looked into for the key
    state.mkdir()
    with st.StandIn(api_key=KEY, bulk_limits=BULK_LIMITS, faults=HOSTILE) as s:
        result = cli(cwd, "send", "orders.csv", "--base-url", s.url, "--rate-limit", BULK_RATE,
                     "--concurrency", "3", "--failures", "failures.jsonl", "--summary-json",
                     "summary.json", "--output", "sent.jsonl", timeout=90,
                     KLAVIYO_API_KEY=KEY, XDG_STATE_HOME=str(state))  # fmt: skip
    return HostileRun(cwd, result, s, big)


@pytest.mark.slow
@pytest.mark.e2e
def test_hostile_network_completes_and_loses_nothing(hostile: HostileRun) -> None:
    s, result = hostile.standin, hostile.result
    assert result.returncode == 1, said(result)
    assert s.keys() == hostile.export.expected
    seen = statuses(s)
    faults = seen["reset"] + seen["lost_ack"] + sum(n for k, n in seen.items() if k[0] in "45")
    # the run met every kind of fault (see HOSTILE's seed)
    assert seen["reset"] and seen["lost_ack"] and seen["429"], seen
    assert any(k.startswith("5") for k in seen), seen
    assert seen["400"] == 0 and seen["413"] == 0, seen
    assert s.stats["duplicates_skipped"] > 0  # a lost answer was resent, and deduped
    summary = json.loads((hostile.cwd / "summary.json").read_text())
    assert summary["retries"] == faults > 0, (summary["retries"], seen)
    assert summary["throttled"] == seen["429"]
    assert summary["requests"] == len(s.requests)
    assert sum(summary["events_sent"].values()) == len(hostile.export.expected)
    assert summary["error"] is None and summary["balanced"] is True


@pytest.mark.e2e
def test_secrets_stay_out_of_output_and_files(hostile: HostileRun) -> None:
    result = hostile.result
    assert result.returncode == 1, said(result)
    assert KEY not in result.stdout and KEY not in result.stderr
    written = [p for p in hostile.cwd.rglob("*") if p.is_file()]
    names = {p.name for p in written}
    assert {"summary.json", "failures.jsonl", "sent.jsonl"} <= names
    assert any(p.suffix == ".sqlite" for p in written)
    for path in written:
        assert KEY.encode() not in path.read_bytes(), f"the API key is in {path}"
    checkpoint = checkpoint_in(hostile.cwd)
    for path in (checkpoint, Path(f"{checkpoint}-wal"), Path(f"{checkpoint}-shm")):
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    # the stand-in saw the key (it answered 202), so the test is not vacuous
    assert any(r.status == 202 for r in hostile.standin.requests)


@pytest.mark.slow
@pytest.mark.e2e
def test_klaviyo_throttling_with_retry_after_is_waited_out(big: Export, tmp_path: Path) -> None:
    """A --rate-limit above the account's real one: Klaviyo's 429s (Retry-After) pause the
    sender, and the run still completes with nothing lost."""
    big.copy_to(tmp_path)
    with st.StandIn(api_key=KEY, bulk_limits=st.Limits(1, 1.0, 60, 6.0)) as s:
        # in this process, the sender's limiter and its retries' waits on the stand-in's
        # clock: Klaviyo's Retry-After is skipped there, not slept
        result = cli_helpers.in_process(tmp_path, KEY, "send", "orders.csv", "--base-url", s.url,
                                        "--rate-limit", "10/s", "--concurrency", "3",
                                        "--summary-json", "summary.json", "-q", clock=s.clock)  # fmt: skip
        assert s.clock.skipped >= 1, s.clock.skipped  # the pauses were waited out, skipped
        assert result.returncode == 1, said(result)
        assert s.keys() == big.expected
        seen = statuses(s)
        assert seen["429"] > 0 and set(seen) == {"202", "429"}, seen
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["throttled"] == seen["429"] == summary["retries"]


# ---------------------------------------------------------------- 4. one invalid event


@pytest.mark.e2e
def test_an_event_only_klaviyo_refuses_is_isolated_and_reported(
    small: Export, tmp_path: Path
) -> None:
    """The stand-in refuses the events of one order (an injected fault: a rule of Klaviyo's the
    tool cannot check beforehand). They must go to the failures file with Klaviyo's detail,
    and the other ~980 events of the same bulk request must be stored."""
    small.copy_to(tmp_path)
    order = next(o for o in small.orders
                 if o.identifiable and o.fulfilled_at and not o.cancelled_at and not o.refunds)  # fmt: skip
    invalid = {key for key in small.expected if key[2] == order.id}  # Placed and Fulfilled Order
    assert {metric for _, metric, _ in invalid} == {"Placed Order", "Fulfilled Order"}
    faults = st.Faults(refuse_uids=frozenset({order.id}))
    with st.StandIn(api_key=KEY, bulk_limits=BULK_LIMITS, faults=faults) as s:
        result = cli(tmp_path, "send", "orders.csv", "--base-url", s.url, "--rate-limit",
                     BULK_RATE, "--failures", "failures.jsonl", "--summary-json", "summary.json",
                     "-q")  # fmt: skip
        assert result.returncode == 1, said(result)
        assert s.keys() == small.expected - invalid  # everything else was stored
        # the pointer named the bad events: one 400, then one resend without them
        assert [r.status for r in s.requests] == [400, 202]
        assert s.requests[1].n_events == s.requests[0].n_events - len(invalid)
    failures = [json.loads(x) for x in (tmp_path / "failures.jsonl").read_text().splitlines()]
    by_klaviyo = [f for f in failures if f["reason"] == "rejected by Klaviyo"]
    assert len(by_klaviyo) == len(invalid)
    assert {f["order_id"] for f in by_klaviyo} == {order.id}
    for _, metric, uid in invalid:
        assert any(f"{metric} {uid}:" in f["detail"] and "refused (injected fault)" in f["detail"]
                   for f in by_klaviyo), (metric, uid, by_klaviyo)  # fmt: skip
    assert len(failures) == len(by_klaviyo) + len(small.unidentifiable)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["events_rejected_by_klaviyo"] == len(invalid)
    assert summary["orders_with_rejected_events"] == 1


@pytest.mark.slow
@pytest.mark.e2e
def test_a_run_killed_between_a_rejection_and_its_resend_reports_it_once_after_resume(
    big: Export, tmp_path: Path
) -> None:
    """Klaviyo refuses two events of an order; the tool records that, and is killed while the
    rest of the request (that order's other events among them) is being resent. --resume sends
    the order again and Klaviyo refuses the same two again: the failures file, the checkpoint
    and `status` list them once; the order counts as one with rejected events, and a rerun
    over the finished checkpoint says so (exit 1)."""
    big.copy_to(tmp_path)
    order = next(o for o in big.orders
                 if o.identifiable and o.fulfilled_at and not o.cancelled_at and not o.refunds)  # fmt: skip
    invalid = {key for key in big.expected if key[2] == order.id}
    faults = st.Faults(refuse_uids=frozenset({order.id}), latency=0.4)
    base = ["send", "orders.csv", "--rate-limit", BULK_RATE, "--concurrency", "1",
            "--failures", "failures.jsonl", "-q"]  # fmt: skip
    with st.StandIn(api_key=KEY, bulk_limits=BULK_LIMITS, faults=faults) as s:
        proc = popen(tmp_path, "first", *base, "--base-url", s.url)
        try:
            wait_until(lambda: any(r.status == 400 for r in s.requests), proc,
                       what=lambda: logs(tmp_path, "first"))  # fmt: skip
            time.sleep(0.1)  # the rejection is recorded; the resend waits out the latency
            proc.kill()
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert order.id not in ledger_orders(checkpoint_in(tmp_path))  # not settled yet
        resumed = cli(tmp_path, *base, "--base-url", s.url, "--resume", timeout=120)
        assert resumed.returncode == 1, said(resumed)
        assert s.keys() == big.expected - invalid
        assert [r.status for r in s.requests].count(400) == 2  # refused again after the resume
        rerun = cli(tmp_path, *base, "--base-url", s.url)
    failures = [json.loads(x) for x in (tmp_path / "failures.jsonl").read_text().splitlines()]
    by_klaviyo = [f["detail"] for f in failures if f["reason"] == "rejected by Klaviyo"]
    assert len(by_klaviyo) == len(set(by_klaviyo)) == len(invalid), by_klaviyo
    status = " ".join(cli(tmp_path, "status", "orders.csv").stdout.split())
    assert re.search(r"Orders with events Klaviyo rejected\W+1\b", status), status
    assert re.search(rf"Events rejected by Klaviyo\W+{len(invalid)}\b", status), status
    assert rerun.returncode == 0 and "Nothing to do" in rerun.stdout, said(rerun)
    told = (
        f"with {len(big.unidentifiable)} rejected orders and {len(invalid)} events Klaviyo refused"
    )
    assert told in " ".join(rerun.stdout.split()), said(rerun)


@pytest.mark.e2e
def test_stray_values_on_one_line_of_a_json_export_are_each_a_rejection_through_a_resume(
    tmp_path: Path,
) -> None:
    """Two stray values in a JSON export written on one line: the same reason, no id, line 1,
    and a JSON order's resume point is its file's start. The checkpoint counted them once
    (by order id and detail), so a rerun over the finished job said "1 rejected" where the
    failures file listed 2; a resumed run, which meets them again, must not count 4 either."""
    orders = [o for o in corpus.make_orders(12, 3, "shopify") if o.identifiable]
    documents = json.loads(corpus.write_shopify_json(orders, tmp_path / "o.json").read_text())
    first_order, second_order, *rest = documents["orders"]
    strayed = [first_order, 7, second_order, 7, *rest]
    (tmp_path / "orders.json").write_text(json.dumps({"orders": strayed}))  # on one line
    base = ["send", "orders.json", "--rate-limit", BULK_RATE, "--failures", "f.jsonl", "-q"]
    with st.StandIn(api_key=KEY, bulk_limits=BULK_LIMITS) as s:
        first = cli(tmp_path, *base, "--base-url", s.url, "--limit", "3")
        assert first.returncode == 1, said(first)
        resumed = cli(tmp_path, *base, "--base-url", s.url, "--resume")
        assert resumed.returncode == 1, said(resumed)
        failures = [json.loads(x) for x in (tmp_path / "f.jsonl").read_text().splitlines()]
        assert [(f["line"], f["reason"]) for f in failures] == [
            (1, "a JSON int where an order should be")
        ] * 2
        stored = s.keys()
        assert {uid for _, metric, uid in stored if metric == "Placed Order"} == {
            o.id for o in orders
        }
        rerun = cli(tmp_path, *base, "--base-url", s.url)
    assert rerun.returncode == 0 and "Nothing to do" in rerun.stdout, said(rerun)
    assert "with 2 rejected orders (" in " ".join(rerun.stdout.split()), said(rerun)


@pytest.mark.e2e
def test_the_time_floor_follows_the_api_revision(small: Export, tmp_path: Path) -> None:
    """Klaviyo takes events from 1990 on at revision 2026-07-15, from 2000 on before it. An
    order placed in 1998 is rejected by the tool itself at 2026-04-15, naming the revision, so
    the dry run shows it and Klaviyo refuses nothing; at the default revision it is sent."""
    orders = list(small.orders)
    i = next(i for i, o in enumerate(orders) if o.identifiable and not o.refunds)
    orders[i] = replace(orders[i], created_at=orders[i].created_at.replace(year=1998),
                        fulfilled_at=None, cancelled_at=None)  # fmt: skip
    export = make_export(tmp_path, orders)
    old = {key for key in export.expected if key[2].split("_")[0] == orders[i].id}
    assert old and not export.invalid  # at 2026-07-15 the 1998 order is an ordinary one
    with st.StandIn(api_key=KEY, bulk_limits=BULK_LIMITS) as s:
        result = cli(tmp_path, "send", "orders.csv", "--base-url", s.url, "--rate-limit",
                     BULK_RATE, "--revision", "2026-04-15", "--failures", "failures.jsonl",
                     "--summary-json", "summary.json", "-q")  # fmt: skip
        assert result.returncode == 1, said(result)
        assert statuses(s) == Counter({"202": len(s.requests)})  # nothing refused
        assert s.keys() == export.expected - old
    failures = [json.loads(x) for x in (tmp_path / "failures.jsonl").read_text().splitlines()]
    floor = [f for f in failures if f["order_id"] == orders[i].id]
    assert len(floor) == 1
    assert floor[0]["reason"] == (
        "before 2000, which Klaviyo does not accept before API revision 2026-07-15"
    )
    assert floor[0]["line"] and floor[0]["source"].endswith("orders.csv")
    assert len(failures) == 1 + len({o.id for o in orders if not o.identifiable})


def _event(uid: str, email: str, **kw: Any) -> Event:
    return Event(metric="Placed Order", time=datetime(2021, 3, 1, 12, tzinfo=UTC),
                 unique_id=uid, properties={"OrderId": uid}, profile={"email": email},
                 value=Decimal("9.99"), currency="USD", order_id=uid, **kw)  # fmt: skip


@pytest.mark.e2e
def test_sender_isolates_one_bad_event_of_a_bulk_request(tmp_path: Path) -> None:
    """Driven below the CLI: a hand-made bulk request whose fourth event nests its properties
    deeper than Klaviyo's 10 levels (nothing the tool maps can do that, so nothing checks it)."""
    deep: dict[str, Any] = {"leaf": 1}
    for _ in range(12):
        deep = {"level": deep}
    bad = _event("B2", "b@example.com")
    bad.properties["Deep"] = deep
    entries = [
        [_event("A1", "a@example.com"), _event("A2", "a@example.com")],
        [_event("B1", "b@example.com"), bad],
        [_event("C1", "c@example.com")],
    ]
    encoder = ENDPOINTS["bulk"].encoder()
    request = encoder.rebuild(entries)
    failures = Failures(str(tmp_path / "failures.jsonl"))
    stats = SendStats()
    tracker = Tracker(None, failures, stats)
    for entry in entries:
        for e in entry:
            tracker.register(MappedOrder(e.order_id, [e], "hand-made", 1))
    with st.StandIn(api_key=KEY, bulk_limits=BULK_LIMITS) as s:
        config = SendConfig(base_url=s.url, endpoint=ENDPOINTS["bulk"], windows=(Window(10, 1.0),),
                            api_key=KEY, concurrency=2)  # fmt: skip

        async def go() -> None:
            async with httpx.AsyncClient(timeout=10) as client:
                await Sender(config, encoder, tracker, client).run(iter([request]))

        asyncio.run(go())
        failures.close()
        assert s.keys() == {(f"{p}@example.com", "Placed Order", u)
                            for p, u in (("a", "A1"), ("a", "A2"), ("b", "B1"), ("c", "C1"))}  # fmt: skip
        assert [r.status for r in s.requests] == [400, 202]
    lines = [json.loads(x) for x in (tmp_path / "failures.jsonl").read_text().splitlines()]
    assert len(lines) == 1
    assert lines[0]["order_id"] == "B2" and lines[0]["reason"] == "rejected by Klaviyo"
    assert "deeper than 10 levels" in lines[0]["detail"]
    assert stats.events_rejected == 1 and stats.orders_with_rejections == 1
    assert stats.orders_sent == 4


# ---------------------------------------------------------------- 5. a wrong key


@pytest.mark.e2e
def test_wrong_key_stops_at_once_and_never_echoes_the_key(few: Export, tmp_path: Path) -> None:
    few.copy_to(tmp_path)
    wrong = "pk_wrong_" + secrets.token_hex(12)
    concurrency = 4
    with st.StandIn(api_key=KEY) as s:
        result = cli(tmp_path, "send", "orders.csv", "--base-url", s.url, "--endpoint", "single",
                     "--rate-limit", SINGLE_RATE, "--concurrency", str(concurrency), "-q",
                     KLAVIYO_API_KEY=wrong)  # fmt: skip
        assert result.returncode == 3, said(result)
        # the first read (which account the key belongs to) is refused: no send at all
        assert [(r.path, r.status) for r in s.reads] == [("/api/accounts", 403)], s.reads
        assert not s.requests and not s.events
    output = result.stdout + result.stderr
    assert "KLAVIYO_API_KEY" in output and "Klaviyo refused the API key" in output, output
    assert "accounts:read" not in output  # not taken for a key without a scope
    assert not list(cli_helpers.state_folder().rglob("*.sqlite"))  # no job was begun
    assert wrong not in output and wrong[3:] not in output and KEY not in output


# ---------------------------------------------------------------- 6. the retired Track API


@pytest.mark.e2e
def test_track_api_gone_exits_3_and_points_to_bulk(few: Export, tmp_path: Path) -> None:
    few.copy_to(tmp_path)
    with st.StandIn(api_key=KEY, legacy="gone") as s:
        result = cli(tmp_path, "send", "orders.csv", "--base-url", s.url, "--endpoint", "legacy",
                     "--concurrency", "4", "-q", KLAVIYO_PUBLIC_KEY=s.public_key)  # fmt: skip
        assert result.returncode == 3, said(result)
        assert set(statuses(s)) == {"410"} and len(s.requests) <= 4 + 2
    output = " ".join((result.stdout + result.stderr).split())
    assert "retired" in output and "--endpoint bulk" in output, output


@pytest.mark.e2e
def test_track_api_still_accepting_stores_every_event(few: Export, tmp_path: Path) -> None:
    few.copy_to(tmp_path)
    with st.StandIn(api_key=KEY, legacy="accept") as s:
        result = cli(tmp_path, "send", "orders.csv", "--base-url", s.url, "--endpoint", "legacy",
                     "--rate-limit", "1000/s", "--concurrency", "20", "--failures",
                     "failures.jsonl", "-q", KLAVIYO_PUBLIC_KEY=s.public_key)  # fmt: skip
        assert result.returncode == 1, said(result)  # the unidentifiable orders
        assert s.keys() == few.expected
        assert {e.endpoint for e in s.events} == {"legacy"}
        assert set(statuses(s)) == {"200"}
    lines = (tmp_path / "failures.jsonl").read_text().splitlines()
    assert len(lines) == len(few.unidentifiable)  # no event answered `0`


# ---------------------------------------------------------------- 8. Ctrl-C


def _resume_command(output: str) -> list[str]:
    """The printed resume command (tolerating a wrapped line), as argv for the real script."""
    start = output.index("klaviyo-backfill send")
    end = output.index("--resume", start) + len("--resume")
    argv = shlex.split(" ".join(output[start:end].split()))
    assert argv[0] == "klaviyo-backfill" and argv[-1] == "--resume"
    return [CLI, *argv[1:]]


@pytest.mark.e2e
def test_ctrl_c_exits_130_and_the_printed_command_resumes(few: Export, tmp_path: Path) -> None:
    few.copy_to(tmp_path)
    with st.StandIn(api_key=KEY, faults=st.Faults(latency=0.02)) as s:
        proc = popen(tmp_path, "first", "send", "orders.csv", "--base-url", s.url, "--endpoint",
                     "single", "--rate-limit", SINGLE_RATE, "--concurrency", "16",
                     "--failures", "failures.jsonl", "-q")  # fmt: skip
        try:
            wait_for_requests(s, 40, proc)
            assert proc.poll() is None, "finished before it could be interrupted"
            proc.send_signal(signal.SIGINT)
            proc.wait(20)
        finally:
            if proc.poll() is None:
                proc.kill()
        output = logs(tmp_path, "first")
        assert proc.returncode == 130, output
        stored_before = len(s.keys())
        assert 0 < stored_before < len(few.expected)
        done = ledger_orders(checkpoint_in(tmp_path))

        argv = _resume_command(output)
        first = len(s.requests)
        result = subprocess.run(argv, cwd=tmp_path, env=cli_helpers.env(KEY),
                                capture_output=True, text=True, timeout=60)  # fmt: skip
        assert result.returncode == 1, said(result)
        assert s.keys() == few.expected
        _no_resend_of(done, s.requests[first:])
        assert statuses(s)["400"] == 0


@pytest.mark.e2e
def test_a_send_whose_output_pipe_closes_stops_unfinished_and_resumes(
    big: Export, tmp_path: Path
) -> None:
    """`send --output - | head -1`: the reader takes one body and goes. Sending stops there
    (exit 2, saying why and how to continue, no traceback), the checkpoint says "stopped",
    not "finished", and --resume sends the rest: nothing is lost."""
    big.copy_to(tmp_path)
    with st.StandIn(api_key=KEY, bulk_limits=BULK_LIMITS) as s:
        base = ["send", "orders.csv", "--base-url", s.url, "--rate-limit", BULK_RATE,
                "--failures", "failures.jsonl", "-q"]  # fmt: skip
        proc = subprocess.Popen([CLI, *base, "--output", "-"], cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=cli_helpers.env(KEY))  # fmt: skip
        assert proc.stdout is not None and proc.stderr is not None
        try:
            first = json.loads(proc.stdout.readline())
            proc.stdout.close()  # what `head -1` does
            err = proc.stderr.read().decode()
            proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert first["data"]["type"] == "event-bulk-create-job"
        assert proc.returncode == ExitCode.USAGE, err
        assert "broken pipe" in err and "sending stopped" in err and "--resume" in err, err
        assert "Traceback" not in err, err
        assert ledger_state(checkpoint_in(tmp_path)) == "stopped"
        assert 0 < len(s.keys()) < len(big.expected)

        resumed = cli(tmp_path, *base, "--resume")
        assert resumed.returncode == 1, said(resumed)  # finished, with the rejected orders
        assert s.keys() == big.expected
    assert ledger_state(checkpoint_in(tmp_path)) == "finished"


@pytest.mark.slow
@pytest.mark.e2e
def test_a_second_run_on_a_busy_checkpoint_is_refused_and_status_tells_a_killed_run(
    few: Export, tmp_path: Path
) -> None:
    few.copy_to(tmp_path)
    with st.StandIn(api_key=KEY, faults=st.Faults(latency=0.02)) as s:
        base = ["send", "orders.csv", "--base-url", s.url, "--endpoint", "single",
                "--rate-limit", SINGLE_RATE, "--concurrency", "4", "--failures", "f.jsonl", "-q"]  # fmt: skip
        proc = popen(tmp_path, "first", *base)
        try:
            wait_for_requests(s, 20, proc)
            assert proc.poll() is None, "finished before the second run could start"
            status = cli(tmp_path, "status", "orders.csv")
            assert f"running (process {proc.pid})" in " ".join(status.stdout.split()), said(status)
            second = cli(tmp_path, *base, "--resume")
            assert second.returncode == 2, said(second)
            assert f"process {proc.pid} is sending with checkpoint" in second.stderr
            proc.kill()  # SIGKILL: no chance to record anything
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
        status = cli(tmp_path, "status", "orders.csv")
        assert "stopped abruptly" in " ".join(status.stdout.split()), said(status)
        resumed = cli(tmp_path, *base, "--resume")
        assert resumed.returncode == 1, said(resumed)
        assert s.keys() == few.expected


@pytest.mark.slow
@pytest.mark.e2e
def test_an_export_edited_before_its_resume_point_is_read_from_the_start_not_mid_row(
    big: Export, tmp_path: Path
) -> None:
    """Same size and same first 64 KB, so the checkpoint's fingerprint still fits, but two
    bytes fewer before the resume point and two more after it: seeking to the recorded offset
    would start inside a row. The resumed run sees that the bytes before the point changed,
    reads from the start skipping sent orders by id, and Klaviyo ends up with every event."""
    export = big.copy_to(tmp_path)
    base = ["send", "orders.csv", "--rate-limit", BULK_RATE, "--failures", "f.jsonl", "-q"]
    with st.StandIn(api_key=KEY, bulk_limits=BULK_LIMITS) as s:
        first = cli(tmp_path, *base, "--base-url", s.url, "--limit", "300")
        assert first.returncode == 1, said(first)
        ledger = Ledger(checkpoint_in(tmp_path))
        point = ledger.watermark()
        ledger.close()
        assert point is not None and point[1] > 100_000
        data = export.read_bytes()
        before = data.index(b"Apt 4B", 70_000)
        after = data.index(b"Apt 4B", point[1])
        assert before < point[1] - 1000
        edited = (
            data[:before] + b"Apt4" + data[before + 6 : after] + b"Apt 4B!!" + data[after + 6 :]
        )
        export.write_bytes(edited)
        assert len(edited) == len(data) and edited[:65536] == data[:65536]
        resumed = cli(tmp_path, *base, "--base-url", s.url, "--resume", "--summary-json", "s.json")
        assert resumed.returncode == 1, said(resumed)
        assert s.keys() == big.expected
    failures = [json.loads(x) for x in (tmp_path / "f.jsonl").read_text().splitlines()]
    assert {f["order_id"] for f in failures} == big.unidentifiable  # no row read from its middle
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["resumed_at"].startswith("the start (the export changed")


@pytest.mark.e2e
def test_ctrl_c_prints_the_resume_command_on_one_line(few: Export, tmp_path: Path) -> None:
    """Not wrapped at 80 columns when the output is no terminal (a log, a CI job)."""
    few.copy_to(tmp_path)
    with st.StandIn(api_key=KEY, faults=st.Faults(latency=0.3)) as s:
        proc = popen(tmp_path, "run", "send", "orders.csv", "--base-url", s.url, "--endpoint",
                     "single", "--concurrency", "1", "--failures", "failures.jsonl", "-q")  # fmt: skip
        try:
            wait_for_requests(s, 1, proc)
            proc.send_signal(signal.SIGINT)
            proc.wait(20)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 130
    lines = [line.strip() for line in logs(tmp_path, "run").splitlines()]
    assert any(line.startswith("klaviyo-backfill send") and line.endswith("--resume")
               for line in lines), lines[-4:]  # fmt: skip


# ---------------------------------------------------------------- 9. checkpoint refusals


@pytest.mark.slow
@pytest.mark.e2e
def test_checkpoint_refusals_status_and_nothing_to_do(small: Export, tmp_path: Path) -> None:
    small.copy_to(tmp_path)
    with st.StandIn(api_key=KEY, bulk_limits=BULK_LIMITS) as s:
        base = ["send", "orders.csv", "--base-url", s.url, "--rate-limit", BULK_RATE,
                "--failures", "failures.jsonl", "-q"]  # fmt: skip
        # an unfinished run: --limit took the first orders only, the checkpoint stays behind
        first = cli(tmp_path, *base, "--limit", "10")
        assert first.returncode in (0, 1), said(first)
        checkpoint = checkpoint_in(tmp_path)
        assert not (tmp_path / ".klaviyo-backfill").exists()  # the state folder, not here
        assert checkpoint.name.startswith("orders-")
        status = cli(tmp_path, "status", "--checkpoint", str(checkpoint))
        assert status.returncode == 0 and "limited" in status.stdout, said(status)
        with sqlite3.connect(checkpoint) as db:  # as Ctrl-C leaves it (a plain rerun of a
            db.execute("UPDATE meta SET value = 'stopped' WHERE key = 'state'")  # limited
        seen = len(s.requests)  # run continues it: test_history)

        again = cli(tmp_path, *base)  # neither --resume nor --restart
        assert again.returncode == 2, said(again)
        assert "--resume" in again.stderr and "--restart" in again.stderr, said(again)
        other_zone = cli(tmp_path, *base, "--resume", "--timezone", "America/New_York")
        assert other_zone.returncode == 2, said(other_zone)
        other_endpoint = cli(tmp_path, *base, "--resume", "--endpoint", "single")
        assert other_endpoint.returncode == 2, said(other_endpoint)
        assert len(s.requests) == seen, "a refused run sent something"

        resumed = cli(tmp_path, *base, "--resume")
        assert resumed.returncode == 1, said(resumed)
        assert s.keys() == small.expected
        seen = len(s.requests)

        rerun = cli(tmp_path, *base)
        assert rerun.returncode == 0, said(rerun)  # nothing new to send: done
        assert "Nothing to do" in rerun.stdout + rerun.stderr
        assert len(s.requests) == seen, "a finished export was sent again"

    status = cli(tmp_path, "status", "--checkpoint", str(checkpoint))
    assert status.returncode == 0, said(status)
    text = " ".join(status.stdout.split())
    assert "finished" in text
    identifiable = len(small.orders) - len(small.unidentifiable)
    assert re.search(rf"Orders sent\W+{identifiable:,}\b", text), text
    by_paths = cli(tmp_path, "status", "orders.csv")  # the default path, derived from PATHS
    assert by_paths.returncode == 0 and "finished" in by_paths.stdout, said(by_paths)


@pytest.mark.e2e
def test_failures_file_lists_each_rejected_order_once_after_a_refused_key(
    small: Export, tmp_path: Path
) -> None:
    small.copy_to(tmp_path)
    # the account (this key at this address) refuses the key at first (its scope, say), so
    # the run stops; the same account then takes it. Bulk packs the whole export into one
    # request, so it is all read, its rejections recorded, before the 403; nothing was
    # acknowledged, so no checkpoint is left to resume: the corrected run starts afresh
    with st.StandIn(api_key="pk_not_this_one", bulk_limits=BULK_LIMITS) as refusing:
        port = int(refusing.url.rsplit(":", 1)[1])
        base = ["send", "orders.csv", "--base-url", refusing.url, "--rate-limit", BULK_RATE,
                "--failures", "failures.jsonl", "-q"]  # fmt: skip
        first = cli(tmp_path, *base)
        assert first.returncode == 3, said(first)
        left = [p for p in checkpoints_of(tmp_path).glob("*") if p.suffix != ".lock"]
        assert not left  # (the job's lock file stays: state/lock.py)
    with st.StandIn(api_key=KEY, bulk_limits=BULK_LIMITS, port=port) as s:
        resumed = cli(tmp_path, *base)
        assert resumed.returncode == 1, said(resumed)
        assert s.keys() == small.expected
    ids = [
        json.loads(x)["order_id"] for x in (tmp_path / "failures.jsonl").read_text().splitlines()
    ]
    assert sorted(ids) == sorted(small.unidentifiable)


# ---------------------------------------------------------------- 10. plain http elsewhere


@pytest.mark.e2e
@pytest.mark.parametrize("url", ["http://example.com", "http://192.0.2.1:8080"])
def test_plain_http_off_this_machine_is_refused_before_any_network_use(
    url: str, small: Export, tmp_path: Path
) -> None:
    small.copy_to(tmp_path)
    # any attempt to reach `url` would go through this "proxy" and be logged: none may arrive
    with st.StandIn(api_key=KEY) as trap:
        proxies = {k: trap.url for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
                                         "http_proxy", "https_proxy", "all_proxy")}  # fmt: skip
        result = cli(tmp_path, "send", "orders.csv", "--base-url", url, "-q",
                     KLAVIYO_API_KEY=KEY, **proxies)  # fmt: skip
        assert result.returncode == 2, said(result)
        assert not trap.requests
    assert "https://" in result.stderr, said(result)
    assert not checkpoints_of(tmp_path).exists()  # refused before the checkpoint, too
    assert KEY not in result.stdout + result.stderr


# ---------------------------------------------------------------- giving up


@pytest.mark.e2e
def test_giving_up_after_retries_maps_to_exit_4(tmp_path: Path) -> None:
    encoder = ENDPOINTS["bulk"].encoder()
    request = encoder.rebuild([[_event("G1", "g@example.com")]])
    tracker = Tracker(None, Failures(None), SendStats())
    tracker.register(MappedOrder("G1", request.events, "hand-made", 1))
    with st.StandIn(api_key=KEY, faults=st.Faults(server_error=1.0)) as s:
        config = SendConfig(base_url=s.url, endpoint=ENDPOINTS["bulk"], windows=(Window(10, 1.0),),
                            api_key=KEY, concurrency=1,
                            retry=RetryPolicy(max_attempts=2, backoff_base=0.01,
                                              backoff_cap=0.02))  # fmt: skip

        async def go() -> None:
            async with httpx.AsyncClient(timeout=10) as client:
                await Sender(config, encoder, tracker, client).run(iter([request]))

        with pytest.raises(GaveUp) as caught:
            asyncio.run(go())
        assert len(s.requests) == 2 and not s.events
    assert caught.value.exit_code == ExitCode.GAVE_UP
