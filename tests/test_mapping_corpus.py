"""Field by field: every event the dry run writes, compared with the synthetic "truth" orders.

For each export format (Shopify CSV in 79/78/75 columns; Shopify JSON wrapped, array and
JSON Lines; WooCommerce JSON array and JSON Lines; WooCommerce CSV) ~200 orders are made by
tests/corpus.py, rendered, run through `klaviyo-backfill send --dry-run` and every event is
checked against the order it came from. Expected values are always computed from the truth
with the rule mapping/events.py documents; where a format cannot carry a fact (a WooCommerce CSV has
no currency, no seconds, no fulfilment date) the test expects the tool's documented fallback.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from klaviyo_backfill.cli import main

try:  # tests/ as a plain directory on sys.path, or as a package
    import corpus
except ImportError:
    from tests import corpus  # type: ignore[no-redef]

N_ORDERS = 200
E164 = re.compile(r"^\+[1-9]\d{6,14}$")
NO_PROFILE = "no usable email, phone number or external id"
PLACED, ORDERED = "Placed Order", "Ordered Product"
FULFILLED, CANCELLED, REFUNDED = "Fulfilled Order", "Cancelled Order", "Refunded Order"


# --------------------------------------------------------------------------------------
# Formats: how each one renders, and what it can carry
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fmt:
    name: str
    kind: str  # shopify-csv | shopify-json | woo-json | woo-csv
    seed: int
    render: Callable[[list[corpus.TruthOrder], Path], Path]

    @property
    def platform(self) -> str:
        return "shopify" if self.kind.startswith("shopify") else "woocommerce"

    @property
    def is_csv(self) -> bool:
        return self.kind.endswith("csv")


def _shopify_csv(columns: int) -> Callable[[list[corpus.TruthOrder], Path], Path]:
    return lambda orders, path: corpus.write_shopify_csv(orders, path, columns=columns)


def _shopify_csv_bom_lf_oldest_first(orders: list[corpus.TruthOrder], path: Path) -> Path:
    return corpus.write_shopify_csv(orders, path, bom=True, crlf=False, newest_first=False)


def _shopify_json(shape: str) -> Callable[[list[corpus.TruthOrder], Path], Path]:
    return lambda orders, path: corpus.write_shopify_json(orders, path, shape=shape)


def _woo_json(shape: str) -> Callable[[list[corpus.TruthOrder], Path], Path]:
    return lambda orders, path: corpus.write_woo_json(orders, path, shape=shape)


FORMATS = {
    f.name: f
    for f in (
        Fmt("shopify-csv-79", "shopify-csv", 201, _shopify_csv(79)),
        Fmt("shopify-csv-78", "shopify-csv", 202, _shopify_csv(78)),
        Fmt("shopify-csv-75", "shopify-csv", 203, _shopify_csv(75)),
        Fmt("shopify-csv-bom-lf", "shopify-csv", 207, _shopify_csv_bom_lf_oldest_first),
        Fmt("shopify-json-wrapped", "shopify-json", 204, _shopify_json("wrapped")),
        Fmt("shopify-json-array", "shopify-json", 205, _shopify_json("array")),
        Fmt("shopify-json-jsonl", "shopify-json", 206, _shopify_json("jsonl")),
        Fmt("woo-json-array", "woo-json", 301, _woo_json("array")),
        Fmt("woo-json-jsonl", "woo-json", 302, _woo_json("jsonl")),
        Fmt("woo-csv", "woo-csv", 303, corpus.write_woo_csv),
    )
}
NAMES = list(FORMATS)


# --------------------------------------------------------------------------------------
# Running the CLI and reading what it wrote
# --------------------------------------------------------------------------------------


@dataclass
class Invocation:
    args: list[str]
    exit_code: int
    stdout: str
    events: list[dict[str, Any]]
    bodies: int
    failures: list[dict[str, Any]]


@dataclass
class Run:
    fmt: Fmt
    truth: list[corpus.TruthOrder]
    files: list[Path]
    single: list[Invocation]
    bulk: list[Invocation] = field(default_factory=list)

    @property
    def events(self) -> list[dict[str, Any]]:
        return [e for inv in self.single for e in inv.events]

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [f for inv in self.single for f in inv.failures]

    def by_order(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for event in self.events:
            out[event["properties"]["OrderId"]].append(event)
        return out

    def mapped(self) -> Iterator[tuple[corpus.TruthOrder, dict[str, list[dict[str, Any]]]]]:
        """(truth order, its events by metric) for every identifiable order."""
        grouped = self.by_order()
        for order in self.truth:
            if sendable(self.fmt, order):
                metrics: dict[str, list[dict[str, Any]]] = defaultdict(list)
                for event in grouped[order_id(self.fmt, order)]:
                    metrics[event["metric"]].append(event)
                yield order, metrics


def _flat(attrs: dict[str, Any], profile: dict[str, Any]) -> dict[str, Any]:
    """One event as a flat record: metric name, profile attributes, the rest as sent."""
    event = {k: v for k, v in attrs.items() if k not in ("metric", "profile")}
    event["metric"] = attrs["metric"]["data"]["attributes"]["name"]
    event["profile"] = profile
    return event


def _events_of(body: dict[str, Any]) -> list[dict[str, Any]]:
    data = body["data"]
    if data["type"] == "event":
        attrs = data["attributes"]
        return [_flat(attrs, attrs["profile"]["data"]["attributes"])]
    out = []
    for entry in data["attributes"]["events-bulk-create"]["data"]:
        profile = entry["attributes"]["profile"]["data"]["attributes"]
        out += [_flat(e["attributes"], profile) for e in entry["attributes"]["events"]["data"]]
    return out


def _read_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    return [json.loads(line, parse_float=Decimal) for line in text.splitlines() if line]


def invoke(files: list[Path], out_dir: Path, tag: str, *extra: str) -> Invocation:
    output, failures = out_dir / f"{tag}.jsonl", out_dir / f"{tag}.failures.jsonl"
    args = ["send", *map(str, files), "--dry-run", "--preview", "0"]
    args += ["--output", str(output), "--failures", str(failures), *extra]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    bodies = _read_lines(output)
    return Invocation(
        args,
        result.exit_code,
        result.output,
        [e for body in bodies for e in _events_of(body)],
        len(bodies),
        _read_lines(failures),
    )


def _run(fmt: Fmt, root: Path) -> Run:
    truth = corpus.make_orders(N_ORDERS, fmt.seed, fmt.platform)
    folder = root / fmt.name
    folder.mkdir()
    if fmt.kind != "woo-csv":
        path = fmt.render(truth, folder / ("orders.csv" if fmt.is_csv else "orders.json"))
        groups: list[tuple[list[Path], list[str]]] = [([path], [])]
    else:  # no currency column: one file per currency, each run with its --currency
        groups = []
        for currency in corpus.CURRENCIES:
            orders = [o for o in truth if o.currency == currency]
            path = fmt.render(orders, folder / f"orders-{currency}.csv")
            groups.append(([path], ["--currency", currency]))
    run = Run(fmt, truth, [p for paths, _ in groups for p in paths], [])
    for i, (paths, extra) in enumerate(groups):
        run.single.append(invoke(paths, folder, f"single-{i}", "--endpoint", "single", *extra))
        run.bulk.append(invoke(paths, folder, f"bulk-{i}", "--endpoint", "bulk", *extra))
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Run]:
    root = tmp_path_factory.mktemp("corpus-runs")
    cache: dict[str, Run] = {}

    def get(name: str) -> Run:
        if name not in cache:
            cache[name] = _run(FORMATS[name], root)
        return cache[name]

    return get


# --------------------------------------------------------------------------------------
# Expectations, computed from the truth with the rules of mapping/events.py and the layouts
# --------------------------------------------------------------------------------------


def order_id(fmt: Fmt, o: corpus.TruthOrder) -> str:
    """layouts: Shopify `Id`/`id`; WooCommerce JSON `id`; the Woo CSV's `Order Number`."""
    return o.number if fmt.kind == "woo-csv" else o.id


def iso(fmt: Fmt, moment: datetime) -> str:
    """UTC ISO 8601; the Woo CSV's zoneless "Order Date" is the wall time to the minute, as UTC."""
    if fmt.kind == "woo-csv":
        return moment.replace(tzinfo=UTC, second=0, microsecond=0).isoformat()
    return moment.astimezone(UTC).isoformat()


def currency(fmt: Fmt, o: corpus.TruthOrder) -> str:
    return o.currency  # the Woo CSV runs pass the file's currency with --currency


def clean_code(value: str | None) -> str | None:
    """values.clean_code: trimmed, one spreadsheet apostrophe removed, blank -> None."""
    if value is None:
        return None
    text = value.strip()
    text = (text[1:] if text.startswith("'") else text).strip()
    return text or None


def woo_state(a: corpus.TruthAddress) -> str:
    return a.province_code.replace("-", "")


def expected_location(fmt: Fmt, a: corpus.TruthAddress) -> dict[str, str]:
    if fmt.kind == "shopify-csv":
        values = (a.address1, a.address2, a.province or a.province_code, a.country_code)
    elif fmt.kind == "shopify-json":
        values = (a.address1, a.address2, a.province or a.province_code, a.country)
    elif fmt.kind == "woo-json":
        values = (a.address1, a.address2, woo_state(a), a.country_code)
    else:  # woo-csv: "Address 1&2" in one column
        values = (corpus._street(a), "", woo_state(a), a.country_code)
    address1, address2, region, country = values
    location = {
        "address1": address1,
        "address2": address2,
        "city": a.city,
        "region": region,
        "zip": a.zip,
        "country": country,
    }
    return {k: v for k, v in location.items() if v}


def sendable(fmt: Fmt, o: corpus.TruthOrder) -> bool:
    """Whether the tool sends the order: a usable email or phone, or, where the export holds
    it (Shopify JSON), a customer id, sent as the profile's external_id."""
    return o.identifiable or (fmt.kind == "shopify-json" and o.customer_id is not None)


def expected_profile(fmt: Fmt, o: corpus.TruthOrder) -> dict[str, Any]:
    """mapping.profile_of. The phone tried first is the order's (then customer, billing,
    shipping), normalised with the billing country: in the corpus every candidate is the
    customer's one number, so the truth's phone_e164 is what the rule yields."""
    profile: dict[str, Any] = {}
    if o.email_valid:
        profile["email"] = o.email
    if o.phone_e164:
        profile["phone_number"] = o.phone_e164
    if not o.identifiable and sendable(fmt, o):
        profile["external_id"] = o.customer_id
    profile["first_name"] = o.first_name
    profile["last_name"] = o.last_name
    profile["location"] = expected_location(fmt, o.billing)
    return profile


def expected_address(fmt: Fmt, a: corpus.TruthAddress, side: str) -> dict[str, Any]:
    """The BillingAddress/ShippingAddress property: what the layout reads, blanks left out."""
    kind = fmt.kind
    props: dict[str, Any] = {"FirstName": a.first_name, "LastName": a.last_name}
    if not (kind == "woo-csv" and side == "shipping"):
        props["Company"] = a.company
    if kind == "woo-csv":
        props["Address1"] = corpus._street(a)
    else:
        props["Address1"], props["Address2"] = a.address1, a.address2
    props["City"] = a.city
    if kind.startswith("shopify"):
        props["Region"] = a.province or a.province_code
        props["RegionCode"] = a.province_code
    else:
        props["RegionCode"] = woo_state(a)
    if kind == "shopify-json":
        props["Country"] = a.country
    props["CountryCode"] = a.country_code
    props["Zip"] = a.zip
    if kind.startswith("shopify") or side == "billing":
        phone = clean_code(a.phone)
        props["Phone"] = None if phone == "n/a" else phone  # a placeholder counts as empty
    return {k: v for k, v in props.items() if v}


def expected_item(fmt: Fmt, line: corpus.TruthLine) -> dict[str, Any]:
    """One entry of Items (ProductID is checked on its own, see test_product_id...)."""
    item: dict[str, Any] = {}
    if line.sku:
        item["SKU"] = line.sku
    item["ProductName"] = line.display_name  # Shopify "Lineitem name"/name, Woo name: both
    item["Quantity"] = line.quantity
    item["ItemPrice"] = line.price
    item["RowTotal"] = line.price * line.quantity
    if fmt.kind == "woo-csv" and line.sku:
        item["ImageURL"] = f"https://example.com/images/{line.sku.lower()}.jpg"
    if fmt.kind.startswith("shopify") and line.vendor:
        item["Brand"] = line.vendor
    if fmt.kind in ("shopify-json", "woo-csv") and line.variant_title:
        item["Variant"] = line.variant_title
    return item


def expected_product_id(fmt: Fmt, line: corpus.TruthLine) -> str | None:
    has_column = fmt.kind in ("shopify-json", "woo-json")
    return line.product_id if has_column else None


def line_keys(lines: list[corpus.TruthLine]) -> list[str]:
    """The contract: the SKU when unique in the order, else "<sku or 'item'>-<n>"."""
    skus = [line.sku or None for line in lines]
    counts = Counter(skus)
    seen: Counter[str | None] = Counter()
    keys = []
    for sku in skus:
        seen[sku] += 1
        keys.append(sku if sku and counts[sku] == 1 else f"{sku or 'item'}-{seen[sku]}")
    return keys


def is_fulfilled(fmt: Fmt, o: corpus.TruthOrder) -> bool:
    """The Woo CSV has only the status, and a refunded order's status is "refunded"."""
    if fmt.kind == "woo-csv":
        return o.woo_status == "completed"
    return o.fulfilled_at is not None


def fulfilled_time(fmt: Fmt, o: corpus.TruthOrder) -> str:
    assert o.fulfilled_at is not None or fmt.kind == "woo-csv"
    moment = o.created_at if fmt.kind == "woo-csv" else o.fulfilled_at
    assert moment is not None
    return iso(fmt, moment)


def cancelled_time(fmt: Fmt, o: corpus.TruthOrder) -> str:
    """Shopify has `Cancelled at`/cancelled_at; WooCommerce only a status: the order time."""
    assert o.cancelled_at is not None
    return iso(fmt, o.cancelled_at if fmt.kind.startswith("shopify") else o.created_at)


def refunded_time(fmt: Fmt, o: corpus.TruthOrder) -> str:
    """The latest refund's date (Shopify JSON), else the cancellation time, else the order's."""
    if fmt.kind == "shopify-json":
        return iso(fmt, max(r.created_at for r in o.refunds))
    if fmt.kind == "shopify-csv" and o.cancelled_at is not None:
        return iso(fmt, o.cancelled_at)
    return iso(fmt, o.created_at)


def refund_reason(fmt: Fmt, o: corpus.TruthOrder) -> str | None:
    """JSON formats carry a note per refund: the distinct non-blank ones, joined by "; "."""
    if not fmt.kind.endswith("json"):
        return None
    notes = [r.note.strip() for r in o.refunds if r.note.strip()]
    return "; ".join(dict.fromkeys(notes)) or None


def placed_properties(fmt: Fmt, o: corpus.TruthOrder) -> dict[str, Any]:
    """The Placed Order properties the contract lists (Items apart, compared line by line)."""
    oid = order_id(fmt, o)
    props: dict[str, Any] = {"OrderId": oid}
    if fmt.kind != "woo-csv" and o.number != oid:
        props["OrderNumber"] = o.number
    props["ItemNames"] = [line.display_name or line.sku for line in o.lines]
    if fmt.kind.startswith("shopify"):
        brands = list(dict.fromkeys(line.vendor for line in o.lines if line.vendor))
        if brands:
            props["Brands"] = brands
    if o.discount_code:
        props["DiscountCode"] = o.discount_code
    if o.discount_amount:
        props["DiscountValue"] = o.discount_amount
    props["BillingAddress"] = expected_address(fmt, o.billing, "billing")
    props["ShippingAddress"] = expected_address(fmt, o.shipping_address, "shipping")
    return props


def minor_units(code: str) -> int:
    return 0 if code == "JPY" else 2


def assert_money(value: Any, expected: Decimal, code: str) -> None:
    """A JSON number equal to the amount, with no more decimals than the currency has."""
    assert isinstance(value, Decimal | int) and not isinstance(value, bool), value
    assert Decimal(value) == expected, (value, expected)
    assert Decimal(value) == Decimal(value).quantize(Decimal(1).scaleb(-minor_units(code)))


# --------------------------------------------------------------------------------------
# The tests
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_one_placed_order_per_identifiable_order_and_none_for_the_others(
    runs: Callable[[str], Run], name: str
) -> None:
    run = runs(name)
    placed = Counter(e["properties"]["OrderId"] for e in run.events if e["metric"] == PLACED)
    expected = Counter(order_id(run.fmt, o) for o in run.truth if sendable(run.fmt, o))
    assert placed == expected
    assert 0 < sum(not sendable(run.fmt, o) for o in run.truth) < len(run.truth)
    unidentifiable = {order_id(run.fmt, o) for o in run.truth if not sendable(run.fmt, o)}
    assert not unidentifiable & {e["properties"]["OrderId"] for e in run.events}


@pytest.mark.parametrize("name", NAMES)
def test_unidentifiable_orders_are_reported_in_the_failures_file(
    runs: Callable[[str], Run], name: str
) -> None:
    run = runs(name)
    files = {str(p) for p in run.files}
    expected = sorted(order_id(run.fmt, o) for o in run.truth if not sendable(run.fmt, o))
    assert sorted(f["order_id"] for f in run.failures) == expected
    for failure in run.failures:
        assert failure["source"] in files
        assert failure["reason"] == NO_PROFILE
        assert isinstance(failure["line"], int) and failure["line"] > 1
    for inv in run.single:
        assert inv.exit_code == (1 if inv.failures else 0), inv.stdout


def _csv_spans(path: Path, key_column: str) -> dict[str, tuple[int, int]]:
    """Order key -> (first, last) physical line of the order's first row, as csv counts lines."""
    spans: dict[str, tuple[int, int]] = {}
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        key = header.index(key_column)
        while True:
            start = reader.line_num + 1
            row = next(reader, None)
            if row is None:
                return spans
            spans.setdefault(row[key], (start, reader.line_num))


@pytest.mark.parametrize("name", NAMES)
def test_failure_lines_point_at_the_rejected_order(runs: Callable[[str], Run], name: str) -> None:
    run = runs(name)
    by_id = {order_id(run.fmt, o): o for o in run.truth}
    for failure in run.failures:
        path, line = Path(failure["source"]), failure["line"]
        order = by_id[failure["order_id"]]
        if run.fmt.is_csv:
            column = "Name" if run.fmt.kind == "shopify-csv" else "Order Number"
            first, last = _csv_spans(path, column)[order.number]
            assert first <= line <= last  # within the order's first row (see the exact test)
        else:
            text = path.read_text(encoding="utf-8").splitlines()
            rest = "\n".join(text[line - 1 :]).lstrip()
            assert rest.startswith("{"), text[line - 1]
            record, _ = json.JSONDecoder().raw_decode(rest)
            assert str(record["id"]) == order.id


def test_failure_line_of_a_csv_order_whose_first_row_spans_lines(tmp_path: Path) -> None:
    orders = corpus.make_orders(40, 7, "shopify")
    victim = next(o for o in orders if not o.identifiable)
    orders[orders.index(victim)] = replace(victim, notes="first line\nsecond\nthird")
    path = corpus.write_shopify_csv(orders, tmp_path / "orders.csv")
    inv = invoke([path], tmp_path, "run", "--endpoint", "single")
    failure = next(f for f in inv.failures if f["order_id"] == victim.id)
    first, last = _csv_spans(path, "Name")[victim.number]
    assert last > first  # the precondition: the first row spans lines
    assert failure["line"] == first


@pytest.mark.parametrize("name", NAMES)
def test_placed_order_id_value_currency_time_and_backfill(
    runs: Callable[[str], Run], name: str
) -> None:
    run, fmt = runs(name), FORMATS[name]
    for o, events in run.mapped():
        (placed,) = events[PLACED]
        oid = order_id(fmt, o)
        assert placed["unique_id"] == placed["properties"]["OrderId"] == oid
        assert placed["value_currency"] == currency(fmt, o)
        assert_money(placed["value"], o.total, o.currency)
        assert placed["time"] == iso(fmt, o.created_at)
        assert placed["backfill"] is True


@pytest.mark.parametrize("name", NAMES)
def test_placed_order_properties(runs: Callable[[str], Run], name: str) -> None:
    run, fmt = runs(name), FORMATS[name]
    for o, events in run.mapped():
        props = events[PLACED][0]["properties"]
        expected = placed_properties(fmt, o)
        assert set(props) == {*expected, "Items"}, o.id
        for key, value in expected.items():
            assert props[key] == value, (o.id, key)


@pytest.mark.parametrize("name", NAMES)
def test_placed_order_items_one_per_line(runs: Callable[[str], Run], name: str) -> None:
    run, fmt = runs(name), FORMATS[name]
    for o, events in run.mapped():
        items = events[PLACED][0]["properties"]["Items"]
        assert len(items) == len(o.lines), o.id
        for item, line in zip(items, o.lines, strict=True):
            got = {k: v for k, v in item.items() if k != "ProductID"}
            assert got == expected_item(fmt, line), o.id
            assert_money(item["ItemPrice"], line.price, o.currency)
            assert_money(item["RowTotal"], line.price * line.quantity, o.currency)


@pytest.mark.parametrize("name", NAMES)
def test_product_id_only_when_the_product_is_known(runs: Callable[[str], Run], name: str) -> None:
    run, fmt = runs(name), FORMATS[name]
    for o, events in run.mapped():
        items = events[PLACED][0]["properties"]["Items"]
        products = events[ORDERED]
        for item, product, line in zip(items, products, o.lines, strict=True):
            assert item.get("ProductID") == expected_product_id(fmt, line), o.id
            assert product["properties"].get("ProductID") == expected_product_id(fmt, line)


@pytest.mark.parametrize("name", NAMES)
def test_ordered_product_per_line_item(runs: Callable[[str], Run], name: str) -> None:
    run, fmt = runs(name), FORMATS[name]
    for o, events in run.mapped():
        oid = order_id(fmt, o)
        products = events[ORDERED]
        assert len(products) == len(o.lines), o.id
        keys = line_keys(o.lines)
        rows = Decimal(0)
        for product, line, key in zip(products, o.lines, keys, strict=True):
            assert product["unique_id"] == f"{oid}_{key}"
            assert_money(product["value"], line.price * line.quantity, o.currency)
            assert product["value_currency"] == currency(fmt, o)
            assert product["time"] == iso(fmt, o.created_at)
            assert product["backfill"] is True
            props = product["properties"]
            item = expected_item(fmt, line)
            if "Brand" in item:
                item["ProductBrand"] = item.pop("Brand")
            got = {k: v for k, v in props.items() if k != "ProductID"}
            assert got == {"OrderId": oid, **item}, o.id
            assert props["RowTotal"] == product["value"]
            rows += product["value"]
        row_totals = sum((i["RowTotal"] for i in events[PLACED][0]["properties"]["Items"]), 0)
        assert rows == row_totals == o.items_total


@pytest.mark.parametrize("name", NAMES)
def test_unique_ids_are_distinct_within_the_run(runs: Callable[[str], Run], name: str) -> None:
    run = runs(name)
    for metric in (PLACED, ORDERED):
        ids = [e["unique_id"] for e in run.events if e["metric"] == metric]
        assert len(ids) == len(set(ids)), metric
    by_order = run.by_order()
    for events in by_order.values():
        placed = next(e["unique_id"] for e in events if e["metric"] == PLACED)
        for event in events:
            if event["metric"] in (FULFILLED, CANCELLED, REFUNDED):
                assert event["unique_id"] == placed


@pytest.mark.parametrize("name", NAMES)
def test_fulfilled_order_iff_fulfilled(runs: Callable[[str], Run], name: str) -> None:
    run, fmt = runs(name), FORMATS[name]
    seen = 0
    for o, events in run.mapped():
        placed = events[PLACED][0]
        fulfilled = events[FULFILLED]
        assert len(fulfilled) == is_fulfilled(fmt, o), o.id
        for event in fulfilled:
            seen += 1
            assert event["time"] == fulfilled_time(fmt, o)
            assert event["unique_id"] == placed["unique_id"]
            assert_money(event["value"], o.total, o.currency)
            assert event["properties"] == placed["properties"]
            assert event["profile"] == placed["profile"]
    assert seen


@pytest.mark.parametrize("name", NAMES)
def test_cancelled_order_iff_cancelled(runs: Callable[[str], Run], name: str) -> None:
    run, fmt = runs(name), FORMATS[name]
    seen = 0
    for o, events in run.mapped():
        placed = events[PLACED][0]
        cancelled = events[CANCELLED]
        assert len(cancelled) == (o.cancelled_at is not None), o.id
        for event in cancelled:
            seen += 1
            assert event["time"] == cancelled_time(fmt, o)
            assert event["unique_id"] == placed["unique_id"]
            assert_money(event["value"], o.total, o.currency)
            props = dict(event["properties"])
            reason = props.pop("Reason", None)
            assert reason == (o.cancel_reason if fmt.kind == "shopify-json" else None)
            assert props == placed["properties"]
    assert seen


@pytest.mark.parametrize("name", NAMES)
def test_refunded_order_iff_refunded(runs: Callable[[str], Run], name: str) -> None:
    run, fmt = runs(name), FORMATS[name]
    seen = Counter[str]()
    for o, events in run.mapped():
        placed = events[PLACED][0]
        refunded = events[REFUNDED]
        assert len(refunded) == (o.refunded_total > 0), o.id
        for event in refunded:
            seen["partial" if o.refunded_total < o.total else "full"] += 1
            seen["two"] += len(o.refunds) > 1
            assert_money(event["value"], o.refunded_total, o.currency)
            assert event["value_currency"] == currency(fmt, o)
            assert event["time"] == refunded_time(fmt, o), o.id
            assert event["time"] >= placed["time"]
            assert event["unique_id"] == placed["unique_id"]
            props = dict(event["properties"])
            assert props.pop("Reason", None) == refund_reason(fmt, o)
            assert props == placed["properties"]
    assert seen["partial"] and seen["full"] and seen["two"]


@pytest.mark.parametrize("name", NAMES)
def test_no_other_events(runs: Callable[[str], Run], name: str) -> None:
    run = runs(name)
    metrics = {PLACED, ORDERED, FULFILLED, CANCELLED, REFUNDED}
    assert {e["metric"] for e in run.events} == metrics
    expected = sum(
        1
        + len(o.lines)
        + is_fulfilled(run.fmt, o)
        + (o.cancelled_at is not None)
        + (o.refunded_total > 0)
        for o in run.truth
        if sendable(run.fmt, o)
    )
    assert len(run.events) == expected


def latest_orders(run: Run) -> set[str]:
    """The id of each profile's latest order (by creation time as the export gives it: a
    WooCommerce CSV has minutes only; then by id): only its events carry the profile's name
    and address (`--profile-attributes latest`, the default). A WooCommerce CSV is sent one
    file per currency: a run decides within its own file."""
    best: dict[tuple[str, str], tuple[str, str]] = {}
    for o, events in run.mapped():
        who = (
            o.currency if run.fmt.kind == "woo-csv" else "",
            o.email if o.email_valid else str(o.phone_e164 or f"id:{o.customer_id}"),
        )
        placed = events[PLACED][0]["time"]
        best[who] = max(best.get(who, ("", "")), (placed, o.id))
    return {oid for _, oid in best.values()}


@pytest.mark.parametrize("name", NAMES)
def test_profile_of_every_event(runs: Callable[[str], Run], name: str) -> None:
    run, fmt = runs(name), FORMATS[name]
    cases = Counter[str]()
    latest = latest_orders(run)
    for o, events in run.mapped():
        expected = expected_profile(fmt, o)
        if o.id not in latest:  # an older order of its customer: identifiers only
            identifiers = ("email", "phone_number", "external_id")
            expected = {k: v for k, v in expected.items() if k in identifiers}
        cases["identifiers only"] += o.id not in latest
        for metric_events in events.values():
            for event in metric_events:
                assert event["profile"] == expected, o.id
        phone = expected.get("phone_number")
        assert phone is None or E164.match(phone)
        cases["email"] += "email" in expected
        cases["phone only"] += "email" not in expected
        cases["email and phone"] += "email" in expected and phone is not None
    assert cases["email"] and cases["phone only"] and cases["email and phone"]
    assert cases["identifiers only"]  # the corpus has customers with several orders


def _summary_counts(stdout: str) -> dict[str, int]:
    counts = {}
    for label in ("Orders read", "mapped", "rejected"):
        match = re.search(rf"^\W*{label}\s*│\s*([\d,]+)", stdout, re.MULTILINE)
        assert match, (label, stdout)
        counts[label] = int(match.group(1).replace(",", ""))
    return counts


@pytest.mark.parametrize("name", NAMES)
def test_every_order_is_accounted_for(runs: Callable[[str], Run], name: str) -> None:
    run = runs(name)
    mapped = sum(e["metric"] == PLACED for e in run.events)
    rejected = len(run.failures)
    assert mapped + rejected == len(run.truth)
    totals = Counter[str]()
    for inv in run.single:
        totals.update(_summary_counts(inv.stdout))
        assert "do not add up" not in inv.stdout
    assert totals == {"Orders read": len(run.truth), "mapped": mapped, "rejected": rejected}


def test_skipped_orders_keep_the_books_balanced(tmp_path: Path) -> None:
    """The same file twice (duplicates) and a --since window: read = mapped + rejected + skipped."""
    truth = corpus.make_orders(60, 211, "shopify")
    path = corpus.write_shopify_json(truth, tmp_path / "orders.json")
    since = sorted(o.created_at for o in truth)[20].astimezone(UTC)
    inv = invoke(
        [path, path], tmp_path, "twice", "--since", since.isoformat(), "--endpoint", "single"
    )
    inside = [o for o in truth if o.created_at >= since]
    mapped = sum(e["metric"] == PLACED for e in inv.events)
    json_fmt = FORMATS["shopify-json-wrapped"]
    assert mapped == sum(sendable(json_fmt, o) for o in inside)
    assert len(inv.failures) == sum(not sendable(json_fmt, o) for o in inside)
    outside, duplicates = len(truth) - len(inside), len(truth)
    counts = _summary_counts(inv.stdout)
    assert counts == {
        "Orders read": 2 * len(truth),
        "mapped": mapped,
        "rejected": len(inv.failures),
    }
    skipped = {
        m.group(1).strip(): int(m.group(2).replace(",", ""))
        for m in re.finditer(r"skipped: ([^│]+?)\s*│\s*([\d,]+)", inv.stdout)
    }
    assert sum(skipped.values()) == outside + duplicates
    assert counts["Orders read"] == mapped + len(inv.failures) + sum(skipped.values())


def test_a_rerun_dry_run_lists_each_rejected_order_once(tmp_path: Path) -> None:
    """The failures file is this run's: a second dry run does not add to the first's."""
    truth = corpus.make_orders(40, 212, "shopify")
    path = corpus.write_shopify_json(truth, tmp_path / "orders.json")
    first = invoke([path], tmp_path, "again")
    second = invoke([path], tmp_path, "again")
    rejected = sum(not sendable(FORMATS["shopify-json-wrapped"], o) for o in truth)
    assert len(first.failures) == rejected
    assert _summary_counts(second.stdout)["rejected"] == rejected
    assert len(second.failures) == rejected


@pytest.mark.parametrize("zone", ["UTC", "Asia/Tokyo", "America/New_York"])
def test_woo_csv_without_currency_or_zone_uses_the_documented_defaults(
    tmp_path: Path, zone: str
) -> None:
    """No currency column: USD with a warning (or --currency). No zone: --timezone, else UTC."""
    truth = corpus.make_orders(30, 304, "woocommerce")
    path = corpus.write_woo_csv(truth, tmp_path / "orders.csv")
    extra = [] if zone == "UTC" else ["--timezone", zone]
    inv = invoke([path], tmp_path, "defaults", "--endpoint", "single", *extra)
    assert "USD assumed" in inv.stdout
    placed = {e["properties"]["OrderId"]: e for e in inv.events if e["metric"] == PLACED}
    assert placed
    for o in truth:
        if o.number in placed:
            event = placed[o.number]
            wall = o.created_at.replace(tzinfo=None, second=0)
            moment = wall.replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)
            assert event["time"] == moment.isoformat()
            assert event["value_currency"] == "USD"
            assert_money(event["value"], o.total, "USD")


def _canonical(event: dict[str, Any]) -> str:
    return json.dumps(event, sort_keys=True, default=str)


@pytest.mark.parametrize("name", NAMES)
def test_bulk_carries_the_same_events_as_single(runs: Callable[[str], Run], name: str) -> None:
    run = runs(name)
    bulk = [e for inv in run.bulk for e in inv.events]
    assert Counter(map(_canonical, bulk)) == Counter(map(_canonical, run.events))
    for single, grouped in zip(run.single, run.bulk, strict=True):
        assert grouped.bodies < single.bodies == len(single.events)
        assert grouped.exit_code == single.exit_code
        assert grouped.failures == single.failures


@pytest.mark.parametrize("name", ["shopify-csv-79", "shopify-json-wrapped", "woo-json-array"])
def test_trigger_flows_leaves_backfill_out(
    runs: Callable[[str], Run], name: str, tmp_path: Path
) -> None:
    run = runs(name)
    inv = invoke(run.files, tmp_path, "flows", "--endpoint", "single", "--trigger-flows")
    assert all("backfill" not in e for e in inv.events)
    without = [{k: v for k, v in e.items() if k != "backfill"} for e in run.events]
    assert Counter(map(_canonical, inv.events)) == Counter(map(_canonical, without))
