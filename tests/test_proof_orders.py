"""The per-order proof, directly: GET /api/events read and checked page by page
(httpx.MockTransport), the aggregates' answers checked before they count, and the pure
comparison of acknowledged events with held ones (proof/orders.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from klaviyo_backfill.commands.repair import _not_found, without_window
from klaviyo_backfill.errors import GaveUp, QueryError
from klaviyo_backfill.klaviyo.reading import ReadConfig, Reader
from klaviyo_backfill.klaviyo.retry import RetryPolicy
from klaviyo_backfill.klaviyo.shapes import HeldEvent
from klaviyo_backfill.model import Rejection
from klaviyo_backfill.proof.orders import (
    DIFFERENT,
    MISSING,
    TWICE,
    Window,
    all_as_sent,
    compare_window,
    windows,
)
from klaviyo_backfill.state.checkpoint import Acked, Ledger
from klaviyo_backfill.state.history import History
from klaviyo_backfill.state.locate import archive

BASE = "https://a.klaviyo.test"
JAN = 1672531200  # 2023-01-01T00:00:00Z
FEB = 1675209600


def read(handler: Callable[[httpx.Request], httpx.Response], call: Callable[[Reader], Any]) -> Any:
    config = ReadConfig(BASE, "pk_secret", retry=RetryPolicy(backoff_base=0.001, max_attempts=3))
    reader = Reader(config, httpx.AsyncClient(transport=httpx.MockTransport(handler)))

    async def go() -> Any:
        async with reader:
            return await call(reader)

    return asyncio.run(go())


def event(
    uid: str, order: str, at: int = JAN + 60, value: float = 10.0, mid: str = "M1"
) -> dict[str, Any]:
    from datetime import UTC, datetime

    return {"type": "event", "id": uid, "attributes": {
        "uuid": uid, "timestamp": at, "datetime": datetime.fromtimestamp(at, UTC).isoformat(),
        "event_properties": {"OrderId": order, "$value": value}},
        "relationships": {"metric": {"data": {"type": "metric", "id": mid}}}}  # fmt: skip


def page(events: list[dict[str, Any]], next_link: str | None = None) -> httpx.Response:
    doc = {"data": events, "links": {"self": BASE, "next": next_link}}
    return httpx.Response(200, json=doc, headers={"Content-Type": "application/vnd.api+json"})


def test_events_are_read_page_by_page_with_the_filter_size_and_cursor() -> None:
    asked: list[dict[str, list[str]]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        query = parse_qs(urlsplit(str(request.url)).query)
        asked.append(query)
        if "page[cursor]" not in query:
            return page([event("a", "1"), event("b", "2")], f"{BASE}/api/events?page[cursor]=2")
        return page([event("c", "3")])

    held = read(handler, lambda r: r.events("M1", JAN, FEB))
    assert [h.order_id for h in held] == ["1", "2", "3"]
    assert held[0] == HeldEvent("a", "1", "", 10.0, JAN + 60)
    first = asked[0]
    assert first["page[size]"] == ["1000"]
    assert first["filter"] == ['equals(metric_id,"M1"),greater-or-equal(datetime,2023-01-01T00:00:00+00:00),'
                               "less-than(datetime,2023-02-01T00:00:00+00:00)"]  # fmt: skip


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ([event("a", "1", mid="OTHER")], "another metric"),
        ([event("a", "1", at=FEB + 5)], "outside the window"),
        ([event("a", "1", value=float("nan"))], "not JSON"),
    ],
)
def test_a_page_of_another_metric_or_window_is_a_fault_never_a_verdict(
    bad: list[dict[str, Any]], why: str
) -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if why == "not JSON":
            body = json.dumps({"data": bad, "links": {}}).encode()
            return httpx.Response(
                200, content=body, headers={"Content-Type": "application/vnd.api+json"}
            )
        return page(bad)

    with pytest.raises(GaveUp) as caught:
        read(handler, lambda r: r.events("M1", JAN, FEB))
    assert "GET /api/events" in caught.value.message
    assert len(calls) == 3  # retried, then an error naming the endpoint


@pytest.mark.parametrize("where", ["two pages", "one page"])
def test_an_event_on_two_pages_reads_the_window_again_then_is_a_fault(where: str) -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if where == "one page":
            return page([event("a", "1"), event("b", "2"), event("a", "1")])
        if "page[cursor]" not in parse_qs(urlsplit(str(request.url)).query):
            return page([event("a", "1")], f"{BASE}/api/events?page[cursor]=x")
        return page([event("a", "1")])

    with pytest.raises(GaveUp) as caught:
        read(handler, lambda r: r.events("M1", JAN, FEB))
    assert caught.value.message.startswith("GET /api/events")
    assert len(calls) == (6 if where == "two pages" else 3)  # the window read three times


@pytest.mark.parametrize("how", ["loop", "itself", "respelt", "elsewhere"])
def test_a_loop_or_a_next_link_elsewhere_is_a_fault_at_once(how: str) -> None:
    """A next link to a page read before (the first one too, in another spelling) or off the
    base URL: an error naming the endpoint at once, never read again."""
    calls = []
    here = f"{BASE}/api/events?page[cursor]=x"

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        query = parse_qs(urlsplit(str(request.url)).query)
        if how == "elsewhere":
            return page([event("a", "1")], "https://evil.test/api/events?page[cursor]=x")
        if how == "itself":
            return page([event(f"e{len(calls)}", "1")], str(request.url))
        if how == "respelt":  # the first page's own address, its query re-encoded and reordered
            first = sorted(query.items(), reverse=True)
            return page([event(f"e{len(calls)}", "1")],
                        f"{BASE}/api/events/?" + urlencode([(k, v[0]) for k, v in first]))  # fmt: skip
        if "page[cursor]" not in query:
            return page([event("a", "1")], here)
        return page([event("b", "2")], here)  # the same next link again: a loop

    with pytest.raises(QueryError) as caught:
        read(handler, lambda r: r.events("M1", JAN, FEB))
    assert caught.value.message.startswith("GET /api/events: a next ")
    assert len(calls) == (1 if how in ("elsewhere", "itself", "respelt") else 2)


def test_an_event_whose_metric_relationship_is_not_an_object_is_read_not_a_traceback() -> None:
    odd = event("a", "1")
    odd["relationships"] = {"metric": ["M1"]}
    held = read(lambda request: page([odd]), lambda r: r.events("M1", JAN, FEB))
    assert [h.uuid for h in held] == ["a"]


def aggregate(dates: list[str], rows: list[dict[str, Any]]) -> httpx.Response:
    doc = {
        "data": {
            "type": "metric-aggregate",
            "id": "x",
            "attributes": {"dates": dates, "data": rows},
        }
    }
    return httpx.Response(200, json=doc, headers={"Content-Type": "application/vnd.api+json"})


def row(currency: str, counts: list[Any], sums: list[Any]) -> dict[str, Any]:
    return {"dimensions": [currency], "measurements": {"count": counts, "sum_value": sums}}


@pytest.mark.parametrize(
    ("dates", "rows"),
    [
        (["2023-01-01T00:00:00+00:00", "2023-01-01T00:00:00+00:00"], [row("USD", [1, 1], [1, 1])]),
        (["2022-12-01T00:00:00+00:00"], [row("USD", [1], [1])]),
        (["2023-02-01T00:00:00-05:00"], [row("USD", [1], [1])]),
        (["2023-01-01T00:00:00+00:00"], [row("USD", [1], [1]), row("USD", [1], [1])]),
        (["2023-01-01T00:00:00+00:00"], [row("USD", [-1], [1])]),
        (["2023-01-01T00:00:00+00:00"], [row("USD", [1.5], [1])]),
        (["2023-01-01T00:00:00+00:00"], [row("USD", [10**4000], [1])]),
    ],
    ids=["date-twice", "date-outside", "date-not-utc", "row-twice", "negative", "fraction", "huge"],
)
def test_a_malformed_aggregate_is_retried_then_an_error_never_a_verdict(
    dates: list[str], rows: list[dict[str, Any]]
) -> None:
    with pytest.raises(GaveUp) as caught:
        read(lambda request: aggregate(dates, rows), lambda r: r.aggregate("M1", 2023))
    assert "POST /api/metric-aggregates" in caught.value.message


def test_an_aggregate_with_nan_or_infinity_is_not_an_answer() -> None:
    body = (b'{"data": {"type": "metric-aggregate", "id": "x", "attributes": {"dates": '
            b'["2023-01-01T00:00:00+00:00"], "data": [{"dimensions": ["USD"], "measurements": '
            b'{"count": [NaN], "sum_value": [Infinity]}}]}}}')  # fmt: skip
    answer = httpx.Response(200, content=body, headers={"Content-Type": "application/vnd.api+json"})
    with pytest.raises(GaveUp):
        read(lambda request: answer, lambda r: r.aggregate("M1", 2023))


# ---------------------------------------------------------------- the comparison

W = Window("Placed Order", "2023-01", JAN, FEB)


def acked(order: str, uid: str, at: int = JAN + 60, value: str = "10.00", item: str = ""):  # type: ignore[no-untyped-def]
    return ("Placed Order", at, order, uid, item, value, "USD", "orders.csv", int(order) + 1)


def held(
    order: str, at: int = JAN + 60, value: str = "10.0", item: str = "", uid: str = ""
) -> HeldEvent:
    return HeldEvent(uid or f"u{order}{at}{value}", order, item, float(value), at)


def test_each_order_is_held_missing_held_twice_or_different() -> None:
    sent = [acked("1", "1"), acked("2", "2"), acked("3", "3"), acked("4", "4")]
    there = [
        held("1"),
        held("3"),
        held("3", uid="other"),
        held("4", value="12.5"),
        held("99"),
    ]  # fmt: skip  (99: not this job's order, left alone)
    result = compare_window(W, sent, there)
    kinds = {(f.kind, f.order_id) for f in result.findings}
    assert kinds == {(MISSING, "2"), (TWICE, "3"), (DIFFERENT, "4")}
    missing = next(f for f in result.findings if f.kind == MISSING)
    assert missing.unique_ids == ("2",) and (missing.source, missing.line) == ("orders.csv", 3)
    c = result.count
    assert (c.sent, c.held, c.missing, c.twice, c.different) == (4, 2, 1, 1, 1)


def test_line_items_are_matched_by_their_item_not_their_order() -> None:
    sent = [acked("1", "1_a", item="A"), acked("1", "1_b", item="B")]
    result = compare_window(W, sent, [held("1", item="B")])
    (finding,) = result.findings
    assert finding.kind == MISSING and finding.unique_ids == ("1_a",)


def test_a_month_with_many_events_is_read_in_smaller_windows() -> None:
    cut = windows({("Placed Order", "2023-01"): 120_000}, most=50_000)
    assert len(cut) == 3 and cut[0].start == JAN and cut[-1].end == FEB
    assert all(a.end == b.start for a, b in pairwise(cut))


def test_orders_held_exactly_as_sent_are_settled_as_the_search_settles_them() -> None:
    """compare_window settles an order whose held events are exactly the sent ones without
    `_one_order`'s search: every verdict, count and sum stays the search's."""
    import random

    from klaviyo_backfill.proof.orders import MonthCount, _one_order

    rng = random.Random(21)
    for _ in range(300):
        sent, there = [], []
        for o in range(1, 6):
            for k in range(rng.randint(1, 3)):
                at, value, item = JAN + 60 * o, f"{rng.choice([10, 12.5, 0])}", f"I{k}"
                sent.append(acked(str(o), f"{o}_{k}", at, value, item))
                for _copy in range(rng.choice([0, 1, 1, 1, 2])):
                    moved = at + rng.choice([0, 0, 0, 60])
                    there.append(held(str(o), moved, rng.choice([value, value, "9.99"]), item))
        rng.shuffle(there)
        result = compare_window(W, sent, there)
        count = MonthCount(W.metric, W.month)
        expected = []
        for o in dict.fromkeys(e[2] for e in sent):
            mine = [e for e in sent if e[2] == o]
            expected += _one_order(W, o, mine, [h for h in there if h.order_id == o], count)
        assert result.findings == expected
        assert result.count == count


def test_a_window_held_exactly_as_sent_is_settled_at_once_as_order_by_order(
    tmp_path: Path,
) -> None:
    """all_as_sent, on the checkpoint's keys (Ledger.acked_keys), settles a window whose
    held events are exactly the acknowledged ones with compare_window's counts and sums; any
    other window (an event missing, twice, moved, of another value or order, two events
    alike, two currencies) is left to compare_window (None)."""
    import random

    rng = random.Random(6)
    settled = 0
    for trial in range(60):
        sent: list[Acked] = []
        for o in range(1, 8):
            currency = "EUR" if trial % 10 == 9 and o == 3 else "USD"
            for k in range(rng.randint(1, 3)):
                at, value = JAN + 60 * o, rng.choice(["10.00", "12.5", "0", "0.1", None])
                item = rng.choice([f"I{k}", "I0"]) if trial % 7 == 6 else f"I{k}"
                sent.append(("Placed Order", at, str(o), f"{o}_{k}_{trial}", item, value,
                             currency, "orders.csv", o + 1))  # fmt: skip
        there = [HeldEvent(f"h{e[3]}", e[2], e[4], None if e[5] is None else float(e[5]), e[1])
                 for e in sent]  # fmt: skip
        if trial % 3:  # one event otherwise, or gone, or twice, or another order's
            i = rng.randrange(len(there))
            h = there[i]
            there[i:i + 1] = rng.choice([[], [h, h._replace(uuid="x")], [h._replace(at=h.at + 1)],
                                         [h._replace(value=(h.value or 0) + 0.01)],
                                         [h, HeldEvent("y", "99", "", 1.0, JAN)]])  # fmt: skip
        rng.shuffle(there)
        ledger = _recorded(tmp_path / f"{trial}.sqlite", sent)
        try:
            keys, currency = ledger.acked_keys("Placed Order", JAN, FEB)
            assert sorted(keys) == sorted(
                (e[2], e[4], e[1], float(e[5] or 0)) for e in ledger.acked("Placed Order", JAN, FEB)
            )
            fast = all_as_sent(W, keys, currency, there)
            full = compare_window(W, ledger.acked("Placed Order", JAN, FEB), there)
        finally:
            ledger.close()
        if fast is None:
            continue
        settled += 1
        assert not full.findings and not full.others and fast.findings == []
        got, want = fast.count, full.count
        assert (got.sent, got.held, got.missing, got.twice, got.different) == (
            want.sent, want.held, 0, 0, 0)  # fmt: skip
        assert got.held_by_currency.keys() == want.held_by_currency.keys() == {"USD"}
        assert got.held_by_currency["USD"] == pytest.approx(want.held_by_currency["USD"])
    assert 10 <= settled < 60  # exact windows settled at once, never one otherwise
    a, c = ("1", "I0", JAN, 10.0), ("2", "", JAN, 5.0)
    one = [HeldEvent("h1", "1", "I0", 10.0, JAN), HeldEvent("h2", "2", "", 5.0, JAN)]
    assert all_as_sent(W, [a, c], "USD", one) is not None
    assert all_as_sent(W, [a, c], None, one) is None  # several currencies
    assert all_as_sent(W, [a, a, c], "USD", [*one, one[1]._replace(uuid="h3")]) is None


def test_a_page_read_from_its_bytes_has_the_verdicts_of_the_page_read_as_a_document() -> None:
    """With msgspec, a page of events is decoded into the fields the proof reads only: every
    page, well formed or not, gives the same events, or is a fault, as read as a document."""
    pytest.importorskip("msgspec")

    def verdict(body: bytes, fast: bool) -> Any:
        into: list[HeldEvent] = []
        return "fault" if _page_fault(body, fast, into) else into

    odd: list[Any] = [None, 1, 2.5, True, "x", "", [], ["M1"], {}, {"id": "M1"}, {"id": 7}]
    base = event("a", "1")
    rng = __import__("random").Random(21)
    deep = "[" * 100_000 + "]" * 100_000  # nested in a field read, one skipped, the links
    nested = {**base, "links": "SKIPPED", "attributes": {**base["attributes"], "uuid": "READ"}}
    pages = [b"", b"<html>", b"[]", b'{"data": 1}', b'{"links": {}}', b'{"data": [1]}',
             *(json.dumps({"data": [nested], "links": "LINKS"}).replace(f'"{at}"', deep).encode()
               for at in ("READ", "SKIPPED", "LINKS")),
             json.dumps({"data": [nested], "links": {}}).encode().replace(b"SKIPPED", b"\xff"),
             json.dumps({"data": [nested], "links": {}}).encode().replace(b"SKIPPED", b"\xc3\xa9")]  # fmt: skip
    for _ in range(400):
        items = []
        for k in range(rng.randint(1, 3)):
            item: Any = json.loads(json.dumps(base))
            item["id"] = f"e{k}"
            item["attributes"]["uuid"] = f"u{k}"
            for _change in range(rng.randint(0, 2)):
                where = rng.choice(["type", "id", "attributes", "uuid", "timestamp", "datetime",
                                    "event_properties", "OrderId", "SKU", "ProductID", "Store",
                                    "$value", "relationships", "metric", "data", "mid"])  # fmt: skip
                value = rng.choice([*odd, JAN + 5, FEB + 5, "2023-01-02T00:00:00+00:00",
                                    "2023-01-02T00:00:00", 10**16, -3.5, "event"])  # fmt: skip
                attrs = item["attributes"]
                if where in ("type", "id", "attributes", "relationships"):
                    item[where] = value
                elif where in ("uuid", "timestamp", "datetime", "event_properties"):
                    if isinstance(attrs, dict):
                        attrs[where] = value
                elif where in ("metric", "data", "mid"):
                    rel = item.get("relationships")
                    if isinstance(rel, dict) and where == "metric":
                        rel["metric"] = value
                    elif isinstance(rel, dict) and isinstance(rel.get("metric"), dict):
                        if where == "data":
                            rel["metric"]["data"] = value
                        elif isinstance(rel["metric"].get("data"), dict):
                            rel["metric"]["data"]["id"] = value
                elif isinstance(attrs, dict) and isinstance(attrs.get("event_properties"), dict):
                    attrs["event_properties"][where] = value
            items.append(item)
        pages.append(json.dumps({"data": items, "links": {"next": None}}).encode())
    outcomes = set()
    for body in pages:
        fast, slow = verdict(body, True), verdict(body, False)
        assert fast == slow, body
        outcomes.add("fault" if fast == "fault" else len(fast))
    assert "fault" in outcomes and outcomes - {"fault", 0}  # both kinds were met


def _job(path: Path, args: list[str], events: list[Acked]) -> None:
    ledger = Ledger(path)
    ledger.put(send_args=json.dumps(args), acked="1")
    ledger.record([(e[2], False) for e in events], acked={e[2]: [e] for e in events})
    ledger.close()


def test_a_jobs_history_is_every_job_s_acknowledged_events_each_once(tmp_path: Path) -> None:
    """Both windows, or an export saved over the file: the union, the newest job's record of
    an event first; an event only a job sent with other options knows is remembered as
    that job's, so a repair resends it as that job would."""
    path = tmp_path / "orders-abc-ACCT.sqlite"
    at = 1_700_000_000

    def ev(order: str, line: int, source: str = "/x/orders.csv") -> Acked:
        return ("Placed Order", at, order, order, "", "10", "USD", source, line)

    _job(path, ["/x/orders.csv", "--until", "2023-07-31"], [ev("1", 2), ev("2", 3)])
    archive(path)
    _job(path, ["/x/orders.csv", "--currency", "EUR"], [ev("3", 4)])
    archive(path)
    _job(path, ["/x/orders.csv", "--since", "2023-08-01"], [ev("2", 9), ev("4", 5)])
    ledger = Ledger(path, read_only=True)
    history = History(
        ledger, lambda j: json.dumps(without_window(json.loads(j.get("send_args") or "[]")))
    )
    try:
        assert len(history.jobs) == 3
        got = sorted(history.acked("Placed Order", at, at + 1))
        assert [(e[2], e[8]) for e in got] == [("1", 2), ("2", 9), ("3", 4), ("4", 5)]
        assert history.acked("Placed Order", at + 1, at + 2) == []
        euro = json.dumps(["/x/orders.csv", "--currency", "EUR"])
        assert history.group_of("Placed Order", "3") == euro
        assert (
            history.group_of("Placed Order", "1") == history.mine == json.dumps(["/x/orders.csv"])
        )
        assert history.ledger_of[history.mine].path == path
    finally:
        history.close()
        ledger.close()


def test_a_repair_counts_the_listed_orders_the_exports_no_longer_hold(tmp_path: Path) -> None:
    """An order sent, or refused, was in the exports; one neither was not (an earlier export
    saved over the file): that one is counted, for the repair's warning."""
    ledger = Ledger(tmp_path / "r.sqlite")
    try:
        ledger.record([("1", False)], [(Rejection("/x/o.csv", 3, "2", "bad total"), None)])
        assert _not_found(ledger, frozenset({"1", "2", "3", "4"})) == 2
        assert _not_found(ledger, frozenset({"1"})) == 0
    finally:
        ledger.close()


def test_held_keys_are_the_checkpoints_keys_and_give_back_each_event_as_read() -> None:
    """shapes.HeldKeys (what verify compares: a key per event, no HeldEvent): each key is
    Ledger.acked_keys' (order, item, time, value; 0.0 for none, equal to -0.0), and `events`
    gives back every event as read, a $value of None or -0.0 too; a list handed on is never
    changed after."""
    from klaviyo_backfill.klaviyo.shapes import HeldKeys

    read = [HeldEvent("a", "1", "I0", 10.5, JAN), HeldEvent("b", "2", "", None, JAN + 1),
            HeldEvent("c", "3", "", -0.0, JAN + 2), HeldEvent("d", "4", "", 0.0, JAN + 3)]  # fmt: skip
    first, second = HeldKeys(), HeldKeys()
    for e in read[:2]:
        first.add(e)
    for e in read[2:]:
        second.add(e)
    handed = first.handed()
    first.clear()  # the next page is read into new lists
    assert handed.uuids == ["a", "b"] and len(first) == 0
    both = HeldKeys()
    both.extend(handed)
    both.extend(second)
    assert both.keys == [("1", "I0", JAN, 10.5), ("2", "", JAN + 1, 0.0), ("3", "", JAN + 2, 0.0),
                         ("4", "", JAN + 3, 0.0)]  # fmt: skip
    back = both.events()
    assert back == read and [repr(e.value) for e in back] == ["10.5", "None", "-0.0", "0.0"]


def test_a_page_read_into_keys_holds_the_events_it_reads_as_events() -> None:
    """A page read into HeldKeys (from its bytes with msgspec, or as a document) holds
    exactly the events read into a list, with the same verdicts: of every field the proof
    reads, its usual and its odd forms (no timestamp, a Store, a whole $value, none, -0.0)."""
    from klaviyo_backfill.klaviyo.shapes import EventsCheck, HeldKeys, document

    def verdict(body: bytes, fast: bool, keys: bool) -> Any:
        into: Any = HeldKeys() if keys else []
        if _page_fault(body, fast, into):
            return "fault"
        return into.events() if keys else into

    rng = __import__("random").Random(8)
    outcomes = set()
    for _ in range(300):
        items = []
        for k in range(rng.randint(1, 4)):
            item: Any = event(f"u{k}", rng.choice(["1", "2", "1001"]), JAN + k)
            attrs, props = item["attributes"], item["attributes"]["event_properties"]
            for _change in range(rng.randint(0, 3)):
                where = rng.choice(["timestamp", "$value", "Store", "SKU", "ProductID", "mid"])
                value = rng.choice([None, 0, 3, -0.0, 0.0, 2.5, "x", "2023-01-02T00:00:00+00:00",
                                    JAN + 9, FEB + 1])  # fmt: skip
                if where == "timestamp":
                    attrs.pop("timestamp") if value is None else attrs.update(timestamp=value)
                elif where == "mid":
                    item["relationships"]["metric"]["data"]["id"] = rng.choice(["M1", "M2"])
                elif value is None:
                    props.pop(where, None)
                else:
                    props[where] = value
            items.append(item)
        body = json.dumps({"data": items, "links": {"next": None}}).encode()
        found = verdict(body, True, False)
        for fast, keys in ((True, True), (False, True), (False, False)):
            assert verdict(body, fast, keys) == found, body
        if found != "fault":
            got = HeldKeys()
            document(httpx.Response(200, content=body), EventsCheck("M1", JAN, FEB, got))
            assert got.keys == [(h.order_id, h.item, h.at, h.value or 0.0) for h in found]
            assert [repr(h.value) for h in got.events()] == [repr(h.value) for h in found]
        outcomes.add("fault" if found == "fault" else len(found))
    assert "fault" in outcomes and outcomes - {"fault", 0}  # both kinds were met


def test_a_window_is_settled_alike_from_its_keys_and_from_its_events(tmp_path: Path) -> None:
    """all_as_sent on Reader.held's keys (what verify reads) gives what it gives on the
    events themselves: the same windows settled, with the same counts and sums."""
    import random

    from klaviyo_backfill.klaviyo.shapes import HeldKeys

    rng = random.Random(9)
    sent: list[Acked] = []
    for o in range(1, 30):
        for k in range(rng.randint(1, 3)):
            value = rng.choice(["10.00", "12.5", "0", "-0", None])
            sent.append(("Placed Order", JAN + 60 * o, str(o), f"{o}_{k}", f"I{k}", value, "USD",
                         "orders.csv", o + 1))  # fmt: skip
    ledger = _recorded(tmp_path / "keys.sqlite", sent)
    try:
        keys, currency = ledger.acked_keys("Placed Order", JAN, FEB)
    finally:
        ledger.close()
    exact = [HeldEvent(f"h{e[3]}", e[2], e[4], None if e[5] is None else float(e[5]), e[1])
             for e in sent]  # fmt: skip
    settled = 0
    for trial in range(80):
        there = list(exact)
        if trial % 2:
            i = rng.randrange(len(there))
            h = there[i]
            there[i : i + 1] = rng.choice([[], [h, h._replace(uuid="x")], [h._replace(at=h.at + 1)],
                                           [h._replace(value=(h.value or 0) + 0.01)],
                                           [h._replace(item="other")]])  # fmt: skip
        rng.shuffle(there)
        held = HeldKeys()
        for h in there:
            held.add(h)
        on_events, on_keys = (
            all_as_sent(W, keys, currency, there),
            all_as_sent(W, keys, currency, held),
        )
        assert (on_events is None) == (on_keys is None) == (trial % 2 == 1)
        if on_keys is not None and on_events is not None:
            settled += 1
            assert on_keys.count == on_events.count and on_keys.findings == []
    assert settled == 40


def test_the_reader_hands_the_proof_keys_of_the_events_it_reads() -> None:
    """Reader.held reads a window page by page, as Reader.events does, into keys."""

    def handler(request: httpx.Request) -> httpx.Response:
        if "page[cursor]" not in parse_qs(urlsplit(str(request.url)).query):
            return page([event("a", "1"), event("b", "2")], f"{BASE}/api/events?page[cursor]=2")
        return page([event("c", "3", value=0.0)])

    held = read(handler, lambda r: r.held("M1", JAN, FEB))
    assert held.uuids == ["a", "b", "c"]
    assert held.keys == [
        ("1", "", JAN + 60, 10.0),
        ("2", "", JAN + 60, 10.0),
        ("3", "", JAN + 60, 0.0),
    ]
    assert held.events() == read(handler, lambda r: r.events("M1", JAN, FEB))


def test_an_order_missing_in_two_windows_is_one_order_named_in_each() -> None:
    """Its Placed Order missing in January and an Ordered Product in another window: the
    proof counted two orders missing ("8 order(s) named above" beside 7 orders named)."""
    from klaviyo_backfill.proof.orders import Proof

    proof = Proof()
    proof.add(compare_window(W, [acked("1", "p1"), acked("2", "p2")], [held("2")]))
    product = Window("Ordered Product", "2023-01", JAN, FEB)
    lines = [("Ordered Product", JAN + 60, "1", "o1", "SKU", "5.00", "USD", "orders.csv", 2)]
    proof.add(compare_window(product, lines, []))
    assert proof.orders[MISSING] == 1 and proof.entries[MISSING] == 2
    assert [f.metric for f in proof.named(MISSING)] == ["Placed Order", "Ordered Product"]
    assert proof.as_json()["orders_missing"] == 1 and proof.totals().missing == 2


def _page_fault(body: bytes, fast: bool, into: Any) -> bool:
    """Read a GET /api/events page of metric M1 in January into `into` (with msgspec where
    `fast`, else as a document): whether it is a fault instead."""
    from klaviyo_backfill.klaviyo.shapes import EventsCheck, NotAnAnswer, document

    check = EventsCheck("M1", JAN, FEB, into)
    if not fast:
        check.read = None
    answer = httpx.Response(200, content=body, headers={"Content-Type": "application/json"})
    try:
        document(answer, check)
    except NotAnAnswer:
        return True
    return False


def _recorded(path: Path, sent: list[Acked]) -> Ledger:
    """A checkpoint at `path` that recorded these acknowledged events, each order whole."""
    ledger = Ledger(path)
    by_order: dict[str, list[Acked]] = {}
    for e in sent:
        by_order.setdefault(e[2], []).append(e)
    ledger.record([(o, False) for o in by_order], acked=by_order)
    return ledger
