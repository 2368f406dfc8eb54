"""klaviyo/reading.py and reconcile.py, directly: what counts as Klaviyo's answer, what is
retried, what stops, and how sent and held totals compare (httpx.MockTransport)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest

from klaviyo_backfill.errors import AuthError, GaveUp, QueryError, ScopeError
from klaviyo_backfill.klaviyo.endpoints import Window
from klaviyo_backfill.klaviyo.reading import Metric, MonthTotal, ReadConfig, Reader
from klaviyo_backfill.klaviyo.retry import RetryPolicy
from klaviyo_backfill.klaviyo.throttle import ideal_seconds
from klaviyo_backfill.proof.reconcile import OtherCounts, compare, overlaps
from klaviyo_backfill.state.checkpoint import Total

BASE = "https://a.klaviyo.test"
Handler = Callable[[httpx.Request], httpx.Response]


def read(handler: Handler, call: Callable[[Reader], Any], **policy: Any) -> Any:
    config = ReadConfig(BASE, "pk_secret", retry=RetryPolicy(backoff_base=0.001, **policy))
    reader = Reader(config, httpx.AsyncClient(transport=httpx.MockTransport(handler)))

    async def go() -> Any:
        async with reader:
            return await call(reader)

    return asyncio.run(go())


def jsonapi(doc: Any, status: int = 200, **headers: str) -> httpx.Response:
    return httpx.Response(status, json=doc, headers={"Content-Type": "application/vnd.api+json",
                                                     **headers})  # fmt: skip


def metric(mid: str, name: str, integration: str) -> dict[str, Any]:
    return {"type": "metric", "id": mid, "attributes": {
        "name": name, "integration": {"name": integration, "category": integration}}}  # fmt: skip


def aggregate(dates: list[str], rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"data": {"type": "metric-aggregate", "id": "x",
                     "attributes": {"dates": dates, "data": rows}}}  # fmt: skip


def test_metrics_follow_next_pages_and_send_the_key_and_revision() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if "page" not in str(request.url):
            return jsonapi({"data": [metric("A", "Placed Order", "API")],
                            "links": {"next": f"{BASE}/api/metrics?page%5Bcursor%5D=2"}})  # fmt: skip
        return jsonapi({"data": [metric("B", "Placed Order", "Shopify")], "links": {}})

    found = read(handler, lambda r: r.metrics())
    assert found == [Metric("A", "Placed Order", "API", "API"),
                     Metric("B", "Placed Order", "Shopify", "Shopify")]  # fmt: skip
    assert [m.via_api for m in found] == [True, False]
    assert seen[0].headers["Authorization"] == "Klaviyo-API-Key pk_secret"
    assert seen[0].headers["revision"] == "2026-07-15"


def test_a_next_page_elsewhere_is_not_followed() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return jsonapi({"data": [], "links": {"next": "https://evil.test/api/metrics?p=2"}})

    with pytest.raises(QueryError):
        read(handler, lambda r: r.metrics())


def test_a_200_html_page_is_not_an_answer_and_is_retried() -> None:
    answers = iter([
        httpx.Response(200, text="<html>Checking your browser</html>",
                       headers={"Content-Type": "text/html"}),
        jsonapi({"errors": []}),  # JSON, but no data
        jsonapi({"data": [{"type": "flow", "id": "1"}]}),  # not metrics
        jsonapi({"data": [metric("A", "Placed Order", "API")]}),
    ])  # fmt: skip
    reader_stats: list[Any] = []

    async def call(r: Reader) -> list[Metric]:
        found = await r.metrics()
        reader_stats.append(r.stats)
        return found

    assert read(lambda request: next(answers), call) == [Metric("A", "Placed Order", "API", "API")]
    assert reader_stats[0].retries == 3


def test_a_misaligned_aggregate_is_not_an_answer() -> None:
    bad = aggregate(["2021-01-01T00:00:00+00:00"], [
        {"dimensions": ["USD"], "measurements": {"count": [1.0, 2.0], "sum_value": [1.0]}}])  # fmt: skip
    with pytest.raises(GaveUp) as caught:
        read(lambda request: jsonapi(bad), lambda r: r.aggregate("M", 2021), max_attempts=2)
    assert "not a JSON:API answer" in caught.value.message
    assert "--resume" not in str(caught.value)


def test_an_aggregate_query_is_one_calendar_year_by_month_and_currency_in_utc() -> None:
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return jsonapi(aggregate(["2021-01-01T00:00:00+00:00", "2021-02-01T00:00:00+00:00"], [
            {"dimensions": ["USD"], "measurements": {"count": [0.0, 3.0], "sum_value": [0.0, 0.3]}},
            {"dimensions": ["JPY"], "measurements": {"count": [1.0, 0.0], "sum_value": [1250.0, 0.0]}},
        ]))  # fmt: skip

    got = read(handler, lambda r: r.aggregate("M1", 2021))
    assert got == [MonthTotal("2021-02", "USD", 3, Decimal("0.3")),
                   MonthTotal("2021-01", "JPY", 1, Decimal("1250.0"))]  # fmt: skip
    attrs = bodies[0]["data"]["attributes"]
    assert attrs == {"metric_id": "M1", "measurements": ["count", "sum_value"], "interval": "month",
                     "timezone": "UTC", "by": ["$value_currency"],
                     "filter": ["greater-or-equal(datetime,2021-01-01T00:00:00)",
                                "less-than(datetime,2022-01-01T00:00:00)"]}  # fmt: skip


@pytest.mark.parametrize(("status", "error", "named"), [
    (401, AuthError, "401"), (403, ScopeError, "metrics:read"), (400, QueryError, "bad filter"),
])  # fmt: skip
def test_refusals_stop_and_name_what_to_fix(status: int, error: type, named: str) -> None:
    body = {
        "errors": [{"id": "1", "status": status, "code": "x", "title": "x", "detail": "bad filter"}]
    }
    with pytest.raises(error) as caught:
        read(lambda request: jsonapi(body, status), lambda r: r.metrics())
    assert named in str(caught.value)
    assert "pk_secret" not in str(caught.value)


def test_throttled_reads_wait_as_told_and_use_no_attempt() -> None:
    answers = iter([jsonapi({"errors": []}, 429, **{"Retry-After": "0"})] * 3
                   + [jsonapi({"data": []})])  # fmt: skip
    assert read(lambda request: next(answers), lambda r: r.metrics(), max_attempts=1) == []


def test_server_errors_are_retried_then_given_up() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(502, text="<html>502</html>")

    with pytest.raises(GaveUp):
        read(handler, lambda r: r.metrics(), max_attempts=3)
    assert len(calls) == 3


def test_an_answer_is_read_up_to_a_bound() -> None:
    big = jsonapi({"data": [metric(str(i), "x" * 1000, "API") for i in range(10_000)]})
    config = ReadConfig(BASE, "pk", max_body=1 << 20)
    reader = Reader(config, httpx.AsyncClient(transport=httpx.MockTransport(lambda r: big)))

    async def go() -> None:
        async with reader:
            await reader.metrics()

    with pytest.raises(QueryError, match="over 1,048,576 bytes"):
        asyncio.run(go())


def test_ideal_seconds_follow_both_windows() -> None:
    windows = (Window(3, 1.0), Window(60, 60.0))
    assert ideal_seconds(3, windows) == 0.0
    assert ideal_seconds(4, windows) == 1.0
    assert ideal_seconds(50, windows) == 16.0
    assert ideal_seconds(61, windows) == 60.0


def test_compare_rounds_to_the_minor_unit_and_sees_short_and_more() -> None:
    sent = {("Placed Order", "2021-02", "USD"): Total(3, Decimal("0.30"), 1.0),
            ("Placed Order", "2021-02", "JPY"): Total(1, Decimal("1250"), 1.0),
            ("Placed Order", "2021-03", "USD"): Total(2, Decimal("5.00"), 1.0)}  # fmt: skip
    held = {("Placed Order", "2021-02", "USD"): (3, Decimal(repr(0.1 + 0.1 + 0.1))),
            ("Placed Order", "2021-02", "JPY"): (2, Decimal("2500.0")),
            ("Placed Order", "2021-03", "USD"): (2, Decimal("4.99")),
            ("Placed Order", "2021-04", "USD"): (7, Decimal("70"))}  # fmt: skip
    rows, totals = compare(sent, held)
    by = {(r.month, r.currency): r for r in rows}
    assert (
        not by[("2021-02", "USD")].short and not by[("2021-02", "USD")].more
    )  # 0.30000000000000004
    assert by[("2021-02", "JPY")].more
    assert by[("2021-03", "USD")].short  # a cent short is short
    assert by[("2021-02", "JPY")].as_json()["sent_value"] == 1250
    usd = next(t for t in totals if t.currency == "USD")
    assert (usd.sent_count, usd.klaviyo_count, usd.short_rows, usd.elsewhere) == (5, 5, 1, 7)


def test_overlaps_are_the_months_both_hold_events_in() -> None:
    export = {("Placed Order", "2021-01"): 4, ("Placed Order", "2021-02"): 1,
              ("Ordered Product", "2021-01"): 9}  # fmt: skip
    shopify = OtherCounts("Placed Order", "Shopify")
    shopify.months.update({"2021-01": 3, "2021-03": 8})
    found = overlaps(export, [shopify])
    assert [(o.month, o.count, o.export_count) for o in found] == [("2021-01", 3, 4)]


@pytest.mark.e2e
def test_a_read_counts_in_its_windows_from_when_it_was_written_not_from_its_turn() -> None:
    """The loop busy (a page of events parsed) between a read's turn and its writing: the
    read counts from when it left, so the next one keeps Klaviyo's windows however late the
    first left (verify reads aggregates while it parses pages of events)."""
    import time

    import standin as st

    from klaviyo_backfill.klaviyo.endpoints import ACCOUNTS

    key = "pk_" + "a" * 34

    async def go(url: str) -> tuple[float, float]:
        async with Reader(ReadConfig(url, key)) as reader:
            turn = time.monotonic()
            asyncio.get_running_loop().call_soon(time.sleep, 0.2)  # runs at its first wait
            await reader.account()
            return turn, reader.limiters[ACCOUNTS.name].answers[0]

    with st.StandIn(api_key=key) as s:
        turn, counted = asyncio.run(go(s.url))
    assert counted - turn >= 0.2


def test_each_window_of_events_reads_through_a_one_connection_client_of_its_own() -> None:
    """Spares: windows read at once each borrow a client of one connection (httpcore scans
    every pooled connection at each request), given back for the next window; outside a
    window, the reader's own client; every spare closed with the reader."""
    from klaviyo_backfill.klaviyo.http import Spares

    async def go() -> None:
        reader = Reader(ReadConfig("https://a.klaviyo.test", "pk_secret"))
        spares = reader.spares
        assert spares is not None
        seen: list[httpx.AsyncClient] = []

        async def window(wait: float) -> None:
            async with spares.lend():
                mine = spares.client(reader.client)
                await asyncio.sleep(wait)  # another window borrows meanwhile
                assert spares.client(reader.client) is mine is not reader.client
                seen.append(mine)

        await asyncio.gather(window(0.02), window(0.01))
        await window(0)
        assert len({id(c) for c in seen[:2]}) == 2 and seen[2] in seen[:2]
        assert spares.client(reader.client) is reader.client
        for client in spares.made:
            assert client._transport._pool._max_connections == 1  # type: ignore[attr-defined]
        async with reader:
            pass
        assert all(c.is_closed for c in [reader.client, *spares.made])
        given = Reader(ReadConfig("https://a.klaviyo.test", "pk_secret"), httpx.AsyncClient())
        assert given.spares is None  # a client given (a test's transport) reads every window
        await given.client.aclose()
        assert isinstance(spares, Spares)

    asyncio.run(go())
