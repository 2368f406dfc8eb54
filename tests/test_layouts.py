"""User layout files, BigCommerce, decimal commas, and the inspect report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from klaviyo_backfill.cli import main
from klaviyo_backfill.inputs.layouts import builtin_layouts

CART = Path(__file__).parent.parent / "sample_data" / "custom_cart"


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def events(path: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line)["data"]["attributes"] for line in path.read_text().splitlines()]


def name(attributes: dict) -> str:  # type: ignore[type-arg]
    return str(attributes["metric"]["data"]["attributes"]["name"])


def test_builtin_layouts_are_data_files() -> None:
    assert set(builtin_layouts()) == {
        "shopify-csv", "shopify-graphql", "shopify-json", "woocommerce-csv", "woocommerce-json", "bigcommerce-json",
    }  # fmt: skip


def test_custom_cart_layout_maps_us_dates_and_external_ids(tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    code, output = invoke("send", str(CART / "orders.csv"), "--layout", str(CART / "layout.toml"),
                          "--dry-run", "--endpoint", "single", "--output", str(out), "--failures", str(tmp_path / "f"))  # fmt: skip
    assert code == 0, output
    rows = (CART / "orders.csv").read_text().splitlines()[1:]
    first = rows[0].split(",")
    placed = [a for a in events(out) if name(a) == "Placed Order"]
    assert len(placed) == len({r.split(",")[0] for r in rows})
    one = next(a for a in placed if a["unique_id"] == first[0])
    assert one["profile"]["data"]["attributes"]["external_id"] == first[2]
    assert "email" not in one["profile"]["data"]["attributes"]
    # "02/01/2022 12:17 AM" in Chicago (UTC-6 in February) is 06:17 UTC
    month, day, year = first[1].split(" ")[0].split("/")
    assert one["time"].startswith(f"{year}-{month}-{day}T")
    products = [a for a in events(out) if name(a) == "Ordered Product"]
    assert len(products) == len(rows)


def test_layout_with_unknown_key_exits_2_naming_it(tmp_path: Path) -> None:
    layout = tmp_path / "bad.toml"
    layout.write_text('[order]\nid = "Order No"\ncreated_at = "Placed"\nshoe_size = "Size"\n')
    code, output = invoke("send", str(CART / "orders.csv"), "--layout", str(layout), "--dry-run")
    assert code == 2
    assert "shoe_size" in output and str(layout) in output


@pytest.mark.parametrize(
    "text",
    ['[order]\nid = "Order No"\ncreated_at = "Placed"\n[options]\ntimezone = "America/Chicagoo"\n',
     '[order]\nid = "Order No"\ncreated_at = {path = "Placed", timezone = "Mars/Olympus"}\n'],
)  # fmt: skip
def test_layout_naming_an_unknown_zone_exits_2_naming_the_layout(tmp_path: Path, text: str) -> None:
    layout = tmp_path / "zone.toml"
    layout.write_text(text)
    code, output = invoke("send", str(CART / "orders.csv"), "--layout", str(layout), "--dry-run")
    assert code == 2, output
    assert f"{layout}:" in output and "unknown time zone" in output


def test_layout_naming_a_missing_column_exits_2_naming_it(tmp_path: Path) -> None:
    layout = tmp_path / "missing.toml"
    layout.write_text('[order]\nid = "Order No"\ncreated_at = "Placed At"\n')
    code, output = invoke("send", str(CART / "orders.csv"), "--layout", str(layout), "--dry-run")
    assert code == 2
    assert "'Placed At'" in output


def test_order_without_total_sums_its_lines_and_decimal_commas_parse(tmp_path: Path) -> None:
    export = tmp_path / "orders.csv"
    export.write_text(
        "nr;datum;klant;artikel;aantal;prijs\n"
        "1;31-12-2023 23:30;K1;A;2;1.234,50\n"
        "1;31-12-2023 23:30;K1;B;1;0,99\n"
    )
    layout = tmp_path / "layout.toml"
    layout.write_text(
        '[order]\nid = "nr"\ncreated_at = "datum"\nexternal_id = "klant"\n'
        '[line]\nname = "artikel"\nquantity = "aantal"\nprice = "prijs"\n'
        '[options]\ndelimiter = ";"\ndecimal_comma = true\ndate_format = "%d-%m-%Y %H:%M"\n'
        'timezone = "Europe/Amsterdam"\ncurrency = "EUR"\n'
    )
    out = tmp_path / "o.jsonl"
    code, output = invoke("send", str(export), "--layout", str(layout), "--dry-run", "--endpoint", "single",
                          "--output", str(out), "--failures", str(tmp_path / "f"))  # fmt: skip
    assert code == 0, output
    placed = next(a for a in events(out) if name(a) == "Placed Order")
    assert placed["value"] == 2469.99 and placed["value_currency"] == "EUR"
    assert placed["time"] == "2023-12-31T22:30:00+00:00"


BIGCOMMERCE = [
    {"id": 100, "date_created": "Sat, 03 Mar 2018 02:35:28 +0000", "date_shipped": "Mon, 05 Mar 2018 10:00:00 +0000",
     "status": "Shipped", "total_inc_tax": "27.0000", "refunded_amount": "0.0000", "currency_code": "USD",
     "billing_address": {"first_name": "Ann", "last_name": "Lee", "email": "ann@example.com", "country_iso2": "US"},
     "products": {"resource": "/orders/100/products"}},
    {"id": 101, "date_created": "Sun, 04 Mar 2018 12:00:00 -0500", "status": "Refunded", "total_inc_tax": "10.0000",
     "refunded_amount": "10.0000", "currency_code": "USD",
     "billing_address": {"first_name": "Bo", "last_name": "Ng", "email": "bo@example.com", "country_iso2": "US"},
     "products": [{"id": 9, "order_id": 101, "product_id": 5, "name": "Cap", "sku": "CAP", "quantity": 1, "price_ex_tax": "10.0000"}]},
]  # fmt: skip


def test_bigcommerce_orders_with_nested_and_separate_products(tmp_path: Path) -> None:
    orders = tmp_path / "orders.json"
    orders.write_text(json.dumps(BIGCOMMERCE))
    products = tmp_path / "products.json"
    products.write_text(json.dumps([{"order_id": 100, "product_id": 77, "name": "Mug", "sku": "MUG",
                                     "quantity": 2, "price_ex_tax": "10.0000"}]))  # fmt: skip
    out = tmp_path / "o.jsonl"
    code, output = invoke("send", str(orders), "--products", str(products), "--dry-run", "--endpoint", "single",
                          "--output", str(out), "--failures", str(tmp_path / "f"))  # fmt: skip
    assert code == 0, output
    got = {(name(a), a["unique_id"]): a for a in events(out)}
    assert got[("Placed Order", "100")]["time"] == "2018-03-03T02:35:28+00:00"
    assert got[("Ordered Product", "100_MUG")]["value"] == 20.0
    assert got[("Fulfilled Order", "100")]["time"] == "2018-03-05T10:00:00+00:00"
    assert got[("Placed Order", "101")]["time"] == "2018-03-04T17:00:00+00:00"
    assert got[("Refunded Order", "101")]["value"] == 10.0


def test_bigcommerce_orders_with_only_a_link_to_their_products_ask_for_products(
    tmp_path: Path,
) -> None:
    """Sent without them, those orders would reach Klaviyo with no items: a Placed Order that
    a later run with --products could not mend (Klaviyo keeps the first)."""
    orders = tmp_path / "orders.json"
    orders.write_text(json.dumps(BIGCOMMERCE))
    code, output = invoke("send", str(orders), "--dry-run", "--failures", str(tmp_path / "f"))
    assert code == 2, output
    said = " ".join(output.split())
    assert f"{orders}:1: order 100 has no line items in the export" in said
    assert "--products" in said


def test_bigcommerce_orders_missing_from_products_are_warned(tmp_path: Path) -> None:
    orders = tmp_path / "orders.json"
    orders.write_text(json.dumps(BIGCOMMERCE))
    products = tmp_path / "products.json"
    products.write_text(json.dumps([{"order_id": 999, "name": "Mug", "sku": "MUG",
                                     "quantity": 1, "price_ex_tax": "10.0000"}]))  # fmt: skip
    summary = tmp_path / "summary.json"
    code, output = invoke("send", str(orders), "--products", str(products), "--dry-run",
                          "--failures", str(tmp_path / "f"), "--summary-json", str(summary))  # fmt: skip
    assert code == 0, output
    report = json.loads(summary.read_text())
    warned = "no line items for the order in --products"
    assert report["warnings"][warned] == 1  # order 100; 101 nests its own
    assert report["warning_examples"][warned] == [f"{orders}:1"]


def test_inspect_reports_counts_money_months_and_problems(tmp_path: Path) -> None:
    sample = (
        Path(__file__).parent.parent
        / "sample_data"
        / "problems"
        / "shopify_orders_with_problems.csv"
    )
    code, output = invoke("inspect", str(sample))
    assert code == 1  # orders would be rejected, as the dry run says
    for heading in (
        "Orders",
        "Line items",
        "Distinct customers",
        "Date range",
        "Revenue per month",
        "Rejected orders",
    ):
        assert heading in output
    code, output = invoke("inspect", str(sample), "--json")
    report = json.loads(output)
    assert report["balanced"] is True
    assert (
        report["orders_read"]
        == report["orders_mapped"] + report["orders_rejected"] + report["orders_skipped"]
    )
    assert all(examples for examples in report["rejected_examples"].values())
    assert all(
        e.startswith(f"{sample}:") for es in report["rejected_examples"].values() for e in es
    )


@pytest.mark.parametrize("fmt", ["shopify-csv", "woocommerce-csv"])
def test_inspect_with_a_forced_format_on_the_wrong_file_explains(tmp_path: Path, fmt: str) -> None:
    export = tmp_path / "x.csv"
    export.write_text("a,b\n1,2\n")
    code, output = invoke("inspect", str(export), "--format", fmt)
    assert code == 2
    assert "has no column" in output


def test_address_layout_keys_are_the_address_fields_in_order() -> None:
    from dataclasses import fields

    from klaviyo_backfill.inputs.layouts import ADDRESS_KEYS
    from klaviyo_backfill.model import Address

    assert tuple(f.name for f in fields(Address)) == ADDRESS_KEYS
