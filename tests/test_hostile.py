"""Answers that are not Klaviyo's, waits without end, full disks, bombs and links (issue #15).

Each test drives the real console script (or, below it, the sender) against a server on
127.0.0.1 that misbehaves on purpose (tests/rogue.py), or a small tmpfs. The limits that make
a real run patient (ten attempts, 15 minutes a request, 10 minutes of Retry-After) are cut
to fractions of a second through the hidden `--tuning` option, never by retrying a test.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest

from klaviyo_backfill.klaviyo.endpoints import BULK, LEGACY, SINGLE

try:
    import rogue
    import standin as st
    from rogue import EVENTS, KEY, LOGIN_PAGE, ORDERS, Reply, Rogue, Seen, cli, export_in, said
except ImportError:  # tests/ made a package
    from tests import rogue
    from tests import standin as st
    from tests.rogue import (
        EVENTS, KEY, LOGIN_PAGE, ORDERS, Reply, Rogue, Seen, cli, export_in, said,
    )  # fmt: skip

QUICK = "max_attempts=3,backoff_base=0.01,backoff_cap=0.02"
HTML = {"Content-Type": "text/html; charset=utf-8"}
JSONAPI = {"Content-Type": "application/vnd.api+json"}


def send(
    cwd: Path, url: str, *extra: str, tuning: str = QUICK, **kw: str
) -> subprocess.CompletedProcess[str]:
    return cli(cwd, "send", "orders.csv", "--base-url", url, "--rate-limit", "100/s",
               "--failures", "failures.jsonl", "--tuning", tuning, "-q", *extra, **kw)  # fmt: skip


def checkpoint(cwd: Path) -> Path:
    found = sorted((cwd / ".klaviyo-backfill").glob("*.sqlite"))
    assert len(found) == 1, found
    return found[0]


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
