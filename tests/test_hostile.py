"""Answers that are not Klaviyo's, waits without end, full disks, bombs and links (issue #15).

Each test drives the real console script (or, below it, the sender) against a server on
127.0.0.1 that misbehaves on purpose (tests/rogue.py), or a small tmpfs. The limits that make
a real run patient (ten attempts, 15 minutes a request, 10 minutes of Retry-After) are cut
to fractions of a second through the hidden `--tuning` option, never by retrying a test.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sqlite3
import stat
import struct
import subprocess
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import rogue
import standin as st
from cli_helpers import EXPORT, said, state_folder, the_checkpoint, wait_until

from klaviyo_backfill.klaviyo.endpoints import BULK, LEGACY, SINGLE
from klaviyo_backfill.model import Event

Reply, Rogue, Seen = rogue.Reply, rogue.Rogue, rogue.Seen
cli, export_in = rogue.cli, rogue.export_in
EVENTS, KEY, LOGIN_PAGE, ORDERS = rogue.EVENTS, rogue.KEY, rogue.LOGIN_PAGE, rogue.ORDERS

QUICK = "max_attempts=3,backoff_base=0.01,backoff_cap=0.02"
HTML = {"Content-Type": "text/html; charset=utf-8"}
JSONAPI = {"Content-Type": "application/vnd.api+json"}


def send(
    cwd: Path, url: str, *extra: str, tuning: str = QUICK, **kw: str
) -> subprocess.CompletedProcess[str]:
    return cli(cwd, "send", "orders.csv", "--base-url", url, "--rate-limit", "100/s",
               "--failures", "failures.jsonl", "--tuning", tuning, "-q", *extra, **kw)  # fmt: skip


def checkpoints_dir() -> Path:
    """Where a run keeps its checkpoints: the test's state folder (conftest), not its cwd."""
    return state_folder() / "klaviyo-backfill" / "checkpoints"


def checkpoint(cwd: Path) -> Path:
    return the_checkpoint()


def recorded(path: Path) -> tuple[int, int]:
    """(orders, rejections) the checkpoint holds."""
    db = sqlite3.connect(path)
    try:
        orders = db.execute("SELECT count(*) FROM orders").fetchone()[0]
        rejected = db.execute("SELECT count(*) FROM rejected").fetchone()[0]
        return int(orders), int(rejected)
    finally:
        db.close()


# ---------------------------------------------------------------- 1. whose acknowledgement


@pytest.mark.e2e
def test_a_200_login_page_acknowledges_nothing_and_the_run_stops_resumable(
    tmp_path: Path,
) -> None:
    """A captive portal answers every request with its login page, 200 text/html: that is no
    acknowledgement. The run retries it as a fault, stops (exit 4) naming what came back,
    records nothing as sent, and a rerun is not "Nothing to do": --resume sends every event."""
    export_in(tmp_path)
    with Rogue(lambda seen: Reply(200, HTML, LOGIN_PAGE)) as portal:
        result = send(tmp_path, portal.url)
    assert result.returncode == 4, said(result)
    assert len(portal.seen) == 3  # max_attempts, one request: the export is one bulk body
    err = " ".join(result.stderr.split())
    assert f"HTTP 200 text/html from {portal.url}/api/event-bulk-create-jobs" in err, said(result)
    assert "is KLAVIYO_BASE_URL right, or a proxy in the way?" in err
    assert "--resume" in err
    assert recorded(checkpoint(tmp_path)) == (0, 0)
    assert not (tmp_path / "failures.jsonl").exists()
    port = int(portal.url.rsplit(":", 1)[1])  # the same base URL: the same account's checkpoint
    with st.StandIn(api_key=KEY, port=port) as klaviyo:
        again = send(tmp_path, klaviyo.url)
        assert again.returncode == 2 and "Nothing to do" not in again.stdout, said(again)
        resumed = send(tmp_path, klaviyo.url, "--resume")
        assert resumed.returncode == 0, said(resumed)
        assert len(klaviyo.events) == EVENTS
    assert recorded(checkpoint(tmp_path)) == (ORDERS, 0)


@pytest.mark.e2e
def test_a_400_whose_body_is_not_json_api_is_a_fault_not_a_verdict(tmp_path: Path) -> None:
    """A proxy's 400 page is not Klaviyo refusing events: no splitting of the batch (the
    issue's 221 requests), no event recorded as rejected by Klaviyo."""
    export_in(tmp_path)
    with Rogue(lambda seen: Reply(400, {"Content-Type": "text/plain"}, b"Bad Request")) as proxy:
        result = send(tmp_path, proxy.url)
    assert result.returncode == 4, said(result)
    assert len(proxy.seen) == 3
    assert {len(seen.body) for seen in proxy.seen} == {len(proxy.seen[0].body)}  # never split
    assert "HTTP 400 text/plain from" in " ".join(result.stderr.split())
    assert recorded(checkpoint(tmp_path)) == (0, 0)
    assert not (tmp_path / "failures.jsonl").exists()


@pytest.mark.e2e
def test_an_html_403_from_a_cdn_is_not_klaviyo_refusing_the_key(tmp_path: Path) -> None:
    export_in(tmp_path)
    page = st.HTML_PAGE.format(403, "Forbidden").encode()
    with Rogue(lambda seen: Reply(403, HTML, page)) as cdn:
        result = send(tmp_path, cdn.url)
    assert result.returncode == 4, said(result)  # not 3: nobody said the key was wrong
    assert len(cdn.seen) == 3
    assert "HTTP 403 text/html from" in " ".join(result.stderr.split())


ACK = json.dumps({"data": {"type": "event-bulk-create-job", "id": "x"}}).encode()


@pytest.mark.parametrize(
    ("endpoint", "status", "headers", "body", "taken"),
    [
        (BULK, 202, {}, b"", True),  # what Klaviyo's OpenAPI documents: 202, no content
        (BULK, 202, JSONAPI, ACK, True),  # a JSON:API job, if Klaviyo sends one
        (BULK, 202, JSONAPI, b'{"data": {"type": "profile"}}', False),
        (BULK, 202, JSONAPI, b'{"errors": [{"detail": "no"}]}', False),
        (BULK, 202, HTML, LOGIN_PAGE, False),
        (BULK, 202, JSONAPI, b"{not json", False),
        (BULK, 200, JSONAPI, ACK, False),
        (BULK, 200, HTML, LOGIN_PAGE, False),
        (BULK, 204, {}, b"", False),
        (BULK, 201, {}, b"", False),
        (SINGLE, 202, {}, b"", True),
        (SINGLE, 202, JSONAPI, b"{}", True),
        (SINGLE, 200, {}, b"", False),
        (SINGLE, 202, HTML, LOGIN_PAGE, False),
        (LEGACY, 200, {"Content-Type": "text/plain"}, b"1", True),
        (LEGACY, 200, HTML, LOGIN_PAGE, False),
        (LEGACY, 202, {}, b"1", False),
    ],
)
def test_only_klaviyos_own_answer_is_an_acknowledgement(
    endpoint: object, status: int, headers: dict[str, str], body: bytes, taken: bool
) -> None:
    from klaviyo_backfill.klaviyo.answers import Answer
    from klaviyo_backfill.klaviyo.endpoints import Endpoint

    assert isinstance(endpoint, Endpoint)
    answer = Answer(status, __import__("httpx").Headers(headers), body)
    assert endpoint.acknowledged(answer.status, answer.content_type, answer.body) is taken


@pytest.mark.e2e
def test_the_track_apis_login_page_is_a_fault_not_a_refused_payload(tmp_path: Path) -> None:
    """The Track API answers `0` for a payload it drops; a login page is not `0`."""
    export_in(tmp_path)
    with Rogue(lambda seen: Reply(200, HTML, LOGIN_PAGE)) as portal:
        result = send(tmp_path, portal.url, "--endpoint", "legacy", "--concurrency", "1",
                      KLAVIYO_PUBLIC_KEY="AbC123")  # fmt: skip
    assert result.returncode == 4, said(result)
    assert len(portal.seen) == 3
    assert recorded(checkpoint(tmp_path)) == (0, 0)
    assert not (tmp_path / "failures.jsonl").exists()


@pytest.mark.e2e
def test_the_portal_got_the_whole_export_in_one_request(tmp_path: Path) -> None:
    """The tests above count one bulk request per try: the export is one bulk body."""
    export_in(tmp_path)
    with Rogue(lambda seen: Reply(200, HTML, LOGIN_PAGE)) as portal:
        send(tmp_path, portal.url, tuning="max_attempts=1")
    (seen,) = portal.seen
    assert isinstance(seen, Seen) and seen.path == "/api/event-bulk-create-jobs"
    body = json.loads(seen.body)
    entries = body["data"]["attributes"]["events-bulk-create"]["data"]
    assert sum(len(e["attributes"]["events"]["data"]) for e in entries) == EVENTS


# ---------------------------------------------------------------- 2. every wait bounded


def throttled_once(**headers: str) -> Callable[[Seen], Reply]:
    """429 with these headers (and a body naming a long wait) the first time, then 202."""
    body = json.dumps({"errors": [{"status": 429, "code": "throttled", "title": "Throttled.",
                                   "detail": "Expected available in 999999 seconds."}]})  # fmt: skip
    answers = [Reply(429, {**JSONAPI, **headers}, body.encode())]

    def answer(seen: Seen) -> Reply:
        return answers.pop() if answers else Reply(202)

    return answer


@pytest.mark.e2e
@pytest.mark.parametrize("retry_after", ["999999", "inf", "1e400", "nan", None])
def test_a_huge_retry_after_is_waited_at_most_the_cap(
    retry_after: str | None, tmp_path: Path
) -> None:
    """Retry-After 999999 (or inf, 1e400, nan, or only the body's "Expected available in
    999999 seconds") is waited the cap at most (here 0.5 s), and the log says so."""
    export_in(tmp_path)
    headers = {"Retry-After": retry_after} if retry_after else {}
    with Rogue(throttled_once(**headers)) as server:
        started = time.monotonic()
        result = send(tmp_path, server.url, "-v", tuning=f"{QUICK},retry_after_cap=0.5",
                      timeout=30)  # fmt: skip
        took = time.monotonic() - started
    assert result.returncode == 0, said(result)
    assert len(server.seen) == 2 and took < 15, took
    assert "waiting 0 s, the longest this tool waits at once" in result.stderr, said(result)


def test_the_retry_after_cap_defaults_to_ten_minutes() -> None:
    from klaviyo_backfill.klaviyo.retry import RetryPolicy

    assert RetryPolicy().retry_after_cap == 600.0
    assert RetryPolicy().max_seconds == 900.0


def dripping() -> tuple[Callable[[Seen], Reply], threading.Event]:
    stop = threading.Event()
    head = b"HTTP/1.1 202 Accepted\r\nX-Slow: " + b"x" * 10_000
    return (lambda seen: Reply(raw=rogue.drip(head, 0.05, stop))), stop


@pytest.mark.e2e
def test_headers_dripping_a_byte_at_a_time_are_cut_off_at_the_try_deadline(
    tmp_path: Path,
) -> None:
    """Each byte comes long before the per-read timeout: only a deadline on the whole try
    ends it (here 1 s a try, two tries), so the run stops (exit 4) instead of waiting."""
    export_in(tmp_path)
    answer, stop = dripping()
    with Rogue(answer) as server:
        started = time.monotonic()
        result = send(tmp_path, server.url, tuning=f"{QUICK},max_attempts=2,deadline=1",
                      timeout=60)  # fmt: skip
        took = time.monotonic() - started
        stop.set()
    assert result.returncode == 4, said(result)
    assert len(server.seen) == 2 and took < 20, took
    assert "no complete answer within 1 s" in " ".join(result.stderr.split()), said(result)


@pytest.mark.e2e
def test_a_request_takes_max_seconds_at_most_whatever_its_tries(tmp_path: Path) -> None:
    """max_seconds (15 minutes by default) bounds a request's tries and waits together: with a
    try deadline of 100 s and 1.5 s for the request, a dripping server holds it 1.5 s."""
    export_in(tmp_path)
    answer, stop = dripping()
    with Rogue(answer) as server:
        started = time.monotonic()
        result = send(tmp_path, server.url, tuning="max_attempts=10,deadline=100,max_seconds=1.5",
                      timeout=60)  # fmt: skip
        took = time.monotonic() - started
        stop.set()
    assert result.returncode == 4, said(result)
    assert took < 20, took
    assert len(server.seen) == 1, len(server.seen)


def test_a_wait_past_the_requests_time_gives_up_at_once() -> None:
    from klaviyo_backfill.errors import GaveUp
    from klaviyo_backfill.klaviyo.retry import Attempts, Retry, RetryPolicy

    now = [0.0]
    attempts = Attempts(RetryPolicy(max_seconds=900), "a request", clock=lambda: now[0])
    attempts.tries = 1
    now[0] = 400.0
    assert attempts.wait_after(Retry("429 throttled", 300.0, throttled=True)) == 300.0
    now[0] = 700.0
    with pytest.raises(GaveUp):
        attempts.wait_after(Retry("429 throttled", 300.0, throttled=True))


@pytest.mark.e2e
@pytest.mark.parametrize("where", ["retry-after", "in flight"])
def test_sigterm_ends_a_wait_or_a_request_in_flight_saves_and_exits_143(
    where: str, tmp_path: Path
) -> None:
    """SIGTERM (a container stopping, systemd) is the first Ctrl-C: a Retry-After wait (here
    the full 10 minutes) ends at once; a request in flight gets the grace (here 0.5 s), then
    is abandoned. The checkpoint says "stopped", and the resume command is printed."""
    export_in(tmp_path)
    stop = threading.Event()
    if where == "retry-after":
        answer = throttled_once(**{"Retry-After": "999999"})
    else:
        answer, stop = dripping()
    with Rogue(answer) as server:
        proc = rogue.popen(tmp_path, "send", "orders.csv", "--base-url", server.url,
                           "--failures", "failures.jsonl", "--tuning", "grace=0.5,deadline=600", "-q")  # fmt: skip
        try:
            wait_until(lambda: len(server.seen) == 1, proc,
                       what=lambda: str(proc.communicate(timeout=5)))  # fmt: skip
            time.sleep(0.3)
            signalled = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=15)
            took = time.monotonic() - signalled
        finally:
            stop.set()
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 143, (out, err)
    assert took < 5, took
    assert "--resume" in err and "Traceback" not in err, err
    db = sqlite3.connect(checkpoint(tmp_path))
    assert db.execute("SELECT value FROM meta WHERE key = 'state'").fetchone() == ("stopped",)
    db.close()


# ---------------------------------------------------------------- 3. any error ends the run


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MB tmpfs (root only; skipped where mounting is not allowed)."""
    where = tmp_path / "tmpfs"
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip() or 'not root'}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(where: Path) -> Path:
    """Write a file in `where` until its disk is full; the file, to free the space again."""
    filler = where / "filler"
    with open(filler, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError:
            pass
    return filler


def filling(where: Path) -> tuple[Callable[[Seen], Reply], list[Path]]:
    """A rogue's answer that fills `where`'s disk as the first request is in flight, then
    accepts it (202); and the list that gets the filler file, to free the space again."""
    filled: list[Path] = []

    def answer(seen: Seen) -> Reply:
        if not filled:
            filled.append(fill(where))
        return Reply(202)

    return answer, filled


SINGLE_2 = ("--endpoint", "single", "--concurrency", "2")  # 111 requests: the queue stays full


@pytest.mark.e2e
def test_a_full_disk_under_the_checkpoint_stops_the_run_with_one_message(
    tmpfs: Path, tmp_path: Path
) -> None:
    """The disk fills while the request is in flight, so the acknowledgement cannot be
    recorded: the run stops at once (no hang, no "Task exception was never retrieved"), says
    which checkpoint and why, and after space is freed --resume sends what was not recorded."""
    export_in(tmp_path)
    cp = tmpfs / "cp.sqlite"
    answer, filled = filling(tmpfs)
    with Rogue(answer) as server:
        result = send(tmp_path, server.url, "--checkpoint", str(cp), *SINGLE_2, timeout=30)
    assert result.returncode == 2, said(result)
    err = " ".join(result.stderr.split())
    assert f"checkpoint {cp}: the disk is full" in err, said(result)
    assert "Free some space" in err and "--resume" in err
    assert "Traceback" not in err and "never retrieved" not in err, err
    filled[0].unlink()
    orders, _ = recorded(cp)  # the failed commit left nothing half-written
    assert orders < ORDERS
    port = int(server.url.rsplit(":", 1)[1])
    with st.StandIn(api_key=KEY, port=port) as klaviyo:
        resumed = send(tmp_path, klaviyo.url, "--checkpoint", str(cp), *SINGLE_2, "--resume")
        assert resumed.returncode == 0, said(resumed)
        # the checkpoint commits first (with the account ledger's journal): what the rogue
        # acknowledged while its disk was full is recorded nowhere, and is sent again once
        # (at most the requests in flight, --concurrency 2; Klaviyo drops repeats); the rest
        # once
        assert EVENTS <= len(klaviyo.events) + len(server.seen) <= EVENTS + 2
    db = sqlite3.connect(cp)
    assert db.execute("SELECT value FROM meta WHERE key = 'state'").fetchone() == ("finished",)
    db.close()


@pytest.mark.e2e
def test_a_full_disk_under_the_account_ledger_stops_the_run_naming_it(
    tmpfs: Path, tmp_path: Path
) -> None:
    """The account's ledger (in the state folder, here on the tmpfs) full: named the same way
    as the checkpoint's."""
    export_in(tmp_path)
    answer, _ = filling(tmpfs)  # the tmpfs goes with the test: its filler too
    with Rogue(answer) as server:
        result = send(tmp_path, server.url, *SINGLE_2, timeout=30, XDG_STATE_HOME=str(tmpfs))
    assert result.returncode == 2, said(result)
    err = " ".join(result.stderr.split())
    assert f"account ledger {tmpfs}/klaviyo-backfill/accounts/" in err, said(result)
    assert ": the disk is full" in err and "Traceback" not in err


@pytest.mark.slow
@pytest.mark.e2e
def test_a_checkpoint_locked_by_another_process_stops_the_run_naming_it(tmp_path: Path) -> None:
    """Another process takes the checkpoint's write lock while the request is in flight: the
    acknowledgement cannot be recorded (after SQLite's 5 s wait), and the run says so."""
    export_in(tmp_path)
    cp = tmp_path / "cp.sqlite"
    holder: list[sqlite3.Connection] = []

    def answer(seen: Seen) -> Reply:
        if not holder:
            db = sqlite3.connect(cp, isolation_level=None, check_same_thread=False)
            db.execute("BEGIN IMMEDIATE")
            holder.append(db)
        return Reply(202)

    try:
        with Rogue(answer) as server:
            result = send(tmp_path, server.url, "--checkpoint", str(cp), "--endpoint", "single",
                          "--concurrency", "1", timeout=60)  # fmt: skip
    finally:
        for db in holder:
            db.rollback()
            db.close()
    assert result.returncode == 2, said(result)
    err = " ".join(result.stderr.split())
    assert f"checkpoint {cp}: it is locked by another process" in err, said(result)
    assert "Traceback" not in err and "never retrieved" not in err, err


def test_an_unexpected_error_in_a_worker_ends_the_run_at_once() -> None:
    """A settler that raises (a bug) ends the run with one InternalError; before, the worker
    died alone, the queue filled, and the run waited for ever."""
    import asyncio

    import httpx

    from klaviyo_backfill.errors import InternalError
    from klaviyo_backfill.klaviyo.sender import SendConfig, Sender, SendStats
    from klaviyo_backfill.klaviyo.throttle import Window

    class Broken:
        stats = SendStats()

        def settle(self, sent: object, rejected: object) -> None:
            raise RuntimeError("a bug")

    encoder = BULK.encoder()
    requests = [encoder.rebuild([[event(str(i))]]) for i in range(40)]
    config = SendConfig("https://a.klaviyo.test", BULK, (Window(1000, 1.0),), api_key="pk_x",
                        concurrency=2)  # fmt: skip
    sent: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(1)
        return httpx.Response(202)

    async def go() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            await asyncio.wait_for(
                Sender(config, encoder, Broken(), client).run(iter(requests)), 10
            )

    with pytest.raises(InternalError) as caught:
        asyncio.run(go())
    assert "RuntimeError: a bug" in str(caught.value)
    assert len(sent) <= 2  # one per worker: nothing more was taken once the first failed


def event(uid: str) -> Event:
    return Event(metric="Placed Order", time=datetime(2021, 3, 1, 12, tzinfo=UTC),
                 unique_id=uid, properties={"OrderId": uid}, profile={"email": "a@example.com"},
                 value=Decimal("9.99"), currency="USD", order_id=uid)  # fmt: skip


# ---------------------------------------------------------------- 4. bounded memory


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """1 MB of gzip that unpacks to 1 GB of zeros: a valid stream (its CRC and size), made in
    0.3 s, not compressed (6 s): past its first megabyte, each megabyte of zeros flushed to a
    byte boundary deflates to the same bytes, so they are repeated."""
    zeros = bytes(1 << 20)
    pack = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate, in a gzip frame below
    first, again, third = (pack.compress(zeros) + pack.flush(zlib.Z_SYNC_FLUSH) for _ in range(3))
    assert again == third  # the steady state the repetition stands for
    crc = 0
    for _ in range(1024):
        crc = zlib.crc32(zeros, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"  # gzip, deflate, no name
    trailer = struct.pack("<II", crc, (1 << 30) & 0xFFFFFFFF)
    return header + first + again * 1023 + pack.flush() + trailer


@pytest.mark.slow
@pytest.mark.e2e
def test_a_gzip_bomb_answer_costs_a_megabyte_not_a_gigabyte(bomb: bytes, tmp_path: Path) -> None:
    """Its body is read 1 MB at most, decompressed a bounded piece at a time: the run (its
    address space held to 1 GB) stops as on any answer that is not Klaviyo's."""
    assert len(bomb) < 1_100_000
    export_in(tmp_path)
    headers = {**JSONAPI, "Content-Encoding": "gzip"}
    with Rogue(lambda seen: Reply(400, headers, bomb)) as server:
        result = send(tmp_path, server.url, memory=rogue.MEMORY)
    assert result.returncode == 4, said(result)
    assert "MemoryError" not in result.stderr and "Traceback" not in result.stderr
    assert "HTTP 400 application/vnd.api+json from" in " ".join(result.stderr.split())
    assert len(server.seen) == 3


@pytest.mark.e2e
def test_a_100_mb_error_body_is_read_one_megabyte_at_most(tmp_path: Path) -> None:
    export_in(tmp_path)
    start = b'{"errors": [{"code": "invalid", "detail": "'
    body = start + b"x" * (100 << 20) + b'"}]}'
    with Rogue(lambda seen: Reply(400, JSONAPI, body)) as server:
        result = send(tmp_path, server.url, memory=rogue.MEMORY)
    assert result.returncode == 4, said(result)
    assert "MemoryError" not in result.stderr and "Traceback" not in result.stderr
    assert len(server.seen) == 3  # no splitting on it: it is not Klaviyo's verdict
    assert not (tmp_path / "failures.jsonl").exists()


def test_the_body_cap_reads_a_streamed_answer_in_bounded_pieces() -> None:
    """Below the CLI: a gzip answer of 1 GB inflated comes back as the cap, marked cut."""
    import asyncio

    import httpx

    from klaviyo_backfill.klaviyo.answers import read_capped

    pack = zlib.compressobj(9, zlib.DEFLATED, 31)
    data = b"".join([*(pack.compress(b"\0" * (1 << 20)) for _ in range(64)), pack.flush()])

    async def go() -> tuple[bytes, bool]:
        stream = httpx.ByteStream(data)
        response = httpx.Response(200, headers={"Content-Encoding": "gzip"}, stream=stream)
        return await read_capped(response, 1000)

    body, complete = asyncio.run(go())
    assert body == b"\0" * 1000 and complete is False


@pytest.mark.e2e
def test_dev_zero_read_as_csv_is_an_error_naming_the_file_and_line(tmp_path: Path) -> None:
    """Before: the line buffer grew without end (9.6 GB in 30 s)."""
    result = cli(tmp_path, "send", "/dev/zero", "--format", "shopify-csv", "--dry-run",
                 memory=rogue.MEMORY, timeout=60)  # fmt: skip
    assert result.returncode == 2, said(result)
    assert "/dev/zero:1: has a line longer than 64 MB" in result.stderr, said(result)
    assert "Traceback" not in result.stderr


@pytest.mark.e2e
def test_a_json_value_past_64_mb_is_an_error_naming_the_file_and_line(tmp_path: Path) -> None:
    """An order that never ends (here a string of 65 MB) is refused at 64 MB, in seconds."""
    export = tmp_path / "orders.json"
    with open(export, "wb") as fh:
        fh.write(b'[\n{"id": 1, "note": "')
        fh.write(b"a" * (65 << 20))
        fh.write(b'"}]\n')
    started = time.monotonic()
    result = cli(tmp_path, "send", str(export), "--format", "shopify-json", "--dry-run",
                 memory=rogue.MEMORY, timeout=120)  # fmt: skip
    assert result.returncode == 2, said(result)
    assert f"{export}:2: holds a JSON value longer than 64 MB" in result.stderr, said(result)
    assert time.monotonic() - started < 60


DEEP = 10**6


@pytest.mark.e2e
@pytest.mark.parametrize("shape", ["array", "lines"])
def test_json_nested_a_million_deep_is_a_rejected_order_not_a_recursion_error(
    shape: str, tmp_path: Path
) -> None:
    good = '{"id": %d, "email": "c%d@example.com", "created_at": "2021-01-01T00:00:00Z", ' \
           '"currency": "USD", "total_price": "1.00", "line_items": []}'  # fmt: skip
    deep = '{"id": 2, "note_attributes": ' + "[" * DEEP + "]" * DEEP + "}"
    orders = [good % (1, 1), deep, good % (3, 3)]
    text = "[" + ",\n".join(orders) + "]" if shape == "array" else "\n".join(orders)
    (tmp_path / "orders.json").write_text(text)
    result = cli(tmp_path, "send", "orders.json", "--format", "shopify-json", "--dry-run",
                 "--failures", "failures.jsonl", "--summary-json", "s.json", timeout=60)  # fmt: skip
    assert result.returncode == 1, said(result)  # finished, with a rejected order
    assert "RecursionError" not in result.stderr
    (failure,) = [json.loads(x) for x in (tmp_path / "failures.jsonl").read_text().splitlines()]
    assert failure["line"] == 2
    assert failure["reason"] == f"nested {DEEP + 1:,} levels deep (Klaviyo takes 10)"
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["orders_read"] == 3 and summary["orders_mapped"] == 2


# ---------------------------------------------------------------- 5. files: links and modes


PROBLEMS = EXPORT.parent / "problems" / "shopify_orders_with_problems.csv"


def victim(where: Path) -> Path:
    """A file someone would like this tool to overwrite."""
    target = where / "victim.txt"
    target.write_text("precious\n")
    return target


@pytest.mark.e2e
@pytest.mark.parametrize("option", ["--output", "--summary-json"])
def test_an_output_or_summary_that_is_a_link_is_refused(option: str, tmp_path: Path) -> None:
    export_in(tmp_path)
    target = victim(tmp_path)
    (tmp_path / "planted").symlink_to(target)
    result = cli(tmp_path, "send", "orders.csv", "--dry-run", option, "planted")
    assert result.returncode == 2, said(result)
    assert f"{option} planted is a symbolic link: refusing to follow it" in result.stderr
    assert target.read_text() == "precious\n"


@pytest.mark.e2e
@pytest.mark.parametrize("dangling", [False, True])
def test_a_failures_file_that_is_a_link_is_replaced_not_followed(
    dangling: bool, tmp_path: Path
) -> None:
    """A link to a file, or to where a file would be created (/etc/cron.d/x, say)."""
    target = tmp_path / "elsewhere" if dangling else victim(tmp_path)
    (tmp_path / "failures.jsonl").symlink_to(target)
    result = cli(tmp_path, "send", str(PROBLEMS), "--dry-run", "--failures", "failures.jsonl")
    assert result.returncode == 1, said(result)  # finished, with rejected orders
    assert not target.exists() if dangling else target.read_text() == "precious\n"
    written = tmp_path / "failures.jsonl"
    assert not written.is_symlink() and written.read_text().count("\n") > 0


@pytest.mark.e2e
@pytest.mark.parametrize("suffix", ["", "-wal", "-shm"])
def test_a_checkpoint_that_is_a_link_is_refused(suffix: str, tmp_path: Path) -> None:
    export_in(tmp_path)
    target = victim(tmp_path)
    (tmp_path / f"cp.sqlite{suffix}").symlink_to(target)
    with st.StandIn(api_key=KEY) as klaviyo:
        result = send(tmp_path, klaviyo.url, "--checkpoint", "cp.sqlite")
        assert not klaviyo.requests  # refused before anything was sent
    assert result.returncode == 2, said(result)
    assert f"checkpoint cp.sqlite{suffix} is a symbolic link: refusing to follow it" in " ".join(
        result.stderr.split()
    )
    assert target.read_text() == "precious\n"


@pytest.mark.e2e
def test_files_with_customer_data_are_0600_and_the_state_folder_0700(tmp_path: Path) -> None:
    """Whatever the umask: --output, the failures file, the summary and the log (an --output
    left 0644 by an earlier run included), the checkpoint folder."""
    export_in(tmp_path)
    shutil.copy(PROBLEMS, tmp_path / "problems.csv")
    (tmp_path / "out.jsonl").write_text("old\n")
    (tmp_path / "out.jsonl").chmod(0o644)
    with st.StandIn(api_key=KEY) as klaviyo:
        result = cli(tmp_path, "send", "problems.csv", "--base-url", klaviyo.url, "--output",
                     "out.jsonl", "--failures", "failures.jsonl", "--summary-json", "s.json",
                     "--log", "run.log", "-q")  # fmt: skip
    assert result.returncode == 1, said(result)
    for name in ("out.jsonl", "failures.jsonl", "s.json", "run.log"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE(checkpoints_dir().stat().st_mode) == 0o700
    assert "Warning" not in result.stderr


@pytest.mark.e2e
def test_a_state_folder_others_may_write_in_is_refused(tmp_path: Path) -> None:
    """Warned about until issue #23 (item 9): now refused, as every folder of the state tree
    is (tests/test_hostile_two.py)."""
    export_in(tmp_path)
    folder = checkpoints_dir()
    folder.mkdir(parents=True)
    folder.chmod(0o777)
    with st.StandIn(api_key=KEY) as klaviyo:
        result = send(tmp_path, klaviyo.url)
        assert not klaviyo.events
    assert result.returncode == 2, said(result)
    assert f"{folder} is writable by other users (mode 777)" in " ".join(result.stderr.split()), (
        said(result)
    )


# ---------------------------------------------------------------- 6. clear local errors


def strict(seen: Seen) -> Reply:
    """Klaviyo-like about the key: exactly `Klaviyo-API-Key <KEY>`, or 401."""
    if seen.headers.get("Authorization") == f"Klaviyo-API-Key {KEY}":
        return Reply(202)
    body = b'{"errors": [{"status": 401, "code": "not_authenticated", "title": "No.", "detail": "bad key"}]}'
    return Reply(401, JSONAPI, body)


@pytest.mark.e2e
@pytest.mark.parametrize("around", [("", "\r"), ("", "\n"), ("", " "), (" \t", "\r\n")])
def test_whitespace_around_the_key_is_stripped_silently(
    around: tuple[str, str], tmp_path: Path
) -> None:
    """A key pasted with its line end, or a space: before, the request could not be made and
    was retried for a minute as if Klaviyo were down."""
    export_in(tmp_path)
    with Rogue(strict) as server:
        result = send(tmp_path, server.url, key=around[0] + KEY + around[1], timeout=30)
    assert result.returncode == 0, said(result)
    assert len(server.seen) == 1


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("key", "what"),
    [
        (KEY[:8] + "é" + KEY[9:], "a character that is not ASCII (at position 9"),
        (KEY[:8] + "\x1b" + KEY[9:], "a control character (at position 9"),
        (KEY[:8] + " " + KEY[9:], "a space (at position 9"),
        (KEY[:8] + "\n" + KEY[9:], "a control character (at position 9"),
    ],
    ids=["not-ascii", "escape", "space", "newline"],  # the key is random: ids must not be
)
def test_a_key_with_a_character_no_key_has_is_refused_before_any_request(
    key: str, what: str, tmp_path: Path
) -> None:
    export_in(tmp_path)
    with Rogue(strict) as server:
        result = send(tmp_path, server.url, key=key, timeout=30)
    assert result.returncode == 2, said(result)
    assert not server.seen
    assert f"the API key (KLAVIYO_API_KEY) has {what}" in result.stderr, said(result)
    assert "Traceback" not in result.stderr
    assert key.strip() not in result.stdout + result.stderr
    assert not checkpoints_dir().exists()


@pytest.mark.e2e
def test_an_untrusted_certificate_says_so_at_once_and_how_to_trust_one(tmp_path: Path) -> None:
    """Before: retried for 47-86 s, then "rerun with --resume when Klaviyo answers again"."""
    tls = rogue.self_signed(tmp_path)
    if tls is None:
        pytest.skip("openssl is needed to make a certificate")
    export_in(tmp_path)
    with Rogue(strict, tls=tls) as server:
        started = time.monotonic()
        result = send(tmp_path, server.url, tuning="max_attempts=10,backoff_base=1")
        took = time.monotonic() - started
        assert result.returncode == 2, said(result)
        err = " ".join(result.stderr.split())
        assert "the TLS certificate of 127.0.0.1 could not be verified" in err, said(result)
        assert "SSL_CERT_FILE" in err and "--resume when Klaviyo answers" not in err
        assert took < 20
        trusted = send(tmp_path, server.url, SSL_CERT_FILE=tls[0])  # (nothing to resume)
        assert trusted.returncode == 0, said(trusted)
        assert len(server.seen) == 1


def garbage(path: Path) -> None:
    path.write_bytes(b"this is not an SQLite database, whatever its name says" * 100)


def truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


@pytest.mark.e2e
@pytest.mark.parametrize("damage", [garbage, truncated])
def test_a_corrupt_checkpoint_is_named_with_restart_suggested_by_resume_and_status(
    damage: Callable[[Path], None], tmp_path: Path
) -> None:
    export_in(tmp_path)
    with st.StandIn(api_key=KEY) as klaviyo:
        first = send(tmp_path, klaviyo.url, "--limit", "5", "--checkpoint", "cp.sqlite")
        assert first.returncode == 0, said(first)
        cp = tmp_path / "cp.sqlite"
        db = sqlite3.connect(cp)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the main file
        db.close()
        for side in ("cp.sqlite-wal", "cp.sqlite-shm"):
            (tmp_path / side).unlink(missing_ok=True)
        damage(cp)
        seen = len(klaviyo.requests)
        resumed = send(tmp_path, klaviyo.url, "--checkpoint", "cp.sqlite", "--resume")
        assert len(klaviyo.requests) == seen
    status = cli(tmp_path, "status", "--checkpoint", "cp.sqlite")
    for result in (resumed, status):
        assert result.returncode == 2, said(result)
        err = " ".join(result.stderr.split())
        assert "checkpoint cp.sqlite: it is corrupt or not a checkpoint" in err, said(result)
        assert "--restart" in err and "Traceback" not in err


@pytest.mark.e2e
def test_a_read_only_checkpoint_on_resume_says_so(tmpfs: Path, tmp_path: Path) -> None:
    export_in(tmp_path)
    cp = tmpfs / "cp.sqlite"
    with st.StandIn(api_key=KEY) as klaviyo:
        first = send(tmp_path, klaviyo.url, "--limit", "5", "--checkpoint", str(cp))
        assert first.returncode == 0, said(first)
        remount = subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], capture_output=True)
        if remount.returncode != 0:
            pytest.skip(f"cannot remount the tmpfs read-only: {remount.stderr!r}")
        resumed = send(tmp_path, klaviyo.url, "--checkpoint", str(cp), "--resume")
    assert resumed.returncode == 2, said(resumed)
    err = " ".join(resumed.stderr.split())
    assert f"checkpoint {cp}: it cannot be written (read-only)" in err, said(resumed)
    assert "Traceback" not in err


@pytest.mark.e2e
def test_errors_go_to_stderr_not_stdout(tmp_path: Path) -> None:
    """Klaviyo refusing the key (exit 3), and a redirect (not Klaviyo's answer: exit 4)."""
    export_in(tmp_path)
    with Rogue(strict) as server:
        refused = send(tmp_path, server.url, key="pk_" + "0" * 30)
    moved = {"Location": "https://example.com/login"}
    with Rogue(lambda seen: Reply(302, moved)) as server:
        redirected = send(tmp_path, server.url, "--restart")
    assert refused.returncode == 3, said(refused)
    assert "Error: Klaviyo refused the API key (HTTP 401)" in refused.stderr
    assert redirected.returncode == 4, said(redirected)
    assert "(redirected to https://example.com/login)" in " ".join(redirected.stderr.split())
    for result in (refused, redirected):
        assert "Error" not in result.stdout, said(result)


# ---------------------------------------------------------------- 7. the key never leaves


def echoing() -> Callable[[Seen], Reply]:
    """Refuses the first profile's events with a detail that repeats the Authorization
    header (and the bare key), then takes the rest: a server that echoes what it got."""
    answered: list[Seen] = []

    def answer(seen: Seen) -> Reply:
        answered.append(seen)
        if len(answered) > 1:  # the rest, resent without the refused profile
            return Reply(202)
        auth = seen.headers.get("Authorization", "")
        error = {"status": 400, "code": "invalid", "title": "Invalid input.",
                 "detail": f"header {auth!r} not allowed here; key={KEY}",
                 "source": {"pointer": "/data/attributes/events-bulk-create/data/0"}}  # fmt: skip
        return Reply(400, JSONAPI, json.dumps({"errors": [error]}).encode())

    return answer


@pytest.mark.e2e
def test_a_key_a_server_echoes_is_redacted_from_everything_kept(tmp_path: Path) -> None:
    """The detail of a 400 repeats the Authorization header: before, the key went into the
    failures file, the checkpoint, the summary and the log."""
    export_in(tmp_path)
    with Rogue(echoing()) as server:
        result = send(tmp_path, server.url, "--summary-json", "summary.json", "--log",
                      "run.log", "-v", "--checkpoint", "cp.sqlite")  # fmt: skip
    assert result.returncode == 1, said(result)  # finished, with events Klaviyo refused
    failures = (tmp_path / "failures.jsonl").read_text()
    assert "Klaviyo-API-Key [redacted]" in failures and "key=[redacted]" in failures
    assert recorded(tmp_path / "cp.sqlite")[1] > 0
    kept = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "orders.csv"]
    assert {"failures.jsonl", "summary.json", "run.log", "cp.sqlite"} <= {p.name for p in kept}
    for path in kept:
        assert KEY.encode() not in path.read_bytes(), path
        assert KEY[3:].encode() not in path.read_bytes(), path
    assert KEY[3:] not in result.stdout + result.stderr


@pytest.mark.e2e
def test_a_redirect_that_names_the_key_is_redacted(tmp_path: Path) -> None:
    export_in(tmp_path)
    moved = {"Location": f"https://evil.example/?auth=Klaviyo-API-Key {KEY}"}
    with Rogue(lambda seen: Reply(307, moved)) as server:
        result = send(tmp_path, server.url, "-v")
    assert result.returncode == 4, said(result)
    assert "redirected to https://evil.example/?auth=Klaviyo-API-Key [redacted]" in " ".join(
        result.stderr.split()
    ), said(result)
    assert KEY[3:] not in result.stdout + result.stderr


@pytest.mark.e2e
def test_userinfo_in_the_base_url_is_refused_without_printing_it(tmp_path: Path) -> None:
    export_in(tmp_path)
    with st.StandIn(api_key=KEY) as klaviyo:
        url = klaviyo.url.replace("http://", "http://admin:s3cr3t-pw@")
        result = cli(tmp_path, "send", "orders.csv", "-q", KLAVIYO_BASE_URL=url)
        assert not klaviyo.requests
    assert result.returncode == 2, said(result)
    assert "carries a user name or password" in result.stderr
    assert "s3cr3t-pw" not in result.stdout + result.stderr


@pytest.mark.e2e
def test_a_loopback_base_url_never_goes_through_a_proxy(tmp_path: Path) -> None:
    """HTTP_PROXY set (as in many offices): a request to http://localhost went to the proxy,
    key and all."""
    export_in(tmp_path)
    with Rogue(lambda seen: Reply(502)) as proxy, st.StandIn(api_key=KEY) as klaviyo:
        url = klaviyo.url.replace("127.0.0.1", "localhost")
        proxies = {name: proxy.url for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY")}
        result = send(tmp_path, url, **proxies)
        assert result.returncode == 0, said(result)
        assert not proxy.seen, [s.headers for s in proxy.seen]
        assert len(klaviyo.events) == EVENTS


@pytest.mark.e2e
def test_a_key_on_the_command_line_is_warned_about(tmp_path: Path) -> None:
    export_in(tmp_path)
    with st.StandIn(api_key=KEY) as klaviyo:
        given = send(tmp_path, klaviyo.url, "--api-key", KEY, key=None)
        from_env = send(tmp_path, klaviyo.url, "--restart")
    assert given.returncode == 0 and from_env.returncode == 0, said(given) + said(from_env)
    assert "Warning: --api-key on the command line can be read by other users" in " ".join(
        given.stderr.split()
    )
    assert "Warning" not in from_env.stderr
    assert KEY not in given.stdout + given.stderr


# ---------------------------------------------------------------- 8. inputs that are streams


@pytest.mark.e2e
def test_a_fifo_is_read_once_as_a_stream(tmp_path: Path) -> None:
    """Before: opened once to detect its format, then again to read it, which blocked for
    ever (its writer had gone)."""
    fifo = tmp_path / "orders.fifo"
    os.mkfifo(fifo)

    def write() -> None:
        with open(fifo, "wb") as fh:
            fh.write(EXPORT.read_bytes())

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    result = cli(tmp_path, "send", str(fifo), "--dry-run", "--summary-json", "s.json",
                 "--preview", "0", timeout=30)  # fmt: skip
    writer.join(5)
    assert result.returncode == 0, said(result)
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["orders_read"] == summary["orders_mapped"] == ORDERS


def stdin(cwd: Path, data: bytes, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return cli(cwd, *args, stdin=data.decode(), **extra)


@pytest.mark.e2e
def test_standard_input_is_an_export_named_as_given(tmp_path: Path) -> None:
    good = stdin(tmp_path, PROBLEMS.read_bytes(), "send", "-", "--dry-run", "--preview", "0")
    assert good.returncode == 1, said(good)  # finished, with the rejected orders
    failures = [json.loads(x) for x in (tmp_path / "stdin.failures.jsonl").read_text().splitlines()]
    assert failures and {f["source"] for f in failures} == {"-"}
    cut = b'{"orders": [{"id": 1, "email": "a@example.com"'
    bad = stdin(tmp_path, cut, "send", "-", "--dry-run", "--format", "shopify-json")
    assert bad.returncode == 2, said(bad)
    assert "Error: -:1: ends before the JSON document does (cut short?)" in bad.stderr, said(bad)


@pytest.mark.e2e
def test_a_send_from_standard_input_resumes_only_with_the_same_stream(tmp_path: Path) -> None:
    data = EXPORT.read_bytes()
    with st.StandIn(api_key=KEY) as klaviyo:
        base = ["send", "-", "--base-url", klaviyo.url, "-q"]
        first = stdin(tmp_path, data, *base, "--limit", "5")
        assert first.returncode == 0, said(first)
        assert 0 < len(klaviyo.events) < EVENTS
        other = stdin(tmp_path, PROBLEMS.read_bytes(), *base, "--resume")
        assert other.returncode == 2, said(other)
        told = " ".join(other.stderr.split())  # another stream: not this job's to continue
        assert "standard input changed since the unfinished job" in told, told
        assert told.endswith("--restart") and "klaviyo-backfill-" not in told  # no spool path
        same = stdin(tmp_path, data, *base, "--resume")
        assert same.returncode == 0, said(same)
        assert len(klaviyo.events) == EVENTS
        assert klaviyo.stats["duplicates_skipped"] == 0  # nothing sent twice
    names = [p.name for p in checkpoints_dir().glob("*.sqlite")]
    assert len(names) == 1 and names[0].startswith("stdin-"), names


# ---------------------------------------------------------------- the read client (verify,
# preflight, the send's overlap check) under the same rules


def read_with(handler: Callable[[httpx.Request], httpx.Response], **policy: Any) -> Any:
    from klaviyo_backfill.klaviyo.reading import ReadConfig, Reader
    from klaviyo_backfill.klaviyo.retry import RetryPolicy

    config = ReadConfig("https://a.klaviyo.test", KEY,
                        retry=RetryPolicy(backoff_base=0.001, **policy))  # fmt: skip

    async def go() -> Any:
        async with Reader(config, httpx.AsyncClient(transport=httpx.MockTransport(handler))) as r:
            return await r.metrics()

    return asyncio.run(go())


NO_METRICS = httpx.Response(200, headers=JSONAPI, content=rogue.NO_METRICS)


def test_a_read_answered_by_a_login_page_gives_up_naming_the_base_url() -> None:
    from klaviyo_backfill.errors import GaveUp

    with pytest.raises(GaveUp) as caught:
        read_with(lambda request: httpx.Response(200, headers=HTML, content=LOGIN_PAGE),
                  max_attempts=2)  # fmt: skip
    assert "Is KLAVIYO_BASE_URL right, or a proxy in the way?" in str(caught.value)


def test_a_read_refused_by_an_html_403_is_a_fault_not_a_missing_scope() -> None:
    from klaviyo_backfill.errors import GaveUp

    page = st.HTML_PAGE.format(403, "Forbidden").encode()
    with pytest.raises(GaveUp) as caught:
        read_with(lambda request: httpx.Response(403, headers=HTML, content=page), max_attempts=2)
    assert "HTTP 403 text/html" in str(caught.value)


def test_a_reads_huge_retry_after_is_capped() -> None:
    answers = [httpx.Response(429, headers={"Retry-After": "inf"}), NO_METRICS]
    started = time.monotonic()
    assert read_with(lambda request: answers.pop(0), retry_after_cap=0.05) == []
    assert time.monotonic() - started < 5


def test_a_read_refusal_that_echoes_the_key_is_redacted() -> None:
    from klaviyo_backfill.errors import AuthError

    body = {"errors": [{"status": 401, "code": "not_authenticated", "title": "Not authenticated.",
                        "detail": f"bad Klaviyo-API-Key {KEY}"}]}  # fmt: skip
    with pytest.raises(AuthError) as caught:
        read_with(lambda request: httpx.Response(401, headers=JSONAPI, content=json.dumps(
            body).encode()))  # fmt: skip
    assert KEY not in str(caught.value) and "Klaviyo-API-Key [redacted]" in str(caught.value)


@pytest.mark.e2e
def test_preflight_through_a_proxy_to_loopback_and_an_untrusted_certificate(
    tmp_path: Path,
) -> None:
    """The read client is made as the sender's: no proxy for this machine; a certificate it
    does not trust stops it at once, saying so."""
    tls = rogue.self_signed(tmp_path)
    if tls is None:
        pytest.skip("openssl is needed to make a certificate")
    export_in(tmp_path)
    with Rogue(lambda seen: Reply(502)) as proxy, Rogue(strict, tls=tls) as server:
        result = cli(tmp_path, "preflight", "orders.csv", "--base-url", server.url,
                     HTTPS_PROXY=proxy.url, timeout=30)  # fmt: skip
        assert not proxy.seen
    assert result.returncode == 2, said(result)
    assert "the TLS certificate of 127.0.0.1 could not be verified" in " ".join(
        result.stderr.split()
    ), said(result)
