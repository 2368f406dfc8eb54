"""convert.py, directly: a RawOrder of a built-in layout becomes the Order it says, or a
FieldError naming the field that cannot be used."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from klaviyo_backfill.errors import FieldError
from klaviyo_backfill.inputs.layouts import builtin_layouts, parse
from klaviyo_backfill.inputs.values import zone
from klaviyo_backfill.mapping.convert import Settings, to_order
from klaviyo_backfill.model import Order, RawOrder

LAYOUTS = builtin_layouts()
SHOPIFY_CSV, WOO_JSON = LAYOUTS["shopify-csv"], LAYOUTS["woocommerce-json"]
NOW = datetime(2024, 1, 1, tzinfo=UTC)
SETTINGS = Settings(now=NOW)


def raw_order(
    lines: list[dict[str, Any]] | None = None,
    refunds: list[dict[str, Any]] | None = None,
    zones: dict[str, str] | None = None,
    **fields: Any,
) -> RawOrder:
    """A raw order as a reader hands it over: layout field names to stripped text."""
    base = {
        "id": "5001",
        "created_at": "2021-07-12 04:57:56 -0400",
        "email": "jane@example.com",
        "currency": "USD",
        "total": "30.00",
    }
    base.update(fields)
    return RawOrder(
        "orders.csv",
        7,
        {k: v for k, v in base.items() if v is not None},
        [{"name": "Tee", "quantity": "2", "price": "15.00", "sku": "TEE"}]
        if lines is None
        else lines,
        refunds or [],
        zones or {},
    )


def convert(raw: RawOrder, layout: Any = SHOPIFY_CSV, settings: Settings = SETTINGS) -> Order:
    return to_order(raw, layout, settings)


def rejected(raw: RawOrder, layout: Any = SHOPIFY_CSV, settings: Settings = SETTINGS) -> FieldError:
    with pytest.raises(FieldError) as caught:
        to_order(raw, layout, settings)
    return caught.value


# ---------------------------------------------------------------- identity and time


def test_the_order_keeps_its_id_source_and_line() -> None:
    order = convert(raw_order(id="5001", number="#1001"))
    assert (order.id, order.number, order.source, order.line) == ("5001", "#1001", "orders.csv", 7)


def test_a_numeric_id_from_json_becomes_text() -> None:
    assert convert(raw_order(id=4501), WOO_JSON).id == "4501"


def test_created_at_is_the_instant_the_offset_says() -> None:
    created = convert(raw_order(created_at="2021-07-12 04:57:56 -0400")).created_at
    assert created.utcoffset() is not None
    assert created == datetime(2021, 7, 12, 8, 57, 56, tzinfo=UTC)
    assert created.astimezone(UTC).isoformat() == "2021-07-12T08:57:56+00:00"


def test_a_naive_time_is_read_in_the_run_zone() -> None:
    settings = Settings(now=NOW, timezone=zone("Asia/Tokyo"), zone_named=True)
    order = convert(raw_order(created_at="2021-07-12 09:00:00"), settings=settings)
    assert order.created_at == datetime(2021, 7, 12, 0, 0, tzinfo=UTC)  # Tokyo is UTC+9
    assert order.warnings == []


def test_a_naive_time_in_an_unnamed_zone_is_read_as_utc_with_a_warning() -> None:
    order = convert(raw_order(created_at="2021-07-12 09:00:00"))
    assert order.created_at == datetime(2021, 7, 12, 9, 0, tzinfo=UTC)
    assert order.warnings == ["naive time read as UTC (use --timezone ZONE)"]


def test_a_source_with_its_own_zone_wins_over_the_run_zone() -> None:
    """WooCommerce's date_created_gmt is UTC whatever --timezone says."""
    settings = Settings(now=NOW, timezone=zone("America/New_York"))
    raw = raw_order(created_at="2021-07-12T09:00:00", zones={"created_at": "UTC"}, id=77)
    order = convert(raw, WOO_JSON, settings)
    assert order.created_at == datetime(2021, 7, 12, 9, 0, tzinfo=UTC)
    assert order.warnings == []


# ---------------------------------------------------------------- money and lines


def test_money_is_decimal_and_currency_upper_case() -> None:
    order = convert(raw_order(total="$1,234.50", currency="eur", discount_value="10.05"))
    assert order.total == Decimal("1234.50") and isinstance(order.total, Decimal)
    assert order.discount_value == Decimal("10.05") and isinstance(order.discount_value, Decimal)
    assert order.currency == "EUR"


def test_no_currency_uses_the_run_currency_else_usd_with_a_warning() -> None:
    with_option = convert(raw_order(currency=None), settings=Settings(now=NOW, currency="GBP"))
    assert with_option.currency == "GBP" and with_option.warnings == []
    assumed = convert(raw_order(currency=None))
    assert assumed.currency == "USD"
    assert assumed.warnings == ["no currency in the export: USD assumed (use --currency CODE)"]


def test_a_currency_that_is_not_three_letters_is_rejected() -> None:
    error = rejected(raw_order(currency="US$"))
    assert error.field == "currency"


def test_line_items_become_lines_with_whole_quantities_and_decimal_prices() -> None:
    lines = [
        {"name": "Tee", "quantity": "2", "price": "15.00", "sku": "TEE", "brand": "Acme"},
        {"name": "Mug", "price": "4.5"},
    ]
    order = convert(raw_order(lines=lines, total="34.50"))
    assert [(li.name, li.quantity, li.price, li.sku, li.brand) for li in order.lines] == [
        ("Tee", 2, Decimal("15.00"), "TEE", "Acme"),
        ("Mug", 1, Decimal("4.5"), None, None),
    ]


def test_a_line_without_a_price_is_rejected_naming_the_line() -> None:
    lines = [{"name": "Tee", "quantity": "1", "price": "5"}, {"name": "Mug", "quantity": "1"}]
    error = rejected(raw_order(lines=lines))
    assert error.field == "line item 2 price"


def test_a_fractional_quantity_is_rejected_naming_the_line() -> None:
    error = rejected(raw_order(lines=[{"name": "Tee", "quantity": "1.5", "price": "5"}]))
    assert error.field == "line item 1 quantity"


def test_a_layout_without_a_total_sums_its_lines() -> None:
    layout = parse(
        {"order": {"id": "id", "created_at": "created"},
         "line": {"name": "n", "quantity": "q", "price": "p"}},
        "no-total.toml",
    )  # fmt: skip
    lines = [
        {"name": "Tee", "quantity": "3", "price": "1.10"},
        {"name": "Mug", "quantity": "1", "price": "0.25"},
    ]
    order = convert(raw_order(lines=lines, total=None), layout)
    assert order.total == Decimal("3.55")


# ---------------------------------------------------------------- fulfilment, cancel, refunds


def test_a_cancellation_time_cancels_the_order() -> None:
    order = convert(raw_order(cancelled_at="2021-07-13 10:00:00 +0000", cancel_reason="customer"))
    assert order.cancelled
    assert order.cancelled_at == datetime(2021, 7, 13, 10, 0, tzinfo=UTC)
    assert order.cancel_reason == "customer"


def test_a_cancelled_status_cancels_the_order_without_a_time() -> None:
    order = convert(raw_order(id=9, status="Cancelled"), WOO_JSON)
    assert order.cancelled and order.cancelled_at is None


def test_an_order_with_no_cancellation_is_not_cancelled() -> None:
    order = convert(raw_order(status="paid"))
    assert not order.cancelled and order.cancelled_at is None


def test_a_cancellation_before_the_order_is_moved_to_the_order_time() -> None:
    order = convert(raw_order(cancelled_at="2021-07-01 00:00:00 +0000"))
    assert order.cancelled_at == datetime(2021, 7, 12, 8, 57, 56, tzinfo=UTC)


def test_a_fulfilled_status_or_time_fulfils_the_order() -> None:
    by_status = convert(raw_order(fulfillment_status="fulfilled"))
    assert by_status.fulfilled and by_status.fulfilled_at is None
    by_time = convert(raw_order(fulfilled_at="2021-07-14T12:00:00+02:00"))
    assert by_time.fulfilled
    assert by_time.fulfilled_at == datetime(2021, 7, 14, 10, 0, tzinfo=UTC)
    assert not convert(raw_order(fulfillment_status="unfulfilled")).fulfilled


def test_refund_entries_become_positive_refunds() -> None:
    refunds = [
        {"amount": "-5.00", "at": "2021-07-20T10:00:00Z", "reason": " damaged "},
        {"amount": "2.50", "at": None, "reason": None},
        {"amount": "0.00", "at": None, "reason": "nothing"},
    ]
    order = convert(raw_order(refunds=refunds))
    assert [(r.amount, r.at, r.reason) for r in order.refunds] == [
        (Decimal("5.00"), datetime(2021, 7, 20, 10, 0, tzinfo=UTC), "damaged"),
        (Decimal("2.50"), None, None),
    ]


def test_a_refunded_amount_column_is_one_refund() -> None:
    order = convert(raw_order(refunded_amount="12.00"))
    assert [(r.amount, r.at) for r in order.refunds] == [(Decimal("12.00"), None)]


def test_a_refunded_status_without_an_amount_refunds_the_total() -> None:
    order = convert(raw_order(status="refunded", total="30.00", refunded_amount="0.00"))
    assert [r.amount for r in order.refunds] == [Decimal("30.00")]


def test_no_refund_when_nothing_says_so() -> None:
    assert convert(raw_order(status="paid", refunded_amount="0.00")).refunds == []


def test_a_refund_dated_before_the_order_is_moved_to_the_order_time() -> None:
    refunds = [{"amount": "5.00", "at": "2020-01-01T00:00:00Z", "reason": None}]
    order = convert(raw_order(refunds=refunds))
    assert order.refunds[0].at == datetime(2021, 7, 12, 8, 57, 56, tzinfo=UTC)


# ---------------------------------------------------------------- what rejects an order


@pytest.mark.parametrize(
    ("missing", "reason"),
    [("id", "missing order id"), ("created_at", "missing order date"),
     ("total", "missing order total")],
)  # fmt: skip
def test_a_missing_required_field_is_rejected_naming_it(missing: str, reason: str) -> None:
    error = rejected(raw_order(**{missing: None}))
    assert error.field == missing
    assert error.reason == reason


def test_unreadable_money_is_rejected_naming_the_field() -> None:
    error = rejected(raw_order(total="thirty"))
    assert error.field == "total" and error.value == "thirty"


def test_unreadable_time_is_rejected_naming_the_field() -> None:
    error = rejected(raw_order(created_at="yesterday-ish"))
    assert error.field == "created_at"


def test_later_rows_of_a_csv_order_without_its_first_row_are_rejected_as_out_of_order() -> None:
    error = rejected(raw_order(created_at=None, total=None))
    assert error.field == "order" and "sort the export by order" in error.reason


def test_a_problem_the_reader_found_rejects_the_order() -> None:
    raw = raw_order()
    raw.problem = "a JSON string, not an order"
    error = rejected(raw)
    assert error.field == "order" and error.reason == "a JSON string, not an order"


@pytest.mark.parametrize(
    ("created", "ok"),
    [("1989-12-31 23:59:59 +0000", False), ("1990-01-01 00:00:00 +0000", True),
     ("1990-01-01 00:30:00 +0100", False)],
)  # fmt: skip
def test_orders_before_1990_are_rejected(created: str, ok: bool) -> None:
    if ok:
        assert convert(raw_order(created_at=created)).created_at == datetime(1990, 1, 1, tzinfo=UTC)
    else:
        error = rejected(raw_order(created_at=created))
        assert error.field == "created_at"
        assert error.reason == "before 1990, which Klaviyo does not accept"


def test_an_older_api_revision_rejects_orders_before_2000() -> None:
    settings = Settings(now=NOW, earliest=datetime(2000, 1, 1, tzinfo=UTC))
    error = rejected(raw_order(created_at="1999-06-01 00:00:00 +0000"), settings=settings)
    assert error.field == "created_at"
    assert error.reason.startswith("before 2000, which Klaviyo does not accept before API revision")


def test_an_order_more_than_a_year_ahead_is_rejected() -> None:
    within = NOW + timedelta(days=365)
    order = convert(raw_order(created_at=within.isoformat()))
    assert order.created_at == within
    beyond = NOW + timedelta(days=365, seconds=1)
    error = rejected(raw_order(created_at=beyond.isoformat()))
    assert error.field == "created_at" and error.reason == "more than a year in the future"


@pytest.mark.parametrize("field", ["fulfilled_at", "cancelled_at"])
def test_a_later_time_more_than_a_year_ahead_rejects_the_order_naming_it(field: str) -> None:
    ahead = (NOW + timedelta(days=400)).isoformat()
    error = rejected(raw_order(**{field: ahead}))
    assert error.field == field and error.reason == "more than a year in the future"


def test_a_refund_more_than_a_year_ahead_rejects_the_order() -> None:
    refunds = [{"amount": "5.00", "at": (NOW + timedelta(days=400)).isoformat(), "reason": None}]
    error = rejected(raw_order(refunds=refunds))
    assert error.field == "refunded_at" and error.reason == "more than a year in the future"


# ---------------------------------------------------------------- people


def test_a_malformed_email_is_dropped_with_a_warning() -> None:
    order = convert(raw_order(email="jane at example.com"))
    assert order.email is None
    assert "malformed email ignored" in order.warnings


def test_a_full_name_is_split_at_its_first_space() -> None:
    order = convert(raw_order(name="Mary Ann Smith"))
    assert (order.first_name, order.last_name) == ("Mary", "Ann Smith")


def test_the_billing_name_stands_in_for_a_missing_customer_name() -> None:
    order = convert(raw_order(billing_name="Jo Bloggs", billing_zip="'02110"))
    assert (order.first_name, order.last_name) == ("Jo", "Bloggs")
    assert (order.billing.first_name, order.billing.last_name) == ("Jo", "Bloggs")
    assert order.billing.zip == "02110"  # a spreadsheet's leading apostrophe is not the zip's
