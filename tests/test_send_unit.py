"""The sender's decisions, driven through httpx.MockTransport: pacing, retries, isolation."""

from __future__ import annotations

import asyncio
import json
import math
import time
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial

import httpx
import pytest
from standin import Clock

from klaviyo_backfill.errors import AuthError, RetiredApiError
from klaviyo_backfill.klaviyo.answers import Answer, retry_after
from klaviyo_backfill.klaviyo.endpoints import ENDPOINTS
from klaviyo_backfill.klaviyo.retry import RetryPolicy
from klaviyo_backfill.klaviyo.sender import SendConfig, Sender, SendStats, halves
from klaviyo_backfill.klaviyo.throttle import Limiter, Window, parse_rate_limit
from klaviyo_backfill.model import Event
from klaviyo_backfill.pipeline.orders import MappedOrder
from klaviyo_backfill.pipeline.tracker import Tracker
from klaviyo_backfill.state.failures import Failures


def events(n: int, order: str = "1") -> list[Event]:
    profile = {"email": f"c{order}@example.com"}
    when = datetime(2021, 1, 1, tzinfo=UTC)
    return [
        Event(
            "Ordered Product",
            when,
            f"{order}_{i}",
            {"OrderId": order},
            profile,
            Decimal("1.00"),
            "USD",
            order,
        )
        for i in range(n)
    ]


def run_sender(handler, batch: list[Event], endpoint: str = "bulk", **config):  # type: ignore[no-untyped-def]
    stats = SendStats()
    tracker = Tracker(None, Failures(None), stats)
    tracker.register(MappedOrder(batch[0].order_id, batch, "f.csv", 2))
    encoder = ENDPOINTS[endpoint].encoder(public_key="PK")
    cfg = SendConfig("https://a.klaviyo.test", ENDPOINTS[endpoint], (Window(1000, 1.0),),
                     api_key="pk_secret", retry=RetryPolicy(backoff_base=0.001, **config))  # fmt: skip
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    sender = Sender(cfg, encoder, tracker, client)

    async def go() -> None:
        try:
            await sender.run(iter(list(encoder.requests([batch]))))
        finally:
            await client.aclose()

    asyncio.run(go())
    return sender, stats


def test_rate_limit_syntax() -> None:
    assert parse_rate_limit("10/s,150/m") == (Window(10, 1.0), Window(150, 60.0))
    assert parse_rate_limit("5/2s") == (Window(5, 2.0),)


def test_limiter_never_admits_more_than_a_window_allows() -> None:
    """A request arrives somewhere between leaving and its answer; wherever that is, no
    window may hold more than its limit (requests left, answers came, as a clock drives)."""
    now = [0.0]
    limiter = Limiter((Window(3, 1.0), Window(5, 10.0)), clock=lambda: now[0])
    transits = [0.05, 0.9, 0.3, 2.5, 0.1, 0.7, 1.2, 0.05, 0.4, 0.2, 1.0, 0.6]
    flights: list[list[float]] = []  # [left, answered]
    while len(flights) < len(transits) or any(a > now[0] for _, a in flights):
        due = [a for _, a in flights if a > now[0]]
        wait = limiter.delay(now[0]) if len(flights) < len(transits) else math.inf
        if due and min(due) <= now[0] + max(0.0, wait):
            now[0] = min(due)
            limiter.done()
            continue
        now[0] += max(0.0, wait)
        limiter.in_flight += 1  # what acquire does once the wait is over
        limiter.left = now[0]
        flights.append([now[0], now[0] + transits[len(flights)]])
    for limit, seconds in ((3, 1.0), (5, 10.0)):
        for i, (left, _) in enumerate(flights):  # those before it that may share its window
            assert sum(1 for _, answer in flights[:i] if answer > left - seconds) <= limit - 1
    assert flights[5][0] >= flights[0][1] + 10.0  # the steady window held the sixth back


def test_retry_after_header_then_body_detail() -> None:
    assert retry_after(Answer.of(httpx.Response(429, headers={"Retry-After": "7"}))) == 7.0
    body = {"errors": [{"detail": "Request was throttled. Expected available in 3 seconds."}]}
    assert retry_after(Answer.of(httpx.Response(429, json=body))) == 3.0
    assert retry_after(Answer.of(httpx.Response(429, text="<html>"))) is None


def test_5xx_html_and_resets_are_retried_until_acknowledged() -> None:
    answers = iter(["reset", 502, 503, 202])

    def handler(request: httpx.Request) -> httpx.Response:
        answer = next(answers)
        if answer == "reset":
            raise httpx.RemoteProtocolError("peer closed")
        if answer == 502:
            return httpx.Response(502, text="<html>Bad gateway</html>")
        return httpx.Response(answer)

    _, stats = run_sender(handler, events(3))
    assert stats.events_sent["Ordered Product"] == 3
    assert stats.retries == 3 and stats.orders_sent == 1


def test_bad_event_named_by_pointer_is_isolated_and_the_rest_resent() -> None:
    seen: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        entry = body["data"]["attributes"]["events-bulk-create"]["data"][0]
        uids = [e["attributes"]["unique_id"] for e in entry["attributes"]["events"]["data"]]
        seen.append(len(uids))
        if "1_2" in uids:
            pointer = f"/data/attributes/events-bulk-create/data/0/attributes/events/data/{uids.index('1_2')}/attributes/time"
            return httpx.Response(400, json={"errors": [{"id": "x", "status": 400, "code": "invalid", "title": "Invalid",
                                                         "detail": "bad time", "source": {"pointer": pointer}}]})  # fmt: skip
        return httpx.Response(202)

    _, stats = run_sender(handler, events(5))
    assert seen == [5, 4]
    assert stats.events_sent["Ordered Product"] == 4
    assert stats.events_rejected == 1 and stats.orders_with_rejections == 1


def test_unplaceable_400_splits_the_batch_down_to_the_bad_event() -> None:
    """Klaviyo's error names no event (no pointer): the batch is split until it is isolated."""
    refusal = {
        "errors": [{"status": 400, "code": "invalid", "title": "Invalid input.", "detail": "bad"}]
    }

    def handler(request: httpx.Request) -> httpx.Response:
        if b'"1_3"' in request.content:
            return httpx.Response(400, json=refusal)
        return httpx.Response(202)

    _, stats = run_sender(handler, events(8))
    assert stats.events_sent["Ordered Product"] == 7 and stats.events_rejected == 1


def test_halves_keep_every_event_once() -> None:
    a, b = events(3, "1"), events(2, "2")
    left, right = halves([a, b])
    flat = [e for entry in left + right for e in entry]
    assert flat == a + b and left and right


@pytest.mark.parametrize(("status", "error"), [(401, AuthError), (403, AuthError)])
def test_auth_failure_stops_and_never_shows_the_key(status: int, error: type) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["Authorization"] == "Klaviyo-API-Key pk_secret"
        refused = {"status": status, "code": "not_authenticated", "title": "No.", "detail": "No."}
        return httpx.Response(status, json={"errors": [refused]})

    with pytest.raises(error) as caught:
        run_sender(handler, events(2))
    assert "pk_secret" not in str(caught.value)
    assert "KLAVIYO_API_KEY" in str(caught.value)


def test_track_api_410_says_it_is_retired() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/track" and "data" in request.url.params
        return httpx.Response(410, text="Gone")

    with pytest.raises(RetiredApiError) as caught:
        run_sender(handler, events(1), endpoint="legacy")
    assert "--endpoint bulk" in str(caught.value)


@pytest.mark.parametrize("cap", [1, 3, 5])
def test_gives_up_after_the_attempt_cap(cap: int) -> None:
    """A request that always fails is tried exactly max_attempts times, never more, and the
    GaveUp error (exit 4) says how many tries and the last cause."""
    from klaviyo_backfill.errors import ExitCode, GaveUp

    bodies: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(request.content)
        return httpx.Response(500)

    with pytest.raises(GaveUp) as caught:
        run_sender(handler, events(1), max_attempts=cap)
    assert len(bodies) == cap
    assert len(set(bodies)) == 1, "every attempt resends the same request"
    assert caught.value.exit_code == ExitCode.GAVE_UP == 4
    assert str(caught.value).startswith(f"gave up after {cap} tries over ")
    assert "(last: HTTP 500)" in str(caught.value)
    assert "--resume" in str(caught.value)


def test_429s_use_no_attempts_but_failures_between_them_do() -> None:
    """Klaviyo pacing an account that other apps share answers 429 for a while: the request
    waits it out, however many 429s that takes (only time caps it); 5xx answers still count,
    so three failures among the 429s give up at max_attempts=3."""
    from klaviyo_backfill.errors import GaveUp

    throttled = httpx.Response(429, headers={"Retry-After": "0"})
    answers = [throttled] * 12 + [httpx.Response(500)] * 2 + [throttled] * 5
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return answers[len(calls) - 1] if len(calls) <= len(answers) else httpx.Response(202)

    sender, stats = run_sender(handler, events(1), max_attempts=3)
    assert len(calls) == len(answers) + 1 and stats.throttled == 17
    assert sender.fatal is None and stats.acknowledged == 1

    answers[-1] = httpx.Response(503)  # a third failure
    calls.clear()
    with pytest.raises(GaveUp) as caught:
        run_sender(handler, events(1), max_attempts=3)
    assert "gave up after 19 tries" in str(caught.value) and "HTTP 503" in str(caught.value)


def test_a_request_counts_in_the_windows_until_its_answer() -> None:
    now = [0.0]
    window = Window(2, 1.0)
    limiter = Limiter((window,), clock=lambda: now[0])
    limiter.in_flight = 2  # two requests left at 0: either may still arrive
    assert limiter.delay(0.0) == math.inf
    now[0] = 0.4  # a large body: its answer after 0.4 s
    limiter.done()
    assert limiter.delay(0.4) == pytest.approx(1.0 + window.margin)  # a window after it
    now[0] = 0.5
    limiter.done()
    assert limiter.delay(0.5) == pytest.approx(0.4 + 1.0 + window.margin - 0.5)


def test_a_retry_waits_on_the_limiter_s_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 429's Retry-After and a 5xx's backoff are waited on the limiter's clock (and its
    sleep): in production time.monotonic and asyncio.sleep; here a clock that skips them."""
    from klaviyo_backfill.klaviyo import sender as sender_module

    clock = Clock()
    monkeypatch.setattr(sender_module, "Limiter", partial(Limiter, clock=clock, sleep=clock.sleep))
    answers = iter([httpx.Response(429, headers={"Retry-After": "30"}), httpx.Response(503),
                    httpx.Response(202)])  # fmt: skip
    started = time.monotonic()
    _, stats = run_sender(lambda request: next(answers), events(2))
    assert stats.acknowledged == 1 and stats.throttled == 1 and stats.retries == 2
    assert clock.skipped >= 30, clock.skipped  # the Retry-After at least, and the backoff
    assert time.monotonic() - started < 10  # neither slept
