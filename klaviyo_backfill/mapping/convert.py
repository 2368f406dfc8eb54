"""Turn a RawOrder (strings, as exported) into a typed Order, or reject it with a reason."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Any

from ..errors import FieldError
from ..inputs.layouts import ADDRESS_KEYS, Layout, Options
from ..inputs.values import (
    clean,
    clean_code,
    is_currency,
    parse_email,
    parse_money,
    parse_quantity,
    parse_time,
    store_problem,
    zone,
)
from ..model import Address, Line, Order, RawOrder, Refund

__all__ = ["EARLIEST", "Converter", "Settings", "earliest_for", "to_order"]

EARLIEST = datetime(1990, 1, 1, tzinfo=UTC)  # Klaviyo rejects events before 1990
_FUTURE = "more than a year in the future"  # Klaviyo rejects events past a year from now
_ORPHAN_ROWS = (  # a CSV order's later rows, apart from its first: the export is out of order
    "line item rows without their order's first row (no date or no total): the rows of one "
    "order must be adjacent; sort the export by order"
)
_FLOOR_1990_FROM = "2026-07-15"  # the first API revision that takes them: before it, 2000


def earliest_for(revision: str | None) -> datetime:
    """The earliest event time Klaviyo accepts at this API revision (None: no revision header,
    the retired Track API)."""
    if revision is None or revision[:10] >= _FLOOR_1990_FROM:
        return EARLIEST
    return datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Settings:
    """Run options that change how an order is read."""

    timezone: tzinfo = UTC
    currency: str | None = None  # used when the export has no currency column
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    earliest: datetime = EARLIEST  # orders before it are rejected (`earliest_for`)
    zone_named: bool = False  # --timezone given: naive times are read in it without a warning


def _store(value: Any) -> str | None:
    """A row's store (a layout's `store` field, or `--store`'s, checked already)."""
    name = _text(value)
    problem = None if name is None else store_problem(name)
    if problem is not None:
        raise FieldError("store", value, f"store name {problem}")
    return name


def _text(value: Any) -> str | None:
    """The reader hands over stripped, non-blank text (or nothing); hooks may hand numbers."""
    return value if value is None or type(value) is str else clean(value)


class Converter:
    """Reads the RawOrders of one layout into Orders, with the run's options resolved once."""

    def __init__(self, layout: Layout, settings: Settings) -> None:
        self.layout, self.settings = layout, settings
        self.options = options = layout.options
        self.zone = zone(options.timezone) if options.timezone else settings.timezone
        self.named_zone = bool(options.timezone) or settings.zone_named  # nothing to warn of
        self.comma = options.decimal_comma
        self.date_format = options.date_format
        self.latest = settings.now + timedelta(days=365)
        self.total_required = "total" in layout.order

    def money(self, raw: RawOrder, name: str, value: Any = None) -> Decimal | None:
        return parse_money(raw.fields.get(name) if value is None else value, name, self.comma)

    def time(
        self, raw: RawOrder, name: str, warnings: list[str], value: Any = None
    ) -> datetime | None:
        text = raw.fields.get(name) if value is None else value
        if text is None:
            return None
        override = raw.zones.get(name) if raw.zones else None
        tz = zone(override) if override else self.zone
        parsed = parse_time(text, name, tz, self.date_format)
        if parsed is None:
            return None
        moment, naive = parsed
        if naive and override is None and not self.named_zone:
            warnings.append(f"naive time read as {tz} (use --timezone ZONE)")
        return moment

    def after(
        self, raw: RawOrder, name: str, warnings: list[str], created: datetime
    ) -> datetime | None:
        """A later moment of the order (fulfilled, cancelled): never before its creation, and
        rejected, as a creation time would be, when more than a year ahead."""
        moment = self.time(raw, name, warnings)
        if moment is not None and moment > self.latest:
            raise FieldError(name, raw.fields.get(name), _FUTURE)
        return _after(moment, created)

    def order(self, raw: RawOrder, who_and_when: bool = False) -> Order:
        """The typed order; raises FieldError naming the field when one cannot be used.

        `who_and_when`: the order only as far as its profile and time need (latest.py), with
        every check that can reject it: an order with a usable email gets no addresses or
        names (they never reject an order, nor change who it is once there is an email)."""
        if raw.problem is not None:
            raise FieldError("order", None, raw.problem)
        fields = raw.fields
        late: list[str] = []  # time warnings, listed after the order's own
        order_id = _text(fields.get("id"))
        if order_id is None:
            raise FieldError("id", None, "missing order id")
        created = self.time(raw, "created_at", late)
        if created is None:
            if raw.lines and fields.get("total") is None and self.layout.kind == "csv":
                raise FieldError("order", None, _ORPHAN_ROWS)
            raise FieldError("created_at", None, "missing order date")
        if created < self.settings.earliest or created > self.latest:
            _check_range(created, "created_at", fields.get("created_at"), self.settings)
        lines = _lines(raw, self.options)
        total = self.money(raw, "total")
        if total is not None and total < 0:
            raise FieldError("total", fields.get("total"), _NEGATIVE_TOTAL)
        if total is None:
            if self.total_required and self._orphan(raw):
                raise FieldError("order", None, _ORPHAN_ROWS)
            if self.total_required:
                raise FieldError("total", None, "missing order total")
            total = sum((line.price * line.quantity for line in lines), Decimal(0))
        order = Order(
            raw.source,
            raw.line,
            order_id,
            created,
            "",
            total,
            lines,
            number=_text(fields.get("number")),
            discount_code=_text(fields.get("discount_code")),
            discount_value=self.money(raw, "discount_value"),
            store=_store(fields.get("store")),
        )
        order.currency = self.currency(fields, order)
        email = parse_email(_filled(fields.get("email"))) if who_and_when else None
        if email is not None:
            order.email = email
        else:
            order.billing, order.shipping = (
                _address(fields, "billing"),
                _address(fields, "shipping"),
            )
            _identity(fields, order)
        status = _status(fields)
        options = self.options
        order.fulfilled_at = self.after(raw, "fulfilled_at", late, created)
        order.fulfilled = order.fulfilled_at is not None or bool(
            status & options.fulfilled_statuses
        )
        order.cancelled_at = self.after(raw, "cancelled_at", late, created)
        order.cancelled = order.cancelled_at is not None or bool(
            status & options.cancelled_statuses
        )
        order.cancel_reason = _text(fields.get("cancel_reason"))
        order.refunds = self.refunds(raw, total, created, status, late)
        order.warnings.extend(late)
        if raw.notes:
            order.warnings.extend(raw.notes)
        return order

    def _orphan(self, raw: RawOrder) -> bool:
        """A CSV order's later rows apart from its first (a spreadsheet sorted the file): line
        items, and none of what only an order's first row holds (total, currency, status)."""
        fields = raw.fields
        return (bool(raw.lines) and self.layout.kind == "csv"
                and not any(fields.get(k) for k in ("total", "currency", "status")))  # fmt: skip

    def currency(self, fields: dict[str, Any], order: Order) -> str:
        code = _text(fields.get("currency")) or self.settings.currency or self.options.currency
        if code is None:
            order.warnings.append("no currency in the export: USD assumed (use --currency CODE)")
            return "USD"
        code = code.upper()
        if not is_currency(code):
            raise FieldError("currency", code, "not an ISO 4217 currency code")
        return code

    def refunds(
        self, raw: RawOrder, total: Decimal, order_time: datetime, status: set[str], late: list[str]
    ) -> list[Refund]:
        refunds = []
        for entry in raw.refunds:
            amount = self.money(raw, "refund amount", entry.get("amount"))
            if amount:
                at = self.time(raw, "refunded_at", late, entry["at"]) if entry.get("at") else None
                refunds.append(Refund(abs(amount), at, clean(entry.get("reason"))))
        if not refunds:
            fields = raw.fields
            amount = self.money(raw, "refunded_amount")
            if amount or status & self.options.refunded_statuses:
                refunds.append(
                    Refund(
                        abs(amount) if amount else total,
                        self.time(raw, "refunded_at", late),
                        _text(fields.get("refund_reason")),
                    )
                )
        for refund in refunds:
            if refund.at is not None and refund.at < order_time:
                refund.at = order_time
            elif refund.at is not None and refund.at > self.latest:
                raise FieldError("refunded_at", refund.at.isoformat(), _FUTURE)
        return refunds


# Klaviyo adds event values up as revenue: a negative one takes revenue away, silently
_NEGATIVE_TOTAL = ("negative: an order's total is what was paid (a refund is sent as "
                   "Refunded Order, from the refund's own columns)")  # fmt: skip
_NEGATIVE_PRICE = "negative: a line item's price is what it sold for (a discount is the order's)"


def _status(fields: dict[str, Any]) -> set[str]:
    values = (fields.get("status"), fields.get("fulfillment_status"))
    return {str(v).strip().lower() for v in values if v is not None}


def _check_range(moment: datetime, name: str, value: Any, settings: Settings) -> None:
    floor = settings.earliest
    if moment < floor:
        reason = f"before {floor.year}, which Klaviyo does not accept"
        if floor > EARLIEST:
            reason += f" before API revision {_FLOOR_1990_FROM}"
        raise FieldError(name, value, reason)
    if moment > settings.now + timedelta(days=365):
        raise FieldError(name, value, _FUTURE)


# What a form or a spreadsheet writes for "nothing": never a name, a zip or an address
_PLACEHOLDERS = frozenset(
    {"-", "--", "---", "\u2013", "\u2014", ".", "..", "...", "?", "n/a", "n.a.", "#n/a"}
)


def _filled(value: Any) -> str | None:
    """The text, or None for a blank or a placeholder (`-`, `.`, `n/a`)."""
    text = _text(value)
    return None if text is None or text.lower() in _PLACEHOLDERS else text


def _split_name(full: str | None) -> tuple[str | None, str | None]:
    if not full:
        return None, None
    first, _, last = full.strip().partition(" ")
    return _filled(first), _filled(last.strip())


_SIDE_COLUMNS = {
    side: [f"{side}_{key}" for key in ADDRESS_KEYS] for side in ("billing", "shipping")
}


def _address(fields: dict[str, Any], side: str) -> Address:
    address = Address(*(_filled(fields.get(column)) for column in _SIDE_COLUMNS[side]))
    if address.zip:
        address.zip = clean_code(address.zip)
    if address.phone:
        address.phone = clean_code(address.phone)
    if not address.first_name and not address.last_name:
        address.first_name, address.last_name = _split_name(_filled(fields.get(f"{side}_name")))
    return address


def _lines(raw: RawOrder, options: Options) -> list[Line]:
    lines = []
    comma, separator = options.decimal_comma, options.categories_separator
    for number, item in enumerate(raw.lines, start=1):
        get = item.get
        try:
            price = parse_money(get("price"), "price", comma)
            if price is None:
                raise FieldError("price", None, "missing")
            if price < 0:
                raise FieldError("price", get("price"), _NEGATIVE_PRICE)
            quantity = get("quantity")
            count = parse_quantity(quantity, "quantity") if quantity else 1
        except FieldError as exc:
            raise FieldError(f"line item {number} {exc.field}", exc.value, exc.reason) from None
        lines.append(
            Line(
                get("name"),
                count,
                price,
                get("sku"),
                _product_id(get("product_id")),
                get("brand"),
                _categories(get("categories"), separator, options.unescape_html)
                if "categories" in item
                else (),
                get("url"),
                get("image_url"),
                get("variant"),
            )
        )
    return lines


def _product_id(value: str | None) -> str | None:
    """WooCommerce writes 0 for a deleted product (and for fees): no product."""
    return None if value in (None, "0") else value


def _categories(value: Any, separator: str, unescape: bool) -> tuple[str, ...]:
    if isinstance(value, list):
        return tuple(c for c in (clean(v, unescape) for v in value) if c)
    text = clean(value)
    if not text:
        return ()
    return tuple(c.strip() for c in text.split(separator) if c.strip())


def _identity(fields: dict[str, Any], order: Order) -> None:
    get = fields.get
    raw_email = _filled(get("email"))
    order.email = parse_email(raw_email)
    if raw_email and order.email is None:
        order.warnings.append("malformed email ignored")
    order.phone = clean_code(_text(get("phone")))
    order.customer_phone = clean_code(_text(get("customer_phone")))
    order.external_id = _text(get("external_id"))
    order.customer_id = _text(get("customer_id"))
    order.first_name, order.last_name = _filled(get("first_name")), _filled(get("last_name"))
    if not order.first_name and not order.last_name:
        order.first_name, order.last_name = _split_name(_filled(get("name")))
    if not order.first_name and not order.last_name:
        for address in (order.billing, order.shipping):
            if address.first_name or address.last_name:
                order.first_name, order.last_name = address.first_name, address.last_name
                break


def _after(moment: datetime | None, start: datetime) -> datetime | None:
    return None if moment is None else max(moment, start)


def to_order(raw: RawOrder, layout: Layout, settings: Settings) -> Order:
    """The typed order; raises FieldError naming the field when one cannot be used."""
    return Converter(layout, settings).order(raw)
