"""Turn a RawOrder (strings, as exported) into a typed Order, or reject it with a reason."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Any

from .errors import FieldError
from .layout import ADDRESS_KEYS, Layout
from .model import Address, Line, Order, RawOrder, Refund
from .values import (
    clean,
    clean_code,
    parse_email,
    parse_money,
    parse_quantity,
    parse_time,
    zone,
)

__all__ = ["EARLIEST", "Settings", "to_order"]

EARLIEST = datetime(1990, 1, 1, tzinfo=UTC)  # Klaviyo rejects events before 1990


@dataclass(frozen=True, slots=True)
class Settings:
    """Run options that change how an order is read."""

    timezone: tzinfo = UTC
    currency: str | None = None  # used when the export has no currency column
    now: datetime = field(default_factory=lambda: datetime.now(UTC))


class _Reader:
    """Reads one RawOrder's fields with the layout's options."""

    def __init__(self, raw: RawOrder, layout: Layout, settings: Settings) -> None:
        self.raw, self.layout, self.settings = raw, layout, settings
        self.options = layout.options
        self.zone = zone(self.options.timezone) if self.options.timezone else settings.timezone
        self.warnings: list[str] = []

    def text(self, name: str) -> str | None:
        """The reader hands over stripped, non-blank text (or nothing)."""
        value = self.raw.fields.get(name)
        return value if value is None or type(value) is str else clean(value)

    def money(self, name: str, value: Any = None) -> Decimal | None:
        raw = self.raw.get(name) if value is None else value
        return parse_money(raw, name, self.options.decimal_comma)

    def time(self, name: str, value: Any = None) -> datetime | None:
        raw = self.raw.get(name) if value is None else value
        override = self.raw.zones.get(name)
        tz = zone(override) if override else self.zone
        parsed = parse_time(raw, name, tz, self.options.date_format)
        if parsed is None:
            return None
        moment, naive = parsed
        if naive and override is None:
            self.warnings.append(f"naive time read as {tz}")
        return moment

    def status(self) -> set[str]:
        values = (self.raw.get("status"), self.raw.get("fulfillment_status"))
        return {str(v).strip().lower() for v in values if v is not None}


def _check_range(moment: datetime, name: str, value: Any, now: datetime) -> None:
    if moment < EARLIEST:
        raise FieldError(name, value, "before 1990, which Klaviyo does not accept")
    if moment > now + timedelta(days=365):
        raise FieldError(name, value, "more than a year in the future")


def _split_name(full: str | None) -> tuple[str | None, str | None]:
    if not full:
        return None, None
    first, _, last = full.strip().partition(" ")
    return first or None, last.strip() or None


_SIDE_KEYS = {
    side: [(key, f"{side}_{key}") for key in ADDRESS_KEYS] for side in ("billing", "shipping")
}


def _address(r: _Reader, side: str) -> Address:
    get = r.raw.fields.get
    address = Address(*[get(column) for _, column in _SIDE_KEYS[side]])
    if address.zip:
        address.zip = clean_code(address.zip)
    if address.phone:
        address.phone = clean_code(address.phone)
    if not address.first_name and not address.last_name:
        address.first_name, address.last_name = _split_name(r.text(f"{side}_name"))
    return address


def _lines(r: _Reader) -> list[Line]:
    lines = []
    comma = r.options.decimal_comma
    for number, item in enumerate(r.raw.lines, start=1):
        get = item.get
        price = parse_money(get("price"), f"line item {number} price", comma)
        if price is None:
            raise FieldError(f"line item {number} price", None, "missing")
        quantity = get("quantity")
        lines.append(
            Line(
                get("name"),
                parse_quantity(quantity, f"line item {number} quantity") if quantity else 1,
                price,
                get("sku"),
                _product_id(get("product_id")),
                get("brand"),
                _categories(get("categories"), r) if "categories" in item else (),
                get("url"),
                get("image_url"),
                get("variant"),
            )
        )
    return lines


def _product_id(value: str | None) -> str | None:
    """WooCommerce writes 0 for a deleted product (and for fees): no product."""
    return None if value in (None, "0") else value


def _categories(value: Any, r: _Reader) -> tuple[str, ...]:
    if isinstance(value, list):
        return tuple(c for c in (clean(v, r.options.unescape_html) for v in value) if c)
    text = clean(value)
    if not text:
        return ()
    return tuple(c.strip() for c in text.split(r.options.categories_separator) if c.strip())


def _refunds(r: _Reader, total: Decimal, order_time: datetime) -> list[Refund]:
    refunds = []
    for entry in r.raw.refunds:
        amount = r.money("refund amount", entry.get("amount"))
        if amount:
            at = r.time("refunded_at", entry.get("at")) if entry.get("at") else None
            refunds.append(Refund(abs(amount), at, clean(entry.get("reason"))))
    if not refunds:
        amount = r.money("refunded_amount")
        if amount:
            refunds.append(Refund(abs(amount), r.time("refunded_at"), r.text("refund_reason")))
        elif r.status() & r.options.refunded_statuses:
            refunds.append(Refund(total, r.time("refunded_at"), r.text("refund_reason")))
    for refund in refunds:
        if refund.at is not None and refund.at < order_time:
            refund.at = order_time
    return refunds


def _identity(r: _Reader, order: Order) -> None:
    raw_email = r.text("email")
    order.email = parse_email(raw_email)
    if raw_email and order.email is None:
        order.warnings.append("malformed email ignored")
    order.phone = clean_code(r.text("phone"))
    order.customer_phone = clean_code(r.text("customer_phone"))
    order.external_id = r.text("external_id")
    order.first_name, order.last_name = r.text("first_name"), r.text("last_name")
    if not order.first_name and not order.last_name:
        order.first_name, order.last_name = _split_name(r.text("name"))
    if not order.first_name and not order.last_name:
        for address in (order.billing, order.shipping):
            if address.first_name or address.last_name:
                order.first_name, order.last_name = address.first_name, address.last_name
                break


def _currency(r: _Reader, order: Order) -> str:
    code = r.text("currency") or r.settings.currency or r.options.currency
    if code is None:
        order.warnings.append("no currency in the export: USD assumed (use --currency)")
        return "USD"
    code = code.upper()
    if len(code) != 3 or not code.isalpha():
        raise FieldError("currency", code, "not an ISO 4217 currency code")
    return code


def _after(moment: datetime | None, start: datetime) -> datetime | None:
    return None if moment is None else max(moment, start)


def to_order(raw: RawOrder, layout: Layout, settings: Settings) -> Order:
    """The typed order; raises FieldError naming the field when one cannot be used."""
    if raw.problem is not None:
        raise FieldError("order", None, raw.problem)
    r = _Reader(raw, layout, settings)
    order_id = r.text("id")
    if order_id is None:
        raise FieldError("id", None, "missing order id")
    created = r.time("created_at")
    if created is None:
        raise FieldError("created_at", None, "missing order date")
    _check_range(created, "created_at", raw.get("created_at"), settings.now)
    lines = _lines(r)
    total = r.money("total")
    if total is None:
        if "total" in layout.order:
            raise FieldError("total", None, "missing order total")
        total = sum((line.price * line.quantity for line in lines), Decimal(0))
    order = Order(
        source=raw.source,
        line=raw.line,
        id=order_id,
        number=r.text("number"),
        created_at=created,
        currency="",
        total=total,
        lines=lines,
        discount_code=r.text("discount_code"),
        discount_value=r.money("discount_value"),
        billing=_address(r, "billing"),
        shipping=_address(r, "shipping"),
    )
    order.currency = _currency(r, order)
    _identity(r, order)
    status = r.status()
    order.fulfilled_at = _after(r.time("fulfilled_at"), created)
    order.fulfilled = order.fulfilled_at is not None or bool(status & r.options.fulfilled_statuses)
    order.cancelled_at = _after(r.time("cancelled_at"), created)
    order.cancelled = order.cancelled_at is not None or bool(status & r.options.cancelled_statuses)
    order.cancel_reason = r.text("cancel_reason")
    order.refunds = _refunds(r, total, created)
    order.warnings.extend(r.warnings)
    return order
