"""Property tests of the mapping's invariants (mapping/events.py's docstring is the contract).

Orders are built directly as `model.Order`/`model.Line` objects and mapped with
`mapping.map_order`; one property also goes through `convert.to_order`, where an export's
dates are made sane, to check the end-to-end promise that no event predates its order.
"""

from __future__ import annotations

import copy
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from klaviyo_backfill.inputs.layouts import builtin_layouts
from klaviyo_backfill.inputs.values import minor_units, quantize
from klaviyo_backfill.mapping.convert import Settings, to_order
from klaviyo_backfill.mapping.events import (
    CANCELLED,
    FULFILLED,
    ORDERED,
    PLACED,
    REFUNDED,
    line_keys,
    map_order,
)
from klaviyo_backfill.model import Event, Line, Order, RawOrder, Refund

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CURRENCIES = ("USD", "EUR", "GBP", "JPY", "KRW", "KWD", "BHD")
START, END = datetime(1995, 1, 1), datetime(2025, 12, 31)

# SKUs from an alphabet without "-" and "_": the alphabet the distinctness promise can keep
# (see test_line_keys_collide_with_a_sku_that_looks_like_a_generated_key for the others).
skus = st.one_of(st.none(), st.just(""), st.text("ABC12", min_size=1, max_size=3))
# amounts with up to 4 decimals (exports carry sub-cent prices), 0 to 100,000
prices = st.integers(0, 10**9).map(lambda n: Decimal(n).scaleb(-4))
offsets = st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=400))


@st.composite
def lines(draw: st.DrawFn) -> Line:
    return Line(
        name=draw(st.one_of(st.none(), st.text(max_size=12))),
        quantity=draw(st.integers(min_value=0, max_value=50)),
        price=draw(prices),
        sku=draw(skus) or None,
        product_id=draw(st.one_of(st.none(), st.integers(1, 10**9).map(str))),
        brand=draw(st.one_of(st.none(), st.sampled_from(["Acme", "Kiln & Co", "Zen"]))),
    )


@st.composite
def orders(draw: st.DrawFn, order_id: str | None = None) -> Order:
    created = draw(st.datetimes(START, END, timezones=st.just(UTC)))
    created = created.replace(microsecond=0)
    currency = draw(st.sampled_from(CURRENCIES))
    items = draw(st.lists(lines(), min_size=0, max_size=6))
    fulfilled = draw(st.booleans())
    cancelled = draw(st.booleans())
    fulfilled_at = draw(st.one_of(st.none(), offsets.map(lambda d: created + d)))
    cancelled_at = draw(st.one_of(st.none(), offsets.map(lambda d: created + d)))
    refunds = draw(
        st.lists(
            st.builds(
                Refund,
                amount=st.integers(1, 10**8).map(lambda n: Decimal(n).scaleb(-4)),
                at=st.one_of(st.none(), offsets.map(lambda d: created + d)),
                reason=st.one_of(st.none(), st.sampled_from(["damaged", "late", ""])),
            ),
            max_size=3,
        )
    )
    contact = draw(st.sampled_from(["email", "phone", "both"]))
    return Order(
        source="hypothesis",
        line=1,
        id=order_id or str(draw(st.integers(1, 10**12))),
        created_at=created,
        currency=currency,
        total=draw(prices),
        lines=items,
        number=draw(st.one_of(st.none(), st.integers(1, 10**6).map(lambda n: f"#{n}"))),
        email="buyer@example.com" if contact in ("email", "both") else None,
        phone="+16175550123" if contact in ("phone", "both") else None,
        discount_code=draw(st.one_of(st.none(), st.just("SAVE10"))),
        discount_value=draw(st.one_of(st.none(), prices)),
        fulfilled=fulfilled or fulfilled_at is not None,
        fulfilled_at=fulfilled_at,
        cancelled=cancelled or cancelled_at is not None,
        cancelled_at=cancelled_at,
        cancel_reason=draw(st.one_of(st.none(), st.just("customer"))),
        refunds=refunds,
    )


@st.composite
def runs(draw: st.DrawFn) -> list[Order]:
    """Several orders with distinct numeric ids, as the pipeline hands them on (it skips
    repeated ids)."""
    ids = draw(st.lists(st.integers(1, 10**9).map(str), min_size=1, max_size=4, unique=True))
    return [draw(orders(order_id=i)) for i in ids]


def _by(events: list[Event], metric: str) -> list[Event]:
    return [e for e in events if e.metric == metric]


def _exponent(amount: Decimal) -> int:
    exponent = amount.as_tuple().exponent
    assert isinstance(exponent, int)
    return exponent


# --------------------------------------------------------------------------------------


@SETTINGS
@given(orders())
def test_exactly_one_placed_order_and_one_ordered_product_per_line(order: Order) -> None:
    events = map_order(order)
    assert events[0].metric == PLACED
    assert len(_by(events, PLACED)) == 1
    assert len(_by(events, ORDERED)) == len(order.lines)
    assert len(_by(events, FULFILLED)) == order.fulfilled
    assert len(_by(events, CANCELLED)) == order.cancelled
    assert len(_by(events, REFUNDED)) == bool(order.refunds)
    assert all(e.order_id == order.id and e.properties["OrderId"] == order.id for e in events)


@pytest.mark.slow
@SETTINGS
@given(orders())
def test_ordered_product_values_sum_to_the_row_totals(order: Order) -> None:
    events = map_order(order)
    products = _by(events, ORDERED)
    items = events[0].properties["Items"]
    values = [e.value for e in products]
    assert values == [item["RowTotal"] for item in items]
    assert values == [quantize(line.price * line.quantity, order.currency) for line in order.lines]
    assert sum(v for v in values if v is not None) == sum(
        (item["RowTotal"] for item in items), Decimal(0)
    )
    for product, item in zip(products, items, strict=True):
        assert product.properties["RowTotal"] == product.value == item["RowTotal"]


@SETTINGS
@given(orders())
def test_unique_ids_are_deterministic(order: Order) -> None:
    twin = copy.deepcopy(order)
    first = [(e.metric, e.unique_id) for e in map_order(order)]
    second = [(e.metric, e.unique_id) for e in map_order(twin)]
    assert first == second
    assert first == [(e.metric, e.unique_id) for e in map_order(copy.deepcopy(twin))]


@pytest.mark.slow
@SETTINGS
@given(runs())
def test_unique_ids_are_distinct_across_a_run(batch: list[Order]) -> None:
    events = [e for order in batch for e in map_order(order)]
    placed_and_ordered = [e.unique_id for e in events if e.metric in (PLACED, ORDERED)]
    assert len(placed_and_ordered) == len(set(placed_and_ordered))
    for order in batch:
        mine = [e for e in events if e.order_id == order.id]
        for event in mine:
            if event.metric in (FULFILLED, CANCELLED, REFUNDED):
                assert event.unique_id == order.id  # shared with Placed Order, by design
        keys = Counter((e.metric, e.unique_id) for e in mine)
        assert max(keys.values()) == 1  # per metric, never twice


@SETTINGS
@given(st.lists(skus, max_size=10))
def test_line_keys_follow_the_contract(sku_list: list[str | None]) -> None:
    order_lines = [Line("x", 1, Decimal(1), sku=s or None) for s in sku_list]
    keys = line_keys(order_lines)
    assert len(keys) == len(set(keys))
    counts = Counter(s or None for s in sku_list)
    seen: Counter[str | None] = Counter()
    for sku, key in zip((s or None for s in sku_list), keys, strict=True):
        seen[sku] += 1
        if sku and counts[sku] == 1:
            assert key == sku
        else:
            assert key == f"{sku or 'item'}-{seen[sku]}"


@pytest.mark.parametrize(
    "sku_list",
    [["A", "A", "A-1"], ["item", "item", None], [None, None, "item-2"]],
    ids=["repeated-sku-vs-suffixed-sku", "sku-named-item-vs-empty-sku", "empty-vs-item-n"],
)
def test_line_keys_collide_with_a_sku_that_looks_like_a_generated_key(
    sku_list: list[str | None],
) -> None:
    order = Order(
        source="t",
        line=1,
        id="1001",
        created_at=datetime(2024, 1, 1, tzinfo=UTC),
        currency="USD",
        total=Decimal(3),
        lines=[Line("x", 1, Decimal(1), sku=s) for s in sku_list],
        email="a@example.com",
    )
    ids = [e.unique_id for e in map_order(order) if e.metric == ORDERED]
    assert len(ids) == len(set(ids)), ids


@SETTINGS
@given(orders())
def test_no_event_is_dated_before_its_order(order: Order) -> None:
    for event in map_order(order):
        assert event.time >= order.created_at, event.metric


def _quantized(amount: Any, currency: str) -> bool:
    return isinstance(amount, Decimal) and _exponent(amount) == -minor_units(currency)


@SETTINGS
@given(orders())
def test_money_is_quantized_to_the_minor_unit(order: Order) -> None:
    currency = order.currency
    for event in map_order(order):
        assert event.currency == currency
        assert event.value is not None and _quantized(event.value, currency), event.metric
        props = event.properties
        if "DiscountValue" in props:
            assert _quantized(props["DiscountValue"], currency)
        for item in props.get("Items", [props] if event.metric == ORDERED else []):
            assert _quantized(item["ItemPrice"], currency)
            assert _quantized(item["RowTotal"], currency)
    placed = map_order(copy.deepcopy(order))[0]
    assert placed.value == quantize(order.total, currency)


@SETTINGS
@given(orders())
def test_refunded_value_is_the_sum_of_the_refunds(order: Order) -> None:
    refunded = _by(map_order(order), REFUNDED)
    if order.refunds:
        total = sum((r.amount for r in order.refunds), Decimal(0))
        assert refunded[0].value == quantize(total, order.currency)
        dated = [r.at for r in order.refunds if r.at is not None]
        expected = max(dated) if dated else (order.cancelled_at or order.created_at)
        assert refunded[0].time == expected


# --------------------------------------------------------------------------------------
# Through convert.to_order: the export's own dates may be out of order
# --------------------------------------------------------------------------------------

SHOPIFY_JSON = builtin_layouts()["shopify-json"]
WOO_JSON = builtin_layouts()["woocommerce-json"]
aware = st.datetimes(START, END, timezones=st.sampled_from([UTC])).map(
    lambda d: d.replace(microsecond=0)
)


@SETTINGS
@given(
    created=aware,
    fulfilled=st.one_of(st.none(), aware),
    cancelled=st.one_of(st.none(), aware),
    refunds=st.lists(st.one_of(st.none(), aware), max_size=3),
    status=st.sampled_from(["paid", "refunded", "partially_refunded"]),
)
def test_no_event_predates_its_order_whatever_the_export_says(
    created: datetime,
    fulfilled: datetime | None,
    cancelled: datetime | None,
    refunds: list[datetime | None],
    status: str,
) -> None:
    fields: dict[str, Any] = {
        "id": "4501",
        "created_at": created.isoformat(),
        "email": "a@example.com",
        "currency": "EUR",
        "total": "30.00",
        "status": status,
    }
    if fulfilled is not None:
        fields["fulfilled_at"] = fulfilled.isoformat()
    if cancelled is not None:
        fields["cancelled_at"] = cancelled.isoformat()
    raw = RawOrder(
        source="t",
        line=1,
        fields=fields,
        lines=[{"name": "Mug", "quantity": 2, "price": "15.00", "sku": "MUG"}],
        refunds=[
            {"amount": "5.00", "at": at.isoformat() if at else None, "reason": None}
            for at in refunds
        ],
    )
    order = to_order(raw, SHOPIFY_JSON, Settings(now=END.replace(tzinfo=UTC)))
    events = map_order(order)
    assert all(e.time >= order.created_at for e in events)
    assert events[0].time == created


@SETTINGS
@given(created=aware, status=st.sampled_from(["completed", "cancelled", "refunded"]))
def test_status_only_events_take_the_order_time(created: datetime, status: str) -> None:
    """A WooCommerce status says fulfilled/cancelled/refunded with no date: the order's time."""
    raw = RawOrder(
        source="t",
        line=1,
        fields={
            "id": "77",
            "created_at": created.replace(tzinfo=None).isoformat(),
            "email": "a@example.com",
            "currency": "USD",
            "total": "10.00",
            "status": status,
        },
        lines=[{"name": "Tee", "quantity": 1, "price": "10.00"}],
        zones={"created_at": "UTC"},
    )
    events = map_order(to_order(raw, WOO_JSON, Settings(now=END.replace(tzinfo=UTC))))
    assert [e.metric for e in events[2:]] == [
        {"completed": FULFILLED, "cancelled": CANCELLED, "refunded": REFUNDED}[status]
    ]
    assert all(e.time == created for e in events)
    if status == "refunded":
        assert events[-1].value == Decimal("10.00")
