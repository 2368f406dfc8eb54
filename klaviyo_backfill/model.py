"""Typed records that flow through the pipeline: read -> RawOrder -> Order -> Event."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

__all__ = [
    "METRICS",
    "STORE",
    "Address",
    "Event",
    "Filters",
    "Line",
    "Order",
    "Position",
    "RawOrder",
    "Refund",
    "Rejection",
    "identity",
    "item_key",
    "order_key",
    "utc_month",
]

JSON = dict[str, Any]

# the metrics of Klaviyo's custom-integration guide, in the order an order yields them
PLACED, ORDERED = "Placed Order", "Ordered Product"
FULFILLED, CANCELLED, REFUNDED = "Fulfilled Order", "Cancelled Order", "Refunded Order"
METRICS = (PLACED, ORDERED, FULFILLED, CANCELLED, REFUNDED)
Position = tuple[int, int]  # (input index, byte offset) of an order; JSON inputs have offset 0


def utc_month(when: datetime) -> str:
    """'YYYY-MM' of an aware time in UTC: the month Klaviyo's aggregates (timezone UTC) put
    an event in."""
    t = when.astimezone(UTC)
    return f"{t.year:04d}-{t.month:02d}"


def identity(profile: dict[str, Any]) -> str:
    """The profile as Klaviyo keys it: its email, else its phone number, else its external id."""
    return str(
        profile.get("email") or profile.get("phone_number") or profile.get("external_id") or ""
    )


STORE = "Store"  # the event property that names an order's store (`--store`)


def order_key(store: str | None, order_id: str) -> str:
    """What an order is known by, in the account's ledger, its events' unique ids and the
    per-order proof: its id, or, where a store is named (`--store`), "<store>:<id>", so two
    shops' order 1001 are two orders. Without a store, the id as it always was."""
    return order_id if not store else f"{store}:{order_id}"


def item_key(properties: dict[str, Any]) -> str:
    """Which line item an Ordered Product event is, from its properties (its SKU and product
    id; '' for an event of a whole order): Klaviyo's event listing does not return the
    unique_id, so the per-order proof matches line items by these."""
    sku, product = properties.get("SKU"), properties.get("ProductID")
    if sku is None and product is None:
        return ""
    return f"{'' if sku is None else sku}\x1f{'' if product is None else product}"[:300]


@dataclass(slots=True)
class RawOrder:
    """One order as the reader found it: layout field name -> raw value, not yet parsed."""

    source: str
    line: int
    fields: dict[str, Any]
    lines: list[dict[str, Any]]
    refunds: list[dict[str, Any]] = field(default_factory=list)
    # field -> IANA zone, where the source that matched names its own (WooCommerce *_gmt)
    zones: dict[str, str] = field(default_factory=dict)
    already_sent: bool = False  # the checkpoint holds it: read no further than its id
    offset: int = 0  # CSV: the byte offset of its first row; JSON: bytes read so far
    end: int | None = None  # CSV: the byte offset just past its last row (None: JSON)
    problem: str | None = None  # the reader could not make an order of it: rejected as such
    notes: tuple[str, ...] = ()  # warnings the reader has for the order
    digest: bytes | None = None  # CSV, sending to an account: the digest of its rows (delta.py)
    held: Any = None  # the account holds it unchanged (account_ledger.HeldOrder): not read

    def get(self, name: str) -> Any:
        return self.fields.get(name)


@dataclass(slots=True)
class Address:
    first_name: str | None = None
    last_name: str | None = None
    company: str | None = None
    address1: str | None = None
    address2: str | None = None
    city: str | None = None
    region: str | None = None
    region_code: str | None = None
    country: str | None = None
    country_code: str | None = None
    zip: str | None = None
    phone: str | None = None

    def is_empty(self) -> bool:
        return not any(
            (
                self.address1,
                self.address2,
                self.city,
                self.region,
                self.zip,
                self.country,
                self.country_code,
            )
        )


@dataclass(slots=True)
class Line:
    name: str | None
    quantity: int
    price: Decimal
    sku: str | None = None
    product_id: str | None = None
    brand: str | None = None
    categories: tuple[str, ...] = ()
    url: str | None = None
    image_url: str | None = None
    variant: str | None = None


@dataclass(slots=True)
class Refund:
    amount: Decimal
    at: datetime | None = None
    reason: str | None = None


@dataclass(slots=True)
class Order:
    source: str
    line: int
    id: str
    created_at: datetime
    currency: str
    total: Decimal
    lines: list[Line]
    number: str | None = None
    email: str | None = None
    phone: str | None = None
    customer_phone: str | None = None
    external_id: str | None = None
    customer_id: str | None = None  # the shop's: the external_id of an order with no email or phone
    first_name: str | None = None
    last_name: str | None = None
    discount_code: str | None = None
    discount_value: Decimal | None = None
    billing: Address = field(default_factory=Address)
    shipping: Address = field(default_factory=Address)
    fulfilled: bool = False
    fulfilled_at: datetime | None = None
    cancelled: bool = False
    cancelled_at: datetime | None = None
    cancel_reason: str | None = None
    refunds: list[Refund] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    store: str | None = None  # the store it was sold in, where one is named (`--store`)

    @property
    def key(self) -> str:
        """What the order is known by: its id, qualified by its store (`order_key`)."""
        return order_key(self.store, self.id)


@dataclass(slots=True)
class Event:
    """One Klaviyo event, still typed: money as Decimal, time as an aware datetime."""

    metric: str
    time: datetime
    unique_id: str
    properties: JSON
    profile: JSON
    value: Decimal | None = None
    currency: str | None = None
    order_id: str = ""


@dataclass(slots=True)
class Rejection:
    """A row, order or event that will not be sent, and why."""

    source: str
    line: int | None
    order_id: str | None
    reason: str
    detail: str = ""

    def as_json(self) -> JSON:
        return {
            "source": self.source,
            "line": self.line,
            "order_id": self.order_id,
            "reason": self.reason,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class Filters:
    """Which orders of the exports a run takes: created in [since, until), the first `limit`."""

    since: datetime | None = None
    until: datetime | None = None
    limit: int | None = None
