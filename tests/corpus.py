"""A synthetic order corpus: "truth" orders and renderers for the export formats people have.

Stdlib only and independent of ``klaviyo_backfill``, so tests can compare what the tool read
against what was written. Every person, address, phone number and product is made up
(example.com/.org/.net mail domains, 555-01xx and Ofcom drama phone ranges where possible).
The shapes follow ``shared/order-exports.md``.

    orders = make_orders(60, seed=7, platform="shopify")
    write_shopify_csv(orders, tmp_path / "orders.csv", columns=78)

Conventions (the "truth" side):

* ``TruthLine.name`` is the plain product title (no HTML entities, no variant); Shopify's
  ``Lineitem name``/``name`` is ``display_name`` ("Title - Variant"); WooCommerce renderers
  HTML-encode names (``&ndash;``, ``&amp;``), the tool is expected to decode them.
* ``subtotal`` is after discounts and includes a tip line; ``total = subtotal + shipping + taxes``.
* The whole order discount is allocated to the first non-tip line (``TruthLine.discount``).
* ``phone`` is the raw value the shop stored (may itself start with an apostrophe);
  ``phone_e164`` is what it normalises to with the billing country, None when it is not a
  valid number (phonenumbers.is_valid_number; "12" is "possible" in DE but not valid).
  CSV renderers may additionally prefix zips/phones with an apostrophe (``'02110``).
* ``identifiable`` is False when the tool must reject the order (no usable email or phone).
"""

# ruff: noqa: RUF001  (the unicode look-alikes are the point)

from __future__ import annotations

import csv
import json
import random
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

PLATFORMS = ("shopify", "woocommerce")
CURRENCIES = ("USD", "EUR", "GBP", "CAD", "JPY")
OFFSETS = ("-0800", "-0400", "+0000", "+0530", "+0900")
FINANCIAL_STATUSES = ("paid", "pending", "refunded", "partially_refunded", "voided")
CANCEL_REASONS = ("customer", "fraud", "inventory", "declined", "other")

# Labels in TruthOrder.cases that make_orders guarantees within each block of 20 orders
# (0-19, 20-39, ...; offsets and currencies: within each block of 5).
AWKWARD_CASES = frozenset(
    {
        "missing_email",
        "phone_only",
        "malformed_email_with_phone",
        "malformed_email_no_phone",
        "no_identifier",
        "invalid_phone_only",
        "email_only",
        "repeated_sku",
        "empty_sku",
        "tip",
        "deleted_product",
        "cancelled",
        "refunded_full",
        "refunded_partial",
        "refunded_partial_two",
        "pending",
        "unfulfilled",
        "fulfilled",
        "multiline_note",
        "non_ascii_name",
        "discount",
    }
)

BROKEN_ORDER_NAME = "#9999"  # the order that carries the defect in broken_files()


# --------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------


@dataclass
class TruthAddress:
    first_name: str
    last_name: str
    company: str
    address1: str
    address2: str
    city: str
    province: str  # name, "" for countries without provinces
    province_code: str  # Shopify style ("MA", "JP-13")
    country: str  # name
    country_code: str  # ISO2
    zip: str  # never apostrophe-prefixed here; CSV renderers may add one
    phone: str | None

    @property
    def name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()


@dataclass
class TruthLine:
    line_id: str
    product_id: str | None  # None: product deleted (or a tip)
    sku: str  # may be "" and may repeat within an order
    name: str  # product title, plain text
    variant_title: str  # "" when none
    quantity: int
    price: Decimal  # unit price before discount
    vendor: str
    variant_id: str | None = None
    discount: Decimal = Decimal("0")  # share of the order discount allocated to this line

    @property
    def is_tip(self) -> bool:
        return self.name == "Tip" and self.product_id is None

    @property
    def display_name(self) -> str:
        return f"{self.name} - {self.variant_title}" if self.variant_title else self.name

    @property
    def subtotal(self) -> Decimal:
        return self.price * self.quantity

    @property
    def total(self) -> Decimal:
        return self.subtotal - self.discount


@dataclass
class TruthRefund:
    amount: Decimal
    created_at: datetime
    note: str
    id: str = ""


@dataclass
class TruthOrder:
    id: str
    number: str
    created_at: datetime
    email: str | None
    phone: str | None
    first_name: str
    last_name: str
    currency: str
    subtotal: Decimal  # after discounts
    shipping: Decimal
    taxes: Decimal
    total: Decimal
    discount_code: str | None
    discount_amount: Decimal
    billing: TruthAddress
    shipping_address: TruthAddress
    lines: list[TruthLine]
    financial_status: str
    fulfilled_at: datetime | None
    cancelled_at: datetime | None
    cancel_reason: str | None
    refunds: list[TruthRefund]
    notes: str
    tags: list[str]
    # extras: expectations and cosmetic fields the renderers need
    platform: str = "shopify"
    phone_e164: str | None = None
    customer_id: str | None = None
    accepts_marketing: bool = False
    payment_method: str = ""
    shipping_method: str = ""
    cases: frozenset[str] = frozenset()

    @property
    def email_valid(self) -> bool:
        return self.email is not None and _EMAIL_OK.fullmatch(self.email) is not None

    @property
    def identifiable(self) -> bool:
        """False when the tool must reject the order: no valid email and no valid phone."""
        return self.email_valid or self.phone_e164 is not None

    @property
    def items_total(self) -> Decimal:
        """Sum of line subtotals before discounts."""
        return sum((line.subtotal for line in self.lines), Decimal("0"))

    @property
    def refunded_total(self) -> Decimal:
        return sum((r.amount for r in self.refunds), Decimal("0"))

    @property
    def fully_refunded(self) -> bool:
        return self.financial_status == "refunded"

    @property
    def woo_status(self) -> str:
        if self.cancelled_at is not None:
            return "cancelled"
        if self.fully_refunded:
            return "refunded"
        if self.fulfilled_at is not None:
            return "completed"
        return "processing"


_EMAIL_OK = re.compile(r"[^@\s,]+@[^@\s,.]+(\.[^@\s,.]+)+")


# --------------------------------------------------------------------------------------
# Synthetic vocabulary
# --------------------------------------------------------------------------------------

_ASCII_NAMES = (
    ("Jane", "Doe"),
    ("John", "Smith"),
    ("Alex", "Taylor"),
    ("Sam", "Rivera"),
    ("Priya", "Patel"),
    ("Chris", "O'Brien"),
    ("Morgan", "Lee"),
    ("Jordan", "Kim"),
    ("Casey", "Nguyen"),
    ("Riley", "Brooks"),
)
_NON_ASCII_NAMES = (  # (first, last, ascii slug for the mailbox)
    ("José", "Núñez", "jose.nunez"),
    ("Zoë", "Müller", "zoe.muller"),
    ("Łukasz", "Wiśniewski", "lukasz.wisniewski"),
    ("Søren", "Østergård", "soren.ostergard"),
    ("François", "Lefèvre", "francois.lefevre"),
    ("Ngọc", "Trần", "ngoc.tran"),
    ("花子", "田中", "hanako.tanaka"),
    ("Ayşe", "Yılmaz", "ayse.yilmaz"),
    ("Renée", "Côté", "renee.cote"),
    ("Björn", "Ångström", "bjorn.angstrom"),
)
_DOMAINS = ("example.com", "example.org", "example.net")


@dataclass(frozen=True)
class _Place:
    country: str
    country_code: str
    province: str
    province_code: str
    city: str
    zip: str
    streets: tuple[str, ...]


_PLACES = (
    _Place(
        "United States",
        "US",
        "Massachusetts",
        "MA",
        "Boston",
        "02110",
        ("12 Example Street", "400 Sample Ave"),
    ),
    _Place("United States", "US", "New Jersey", "NJ", "Hoboken", "07030", ("77 Placeholder Blvd",)),
    _Place(
        "United States",
        "US",
        "California",
        "CA",
        "San Francisco",
        "94103",
        ("1 Fictional Way", "250 Test Lane"),
    ),
    _Place("Canada", "CA", "Ontario", "ON", "Toronto", "M5V 2T6", ("90 Sample Road",)),
    _Place("Canada", "CA", "Quebec", "QC", "Montréal", "H2X 1Y4", ("15 rue de l'Exemple",)),
    _Place(
        "United Kingdom",
        "GB",
        "",
        "",
        "London",
        "EC1A 1BB",
        ("Flat 3, 21 Placeholder Road", "5 Sample Mews"),
    ),
    _Place("France", "FR", "", "", "Paris", "75001", ("7 rue Fictive",)),
    _Place("Germany", "DE", "", "", "Berlin", "10115", ("Musterstraße 5",)),
    _Place("Japan", "JP", "Tokyo", "JP-13", "Chiyoda-ku", "100-0001", ("1-1 Chiyoda",)),
    _Place("India", "IN", "Maharashtra", "MH", "Mumbai", "400001", ("12 Example Marg",)),
)

# (raw template, E.164 template, number of random digits for "{d}")
_PHONE_TEMPLATES: dict[str, tuple[tuple[str, str, int], ...]] = {
    "US": (
        ("(201) 555-01{d}", "+120155501{d}", 2),
        ("201.555.01{d}", "+120155501{d}", 2),
        ("617-555-01{d}", "+161755501{d}", 2),
        ("+1 212 555 01{d}", "+121255501{d}", 2),
        ("1-201-555-01{d}", "+120155501{d}", 2),
        ("21255501{d}", "+121255501{d}", 2),
    ),
    "CA": (
        ("(416) 555-01{d}", "+141655501{d}", 2),
        ("514.555.01{d}", "+151455501{d}", 2),
        ("+1 (604) 555-01{d}", "+160455501{d}", 2),
    ),
    "GB": (
        ("+44 20 7946 0{d}", "+442079460{d}", 3),
        ("020 7946 0{d}", "+442079460{d}", 3),
    ),
    "FR": (
        ("06 12 34 56 {d}", "+336123456{d}", 2),
        ("'06123456{d}", "+336123456{d}", 2),
        ("+33 1 23 45 67 {d}", "+331234567{d}", 2),
    ),
    "DE": (
        ("030 1234{d}", "+49301234{d}", 4),
        ("0151 2345{d}", "+491512345{d}", 4),
    ),
    "JP": (
        ("03-1234-{d}", "+8131234{d}", 4),
        ("090-1234-{d}", "+81901234{d}", 4),
    ),
    "IN": (
        ("+91 98765 4{d}", "+91987654{d}", 4),
        ("022 2345 {d}", "+91222345{d}", 4),
    ),
}
_INVALID_PHONES = ("12", "000", "n/a", "1")


@dataclass(frozen=True)
class _Product:
    title: str
    variant: str
    vendor: str
    price: str
    sku: str


_PRODUCTS = (
    _Product("Classic Tee", "Blue / M", "Acme Apparel", "25.00", "TEE-BLU-M"),
    _Product("Classic Tee", "Black / L", "Acme Apparel", "25.00", "TEE-BLK-L"),
    _Product("Mug, Large", "", "Kiln & Co", "14.50", "MUG-L"),
    _Product('The "Everyday" Tote', "Natural", "Bagworks", "38.00", "TOTE-NAT"),
    _Product("Crème Brûlée Candle", "8 oz", "Lumière Goods", "22.00", "CNDL-CB-8"),
    _Product("Tee – Blue", "S", "Acme Apparel", "19.99", "TEE2-BLU-S"),
    _Product("Wool Socks, 3-Pack", "One size", "Nordic Knits", "17.95", "SOCK-3PK"),
    _Product("日本茶 Sencha 100g", "", "Kyoto Leaf", "12.00", "TEA-SEN-100"),
    _Product('Ceramic Planter 6"', "White", "Kiln & Co", "31.25", "PLNT-6-WHT"),
    _Product("Salt & Pepper Grinder", "", "Kitchen Things", "9.99", "GRND-SP"),
    _Product("Yoga Mat — Extra Thick", "Purple", "Zen Supply", "45.00", "MAT-XT-PUR"),
    _Product("Gift Card", "$50", "Acme", "50.00", "GC-50"),
)

_MALFORMED_EMAILS = (
    "{first}@@example.com",
    "no-at-sign.{slug}.example.com",
    "{first} {last}@example.com",
    "{slug}@",
    "@example.com",
    "{slug}@example,com",
    "{slug}@exa mple.com",
)
_DISCOUNT_CODES = {10: "WELCOME10", 15: "SUMMER-15", 20: "ÉTÉ20"}
_SINGLE_NOTES = ("", "", "", "", "Leave with neighbour", "Call on arrival, please", "gift")
_MULTILINE_NOTES = (
    'Please leave the parcel at the "back door".\nGate code: 1234',
    'Gift for my mum, don\'t include the invoice!\nMessage: "Happy birthday, love you"\n\n- Sam',
    'Line one\r\nLine two, with a comma and "quotes"',
)
_REFUND_NOTES = (
    "Damaged in transit",
    "Customer changed their mind",
    'Price match, "summer" promo',
    "",
    "Returned: wrong size\nRestocked",
)
_TAGS = ("vip", "wholesale", "gift", "imported", "newsletter")
_PAYMENT_METHODS = {
    "shopify": ("Shopify Payments", "PayPal Express Checkout", "manual"),
    "woocommerce": ("Credit Card (Stripe)", "PayPal", "Direct bank transfer"),
}
_SHIPPING_METHODS = ("Standard Shipping", "Express", "Local Pickup")
_TAX_RATES = ("0", "0.05", "0.0625", "0.08", "0.20")

_ID_BASE = {"shopify": 5_000_000_000, "woocommerce": 20_000}
_ID_BLOCK = {"shopify": 10_000_000, "woocommerce": 200_000}
_ID_STEP = {"shopify": 97, "woocommerce": 3}
_NUMBER_BASE = {"shopify": 1001, "woocommerce": 50_001}
_START = datetime(2016, 1, 1, tzinfo=UTC)
_END = datetime(2025, 6, 30, tzinfo=UTC)


# --------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------


def _tz(offset: str) -> timezone:
    sign = -1 if offset[0] == "-" else 1
    return timezone(sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5])))


def _quantum(currency: str) -> Decimal:
    return Decimal("1") if currency == "JPY" else Decimal("0.01")


def _price(base: str, currency: str) -> Decimal:
    value = Decimal(base) * (100 if currency == "JPY" else 1)
    return value.quantize(_quantum(currency), ROUND_HALF_UP)


def _schedule(rng: random.Random, n: int, specials: Sequence[str], block: int) -> list[str]:
    """Each block of `block` slots holds every special once (shuffled); the rest is ""."""
    out: list[str] = []
    while len(out) < n:
        chunk = list(specials) + [""] * max(0, block - len(specials))
        rng.shuffle(chunk)
        out.extend(chunk)
    return out[:n]


@dataclass
class _Counters:
    """Per-(platform, seed) id sequences."""

    platform: str
    block: int
    line: int = 0
    refund: int = 0
    fulfillment: int = 0
    customer: int = 0

    def next_line(self) -> str:
        self.line += 1
        if self.platform == "shopify":
            return str(10_000_000_000 + self.block * 100_000_000 + self.line * 7)
        return str(1 + self.block * 1_000_000 + self.line)

    def next_refund(self) -> str:
        self.refund += 1
        base = 800_000_000 if self.platform == "shopify" else 900_000
        return str(base + self.block * 100_000 + self.refund)

    def next_customer(self) -> str:
        self.customer += 1
        if self.platform == "shopify":
            return str(6_000_000_000 + self.block * 1_000_000 + self.customer)
        return str(self.block * 100_000 + self.customer)

    def product_ids(self, index: int) -> tuple[str, str]:
        if self.platform == "shopify":
            return str(7_000_000_000 + index * 1000), str(40_000_000_000 + index * 1000 + 1)
        return str(100 + index), str(500 + index)


@dataclass
class _Person:
    first_name: str
    last_name: str
    email: str | None
    phone: str | None
    phone_e164: str | None
    address: TruthAddress
    customer_id: str | None
    non_ascii: bool
    identity: str


def _phone(rng: random.Random, country_code: str) -> tuple[str, str]:
    raw, e164, digits = rng.choice(_PHONE_TEMPLATES[country_code])
    d = "".join(rng.choice("0123456789") for _ in range(digits))
    return raw.format(d=d), e164.format(d=d)


def _address(rng: random.Random, first: str, last: str, phone: str | None) -> TruthAddress:
    place = rng.choice(_PLACES)
    return TruthAddress(
        first_name=first,
        last_name=last,
        company=rng.choice(("", "", "", "Example Widgets, Inc.", "Sample GmbH")),
        address1=rng.choice(place.streets),
        address2=rng.choice(("", "", "Apt 4B", "Suite 200", "2nd floor")),
        city=place.city,
        province=place.province,
        province_code=place.province_code,
        country=place.country,
        country_code=place.country_code,
        zip=place.zip,
        phone=phone,
    )


def _new_person(
    rng: random.Random, identity: str, non_ascii: bool, counters: _Counters, serial: int
) -> _Person:
    if non_ascii:
        first, last, slug = rng.choice(_NON_ASCII_NAMES)
    else:
        first, last = rng.choice(_ASCII_NAMES)
        slug = f"{first}.{last}".lower().replace("'", "")
    address = _address(rng, first, last, None)
    valid_phone, e164 = _phone(rng, address.country_code)
    plus = rng.choice(("", "", "", "+shop"))
    good_email = f"{slug}{serial}{plus}@{rng.choice(_DOMAINS)}"
    bad_email = rng.choice(_MALFORMED_EMAILS).format(
        first=slug.split(".")[0], last=slug.split(".")[-1], slug=slug
    )
    email: str | None
    phone: str | None
    phone_e164: str | None
    email, phone, phone_e164 = {
        "email_and_phone": (good_email, valid_phone, e164),
        "email_only": (good_email, None, None),
        "phone_only": (None, valid_phone, e164),
        "malformed_email_with_phone": (bad_email, valid_phone, e164),
        "malformed_email_no_phone": (bad_email, None, None),
        "no_identifier": (None, None, None),
        "invalid_phone_only": (None, rng.choice(_INVALID_PHONES), None),
    }[identity]
    address.phone = phone
    customer_id = None if identity == "no_identifier" else counters.next_customer()
    return _Person(first, last, email, phone, phone_e164, address, customer_id, non_ascii, identity)


def _lines(
    rng: random.Random, kind: str, currency: str, counters: _Counters
) -> tuple[list[TruthLine], set[str]]:
    count = 1 if kind == "repeated_sku" else rng.choice((1, 1, 2, 2, 3))
    indexes = rng.sample(range(len(_PRODUCTS)), count)
    lines = [_product_line(rng, i, currency, counters) for i in indexes]
    cases = {kind} if kind else set()
    if kind == "repeated_sku":
        twin = replace(lines[0], line_id=counters.next_line(), quantity=rng.randint(1, 2))
        twin.price = (twin.price * Decimal("0.8")).quantize(_quantum(currency), ROUND_HALF_UP)
        lines.append(twin)
    elif kind == "empty_sku":
        lines[-1].sku = ""
    elif kind == "deleted_product":
        lines[-1].product_id = None
        lines[-1].variant_id = None
    elif kind == "tip":
        tip = _price(rng.choice(("2.00", "3.50", "5.00")), currency)
        lines.append(TruthLine(counters.next_line(), None, "", "Tip", "", 1, tip, "", None))
    return lines, cases


def _product_line(rng: random.Random, index: int, currency: str, counters: _Counters) -> TruthLine:
    product = _PRODUCTS[index]
    product_id, variant_id = counters.product_ids(index)
    return TruthLine(
        line_id=counters.next_line(),
        product_id=product_id,
        sku=product.sku,
        name=product.title,
        variant_title=product.variant,
        quantity=rng.choice((1, 1, 1, 2, 3, 10)),
        price=_price(product.price, currency),
        vendor=product.vendor,
        variant_id=variant_id,
    )


@dataclass
class _Money:
    subtotal: Decimal
    shipping: Decimal
    taxes: Decimal
    total: Decimal
    discount_code: str | None
    discount_amount: Decimal


def _money(rng: random.Random, lines: list[TruthLine], currency: str, discounted: bool) -> _Money:
    q = _quantum(currency)
    discount_code, discount = None, Decimal("0")
    if discounted:
        pct = rng.choice(sorted(_DISCOUNT_CODES))
        target = next(line for line in lines if not line.is_tip)
        discount = max(q, (target.subtotal * pct / 100).quantize(q, ROUND_HALF_UP))
        target.discount = discount
        discount_code = _DISCOUNT_CODES[pct]
    subtotal = sum((line.subtotal for line in lines), Decimal("0")) - discount
    shipping = _price(rng.choice(("0", "4.99", "7.50", "12.00")), currency)
    taxes = (subtotal * Decimal(rng.choice(_TAX_RATES))).quantize(q, ROUND_HALF_UP)
    return _Money(subtotal, shipping, taxes, subtotal + shipping + taxes, discount_code, discount)


@dataclass
class _Lifecycle:
    financial_status: str
    fulfilled_at: datetime | None
    cancelled_at: datetime | None
    cancel_reason: str | None
    refunds: list[TruthRefund]
    cases: set[str]


def _after(rng: random.Random, moment: datetime, low_h: float, high_h: float) -> datetime:
    return moment + timedelta(seconds=int(rng.uniform(low_h, high_h) * 3600))


def _refund(
    rng: random.Random, amount: Decimal, moment: datetime, counters: _Counters
) -> TruthRefund:
    return TruthRefund(amount, moment, rng.choice(_REFUND_NOTES), counters.next_refund())


def _partial_amounts(rng: random.Random, total: Decimal, q: Decimal, parts: int) -> list[Decimal]:
    share = Decimal("0.45") / parts
    amounts = []
    for _ in range(parts):
        fraction = Decimal(str(round(rng.uniform(0.05, float(share)), 3)))
        amounts.append(max(q, (total * fraction).quantize(q, ROUND_DOWN)))
    return amounts


def _lifecycle(
    rng: random.Random,
    status: str,
    created: datetime,
    money: _Money,
    currency: str,
    counters: _Counters,
) -> _Lifecycle:
    q = _quantum(currency)
    if status.startswith("cancelled"):
        cancelled = _after(rng, created, 1, 120)
        life = _Lifecycle(
            "voided",
            None,
            cancelled,
            rng.choice(CANCEL_REASONS),
            [],
            {"cancelled", status, "unfulfilled"},
        )
        if status == "cancelled_refunded":
            life.financial_status = "refunded"
            life.refunds.append(
                _refund(rng, money.total, _after(rng, cancelled, 0.01, 2), counters)
            )
        return life
    if status in ("pending", "unfulfilled"):
        fin = "pending" if status == "pending" else "paid"
        return _Lifecycle(fin, None, None, None, [], {status, "unfulfilled"})
    fulfilled = _after(rng, created, 1, 24 * 7)
    life = _Lifecycle("paid", fulfilled, None, None, [], {"fulfilled"})
    if status == "refunded_full":
        life.financial_status = "refunded"
        life.refunds.append(
            _refund(rng, money.total, _after(rng, fulfilled, 24, 24 * 30), counters)
        )
        life.cases.add(status)
    elif status.startswith("refunded_partial"):
        life.financial_status = "partially_refunded"
        moment = fulfilled
        for amount in _partial_amounts(rng, money.total, q, 2 if status.endswith("two") else 1):
            moment = _after(rng, moment, 24, 24 * 30)
            life.refunds.append(_refund(rng, amount, moment, counters))
        life.cases.update({"refunded_partial", status})
    return life


def _timestamps(rng: random.Random, n: int) -> list[datetime]:
    span = int((_END - _START).total_seconds())
    return [_START + timedelta(seconds=s) for s in sorted(rng.randrange(span) for _ in range(n))]


def make_orders(n: int, seed: int, platform: str) -> list[TruthOrder]:
    """`n` synthetic orders, oldest first, fully determined by (n, seed, platform).

    Each block of 20 orders (0-19, 20-39, ...) holds every label of AWKWARD_CASES at least
    once, and each block of 5 every UTC offset ("offset-0400" labels) and currency. Ids and numbers grow with time and are
    unique per platform; different seeds give disjoint id ranges (seed % 1000 picks the range).
    """
    if platform not in PLATFORMS:
        raise ValueError(f"platform must be one of {PLATFORMS}, not {platform!r}")
    rng = random.Random(f"{platform}:{seed}")
    block = seed % 1000
    counters = _Counters(platform, block)
    schedules = {
        "identity": _schedule(
            rng,
            n,
            (
                "phone_only",
                "malformed_email_with_phone",
                "malformed_email_no_phone",
                "no_identifier",
                "invalid_phone_only",
                "email_only",
            ),
            20,
        ),
        "status": _schedule(
            rng,
            n,
            (
                "cancelled_voided",
                "cancelled_refunded",
                "refunded_full",
                "refunded_partial_one",
                "refunded_partial_two",
                "pending",
                "unfulfilled",
                "unfulfilled",
            ),
            20,
        ),
        "lines": _schedule(rng, n, ("repeated_sku", "empty_sku", "tip", "deleted_product"), 20),
        "notes": _schedule(rng, n, ("multiline_note", "multiline_note"), 20),
        "names": _schedule(rng, n, ("non_ascii_name",) * 4, 20),
        "discount": _schedule(rng, n, ("discount",) * 5, 20),
        "offset": _schedule(rng, n, OFFSETS, len(OFFSETS)),
        "currency": _schedule(rng, n, CURRENCIES, len(CURRENCIES)),
    }
    next_id = _ID_BASE[platform] + block * _ID_BLOCK[platform]
    regulars: list[_Person] = []
    orders = []
    for i, moment in enumerate(_timestamps(rng, n)):
        next_id += rng.randint(1, _ID_STEP[platform])
        number = str(_NUMBER_BASE[platform] + block * 100_000 + i)
        slots = {key: values[i] for key, values in schedules.items()}
        orders.append(_make_order(rng, slots, moment, str(next_id), number, counters, regulars))
    return orders


def _make_order(
    rng: random.Random,
    slots: dict[str, str],
    moment: datetime,
    order_id: str,
    number: str,
    counters: _Counters,
    regulars: list[_Person],
) -> TruthOrder:
    platform = counters.platform
    cases: set[str] = set()
    identity = slots["identity"] or rng.choice(("email_and_phone", "email_and_phone", "email_only"))
    non_ascii = slots["names"] == "non_ascii_name"
    reuse = [p for p in regulars if (p.identity, p.non_ascii) == (identity, non_ascii)]
    if reuse and rng.random() < 0.2:
        person = rng.choice(reuse)
        cases.add("repeat_customer")
    else:
        person = _new_person(rng, identity, non_ascii, counters, counters.customer + 1)
        if identity in ("email_and_phone", "email_only"):
            regulars.append(person)
    cases.add(identity)
    if person.email is None:
        cases.add("missing_email")
    if non_ascii:
        cases.add("non_ascii_name")

    currency = slots["currency"]
    created = moment.astimezone(_tz(slots["offset"]))
    lines, line_cases = _lines(rng, slots["lines"], currency, counters)
    money = _money(rng, lines, currency, slots["discount"] == "discount")
    life = _lifecycle(rng, slots["status"] or "fulfilled", created, money, currency, counters)
    notes = rng.choice(_MULTILINE_NOTES) if slots["notes"] else rng.choice(_SINGLE_NOTES)
    cases |= line_cases | life.cases | {"offset" + slots["offset"]}
    if slots["notes"]:
        cases.add("multiline_note")
    if money.discount_code:
        cases.add("discount")

    billing = replace(person.address)
    shipping = replace(billing)
    if rng.random() < 0.15:  # a gift shipped to someone else
        other = _address(rng, *rng.choice(_ASCII_NAMES), None)
        shipping = other
        cases.add("gift_shipping")
    return TruthOrder(
        id=order_id,
        number=("#" + number) if platform == "shopify" else number,
        created_at=created,
        email=person.email,
        phone=person.phone,
        first_name=person.first_name,
        last_name=person.last_name,
        currency=currency,
        subtotal=money.subtotal,
        shipping=money.shipping,
        taxes=money.taxes,
        total=money.total,
        discount_code=money.discount_code,
        discount_amount=money.discount_amount,
        billing=billing,
        shipping_address=shipping,
        lines=lines,
        financial_status=life.financial_status,
        fulfilled_at=life.fulfilled_at,
        cancelled_at=life.cancelled_at,
        cancel_reason=life.cancel_reason,
        refunds=life.refunds,
        notes=notes,
        tags=rng.sample(_TAGS, rng.choice((0, 0, 1, 2))),
        platform=platform,
        phone_e164=person.phone_e164,
        customer_id=person.customer_id,
        accepts_marketing=rng.random() < 0.4,
        payment_method=rng.choice(_PAYMENT_METHODS[platform]),
        shipping_method=rng.choice(_SHIPPING_METHODS),
        cases=frozenset(cases),
    )


# --------------------------------------------------------------------------------------
# Formatting helpers
# --------------------------------------------------------------------------------------


def money(value: Decimal) -> str:
    """Plain two-decimal string: Decimal("12.5") -> "12.50"."""
    return f"{value.quantize(Decimal('0.01'), ROUND_HALF_UP):.2f}"


def csv_date(moment: datetime) -> str:
    """Shopify CSV style: 2021-07-12 04:57:56 -0400."""
    return moment.strftime("%Y-%m-%d %H:%M:%S %z")


def iso_date(moment: datetime | None) -> str | None:
    """ISO 8601 with offset: 2021-07-12T04:57:56-04:00."""
    return None if moment is None else moment.isoformat()


def _naive(moment: datetime | None, utc: bool = False) -> str | None:
    if moment is None:
        return None
    return (moment.astimezone(UTC) if utc else moment).strftime("%Y-%m-%dT%H:%M:%S")


def woo_html(text: str) -> str:
    """How WooCommerce hands out names: a few characters as HTML entities."""
    return (
        text.replace("&", "&amp;")
        .replace("–", "&ndash;")
        .replace("—", "&mdash;")
        .replace("’", "&#8217;")
    )


def _cosmetic(order: TruthOrder) -> random.Random:
    """Deterministic randomness for fields that carry no truth (tracking numbers...)."""
    return random.Random(f"cosmetic:{order.platform}:{order.id}")


def _apostrophe(value: str | None, order: TruthOrder) -> str:
    """Spreadsheet-protected values: some orders' zips/phones get a leading apostrophe."""
    if not value:
        return ""
    if int(order.id) % 2 == 0 and value[0] in "0+" and not value.startswith("'"):
        return "'" + value
    return value


def _ordered(orders: Iterable[TruthOrder], newest_first: bool) -> list[TruthOrder]:
    return sorted(orders, key=lambda o: o.created_at, reverse=newest_first)


def _allocate(amount: Decimal, weights: Sequence[Decimal], q: Decimal) -> list[Decimal]:
    total = sum(weights, Decimal("0"))
    if not weights:
        return []
    if total == 0:
        return [amount] + [Decimal("0")] * (len(weights) - 1)
    shares = [(amount * w / total).quantize(q, ROUND_DOWN) for w in weights]
    shares[0] += amount - sum(shares, Decimal("0"))
    return shares


def _write_csv(
    path: Path,
    header: Sequence[str] | str,
    rows: Iterable[Sequence[str]],
    *,
    encoding: str = "utf-8",
    bom: bool = False,
    crlf: bool = True,
    errors: str = "strict",
) -> Path:
    """Write rows; `header` is either column names or a literal first line."""
    path = Path(path)
    terminator = "\r\n" if crlf else "\n"
    with path.open("w", encoding=encoding, errors=errors, newline="") as handle:
        if bom:
            handle.write("\ufeff")
        writer = csv.writer(handle, lineterminator=terminator)
        if isinstance(header, str):
            handle.write(header + terminator)
        else:
            writer.writerow(header)
        writer.writerows(rows)
    return path


# --------------------------------------------------------------------------------------
# Shopify CSV
# --------------------------------------------------------------------------------------

SHOPIFY_HEADER_79 = (
    "Name,Email,Financial Status,Paid at,Fulfillment Status,Fulfilled at,Accepts Marketing,"
    "Currency,Subtotal,Shipping,Taxes,Total,Discount Code,Discount Amount,Shipping Method,"
    "Created at,Lineitem quantity,Lineitem name,Lineitem price,Lineitem compare at price,"
    "Lineitem sku,Lineitem requires shipping,Lineitem taxable,Lineitem fulfillment status,"
    "Billing Name,Billing Street,Billing Address1,Billing Address2,Billing Company,"
    "Billing City,Billing Zip,Billing Province,Billing Country,Billing Phone,Shipping Name,"
    "Shipping Street,Shipping Address1,Shipping Address2,Shipping Company,Shipping City,"
    "Shipping Zip,Shipping Province,Shipping Country,Shipping Phone,Notes,Note Attributes,"
    "Cancelled at,Payment Method,Payment Reference,Refunded Amount,Vendor,Outstanding Balance,"
    "Employee,Location,Device ID,Id,Tags,Risk Level,Source,Lineitem discount,Tax 1 Name,"
    "Tax 1 Value,Tax 2 Name,Tax 2 Value,Tax 3 Name,Tax 3 Value,Tax 4 Name,Tax 4 Value,"
    "Tax 5 Name,Tax 5 Value,Phone,Receipt Number,Duties,Billing Province Name,"
    "Shipping Province Name,Payment ID,Payment Terms Name,Next Payment Due At,"
    "Payment References"
)
SHOPIFY_COLUMNS_79: tuple[str, ...] = tuple(SHOPIFY_HEADER_79.split(","))
# Columns filled on every row of an order; all others only on its first row.
SHOPIFY_REPEATED = frozenset(
    {"Name", "Email", "Created at", "Vendor", "Lineitem discount"}
    | {c for c in SHOPIFY_COLUMNS_79 if c.startswith("Lineitem ")}
)


def shopify_columns(columns: int = 79) -> tuple[str, ...]:
    """The 79-column header, or an older vintage: 78 (no Payment References), 75."""
    if columns not in (75, 78, 79):
        raise ValueError("columns must be 75, 78 or 79")
    return SHOPIFY_COLUMNS_79[:columns]


def _street(address: TruthAddress) -> str:
    return ", ".join(part for part in (address.address1, address.address2) if part)


def _shopify_address_cells(prefix: str, address: TruthAddress, order: TruthOrder) -> dict[str, str]:
    return {
        f"{prefix} Name": address.name,
        f"{prefix} Street": _street(address),
        f"{prefix} Address1": address.address1,
        f"{prefix} Address2": address.address2,
        f"{prefix} Company": address.company,
        f"{prefix} City": address.city,
        f"{prefix} Zip": _apostrophe(address.zip, order),
        f"{prefix} Province": address.province_code,
        f"{prefix} Country": address.country_code,
        f"{prefix} Phone": _apostrophe(address.phone, order),
        f"{prefix} Province Name": address.province,
    }


def _note_attributes(order: TruthOrder) -> str:
    if "gift" not in order.tags:
        return ""
    return 'gift_wrap: yes\ngift_message: Happy birthday, "Sam"!'


def _shopify_order_cells(order: TruthOrder) -> dict[str, str]:
    """The order-level columns (first row only)."""
    rng = _cosmetic(order)
    paid = order.financial_status in ("paid", "partially_refunded", "refunded")
    outstanding = order.total if order.financial_status == "pending" else Decimal("0")
    reference = f"c{rng.randrange(10**10, 10**11)}.1"
    cells = {
        "Financial Status": order.financial_status,
        "Paid at": csv_date(order.created_at) if paid else "",
        "Fulfillment Status": "fulfilled" if order.fulfilled_at else "unfulfilled",
        "Fulfilled at": csv_date(order.fulfilled_at) if order.fulfilled_at else "",
        "Accepts Marketing": "yes" if order.accepts_marketing else "no",
        "Currency": order.currency,
        "Subtotal": money(order.subtotal),
        "Shipping": money(order.shipping),
        "Taxes": money(order.taxes),
        "Total": money(order.total),
        "Discount Code": order.discount_code or "",
        "Discount Amount": money(order.discount_amount),
        "Shipping Method": order.shipping_method,
        "Notes": order.notes,
        "Note Attributes": _note_attributes(order),
        "Cancelled at": csv_date(order.cancelled_at) if order.cancelled_at else "",
        "Payment Method": order.payment_method,
        "Payment Reference": reference,
        "Refunded Amount": money(order.refunded_total),
        "Outstanding Balance": money(outstanding),
        "Id": order.id,
        "Tags": ", ".join(order.tags),
        "Risk Level": "Low",
        "Source": rng.choice(("web", "web", "pos", "shopify_draft_order")),
        "Tax 1 Name": "Tax" if order.taxes else "",
        "Tax 1 Value": money(order.taxes) if order.taxes else "",
        "Phone": _apostrophe(order.phone, order),
        "Payment ID": reference,
        "Payment References": reference,
    }
    cells.update(_shopify_address_cells("Billing", order.billing, order))
    cells.update(_shopify_address_cells("Shipping", order.shipping_address, order))
    return cells


def _shopify_line_cells(order: TruthOrder, line: TruthLine) -> dict[str, str]:
    """The columns repeated on every row."""
    return {
        "Name": order.number,
        "Email": order.email or "",
        "Created at": csv_date(order.created_at),
        "Lineitem quantity": str(line.quantity),
        "Lineitem name": line.display_name,
        "Lineitem price": money(line.price),
        "Lineitem compare at price": "",
        "Lineitem sku": line.sku,
        "Lineitem requires shipping": "false" if line.is_tip else "true",
        "Lineitem taxable": "false" if line.is_tip else "true",
        "Lineitem fulfillment status": "fulfilled" if order.fulfilled_at else "pending",
        "Vendor": line.vendor,
        "Lineitem discount": money(line.discount),
    }


def shopify_csv_rows(order: TruthOrder) -> list[dict[str, str]]:
    """One dict per line item, keyed by 79-column names (absent key = blank cell)."""
    rows = [_shopify_line_cells(order, line) for line in order.lines]
    rows[0].update(_shopify_order_cells(order))
    return rows


def _shopify_table(
    orders: Iterable[TruthOrder], header: Sequence[str], newest_first: bool = True
) -> Iterator[list[str]]:
    for order in _ordered(orders, newest_first):
        for row in shopify_csv_rows(order):
            yield [row.get(column, "") for column in header]


def write_shopify_csv(
    orders: Iterable[TruthOrder],
    path: Path | str,
    columns: int = 79,
    *,
    bom: bool = False,
    crlf: bool = True,
    newest_first: bool = True,
) -> Path:
    """Shopify admin "Export orders" CSV, one row per line item, newest order first."""
    header = shopify_columns(columns)
    rows = _shopify_table(orders, header, newest_first)
    return _write_csv(Path(path), header, rows, bom=bom, crlf=crlf)


# --------------------------------------------------------------------------------------
# Shopify REST JSON
# --------------------------------------------------------------------------------------


def _shopify_address(address: TruthAddress) -> dict[str, Any]:
    return {
        "first_name": address.first_name,
        "last_name": address.last_name,
        "name": address.name,
        "company": address.company or None,
        "address1": address.address1,
        "address2": address.address2 or None,
        "city": address.city,
        "province": address.province or None,
        "province_code": address.province_code or None,
        "country": address.country,
        "country_code": address.country_code,
        "zip": address.zip,
        "phone": address.phone,
    }


def _shopify_line(order: TruthOrder, line: TruthLine) -> dict[str, Any]:
    return {
        "id": int(line.line_id),
        "product_id": int(line.product_id) if line.product_id else None,
        "variant_id": int(line.variant_id) if line.variant_id else None,
        "sku": line.sku,
        "title": line.name,
        "variant_title": line.variant_title or None,
        "name": line.display_name,
        "quantity": line.quantity,
        "price": money(line.price),
        "total_discount": money(line.discount),
        "vendor": line.vendor or None,
        "requires_shipping": not line.is_tip,
        "taxable": not line.is_tip,
        "gift_card": line.name == "Gift Card",
        "fulfillment_status": "fulfilled" if order.fulfilled_at else None,
    }


def _shopify_fulfillments(order: TruthOrder) -> list[dict[str, Any]]:
    if order.fulfilled_at is None:
        return []
    rng = _cosmetic(order)
    return [
        {
            "id": 3_000_000_000 + int(order.id) % 1_000_000_000,
            "order_id": int(order.id),
            "created_at": iso_date(order.fulfilled_at),
            "status": "success",
            "tracking_company": rng.choice(("UPS", "USPS", "Canada Post", "DHL Express")),
            "tracking_number": f"1Z{rng.randrange(10**15, 10**16)}",
        }
    ]


def _shopify_refund(order: TruthOrder, refund: TruthRefund) -> dict[str, Any]:
    return {
        "id": int(refund.id),
        "order_id": int(order.id),
        "created_at": iso_date(refund.created_at),
        "processed_at": iso_date(refund.created_at),
        "note": refund.note,
        "refund_line_items": [],
        "transactions": [
            {
                "id": int(refund.id) * 10 + 1,
                "kind": "refund",
                "status": "success",
                "amount": money(refund.amount),
                "currency": order.currency,
                "gateway": "shopify_payments",
            }
        ],
    }


def _shopify_customer(order: TruthOrder) -> dict[str, Any] | None:
    if order.customer_id is None:
        return None
    return {
        "id": int(order.customer_id),
        "email": order.email or None,
        "first_name": order.first_name,
        "last_name": order.last_name,
        "phone": order.phone,
    }


def shopify_json_order(order: TruthOrder) -> dict[str, Any]:
    """One order in the REST Admin API orders.json shape."""
    events = [order.created_at, order.fulfilled_at, order.cancelled_at]
    events += [r.created_at for r in order.refunds]
    tip = sum((line.subtotal for line in order.lines if line.is_tip), Decimal("0"))
    # Shopify hands out "" for some missing emails and null for others
    email: str | None = (
        order.email if order.email is not None else ("" if int(order.id) % 2 else None)
    )
    return {
        "id": int(order.id),
        "name": order.number,
        "order_number": int(order.number.lstrip("#")),
        "email": email,
        "contact_email": order.email,
        "phone": order.phone,
        "created_at": iso_date(order.created_at),
        "processed_at": iso_date(order.created_at),
        "updated_at": iso_date(max(e for e in events if e is not None)),
        "currency": order.currency,
        "total_price": money(order.total),
        "subtotal_price": money(order.subtotal),
        "total_line_items_price": money(order.items_total),
        "total_tax": money(order.taxes),
        "total_discounts": money(order.discount_amount),
        "total_tip_received": money(tip),
        "discount_codes": (
            [
                {
                    "code": order.discount_code,
                    "amount": money(order.discount_amount),
                    "type": "percentage",
                }
            ]
            if order.discount_code
            else []
        ),
        "financial_status": order.financial_status,
        "fulfillment_status": "fulfilled" if order.fulfilled_at else None,
        "cancelled_at": iso_date(order.cancelled_at),
        "cancel_reason": order.cancel_reason,
        "buyer_accepts_marketing": order.accepts_marketing,
        "note": order.notes or None,
        "tags": ", ".join(order.tags),
        "gateway": order.payment_method,
        "customer": _shopify_customer(order),
        "billing_address": _shopify_address(order.billing),
        "shipping_address": _shopify_address(order.shipping_address),
        "shipping_lines": [
            {
                "title": order.shipping_method,
                "price": money(order.shipping),
                "code": order.shipping_method.lower().replace(" ", "_"),
            }
        ],
        "line_items": [_shopify_line(order, line) for line in order.lines],
        "fulfillments": _shopify_fulfillments(order),
        "refunds": [_shopify_refund(order, r) for r in order.refunds],
    }


def _write_json(path: Path, documents: list[dict[str, Any]], shape: str, wrap: bool) -> Path:
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        if shape == "jsonl":
            for document in documents:
                handle.write(json.dumps(document, ensure_ascii=False) + "\n")
        elif shape == "array":
            json.dump(documents, handle, ensure_ascii=False, indent=2)
            handle.write("\n")
        elif shape == "wrapped" and wrap:
            json.dump({"orders": documents}, handle, ensure_ascii=False, indent=2)
            handle.write("\n")
        else:
            raise ValueError(f"unknown shape {shape!r}")
    return path


def write_shopify_json(
    orders: Iterable[TruthOrder],
    path: Path | str,
    shape: str = "wrapped",
    *,
    newest_first: bool = True,
) -> Path:
    """orders.json: shape "wrapped" ({"orders": [...]}), "array" or "jsonl"."""
    documents = [shopify_json_order(o) for o in _ordered(orders, newest_first)]
    return _write_json(Path(path), documents, shape, wrap=True)


# --------------------------------------------------------------------------------------
# WooCommerce REST JSON
# --------------------------------------------------------------------------------------


def _woo_state(address: TruthAddress) -> str:
    return address.province_code.replace("-", "")  # "JP-13" -> "JP13"


def _woo_address(address: TruthAddress, order: TruthOrder, contact: bool) -> dict[str, str]:
    out = {
        "first_name": address.first_name,
        "last_name": address.last_name,
        "company": address.company,
        "address_1": address.address1,
        "address_2": address.address2,
        "city": address.city,
        "state": _woo_state(address),
        "postcode": address.zip,
        "country": address.country_code,
    }
    if contact:
        out["email"] = order.email or ""
        out["phone"] = order.phone or ""
    return out


def _line_taxes(order: TruthOrder) -> list[Decimal]:
    weights = [line.total for line in order.lines]
    return _allocate(order.taxes, weights, _quantum(order.currency))


def _woo_line(line: TruthLine, tax: Decimal) -> dict[str, Any]:
    meta = []
    if line.variant_title:
        meta.append(
            {
                "id": int(line.line_id) * 10,
                "key": "variant",
                "value": line.variant_title,
                "display_key": "Variant",
                "display_value": line.variant_title,
            }
        )
    return {
        "id": int(line.line_id),
        "name": woo_html(line.display_name),
        "product_id": int(line.product_id) if line.product_id else 0,
        "variation_id": int(line.variant_id) if line.variant_id and line.variant_title else 0,
        "quantity": line.quantity,
        "tax_class": "",
        "subtotal": money(line.subtotal),
        "subtotal_tax": money(tax),
        "total": money(line.total),
        "total_tax": money(tax),
        "taxes": [],
        "meta_data": meta,
        "sku": line.sku,
        "price": float(line.price),
    }


def woo_json_order(order: TruthOrder) -> dict[str, Any]:
    """One order in the WooCommerce REST v3 shape (dates without offsets)."""
    paid = order.financial_status in ("paid", "partially_refunded", "refunded")
    events = [order.created_at, order.fulfilled_at, order.cancelled_at]
    events += [r.created_at for r in order.refunds]
    modified = max(e for e in events if e is not None)
    return {
        "id": int(order.id),
        "parent_id": 0,
        "number": order.number,
        "order_key": f"wc_order_{_cosmetic(order).randrange(16**12):012x}",
        "created_via": "checkout",
        "status": order.woo_status,
        "currency": order.currency,
        "date_created": _naive(order.created_at),
        "date_created_gmt": _naive(order.created_at, utc=True),
        "date_modified": _naive(modified),
        "date_modified_gmt": _naive(modified, utc=True),
        "discount_total": money(order.discount_amount),
        "discount_tax": "0.00",
        "shipping_total": money(order.shipping),
        "shipping_tax": "0.00",
        "cart_tax": money(order.taxes),
        "total": money(order.total),
        "total_tax": money(order.taxes),
        "prices_include_tax": False,
        "customer_id": int(order.customer_id or 0),
        "customer_note": order.notes,
        "billing": _woo_address(order.billing, order, contact=True),
        "shipping": _woo_address(order.shipping_address, order, contact=False),
        "payment_method_title": order.payment_method,
        "date_paid": _naive(order.created_at) if paid else None,
        "date_paid_gmt": _naive(order.created_at, utc=True) if paid else None,
        "date_completed": _naive(order.fulfilled_at),
        "date_completed_gmt": _naive(order.fulfilled_at, utc=True),
        "line_items": [
            _woo_line(line, tax) for line, tax in zip(order.lines, _line_taxes(order), strict=True)
        ],
        "tax_lines": [],
        "shipping_lines": [
            {
                "id": int(order.id) * 10 + 1,
                "method_title": order.shipping_method,
                "total": money(order.shipping),
            }
        ],
        "fee_lines": [],
        "coupon_lines": (
            [
                {
                    "id": int(order.id) * 10 + 2,
                    "code": order.discount_code,
                    "discount": money(order.discount_amount),
                    "discount_tax": "0.00",
                }
            ]
            if order.discount_code
            else []
        ),
        "refunds": [
            {"id": int(r.id), "reason": r.note, "total": "-" + money(r.amount)}
            for r in order.refunds
        ],
    }


def write_woo_json(
    orders: Iterable[TruthOrder],
    path: Path | str,
    shape: str = "array",
    *,
    newest_first: bool = True,
) -> Path:
    """WooCommerce REST v3 orders: shape "array" or "jsonl"."""
    documents = [woo_json_order(o) for o in _ordered(orders, newest_first)]
    return _write_json(Path(path), documents, shape, wrap=False)


# --------------------------------------------------------------------------------------
# WooCommerce "Advanced Order Export" CSV
# --------------------------------------------------------------------------------------

WOO_CSV_HEADER = (
    '"Order Number","Order Status","Order Date","Customer Note","First Name (Billing)",'
    '"Last Name (Billing)","Company (Billing)","Address 1&2 (Billing)","City (Billing)",'
    '"State Code (Billing)","Postcode (Billing)","Country Code (Billing)","Email (Billing)",'
    '"Phone (Billing)","First Name (Shipping)","Last Name (Shipping)","Address 1&2 (Shipping)",'
    '"City (Shipping)","State Code (Shipping)","Postcode (Shipping)","Country Code (Shipping)",'
    '"Item #",SKU,Name,"Product Variation",Quantity,"Quantity (- Refund)","Item Cost",'
    '"Order Line (w/o tax)","Order Line Tax","Order Line Total","Order Line Total Refunded",'
    '"Order Line Total (- Refund)","Image URL","Coupon Code","Discount Amount",'
    '"Discount Amount Tax","Payment Method Title","Coupons Used","Cart Discount Amount",'
    '"Order Subtotal Amount","Order Tax Amount","Order Shipping Amount","Order Refund Amount",'
    '"Order Total Amount","Order Total Tax Amount","Total items","Total products"'
)
WOO_CSV_COLUMNS: tuple[str, ...] = tuple(next(csv.reader([WOO_CSV_HEADER])))


def _woo_csv_order_cells(order: TruthOrder, date_format: str) -> dict[str, str]:
    b, s = order.billing, order.shipping_address
    return {
        "Order Number": order.number,
        "Order Status": order.woo_status,
        "Order Date": order.created_at.strftime(date_format),
        "Customer Note": order.notes,
        "First Name (Billing)": b.first_name,
        "Last Name (Billing)": b.last_name,
        "Company (Billing)": b.company,
        "Address 1&2 (Billing)": _street(b),
        "City (Billing)": b.city,
        "State Code (Billing)": _woo_state(b),
        "Postcode (Billing)": b.zip,
        "Country Code (Billing)": b.country_code,
        "Email (Billing)": order.email or "",
        "Phone (Billing)": order.phone or "",
        "First Name (Shipping)": s.first_name,
        "Last Name (Shipping)": s.last_name,
        "Address 1&2 (Shipping)": _street(s),
        "City (Shipping)": s.city,
        "State Code (Shipping)": _woo_state(s),
        "Postcode (Shipping)": s.zip,
        "Country Code (Shipping)": s.country_code,
        "Coupon Code": order.discount_code or "",
        "Discount Amount": money(order.discount_amount),
        "Discount Amount Tax": "0.00",
        "Payment Method Title": order.payment_method,
        "Coupons Used": order.discount_code or "",
        "Cart Discount Amount": money(order.discount_amount),
        "Order Subtotal Amount": money(order.items_total),
        "Order Tax Amount": money(order.taxes),
        "Order Shipping Amount": money(order.shipping),
        "Order Refund Amount": money(order.refunded_total),
        "Order Total Amount": money(order.total),
        "Order Total Tax Amount": money(order.taxes),
        "Total items": str(sum(line.quantity for line in order.lines)),
        "Total products": str(len(order.lines)),
    }


def _woo_csv_line_cells(
    order: TruthOrder, index: int, line: TruthLine, tax: Decimal
) -> dict[str, str]:
    refunded = line.total + tax if order.fully_refunded else Decimal("0")
    image = f"https://example.com/images/{line.sku.lower()}.jpg" if line.sku else ""
    return {
        "Item #": str(index),
        "SKU": line.sku,
        "Name": woo_html(line.display_name),
        "Product Variation": line.variant_title,
        "Quantity": str(line.quantity),
        "Quantity (- Refund)": "0" if order.fully_refunded else str(line.quantity),
        "Item Cost": money(line.price),
        "Order Line (w/o tax)": money(line.total),
        "Order Line Tax": money(tax),
        "Order Line Total": money(line.total + tax),
        "Order Line Total Refunded": money(refunded),
        "Order Line Total (- Refund)": money(line.total + tax - refunded),
        "Image URL": image,
    }


def woo_csv_rows(order: TruthOrder, date_format: str = "%Y-%m-%d %H:%M") -> list[dict[str, str]]:
    """One dict per item; the order columns are repeated on every row."""
    order_cells = _woo_csv_order_cells(order, date_format)
    rows = []
    for index, (line, tax) in enumerate(zip(order.lines, _line_taxes(order), strict=True), start=1):
        rows.append({**order_cells, **_woo_csv_line_cells(order, index, line, tax)})
    return rows


def write_woo_csv(
    orders: Iterable[TruthOrder],
    path: Path | str,
    date_format: str = "%Y-%m-%d %H:%M",
    *,
    newest_first: bool = True,
) -> Path:
    """Advanced Order Export CSV: UTF-8 with BOM, dates in the order's wall time, no zone."""
    rows = (
        [row.get(column, "") for column in WOO_CSV_COLUMNS]
        for order in _ordered(orders, newest_first)
        for row in woo_csv_rows(order, date_format)
    )
    return _write_csv(Path(path), WOO_CSV_HEADER, rows, bom=True)


# --------------------------------------------------------------------------------------
# Broken inputs
# --------------------------------------------------------------------------------------


def _clean_orders(count: int = 4, seed: int = 9) -> list[TruthOrder]:
    """A few well-behaved Shopify orders (valid email, paid, fulfilled)."""
    good = [
        o
        for o in make_orders(count * 12, seed, "shopify")
        if o.email_valid
        and o.financial_status == "paid"
        and o.fulfilled_at
        and not any(line.is_tip or not line.sku for line in o.lines)
    ]
    orders = good[:count]
    orders[1] = replace(orders[1], number=BROKEN_ORDER_NAME)  # the victim: second oldest
    return orders


def _victim(orders: list[TruthOrder]) -> TruthOrder:
    return next(o for o in orders if o.number == BROKEN_ORDER_NAME)


def _patched_shopify_csv(
    orders: list[TruthOrder],
    path: Path,
    patch: dict[str, str],
    *,
    drop: str | None = None,
    encoding: str = "utf-8",
) -> Path:
    """A 79-column Shopify CSV where the victim's first row gets `patch` (Created at: all rows)."""
    header = [c for c in SHOPIFY_COLUMNS_79 if c != drop]
    rows = []
    for order in _ordered(orders, newest_first=True):
        for i, row in enumerate(shopify_csv_rows(order)):
            if order.number == BROKEN_ORDER_NAME:
                row.update({k: v for k, v in patch.items() if i == 0 or k in SHOPIFY_REPEATED})
            rows.append([row.get(c, "") for c in header])
    return _write_csv(path, header, rows, encoding=encoding, errors="replace")


def _truncated_json(orders: list[TruthOrder], path: Path) -> Path:
    write_shopify_json(orders, path)
    text = path.read_text(encoding="utf-8")
    cut = text.index('"line_items"', len(text) // 2)  # mid-object, after a key's start
    path.write_text(text[: cut + 5], encoding="utf-8")
    return path


def broken_files(directory: Path | str, now: datetime | None = None) -> dict[str, Path]:
    """Bad inputs, keyed by defect. The defective order, where there is one, is BROKEN_ORDER_NAME;
    the other orders in the same file are fine. `now` anchors the future date (default: now)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    orders = _clean_orders()
    victim = _victim(orders)
    others = [o for o in orders if o is not victim]
    out: dict[str, Path] = {}

    out["empty"] = directory / "empty.csv"
    out["empty"].write_bytes(b"")
    out["header_only"] = _write_csv(directory / "shopify_header_only.csv", SHOPIFY_COLUMNS_79, [])
    out["missing_created_at"] = _patched_shopify_csv(
        orders, directory / "shopify_missing_created_at.csv", {}, drop="Created at"
    )
    out["truncated_json"] = _truncated_json(orders, directory / "shopify_truncated.json")

    latin = replace(
        victim,
        first_name="Zoé",
        billing=replace(victim.billing, first_name="Zoé"),
        lines=[replace(victim.lines[0], name="Café Crème"), *victim.lines[1:]],
    )
    out["latin1"] = _patched_shopify_csv(
        [*others, latin], directory / "shopify_latin1.csv", {}, encoding="latin-1"
    )
    out["bad_date"] = _patched_shopify_csv(
        orders, directory / "shopify_bad_date.csv", {"Created at": "not a date"}
    )
    out["bad_total"] = _patched_shopify_csv(
        orders, directory / "shopify_bad_total.csv", {"Total": "12,3x"}
    )
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    out["year_1970"] = write_shopify_csv(
        [*others, replace(victim, created_at=epoch)], directory / "shopify_year_1970.csv"
    )
    future = (now + timedelta(days=3 * 365 + 1)).astimezone(victim.created_at.tzinfo)
    out["future_date"] = write_shopify_csv(
        [*others, replace(victim, created_at=future)], directory / "shopify_future_date.csv"
    )
    huge = ('A very long note, with "quotes" and commas.\n' * 5000)[: 200 * 1024]
    out["huge_note"] = write_shopify_csv(
        [*others, replace(victim, notes=huge)], directory / "shopify_huge_note.csv"
    )
    return out
