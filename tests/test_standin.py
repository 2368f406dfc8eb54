"""Tests of the Klaviyo stand-in itself (tests/standin.py), driven over real HTTP."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

try:
    import standin as st
except ImportError:  # tests/ made a package
    from tests import standin as st

KEY = "pk_test_0123456789abcdef"
BULK, SINGLE, TRACK = "/api/event-bulk-create-jobs", "/api/events", "/api/track"
HEADERS = {
    "Authorization": f"Klaviyo-API-Key {KEY}",
    "revision": "2026-07-15",
    "Content-Type": "application/vnd.api+json",
    "Accept": "application/vnd.api+json",
}
BASE = "/data/attributes/events-bulk-create/data"


def event(uid: str | None, **attrs: Any) -> dict[str, Any]:
    a: dict[str, Any] = {
        "properties": {"OrderId": uid},
        "time": "2020-03-01T10:00:00+01:00",
        "value": 29.98,
        "value_currency": "USD",
        "unique_id": uid,
        "backfill": True,
        "metric": {"data": {"type": "metric", "attributes": {"name": "Placed Order"}}},
    }
    a.update(attrs)
    return {"type": "event", "attributes": a}


def bulk(*groups: tuple[dict[str, Any], list[dict[str, Any]]]) -> dict[str, Any]:
    return {
        "data": {
            "type": "event-bulk-create-job",
            "attributes": {
                "events-bulk-create": {
                    "data": [
                        {
                            "type": "event-bulk-create",
                            "attributes": {
                                "profile": {"data": {"type": "profile", "attributes": profile}},
                                "events": {"data": events},
                            },
                        }
                        for profile, events in groups
                    ]
                }
            },
        }
    }


def single(uid: str, profile: dict[str, Any] | None = None, **attrs: Any) -> dict[str, Any]:
    ev = event(uid, **attrs)
    ev["attributes"]["profile"] = {
        "data": {"type": "profile", "attributes": profile or {"email": "a@x.com"}}
    }
    return {"data": ev}


def post(c: httpx.Client, path: str, body: Any, **headers: str) -> httpx.Response:
    h = {**HEADERS, **headers}
    return c.post(
        path, content=json.dumps(body).encode(), headers={k: v for k, v in h.items() if v}
    )


def pointers(r: httpx.Response) -> list[str]:
    return [e["source"]["pointer"] for e in r.json()["errors"]]


@pytest.fixture
def server() -> Iterator[tuple[st.StandIn, httpx.Client]]:
    with st.StandIn() as s, httpx.Client(base_url=s.url, timeout=10) as c:
        yield s, c


@pytest.mark.e2e
def test_valid_bulk_is_accepted_and_stored(server: tuple[st.StandIn, httpx.Client]) -> None:
    s, c = server
    r = post(
        c,
        BULK,
        bulk(
            ({"email": "A@x.com", "first_name": "Ann"}, [event("1"), event("2")]),
            ({"phone_number": "+15551234567"}, [event("1")]),
        ),
    )
    assert r.status_code == 202 and r.content == b""
    assert r.headers["RateLimit-Limit"] == "150" and r.headers["RateLimit-Remaining"] == "149"
    assert int(r.headers["RateLimit-Reset"]) >= 1
    assert s.keys() == {
        ("a@x.com", "Placed Order", "1"),
        ("a@x.com", "Placed Order", "2"),
        ("+15551234567", "Placed Order", "1"),
    }
    e = s.events[0]
    assert (e.metric, e.unique_id, e.value, e.value_currency, e.backfill, e.endpoint) == (
        "Placed Order",
        "1",
        29.98,
        "USD",
        True,
        "bulk",
    )
    assert e.time == "2020-03-01T09:00:00+00:00"  # normalised to UTC
    assert e.profile == {"email": "A@x.com", "first_name": "Ann"}
    assert s.stats["2xx"] == 1 and s.requests[0].n_events == 3 and s.requests[0].n_stored == 3


@pytest.mark.e2e
def test_single_event_and_dedupe_across_requests(server: tuple[st.StandIn, httpx.Client]) -> None:
    s, c = server
    assert post(c, SINGLE, single("9")).status_code == 202
    assert post(c, SINGLE, single("9", value=1.0)).status_code == 202  # silently skipped
    assert post(c, BULK, bulk(({"email": "a@x.com"}, [event("9"), event("10")]))).status_code == 202
    assert [(e.unique_id, e.endpoint, e.value) for e in s.events] == [
        ("9", "single", 29.98),
        ("10", "bulk", 29.98),
    ]
    assert s.stats["duplicates_skipped"] == 2
    # another metric may reuse the unique_id
    cancelled = event(
        "9", metric={"data": {"type": "metric", "attributes": {"name": "Cancelled Order"}}}
    )
    assert post(c, BULK, bulk(({"email": "a@x.com"}, [cancelled]))).status_code == 202
    assert len(s.events) == 3


@pytest.mark.e2e
def test_missing_unique_id_keys_on_the_second(server: tuple[st.StandIn, httpx.Client]) -> None:
    s, c = server
    r = post(c, BULK, bulk(({"email": "a@x.com"}, [event(None), event(None)])))
    assert r.status_code == 400  # two line items collapse onto one key: a duplicate
    assert pointers(r) == [f"{BASE}/0/attributes/events/data/1/attributes/unique_id"]
    assert s.events == []


@pytest.mark.e2e
def test_auth(server: tuple[st.StandIn, httpx.Client]) -> None:
    s, c = server
    wrong = "pk_wrong_key_0000"
    r_none = post(c, BULK, bulk(({"email": "a@x.com"}, [event("1")])), Authorization="")
    r_wrong = post(
        c,
        BULK,
        bulk(({"email": "a@x.com"}, [event("1")])),
        Authorization=f"Klaviyo-API-Key {wrong}",
    )
    assert r_none.status_code == 401 and r_wrong.status_code == 403
    assert r_wrong.headers["Content-Type"] == "application/vnd.api+json"
    for r in (r_none, r_wrong):
        assert KEY not in r.text and wrong not in r.text
    assert s.events == [] and s.stats["401"] == 1 and s.stats["403"] == 1
    assert all(KEY not in json.dumps(q.headers) for q in s.requests)
    assert s.requests[1].headers["Authorization"] == "[REDACTED]"


@pytest.mark.e2e
def test_revision_and_media_type(server: tuple[st.StandIn, httpx.Client]) -> None:
    s, c = server
    body = bulk(({"email": "a@x.com"}, [event("1")]))
    assert post(c, BULK, body, revision="").status_code == 400
    assert post(c, BULK, body, revision="15-07-2026").status_code == 400
    r = post(c, BULK, body, revision="2026-01-15")  # backfill needs 2026-04-15
    assert r.status_code == 400
    assert pointers(r) == [f"{BASE}/0/attributes/events/data/0/attributes/backfill"]
    assert post(c, BULK, body, **{"Content-Type": "application/json"}).status_code == 415
    assert s.events == []
    assert post(c, BULK, body, revision="2026-07-15.pre").status_code == 202


@pytest.mark.e2e
def test_schema_invalid_body_points_at_the_entry(server: tuple[st.StandIn, httpx.Client]) -> None:
    s, c = server
    events = [event(str(i)) for i in range(5)]
    events[3]["attributes"]["value"] = "29.98"  # a string, not a number
    del events[4]["attributes"]["metric"]
    r = post(c, BULK, bulk(({"email": "a@x.com"}, events)))
    assert r.status_code == 400 and r.headers["Content-Type"] == "application/vnd.api+json"
    assert pointers(r) == [
        f"{BASE}/0/attributes/events/data/3/attributes/value",
        f"{BASE}/0/attributes/events/data/4/attributes/metric",
    ]
    doc = json.loads((st._openapi_dir() / "bulk_create_events.json").read_text())
    error_schema = doc["components"]["responses"]["ClientError"]["content"][
        "application/vnd.api+json"
    ]["schema"]
    jsonschema.validate(r.json(), error_schema)
    assert s.events == []  # the whole request fails
    assert post(c, BULK, {"data": []}).status_code == 400
    r = c.post(BULK, content=b'{"data": NaN}', headers=HEADERS)
    assert r.status_code == 400


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("profile", "attrs", "pointer"),
    [
        ({"first_name": "X"}, {}, "profile/data/attributes"),
        ({"phone_number": "555-1234"}, {}, "profile/data/attributes/phone_number"),
        (
            {"email": "a@x.com"},
            {"time": "1989-12-31T23:59:59+00:00"},
            "events/data/0/attributes/time",
        ),
        ({"email": "a@x.com"}, {"time": "2020-03-01 10:00:00"}, "events/data/0/attributes/time"),
        ({"email": "a@x.com"}, {"time": "2099-01-01T00:00:00Z"}, "events/data/0/attributes/time"),
        (
            {"email": "a@x.com"},
            {"metric": {"data": {"type": "metric", "attributes": {"name": "M" * 128}}}},
            "events/data/0/attributes/metric/data/attributes/name",
        ),
        (
            {"email": "a@x.com"},
            {"properties": {f"p{i}": i for i in range(401)}},
            "events/data/0/attributes/properties",
        ),
        (
            {"email": "a@x.com"},
            {"properties": {"Items": list(range(4001))}},
            "events/data/0/attributes/properties/Items",
        ),
        (
            {"email": "a@x.com"},
            {"properties": {"Note": "x" * 102_401}},
            "events/data/0/attributes/properties/Note",
        ),
    ],
)
def test_semantic_checks(
    server: tuple[st.StandIn, httpx.Client],
    profile: dict[str, Any],
    attrs: dict[str, Any],
    pointer: str,
) -> None:
    s, c = server
    r = post(c, BULK, bulk(({"email": "ok@x.com"}, [event("0")]), (profile, [event("1", **attrs)])))
    assert r.status_code == 400
    assert pointers(r) == [f"{BASE}/1/attributes/{pointer}"]
    assert s.events == []


@pytest.mark.e2e
def test_bad_phone_next_to_email_is_a_partial_failure(
    server: tuple[st.StandIn, httpx.Client],
) -> None:
    s, c = server
    r = post(c, SINGLE, single("1", {"email": "a@x.com", "phone_number": "555"}, time=None))
    assert r.status_code == 202 and r.headers["X-Klaviyo-Partial-Failure"] == "phone_number"
    assert s.events[0].time is None and s.stats["events_without_time"] == 1
    r = post(c, SINGLE, single("2", {"phone_number": "555"}))
    assert r.status_code == 400 and pointers(r) == [
        "/data/attributes/profile/data/attributes/phone_number"
    ]


@pytest.mark.e2e
def test_request_size_limits(server: tuple[st.StandIn, httpx.Client]) -> None:
    s, c = server
    r = post(
        c,
        BULK,
        bulk(
            ({"email": "a@x.com"}, [event(str(i)) for i in range(600)]),
            ({"email": "b@x.com"}, [event(str(i)) for i in range(401)]),
        ),
    )
    assert r.status_code == 400 and pointers(r) == [BASE]
    big = [event(str(i), properties={"Note": "x" * 100_000}) for i in range(51)]
    assert post(c, BULK, bulk(({"email": "a@x.com"}, big))).status_code == 413
    assert s.events == []


@pytest.mark.e2e
def test_duplicate_unique_id_in_one_request_fails_it_all(
    server: tuple[st.StandIn, httpx.Client],
) -> None:
    s, c = server
    r = post(
        c,
        BULK,
        bulk(
            ({"email": "a@x.com"}, [event("1"), event("2")]),
            ({"email": "A@X.com"}, [event("3"), event("2")]),
        ),
    )
    assert r.status_code == 400
    assert pointers(r) == [f"{BASE}/1/attributes/events/data/1/attributes/unique_id"]
    assert s.events == []


@pytest.mark.e2e
def test_burst_limit() -> None:
    limits = st.Limits(3, 0.4, 100, 60.0)
    clock = st.Clock()
    with st.StandIn(bulk_limits=limits, clock=clock) as s, httpx.Client(base_url=s.url) as c:
        body = bulk(({"email": "a@x.com"}, [event("1")]))
        codes = [post(c, BULK, body).status_code for _ in range(4)]
        assert codes == [202, 202, 202, 429]
        r = post(c, BULK, body)
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        assert (
            "Request was throttled. Expected available in 1 second"
            in r.json()["errors"][0]["detail"]
        )
        assert post(c, SINGLE, single("x")).status_code == 202  # separate windows per endpoint
        clock.advance(0.45)
        assert post(c, BULK, body).status_code == 202  # throttled requests did not count
        assert s.stats["429"] == 2


def test_sliding_windows_are_exact() -> None:
    w = st.SlidingWindow(st.Limits(10, 1.0, 15, 60.0))
    assert all(w.admit(i * 0.1)[0] for i in range(11))  # exactly 10/s: never throttled
    assert not w.admit(1.05)[0]  # 11th within (0.05, 1.05]
    assert [w.admit(1.1 + i * 0.1)[0] for i in range(5)] == [True] * 4 + [False]  # steady 15
    ok, retry_after, _, _ = w.admit(2.0)
    assert not ok and retry_after == 58  # the oldest (t=0) leaves the minute at t=60


@pytest.mark.e2e
def test_throttle_without_retry_after() -> None:
    with (
        st.StandIn(faults=st.Faults(throttle_no_retry_after=1.0)) as s,
        httpx.Client(base_url=s.url) as c,
    ):
        r = post(c, BULK, bulk(({"email": "a@x.com"}, [event("1")])))
        assert r.status_code == 429 and "Retry-After" not in r.headers
        assert r.json()["errors"][0]["detail"] == (
            "Request was throttled. Expected available in 1 second."
        )
        assert s.events == []


@pytest.mark.e2e
def test_lost_ack_stores_but_client_sees_connection_error() -> None:
    with st.StandIn(faults=st.Faults(lost_ack=1.0)) as s, httpx.Client(base_url=s.url) as c:
        body = bulk(({"email": "a@x.com"}, [event("1"), event("2")]))
        with pytest.raises(httpx.TransportError):
            post(c, BULK, body)
        assert len(s.events) == 2 and s.stats["lost_acks"] == 1
        assert s.requests[0].status is None and s.requests[0].outcome == "lost_ack"
        s.faults.lost_ack = 0.0
        assert post(c, BULK, body).status_code == 202  # the resend is harmless
        assert len(s.events) == 2


@pytest.mark.e2e
def test_reset_and_server_errors_store_nothing() -> None:
    with st.StandIn(faults=st.Faults(reset=1.0)) as s, httpx.Client(base_url=s.url) as c:
        with pytest.raises(httpx.TransportError):
            post(c, BULK, bulk(({"email": "a@x.com"}, [event("1")])))
        assert s.events == [] and s.stats["resets"] == 1
    with (
        st.StandIn(faults=st.Faults(server_error=1.0, seed=3)) as s,
        httpx.Client(base_url=s.url) as c,
    ):
        rs = [post(c, SINGLE, single("1")) for _ in range(12)]
        assert {r.status_code for r in rs} <= {500, 502, 503, 504}
        kinds = {r.headers["Content-Type"] for r in rs}
        assert kinds == {"text/html", "application/vnd.api+json"}
        assert s.events == [] and s.stats["5xx"] == 12


@pytest.mark.e2e
def test_faults_are_deterministic() -> None:
    def run() -> list[int | None]:
        f = st.Faults(server_error=0.3, html_502=0.2, seed=42)
        with st.StandIn(faults=f) as s, httpx.Client(base_url=s.url) as c:
            for i in range(10):
                post(c, SINGLE, single(str(i)))
            return [q.status for q in s.requests]

    first = run()
    assert first == run() and 202 in first and any(x and x >= 500 for x in first)


@pytest.mark.e2e
def test_legacy_gone(server: tuple[st.StandIn, httpx.Client]) -> None:
    s, c = server
    assert c.get(TRACK, params={"data": "e30="}).status_code == 410
    assert c.post(TRACK, data={"data": "{}"}).status_code == 410
    assert s.events == []


@pytest.mark.e2e
def test_legacy_accept() -> None:
    payload = {
        "token": "AbC123",
        "event": "Placed Order",
        "customer_properties": {"$email": "john@example.com", "$first_name": "John"},
        "properties": {"$event_id": "1234", "$value": 29.98, "ItemNames": ["A"]},
        "time": 1387302423,
    }
    with st.StandIn(legacy="accept") as s, httpx.Client(base_url=s.url) as c:
        encoded = base64.b64encode(json.dumps(payload).encode()).decode()
        r = c.get(TRACK, params={"data": encoded})
        assert (r.status_code, r.text) == (200, "1")
        assert c.post(TRACK, data={"data": json.dumps(payload)}).text == "1"  # deduped
        assert c.post(TRACK, data={"data": json.dumps({**payload, "token": "nope"})}).text == "0"
        assert c.get(TRACK, params={"data": "not base64!"}).text == "0"
        assert s.events == [
            st.StoredEvent(
                metric="Placed Order",
                unique_id="1234",
                time="2013-12-17T17:47:03+00:00",
                value=29.98,
                value_currency=None,
                backfill=None,
                properties={"ItemNames": ["A"]},
                profile={"email": "john@example.com", "first_name": "John"},
                endpoint="legacy",
                identity="john@example.com",
                key_uid="1234",
            )
        ]


@pytest.mark.e2e
def test_runs_as_a_process() -> None:
    script = Path(st.__file__)
    proc = subprocess.Popen(
        [
            sys.executable,
            str(script),
            "--port",
            "0",
            "--bulk-limits",
            "2/1,150/60",
            "--latency",
            "0.01",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("listening http://127.0.0.1:")
        with httpx.Client(base_url=line.split()[1]) as c:
            codes = [
                post(c, BULK, bulk(({"email": "a@x.com"}, [event(str(i))]))).status_code
                for i in range(3)
            ]
        assert codes == [202, 202, 429]
        proc.terminate()
        out, _ = proc.communicate(timeout=5)
        stats = json.loads(out.strip().splitlines()[-1])
        assert stats["requests"] == 3 and stats["events_stored"] == 2 and stats["throttled"] == 1
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()


# ---------------------------------------------------------------- reading back


def aggregate_query(metric_id: str, start: str, end: str, **attrs: Any) -> dict[str, Any]:
    a: dict[str, Any] = {
        "metric_id": metric_id,
        "measurements": ["count", "sum_value"],
        "interval": "month",
        "by": ["$value_currency"],
        "timezone": "UTC",
        "filter": [f"greater-or-equal(datetime,{start})", f"less-than(datetime,{end})"],
    }
    a.update(attrs)
    return {"data": {"type": "metric-aggregate", "attributes": a}}


def answer_errors(doc: Any, filename: str, component: str) -> list[str]:
    return [e.message for e in st.validator(filename, component).iter_errors(doc)]


def metric_ids(s: st.StandIn) -> dict[tuple[str, str], str]:
    return {(name, integration[0]): mid for mid, name, integration in s.metric_list()}


@pytest.mark.e2e
def test_metrics_come_200_a_page_with_their_integration_and_the_filter(
    server: tuple[st.StandIn, httpx.Client],
) -> None:
    s, c = server
    s.preload([st.other_event(f"Metric {i:03d}", "2021-01-01T00:00:00+00:00",
                              integration=("Zapier", "Automation")) for i in range(450)])  # fmt: skip
    assert post(c, BULK, bulk(({"email": "a@x.com"}, [event("1")]))).status_code == 202
    seen, url, pages = [], f"{s.url}/api/metrics", 0
    while url:
        r = c.get(url, headers=HEADERS)
        assert r.status_code == 200 and r.headers["Content-Type"] == st.JSONAPI
        doc = r.json()
        assert (
            answer_errors(doc, "get_metrics.json", "GetMetricResponseCollectionCompoundDocument")
            == []
        )
        assert len(doc["data"]) <= 200
        seen += doc["data"]
        url, pages = doc["links"].get("next"), pages + 1
    assert pages == 3 and len(seen) == 451
    api = [m for m in seen if m["attributes"]["integration"]["name"] == "API"]
    assert [m["attributes"]["name"] for m in api] == ["Placed Order"]
    assert api[0]["attributes"]["integration"]["category"] == "API"
    for query in ('equals(integration.name,"API")', "equals(integration.category,'API')"):
        r = c.get("/api/metrics", params={"filter": query}, headers=HEADERS)
        assert [m["id"] for m in r.json()["data"]] == [api[0]["id"]]
    r = c.get("/api/metrics", params={"filter": "equals(name,'x')"}, headers=HEADERS)
    assert r.status_code == 400
    assert c.get("/api/metrics", headers={**HEADERS, "revision": ""}).status_code == 400


@pytest.mark.e2e
def test_metric_aggregates_count_and_sum_per_utc_month_and_currency(
    server: tuple[st.StandIn, httpx.Client],
) -> None:
    s, c = server
    events = [event("1", time="2021-01-31T23:30:00-02:00", value=10.5),  # February in UTC
              event("2", time="2021-02-10T10:00:00+00:00", value=0.25),
              event("3", time="2021-02-11T10:00:00+00:00", value=100, value_currency="JPY"),
              event("4", time="2022-01-01T00:00:00+00:00", value=1.0)]  # fmt: skip
    assert post(c, BULK, bulk(({"email": "a@x.com"}, events))).status_code == 202
    placed = metric_ids(s)[("Placed Order", "API")]
    r = post(
        c, st.AGGREGATES_PATH, aggregate_query(placed, "2021-01-01T00:00:00", "2022-01-01T00:00:00")
    )
    assert r.status_code == 200, r.text
    doc = r.json()
    assert answer_errors(doc, "query_metric_aggregates.json", "PostMetricAggregateResponse") == []
    attrs = doc["data"]["attributes"]
    assert len(attrs["dates"]) == 12 and attrs["dates"][1].startswith("2021-02-01T00:00:00")
    rows = {tuple(row["dimensions"]): row["measurements"] for row in attrs["data"]}
    assert rows[("USD",)]["count"][:3] == [0.0, 2.0, 0.0]
    assert rows[("USD",)]["sum_value"][1] == 10.75
    assert rows[("JPY",)]["count"][1] == 1.0 and rows[("JPY",)]["sum_value"][1] == 100.0
    ungrouped = aggregate_query(placed, "2021-01-01T00:00:00", "2022-01-01T00:00:00",
                                measurements=["count"], by=None)  # fmt: skip
    (row,) = post(c, st.AGGREGATES_PATH, ungrouped).json()["data"]["attributes"]["data"]
    assert row["dimensions"] == [] and row["measurements"] == {"count": [0.0, 3.0] + [0.0] * 10}


@pytest.mark.e2e
@pytest.mark.parametrize(("start", "end", "status"), [
    ("2021-01-01T00:00:00", "2022-01-01T00:00:00", 200),  # a calendar year
    ("2021-03-15T00:00:00", "2022-03-15T00:00:00", 200),
    ("2021-01-01T00:00:00", "2022-01-02T00:00:00", 400),  # more than a year
    ("2021-01-01T00:00:00", "2021-01-01T00:00:00", 400),
])  # fmt: skip
def test_a_metric_aggregates_query_spans_at_most_one_year(
    server: tuple[st.StandIn, httpx.Client], start: str, end: str, status: int
) -> None:
    s, c = server
    s.preload([st.other_event("Placed Order", "2021-06-01T00:00:00+00:00")])
    (mid,) = metric_ids(s).values()
    r = post(c, st.AGGREGATES_PATH, aggregate_query(mid, start, end))
    assert r.status_code == status, r.text
    if status == 400:
        assert pointers(r) == ["/data/attributes/filter"]


@pytest.mark.e2e
def test_a_metric_aggregates_body_is_checked_against_klaviyos_schema(
    server: tuple[st.StandIn, httpx.Client],
) -> None:
    s, c = server
    s.preload([st.other_event("Placed Order", "2021-06-01T00:00:00+00:00")])
    (mid,) = metric_ids(s).values()
    body = aggregate_query(mid, "2021-01-01T00:00:00", "2022-01-01T00:00:00")
    del body["data"]["attributes"]["measurements"]
    r = post(c, st.AGGREGATES_PATH, body)
    assert r.status_code == 400 and pointers(r) == ["/data/attributes/measurements"]
    unknown = aggregate_query("nope", "2021-01-01T00:00:00", "2022-01-01T00:00:00")
    assert post(c, st.AGGREGATES_PATH, unknown).status_code == 404
    html = post(c, st.AGGREGATES_PATH, aggregate_query(mid, "2021-01-01T00:00:00",
                "2022-01-01T00:00:00"), **{"Content-Type": "application/json"})  # fmt: skip
    assert html.status_code == 415


@pytest.mark.e2e
def test_metric_aggregates_are_paced_3_a_second(server: tuple[st.StandIn, httpx.Client]) -> None:
    s, c = server
    s.preload([st.other_event("Placed Order", "2021-06-01T00:00:00+00:00")])
    (mid,) = metric_ids(s).values()
    body = aggregate_query(mid, "2021-01-01T00:00:00", "2022-01-01T00:00:00")
    codes = [post(c, st.AGGREGATES_PATH, body).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    assert s.stats["read_429"] == 1 and s.stats["429"] == 0  # reads are counted apart
    assert not s.requests and len(s.reads) == 4


@pytest.mark.e2e
def test_events_lost_after_their_202_never_reach_the_aggregates() -> None:
    with (
        st.StandIn(faults=st.Faults(lost_after_ack=0.3, seed=9)) as s,
        httpx.Client(base_url=s.url, timeout=10) as c,
    ):
        events = [event(str(i), value=1.0) for i in range(200)]
        assert post(c, BULK, bulk(({"email": "a@x.com"}, events))).status_code == 202
        (mid,) = metric_ids(s).values()
        body = aggregate_query(mid, "2020-01-01T00:00:00", "2021-01-01T00:00:00")
        (row,) = post(c, st.AGGREGATES_PATH, body).json()["data"]["attributes"]["data"]
    assert len(s.events) == 200 and 40 <= len(s.lost) <= 80
    assert row["measurements"]["count"][2] == 200 - len(s.lost)
    again = st.StandIn(faults=st.Faults(lost_after_ack=0.3, seed=9))  # the same keys, by seed
    assert {e.key_uid for e in s.lost} == {str(i) for i in range(200)
                                            if again.is_lost(("a@x.com", "Placed Order", str(i)))}  # fmt: skip


@pytest.mark.e2e
def test_an_ingestion_delay_holds_events_back_from_the_aggregates() -> None:
    clock = st.Clock()
    with (
        st.StandIn(faults=st.Faults(ingestion_delay=60.0), clock=clock) as s,
        httpx.Client(base_url=s.url, timeout=10) as c,
    ):
        assert post(c, BULK, bulk(({"email": "a@x.com"}, [event("1")]))).status_code == 202
        (mid,) = metric_ids(s).values()
        body = aggregate_query(mid, "2020-01-01T00:00:00", "2021-01-01T00:00:00")
        assert post(c, st.AGGREGATES_PATH, body).json()["data"]["attributes"]["data"] == []
        clock.advance(60.0)
        (row,) = post(c, st.AGGREGATES_PATH, body).json()["data"]["attributes"]["data"]
        assert row["measurements"]["count"][2] == 1.0


@pytest.mark.e2e
def test_a_key_without_metrics_read_gets_a_403_naming_the_scope() -> None:
    faults = st.Faults(missing_scopes=frozenset({"metrics:read"}))
    with st.StandIn(faults=faults) as s, httpx.Client(base_url=s.url, timeout=10) as c:
        r = c.get("/api/metrics", headers=HEADERS)
        assert r.status_code == 403 and "metrics:read" in r.json()["errors"][0]["detail"]
        assert post(c, BULK, bulk(({"email": "a@x.com"}, [event("1")]))).status_code == 202
        r = c.get("/api/metrics", headers={**HEADERS, "Authorization": "Klaviyo-API-Key pk_no"})
        assert r.status_code == 403


@pytest.mark.e2e
def test_flow_triggers_and_the_account(server: tuple[st.StandIn, httpx.Client]) -> None:
    s, c = server
    assert post(c, BULK, bulk(({"email": "a@x.com"}, [event("1")]))).status_code == 202
    s.flows["Placed Order"] = [{"id": "F1", "name": "Thanks"}]
    (mid,) = metric_ids(s).values()
    doc = c.get(f"/api/metrics/{mid}/flow-triggers", headers=HEADERS).json()
    assert (
        answer_errors(doc, "get_flows_triggered_by_metric.json", "GetFlowResponseCollection") == []
    )
    assert [f["attributes"]["name"] for f in doc["data"]] == ["Thanks"]
    doc = c.get("/api/accounts", headers=HEADERS).json()
    assert answer_errors(doc, "get_accounts.json", "GetAccountResponseCollection") == []
    assert c.get("/api/accounts", headers=HEADERS).status_code == 429  # 1 a second


def test_a_listing_of_events_is_the_months_events_filtered_and_sorted() -> None:
    """GET /api/events' listing is cut out of each month's events kept in time order: the
    same list, event for event, as all the months' events filtered and sorted, whatever the
    window (across months, within one), with events alike (same time, profile and id), events
    without a time, events that arrive after a listing, and an ingestion delay."""
    import random

    rng = random.Random(12)
    clock = st.Clock()
    s = st.StandIn(clock=clock)
    metric = ("Placed Order", st.API)

    def made(n: int) -> list[st.StoredEvent]:
        out = []
        for k in range(n):
            day, second = rng.randint(1, 28), rng.choice([0, 30, 59])
            when = f"2024-{rng.randint(1, 3):02d}-{day:02d}T10:00:{second:02d}+00:00"
            e = st.other_event("Placed Order", when, integration=st.API, uid=f"u{rng.randint(0, 40)}",
                               identity=rng.choice(["a@x.io", "b@x.io"]))  # fmt: skip
            out.append(st.replace(e, time=None) if k % 17 == 0 else e)
        return out

    def whole(start: str, end: str, now: float, delay: float) -> list[st.StoredEvent]:
        found = [e for month, events in s.by_month.get(metric, {}).items()
                 if start[:7] <= month <= end[:7] for e in events]  # fmt: skip
        found = [e for e in found
                 if e.time is not None and start <= e.time < end and e.stored_at + delay <= now]  # fmt: skip
        return sorted(found, key=lambda e: (e.time or "", e.identity, e.key_uid))

    bounds = ["2023-12-31T00:00:00+00:00", "2024-01-15T10:00:30+00:00", "2024-02-01T00:00:00+00:00",
              "2024-02-10T10:00:00+00:00", "2024-03-28T10:00:59+00:00", "2024-04-01T00:00:00+00:00"]  # fmt: skip
    s.preload([st.other_event("Placed Order", f"2024-{m:02d}-05T00:00:00+00:00", integration=st.API)
               for m in (3, 2, 1)])  # the months known latest first  # fmt: skip
    for round_ in range(6):
        s.preload(made(150))  # alike events too: preload keeps every one
        s.faults.ingestion_delay = 5.0 if round_ % 2 else 0.0
        s.store([st.replace(e, unique_id=f"r{round_}-{i}", key_uid=f"r{round_}-{i}")
                 for i, e in enumerate(made(50))])  # fmt: skip
        clock.advance(3.0)
        for _ in range(12):
            start, end = sorted(rng.sample(bounds, 2))
            got = s.listing(metric, start, end, clock())
            want = whole(start, end, clock(), s.faults.ingestion_delay)
            assert [id(e) for e in got] == [id(e) for e in want]
    assert len(whole(bounds[0], bounds[-1], clock(), 0.0)) > 900


def test_the_aggregates_from_rollups_are_the_aggregates_of_every_event() -> None:
    """POST /api/metric-aggregates answers a month whose every event is in the range (and
    past the ingestion delay) from its cells counted once (StandIn._rollup, which encode_all
    counts before a benchmark's clock), any other month by reading its events: either way
    the very answer of counting, summing and collecting profiles event by event, for ranges
    on month bounds and inside months, by currency or not, as events keep arriving."""
    import random
    from datetime import UTC, datetime

    rng = random.Random(14)
    clock = st.Clock()
    s = st.StandIn(clock=clock)
    metric = ("Placed Order", st.API)

    def made(n: int) -> list[st.StoredEvent]:
        out = []
        for _ in range(n):
            when = f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T0{rng.randint(0, 9)}:00:00+00:00"
            e = st.other_event("Placed Order", when, value=rng.choice([10.1, 0.3, 7.77, 1e-7]),
                               currency=rng.choice(["USD", "EUR", ""]), integration=st.API,
                               identity=f"p{rng.randint(0, 30)}")  # fmt: skip
            out.append(st.replace(e, value=None) if rng.random() < 0.1 else e)
        return out

    def every_event(start: datetime, end: datetime, grouped: bool, delay: float) -> Any:
        a, b = start.isoformat(), end.isoformat()
        events = [e for month, held in s.by_month.get(metric, {}).items() if a[:7] <= month <= b[:7]
                  for e in held if e.time is not None and a <= e.time < b and e.stored_at + delay <= clock()]  # fmt: skip
        months = []
        month = start.replace(day=1, hour=0)
        while month < end:
            months.append(month)
            month = month.replace(year=month.year + month.month // 12, month=month.month % 12 + 1)
        index = {m.strftime("%Y-%m"): i for i, m in enumerate(months)}
        groups: dict[str, list[list[Any]]] = {}
        for e in events:
            assert e.time is not None
            i = index[e.time[:7]]
            cells = groups.setdefault((e.value_currency or "") if grouped else "", [
                [0.0] * len(months), [0.0] * len(months), [set() for _ in months]])  # fmt: skip
            cells[0][i] += 1.0
            cells[1][i] += float(e.value or 0)
            cells[2][i].add(e.identity)
        if not grouped and not groups:
            groups[""] = [[0.0] * len(months), [0.0] * len(months), [set() for _ in months]]
        return [(c, n, [round(v, 6) for v in v_], [len(p) for p in p_])
                for c, (n, v_, p_) in sorted(groups.items())]  # fmt: skip

    def answered(start: datetime, end: datetime, grouped: bool) -> Any:
        attrs = {
            "measurements": ["count", "sum_value", "unique"],
            "by": ["$value_currency"] if grouped else [],
        }
        cells = s.aggregate(metric, start.isoformat(), end.isoformat(), clock(), grouped)
        rows = st._aggregate_answer(cells, start, end, attrs, s.url)["data"]["attributes"]["data"]
        return [((r["dimensions"] or [""])[0], r["measurements"]["count"], r["measurements"]["sum_value"],
                 [int(u) for u in r["measurements"]["unique"]]) for r in rows]  # fmt: skip

    checked = 0
    for round_ in range(5):
        s.preload(made(300))
        s.faults.ingestion_delay = 4.0 if round_ == 3 else 0.0
        s.store([st.replace(e, unique_id=f"r{round_}-{i}", key_uid=f"r{round_}-{i}")
                 for i, e in enumerate(made(40))])  # fmt: skip
        if round_ in (1, 4):
            s.encode_all()  # rollups counted now; the events after them are read
        clock.advance(2.0)
        for _ in range(10):
            m1 = rng.randint(1, 12)
            start = datetime(2024, m1, rng.choice([1, 1, 15]), tzinfo=UTC)
            end = rng.choice([datetime(2025, 1, 1, tzinfo=UTC), datetime(2024, m1, 28, tzinfo=UTC)])
            for grouped in (True, False):
                want = every_event(start, end, grouped, s.faults.ingestion_delay)
                assert answered(start, end, grouped) == want
                checked += sum(sum(n) for _, n, _, _ in want)
    assert checked > 5000
