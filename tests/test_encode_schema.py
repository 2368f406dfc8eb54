"""The request bodies the encoders build, against Klaviyo's official request schemas and limits.

Bodies come from the sample corpus (sample_data/), from a larger generated corpus (so bulk
bodies fill up and split), and from hand-built orders with 2,500 line items. Schemas: the
copies of Klaviyo's OpenAPI operations vendored in tests/klaviyo-openapi/ ($KLAVIYO_OPENAPI_DIR
overrides it, as for tests/standin.py), validated with the stand-in's helpers, which also apply
Klaviyo's semantic checks.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from klaviyo_backfill.errors import FieldError
from klaviyo_backfill.klaviyo.endpoints import ENDPOINTS
from klaviyo_backfill.mapping.convert import Settings
from klaviyo_backfill.mapping.encode import legacy_payload
from klaviyo_backfill.mapping.events import map_order
from klaviyo_backfill.model import Address, Event, Line, Order, Refund
from klaviyo_backfill.pipeline.job import Job, resolve_inputs
from klaviyo_backfill.pipeline.orders import mapped_orders
from klaviyo_backfill.pipeline.summary import Stats
from klaviyo_backfill.state.failures import Failures

try:  # tests/ as a plain directory on sys.path, or as a package
    import corpus
    import standin
except ImportError:
    from tests import corpus, standin  # type: ignore[no-redef]

HERE = Path(__file__).resolve().parent
SAMPLE_DATA = HERE.parent / "sample_data"
BULK_FILE, BULK_SCHEMA = "bulk_create_events.json", "EventsBulkCreateJob"
SINGLE_FILE, SINGLE_SCHEMA = "create_event.json", "EventCreateQueryV2"
REVISION = date(2026, 7, 15)
MAX_EVENTS, MAX_BYTES = 1000, 5_000_000  # Klaviyo: 1,000 events and 5 MB per bulk request


def test_the_official_schemas_are_there_and_are_the_ones_used() -> None:
    folder = standin._openapi_dir()  # the folder the stand-in validates with
    if not os.environ.get("KLAVIYO_OPENAPI_DIR"):
        assert folder == HERE / "klaviyo-openapi"  # the vendored copy: no checkout beside it
    for filename, component in ((BULK_FILE, BULK_SCHEMA), (SINGLE_FILE, SINGLE_SCHEMA)):
        schemas = json.loads((folder / filename).read_text())["components"]["schemas"]
        assert component in schemas
        standin.validator(filename, component)  # the stand-in loads the same component
    assert standin.schema_errors({"data": {}}, SINGLE_FILE, SINGLE_SCHEMA)  # it does reject


# --------------------------------------------------------------------------------------
# Sources of events
# --------------------------------------------------------------------------------------


def _map(paths: list[str], currency: str | None = None) -> list[list[Event]]:
    inputs, _ = resolve_inputs(paths, None, None, None)
    settings = Settings(currency=currency)
    mapped = mapped_orders(Job(inputs, settings), None, Stats(), Failures(None))
    return [m.events for m in mapped]


@pytest.fixture(scope="module")
def sample_orders() -> list[list[Event]]:
    orders = _map([str(SAMPLE_DATA)])
    assert len(orders) > 60
    return orders


@pytest.fixture(scope="module")
def large_orders(tmp_path_factory: pytest.TempPathFactory) -> list[list[Event]]:
    """~600 generated orders (Shopify JSON and CSV, WooCommerce JSON): several bulk bodies."""
    folder = tmp_path_factory.mktemp("large")
    corpus.write_shopify_json(corpus.make_orders(200, 401, "shopify"), folder / "a.json")
    corpus.write_shopify_csv(corpus.make_orders(200, 402, "shopify"), folder / "b.csv")
    corpus.write_woo_json(corpus.make_orders(200, 403, "woocommerce"), folder / "c.json")
    return _map([str(folder)])


def _decoded(body: bytes) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(body)
    return decoded


def _bulk_events(body: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(profile attributes, event attributes) of every event of a bulk body."""
    for entry in body["data"]["attributes"]["events-bulk-create"]["data"]:
        profile = entry["attributes"]["profile"]["data"]["attributes"]
        for event in entry["attributes"]["events"]["data"]:
            yield profile, event["attributes"]


def _identity(profile: dict[str, Any]) -> str:
    """Who Klaviyo takes the profile for (as the stand-in does): email first."""
    if profile.get("email"):
        return str(profile["email"]).strip().lower()
    return str(profile.get("phone_number") or profile.get("external_id"))


def _check_event_attributes(attrs: dict[str, Any]) -> None:
    value = attrs.get("value")
    assert isinstance(value, int | float) and not isinstance(value, bool), value  # not a string
    assert math.isfinite(value)
    assert isinstance(attrs["value_currency"], str) and len(attrs["value_currency"]) == 3
    moment = datetime.fromisoformat(attrs["time"])
    assert moment.utcoffset() is not None, attrs["time"]
    assert moment.microsecond == 0
    assert datetime(1990, 1, 1, tzinfo=UTC) < moment < datetime.now(UTC) + timedelta(days=365)
    assert isinstance(attrs["unique_id"], str) and attrs["unique_id"]


def _key(event: Event) -> tuple[str, str]:
    return event.metric, event.unique_id


def _check_bulk(orders: list[list[Event]], backfill: bool = True) -> int:
    """Encode, and check every body: schema, limits, keys, values, and that nothing is lost."""
    requests = list(ENDPOINTS["bulk"].encoder(backfill).requests(orders))
    sent: list[tuple[str, str]] = []
    for request in requests:
        assert len(request.body) <= MAX_BYTES
        body = _decoded(request.body)
        assert standin.schema_errors(body, BULK_FILE, BULK_SCHEMA) == []
        stored, _ = standin.parse_bulk(body, REVISION, "2026-01-01T00:00:00+00:00")
        events = list(_bulk_events(body))
        assert len(events) == len(stored) == len(request.events) <= MAX_EVENTS
        keys = [(_identity(p), a["metric"]["data"]["attributes"]["name"], a["unique_id"])
                for p, a in events]  # fmt: skip
        assert len(keys) == len(set(keys)), "a (profile, metric, unique_id) repeated in a body"
        for (_, attrs), event in zip(events, request.events, strict=True):
            _check_event_attributes(attrs)
            assert attrs.get("backfill", False) is backfill
            assert (attrs["metric"]["data"]["attributes"]["name"], attrs["unique_id"]) == _key(
                event
            )
        sent += [_key(e) for e in request.events]
    assert sent == [_key(e) for events in orders for e in events]
    return len(requests)


def _check_single(orders: list[list[Event]]) -> None:
    requests = list(ENDPOINTS["single"].encoder().requests(orders))
    assert [r.events for r in requests] == [[e] for events in orders for e in events]
    for request in requests:
        assert len(request.body) <= MAX_BYTES
        body = _decoded(request.body)
        assert standin.schema_errors(body, SINGLE_FILE, SINGLE_SCHEMA) == []
        standin.parse_single(body, REVISION, "2026-01-01T00:00:00+00:00")
        attrs = body["data"]["attributes"]
        _check_event_attributes(attrs)
        assert attrs["backfill"] is True
        assert (attrs["metric"]["data"]["attributes"]["name"], attrs["unique_id"]) == _key(
            request.events[0]
        )


# --------------------------------------------------------------------------------------
# The corpus
# --------------------------------------------------------------------------------------


def test_bulk_bodies_of_the_sample_corpus_are_valid(sample_orders: list[list[Event]]) -> None:
    assert _check_bulk(sample_orders) >= 1


def test_single_bodies_of_the_sample_corpus_are_valid(sample_orders: list[list[Event]]) -> None:
    _check_single(sample_orders)


def test_bodies_without_backfill_are_valid_too(sample_orders: list[list[Event]]) -> None:
    _check_bulk(sample_orders, backfill=False)


def test_bulk_bodies_of_a_large_corpus_fill_up_and_split(large_orders: list[list[Event]]) -> None:
    total = sum(map(len, large_orders))
    assert total > MAX_EVENTS + MAX_EVENTS // 2
    bodies = _check_bulk(large_orders)
    assert math.ceil(total / MAX_EVENTS) <= bodies <= math.ceil(total / MAX_EVENTS) + 2


def test_single_bodies_of_a_large_corpus_are_valid(large_orders: list[list[Event]]) -> None:
    _check_single(large_orders[::4])


# --------------------------------------------------------------------------------------
# Very large orders
# --------------------------------------------------------------------------------------

CREATED = datetime(2024, 3, 4, 5, 6, 7, tzinfo=UTC)


def big_order(order_id: str, n_lines: int, name_length: int = 12, email: str = "") -> Order:
    lines = [
        Line(
            name=f"Product {i} " + "x" * name_length,
            quantity=1 + i % 3,
            price=Decimal("9.99") + i % 7,
            sku=f"SKU-{i:05d}",
            product_id=str(70_000 + i),
            brand="Acme",
        )
        for i in range(n_lines)
    ]
    total = sum((line.price * line.quantity for line in lines), Decimal(0))
    return Order(
        source="hand-built",
        line=1,
        id=order_id,
        created_at=CREATED,
        currency="USD",
        total=total,
        lines=lines,
        email=email or f"buyer{order_id}@example.com",
        first_name="Big",
        last_name="Spender",
        fulfilled=True,
        fulfilled_at=CREATED + timedelta(days=2),
        cancelled=True,
        cancelled_at=CREATED + timedelta(days=3),
        refunds=[Refund(Decimal("12.50"), CREATED + timedelta(days=4), "damaged")],
    )


@pytest.mark.slow
def test_an_order_of_2500_line_items_is_split_across_bodies() -> None:
    big = map_order(big_order("900001", 2500))
    assert len(big) == 1 + 2500 + 3
    before = map_order(big_order("900000", 3))
    after = map_order(big_order("900002", 2, email="buyer900001@example.com"))  # same profile
    orders = [before, big, after]
    bodies = _check_bulk(orders)
    assert bodies >= math.ceil(sum(map(len, orders)) / MAX_EVENTS)
    _check_single([big[:5] + big[-3:]])


def test_an_order_too_big_for_one_body_by_bytes_is_split_by_size() -> None:
    """1,200 lines with long names: Placed, Fulfilled, Cancelled and Refunded Order each carry
    ~3.5 MB of Items and ItemNames: several bodies, though the order has < 1,000 events."""
    events = map_order(big_order("900003", 1200, name_length=1300))
    sizes = [len(ENDPOINTS["single"].encoder().requests([[e]]).__next__().body) for e in events[:1]]
    assert 3_000_000 < sizes[0] < MAX_BYTES
    bodies = _check_bulk([events])
    assert bodies >= 4  # no two of the four big events fit in one body


@pytest.mark.slow
def test_arrays_over_4000_items_are_cut_to_klaviyos_limit_with_a_warning() -> None:
    """4,100 lines, each its own category: Items, ItemNames and Categories are cut to 4,000
    (each said in a warning), the bodies pass the stand-in's checks, and every line still gets
    its Ordered Product."""
    order = big_order("900005", 4100)
    for i, line in enumerate(order.lines):
        line.categories = (f"Category {i}",)
    events = map_order(order)
    for name in ("Items", "ItemNames", "Categories"):
        assert f"{name} cut to 4000 of 4100 (Klaviyo's array limit)" in order.warnings
    placed = events[0].properties
    assert len(placed["Items"]) == len(placed["ItemNames"]) == len(placed["Categories"]) == 4000
    assert sum(e.metric == "Ordered Product" for e in events) == 4100
    _check_bulk([events])


def test_an_external_id_over_100_kb_is_never_cut_but_ignored() -> None:
    """An identifier cut short could name another customer: it is left out, with a warning,
    and an order it alone identified is rejected as identifying nobody."""
    order = big_order("900006", 1)
    order.external_id = "C" * 150_000
    events = map_order(order)
    assert "external_id" not in events[0].profile and events[0].profile["email"]
    assert "external id over 100 KB ignored" in order.warnings
    _check_bulk([events])
    alone = big_order("900007", 1, email="x")
    alone.email, alone.external_id = None, "C" * 150_000
    with pytest.raises(FieldError, match="no usable email, phone number or external id"):
        map_order(alone)


def test_texts_over_100_kb_are_cut_to_klaviyos_limit_with_a_warning() -> None:
    """Every text the export gives (names, address, product fields, codes, reasons) at 150 KB of
    UTF-8: the bodies pass the stand-in's checks (no string over 100 KB anywhere, profile
    included), and the order says what was cut."""
    long = "é" * 75_000  # 150,000 bytes
    order = big_order("900004", 2)
    order.first_name = order.last_name = order.discount_code = order.cancel_reason = long
    order.billing = Address(long, long, long, long, long, long, long, "MA", long, "US", long)
    order.refunds[0].reason = long
    for line in order.lines:
        line.name = line.brand = line.url = line.variant = line.sku = line.product_id = long
        line.categories = (long, "Bags")
    events = map_order(order)
    assert "string over 100 KB truncated" in order.warnings
    assert all(len(e.unique_id.encode()) <= 100_000 for e in events)
    assert len({(e.metric, e.unique_id) for e in events}) == len(events)  # the SKUs are alike
    _check_bulk([events])
    _check_single([events])
    for event in events:
        profile, props = event.profile, event.properties
        assert 0 < len(profile["first_name"].encode()) <= 100_000
        assert all(0 < len(v.encode()) <= 100_000 for v in profile["location"].values())
        assert profile["location"]["region"] == long[: len(profile["location"]["region"])]
        assert all(len(v.encode()) <= 100_000 for v in props.values() if isinstance(v, str))


def test_klaviyos_100_kb_is_read_as_100000_bytes() -> None:
    """The tool cut at 102,400 bytes: a text of 101,000 went out whole, over the smaller
    reading of Klaviyo's "100 KB"."""
    order = big_order("900008", 1)
    order.first_name = "a" * 101_000
    order.lines[0].name = "b" * 100_000  # exactly at the limit: kept whole
    events = map_order(order)
    assert len(events[0].profile["first_name"]) == 100_000
    assert events[1].properties["ProductName"] == "b" * 100_000
    assert "string over 100 KB truncated" in order.warnings
    _check_bulk([events])


@pytest.mark.slow
def test_an_order_too_big_for_one_event_has_its_arrays_cut_to_fit_5_mb() -> None:
    """3,000 lines with 1,300-character names: Items and ItemNames alone would make each
    order-level event ~8 MB, which no body can carry. They are cut (with a warning) so that
    every event fits a body; every line still gets its Ordered Product."""
    order = big_order("900008", 3000, name_length=1300)
    events = map_order(order)
    (said,) = [w for w in order.warnings if "within Klaviyo's 5 MB" in w]
    kept = len(events[0].properties["Items"])
    assert said == f"Items cut to {kept} of 3000 to keep each event within Klaviyo's 5 MB"
    assert 1000 < kept < 3000 and len(events[0].properties["ItemNames"]) == kept
    assert sum(e.metric == "Ordered Product" for e in events) == 3000
    order_level = [e for e in events if e.metric != "Ordered Product"]
    for event in order_level:
        (request,) = ENDPOINTS["single"].encoder().requests([[event]])
        assert len(request.body) <= MAX_BYTES
    _check_bulk([events])


# --------------------------------------------------------------------------------------
# The legacy Track payload
# --------------------------------------------------------------------------------------


def test_legacy_payloads_have_the_track_api_shape(sample_orders: list[list[Event]]) -> None:
    encoder = ENDPOINTS["legacy"].encoder(public_key="AbC123")
    count = 0
    for request in encoder.requests(sample_orders):
        (event,) = request.events
        payload = json.loads(request.body)
        assert set(payload) == {"token", "event", "customer_properties", "properties", "time"}
        assert payload["token"] == "AbC123"
        assert payload["event"] == event.metric
        customer = payload["customer_properties"]
        assert customer.get("$email") == event.profile.get("email")
        assert customer.get("$phone_number") == event.profile.get("phone_number")
        assert "$email" in customer or "$phone_number" in customer
        props = payload["properties"]
        assert props["$event_id"] == event.unique_id
        assert type(props["$value"]) in (int, float)
        assert Decimal(str(props["$value"])) == event.value
        assert type(payload["time"]) is int
        assert payload["time"] == int(event.time.timestamp())
        for key, value in event.profile.get("location", {}).items():
            assert customer[f"${key}"] == value
        assert standin.parse_legacy(payload, "AbC123") is not None  # the old API answers 1
        count += 1
    assert count == sum(map(len, sample_orders))


def test_legacy_payload_of_one_event() -> None:
    event = map_order(big_order("77", 1))[0]
    payload = legacy_payload(event, "PUB")
    assert payload["token"] == "PUB" and payload["event"] == "Placed Order"
    assert payload["customer_properties"]["$email"] == "buyer77@example.com"
    assert payload["properties"]["$event_id"] == "77"
    assert payload["properties"]["$value"] == event.value
    assert payload["properties"]["OrderId"] == "77"
    assert payload["time"] == int(CREATED.timestamp())


def test_no_body_repeats_a_key_even_when_skus_look_like_generated_keys() -> None:
    order = big_order("5150", 3)
    for line, sku in zip(order.lines, ["A", "A", "A-1"], strict=True):
        line.sku = sku
    _check_bulk([map_order(order)])
