"""Events: map a typed Order onto the events of Klaviyo's custom-integration guide.

    Placed Order      one per order          unique_id = order id, value = order total
    Ordered Product   one per line item      unique_id = "<order id>_<line key>", value = price x qty
    Fulfilled Order   when fulfilled         unique_id = order id, value = order total
    Cancelled Order   when cancelled         unique_id = order id, value = order total, Reason
    Refunded Order    when refunded          unique_id = order id, value = amount refunded, Reason

The line key is the SKU when it is unique within the order, otherwise "<sku or 'item'>-<n>"
with n counting the lines of that SKU: distinct, and the same on every run. (A SKU counts
by its first 1,000 characters, which keeps every unique_id within Klaviyo's 100 KB.)
Where the export says an order was fulfilled, cancelled or refunded but gives no time for it
(a WooCommerce status, a Shopify CSV refund), the event takes the order's creation time;
a refund without a date takes the cancellation time when the order was cancelled. So no
event is ever dated before its order.
Where a store is named (`--store`), "order id" in these unique ids is "<store>:<order id>"
(model.order_key) and every event carries a `Store` property (the guide has none: it is
what tells two shops' order 1001 apart when Klaviyo's events are read back); `OrderId`
stays the shop's own id.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from operator import attrgetter
from typing import Any

import orjson

from ..errors import FieldError
from ..inputs.values import parse_phone, quantize
from ..model import (
    CANCELLED,
    FULFILLED,
    METRICS,
    ORDERED,
    PLACED,
    REFUNDED,
    STORE,
    Address,
    Event,
    Line,
    Order,
    identity,
)

__all__ = [
    "CANCELLED",
    "FULFILLED",
    "MAX_ITEMS",
    "MAX_STRING_BYTES",
    "METRICS",
    "ORDERED",
    "PLACED",
    "REFUNDED",
    "identity_of",
    "map_order",
    "profile_of",
]

MAX_STRING_BYTES = 100_000  # Klaviyo: a string may not exceed 100 KB (the smaller reading)
MAX_ITEMS = 4000  # Klaviyo: an array may not exceed 4,000 items

_ADDRESS_PROPS = (
    ("FirstName", "first_name"),
    ("LastName", "last_name"),
    ("Company", "company"),
    ("Address1", "address1"),
    ("Address2", "address2"),
    ("City", "city"),
    ("Region", "region"),
    ("RegionCode", "region_code"),
    ("Country", "country"),
    ("CountryCode", "country_code"),
    ("Zip", "zip"),
    ("Phone", "phone"),
)


def _truncate(text: str, warnings: list[str]) -> str:
    encoded = text.encode("utf-8")
    if len(encoded) <= MAX_STRING_BYTES:
        return text
    warnings.append("string over 100 KB truncated")
    return encoded[:MAX_STRING_BYTES].decode("utf-8", "ignore")


KEY_CHARS = 1000  # of a SKU, in a line key
MAX_PROPERTIES_BYTES = 4_500_000  # an event's properties, leaving room in a 5 MB body
_MEASURED_FROM = 200  # lines: an order this long has its properties' size measured
_SHORT = MAX_STRING_BYTES // 4  # a string this long cannot pass 100 KB in UTF-8


def _put(props: dict[str, Any], key: str, value: Any, warnings: list[str]) -> None:
    """Set a property when the export has a value; strings are kept within Klaviyo's limit."""
    if value:
        props[key] = _fit(value, warnings) if type(value) is str else value


_ADDRESS_NAMES = tuple(prop for prop, _ in _ADDRESS_PROPS)
_address_values = attrgetter(*(attr for _, attr in _ADDRESS_PROPS))


def _address_props(address: Address, warnings: list[str]) -> dict[str, Any]:
    props = {prop: v for prop, v in zip(_ADDRESS_NAMES, _address_values(address), strict=True) if v}
    return _fit_texts(props, warnings)


def _fit_texts(texts: dict[str, str], warnings: list[str]) -> dict[str, str]:
    """A table of texts (an address, a location), each within Klaviyo's 100 KB limit."""
    if texts and max(map(len, texts.values())) > _SHORT:
        return {key: _fit(value, warnings) for key, value in texts.items()}
    return texts


def _unique(values: list[str | None]) -> list[str]:
    return list(dict.fromkeys(v for v in values if v))


def line_keys(lines: list[Line]) -> list[str]:
    """A key per line, distinct within the order and the same on every run.

    A SKU that occurs once is its own key; repeated and empty SKUs become "<sku or item>-<n>",
    n counting up and passing over any key another line already has.
    """
    skus = [line.sku[:KEY_CHARS] if line.sku else line.sku for line in lines]
    if all(skus) and len(set(skus)) == len(skus):
        return skus  # type: ignore[return-value]
    counts = Counter(skus)
    used = {sku for sku in skus if sku and counts[sku] == 1}
    next_n: Counter[str] = Counter()
    keys = []
    for sku in skus:
        if sku and counts[sku] == 1:
            keys.append(sku)
            continue
        base = sku or "item"
        while True:
            next_n[base] += 1
            key = f"{base}-{next_n[base]}"
            if key not in used:
                break
        used.add(key)
        keys.append(key)
    return keys


def _fit(value: str, warnings: list[str]) -> str:
    """A string within Klaviyo's 100 KB limit (a length check first: truncation is rare)."""
    return value if len(value) <= _SHORT else _truncate(value, warnings)


def _array(values: list[Any], name: str, warnings: list[str]) -> list[Any]:
    """An array property within Klaviyo's limits: 4,000 items, each text within 100 KB."""
    if len(values) > MAX_ITEMS:
        warnings.append(f"{name} cut to {MAX_ITEMS} of {len(values)} (Klaviyo's array limit)")
        values = values[:MAX_ITEMS]
    if values and type(values[0]) is str and max(map(len, values)) > _SHORT:
        values = [_fit(v, warnings) for v in values]
    return values


def _item(line: Line, currency: str, warnings: list[str]) -> dict[str, Any]:
    item: dict[str, Any] = {}
    _put(item, "ProductID", line.product_id, warnings)
    _put(item, "SKU", line.sku, warnings)
    _put(item, "ProductName", line.name, warnings)
    item["Quantity"] = line.quantity
    item["ItemPrice"] = quantize(line.price, currency)
    item["RowTotal"] = quantize(line.price * line.quantity, currency)
    _put(item, "ProductURL", line.url, warnings)
    _put(item, "ImageURL", line.image_url, warnings)
    if line.categories:
        item["Categories"] = _array(list(line.categories), "Categories", warnings)
    _put(item, "Brand", line.brand, warnings)
    _put(item, "Variant", line.variant, warnings)
    return item


def _order_props(order: Order, items: list[dict[str, Any]]) -> dict[str, Any]:
    warnings = order.warnings
    props: dict[str, Any] = {"OrderId": order.id}
    if order.number and order.number != order.id:
        props["OrderNumber"] = order.number
    if order.store:  # what tells two stores' order 1001 apart when read back (shapes.py)
        props[STORE] = order.store
    lines = order.lines
    categories = _unique([c for line in lines for c in line.categories])
    _put(props, "Categories", _array(categories, "Categories", warnings), warnings)
    names = [line.name or line.sku or "" for line in lines]
    _put(props, "ItemNames", _array(names, "ItemNames", warnings), warnings)
    brands = _unique([line.brand for line in lines])
    _put(props, "Brands", _array(brands, "Brands", warnings), warnings)
    _put(props, "DiscountCode", order.discount_code, warnings)
    if order.discount_value:
        props["DiscountValue"] = quantize(order.discount_value, order.currency)
    props["Items"] = _array(items, "Items", warnings)
    _put(props, "BillingAddress", _address_props(order.billing, warnings) or None, warnings)
    _put(props, "ShippingAddress", _address_props(order.shipping, warnings) or None, warnings)
    return props


def _phone(order: Order) -> str | None:
    billing_cc = order.billing.country_code or order.shipping.country_code
    candidates = (
        (order.phone, billing_cc),
        (order.customer_phone, billing_cc),
        (order.billing.phone, order.billing.country_code or order.shipping.country_code),
        (order.shipping.phone, order.shipping.country_code or order.billing.country_code),
    )
    tried = False
    for raw, country in candidates:
        if raw:
            tried = True
            phone = parse_phone(raw, country)
            if phone is not None:
                return phone
    if tried:
        order.warnings.append("phone dropped: not a valid number for its country")
    return None


def _location(order: Order) -> dict[str, str]:
    address = order.billing if not order.billing.is_empty() else order.shipping
    location = {
        "address1": address.address1,
        "address2": address.address2,
        "city": address.city,
        "region": address.region or address.region_code,
        "zip": address.zip,
        "country": address.country or address.country_code,
    }
    return {k: v for k, v in location.items() if v}


def identity_of(order: Order) -> str:
    """Who the order's events go to, as Klaviyo keys profiles: FieldError for nobody."""
    return identity(profile_of(order, attributes=False))


def profile_of(order: Order, attributes: bool = True) -> dict[str, Any]:
    """Klaviyo profile attributes (identifiers only, without `attributes`: see
    `map_order`); FieldError when the order identifies nobody."""
    phone = _phone(order)
    external_id = order.external_id
    if external_id and len(external_id) > _SHORT and len(external_id.encode()) > MAX_STRING_BYTES:
        order.warnings.append("external id over 100 KB ignored")  # an identifier: never cut
        external_id = None
    if order.email is None and phone is None and external_id is None:
        external_id = order.customer_id  # the shop's customer id, for want of anything else
    if order.email is None and phone is None and external_id is None:
        raise FieldError("profile", None, "no usable email, phone number or external id")
    profile: dict[str, Any] = {}
    for key, value in (
        ("email", order.email),
        ("phone_number", phone),
        ("external_id", external_id),
    ):
        if value:
            profile[key] = value
    if not attributes:
        return profile
    _put(profile, "first_name", order.first_name, order.warnings)
    _put(profile, "last_name", order.last_name, order.warnings)
    location = _fit_texts(_location(order), order.warnings)
    if location:
        profile["location"] = location
    return profile


def _refund(order: Order) -> tuple[Decimal, datetime | None, str | None]:
    amount = sum((r.amount for r in order.refunds), Decimal(0))
    dated = [r.at for r in order.refunds if r.at is not None]
    reasons = _unique([r.reason for r in order.refunds])
    return amount, max(dated) if dated else None, "; ".join(reasons) or None


def _json_size(value: Any) -> int:
    """The size of `value` as the JSON Klaviyo receives (money as numbers, UTF-8 kept):
    measured here, so the event layer needs no encoder."""
    return len(orjson.dumps(value, default=float))


def _fit_size(props: dict[str, Any], warnings: list[str]) -> None:
    """Cut an order's arrays so that each of its order-level events (which all carry them)
    stays within Klaviyo's 5 MB body: a long order with long product names can pass it."""
    size = _json_size(props)
    if size <= MAX_PROPERTIES_BYTES:
        return
    whole = {k: props[k] for k in ("Items", "ItemNames", "Categories", "Brands") if k in props}
    n = keep = len(props["Items"])
    while size > MAX_PROPERTIES_BYTES and keep > 1:
        keep = max(1, int(keep * MAX_PROPERTIES_BYTES / size * 0.95))
        props.update({k: v[:keep] for k, v in whole.items()})
        size = _json_size(props)
    warnings.append(f"Items cut to {keep} of {n} to keep each event within Klaviyo's 5 MB")


# whether an order's events carry its profile's attributes, (who, order) -> bool
# (`--profile-attributes`); None: every order's do. Picklable: worker processes ask it too.
AttributeRule = Callable[[str, Order], bool]


class Never:
    """`--profile-attributes none`: no event carries attributes (picklable)."""

    def __call__(self, who: str, order: Order) -> bool:
        return False


def map_order(order: Order, attributes: bool = True) -> list[Event]:
    """Every event the order yields, Placed Order first. Without `attributes` its profile
    carries identifiers only (email, phone number, external id): an older order of a
    customer must not overwrite their current name or address (`--profile-attributes`)."""
    profile = profile_of(order, attributes)
    items = [_item(line, order.currency, order.warnings) for line in order.lines]
    props = _order_props(order, items)
    if len(items) > _MEASURED_FROM:
        _fit_size(props, order.warnings)
    total = quantize(order.total, order.currency)

    # the key, not the bare id, makes the unique ids: with a store, "<store>:<id>"
    oid, currency, created = order.key, order.currency, order.created_at

    def event(
        metric: str, time: datetime, value: Decimal, unique_id: str, p: dict[str, Any]
    ) -> Event:
        return Event(metric, time, unique_id, p, profile, value, currency, oid)

    events = [Event(PLACED, created, oid, props, profile, total, currency, oid)]
    for key, item in zip(line_keys(order.lines), items, strict=True):
        product = {"OrderId": order.id, **item}
        if order.store:
            product[STORE] = order.store
        if "Brand" in product:
            product["ProductBrand"] = product.pop("Brand")
        value = item["RowTotal"]
        events.append(
            Event(ORDERED, created, f"{oid}_{key}", product, profile, value, currency, oid)
        )
    if order.fulfilled:
        events.append(event(FULFILLED, order.fulfilled_at or order.created_at, total, oid, props))
    if order.cancelled:
        cancel = dict(props)
        _put(cancel, "Reason", order.cancel_reason, order.warnings)
        events.append(event(CANCELLED, order.cancelled_at or order.created_at, total, oid, cancel))
    if order.refunds:
        amount, at, reason = _refund(order)
        if amount > order.total:
            order.warnings.append("refunded more than the order total")
        if at is None:
            order.warnings.append(
                "refund without a date: dated at the order's cancellation time"
                if order.cancelled_at is not None
                else "refund without a date: dated at the order's time"
            )
        refund = dict(props)
        _put(refund, "Reason", reason, order.warnings)
        value = quantize(amount, order.currency)
        events.append(
            event(REFUNDED, at or order.cancelled_at or order.created_at, value, oid, refund)
        )
    return events
