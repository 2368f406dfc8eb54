"""The synthetic corpus renders what it promises (checks the fixture, not the tool)."""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import io
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

try:  # tests/ as a package or as a plain directory on sys.path
    from . import corpus
except ImportError:
    import corpus

SAMPLE_DATA = Path(__file__).resolve().parent.parent / "sample_data"


def _read_csv(path: Path, encoding: str = "utf-8") -> list[dict[str, str]]:
    with path.open(encoding=encoding, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("platform", corpus.PLATFORMS)
@pytest.mark.parametrize("seed", [0, 1, 42])
def test_every_awkward_case_appears_in_60_orders(platform: str, seed: int) -> None:
    orders = corpus.make_orders(60, seed, platform)
    seen = Counter(case for order in orders for case in order.cases)
    assert set(seen) >= corpus.AWKWARD_CASES
    assert {"offset" + o for o in corpus.OFFSETS} <= set(seen)
    assert {o.currency for o in orders} == set(corpus.CURRENCIES)
    assert len({o.created_at.year for o in orders}) >= 6
    assert any(not o.identifiable for o in orders)


@pytest.mark.parametrize("platform", corpus.PLATFORMS)
def test_truth_invariants(platform: str) -> None:
    orders = corpus.make_orders(200, 5, platform)
    assert orders == corpus.make_orders(200, 5, platform)  # deterministic
    assert len({o.id for o in orders}) == len({o.number for o in orders}) == len(orders)
    low = 5_000_000_000 if platform == "shopify" else 20_000
    assert all(int(o.id) >= low and o.id.isdigit() for o in orders)
    assert all(o.number.startswith("#") == (platform == "shopify") for o in orders)
    for o in orders:
        assert o.created_at.utcoffset() is not None
        assert o.total == o.subtotal + o.shipping + o.taxes > 0
        assert o.subtotal == o.items_total - o.discount_amount
        assert o.fulfilled_at is None or o.fulfilled_at > o.created_at
        assert o.cancelled_at is None or o.cancelled_at > o.created_at
        assert all(r.created_at > o.created_at and r.amount > 0 for r in o.refunds)
        if "refunded_partial" in o.cases:
            assert o.financial_status == "partially_refunded"
            assert 0 < o.refunded_total < o.total
        if o.financial_status == "refunded":
            assert o.refunded_total == o.total
        assert all(line.quantity >= 1 and line.price > 0 for line in o.lines)
        if "malformed_email_no_phone" in o.cases or "no_identifier" in o.cases:
            assert not o.identifiable
        if "malformed_email_with_phone" in o.cases:
            assert not o.email_valid and o.identifiable


def test_seeds_and_platforms_never_share_ids() -> None:
    ids = [o.id for seed in (11, 12) for o in corpus.make_orders(300, seed, "shopify")]
    ids += [o.id for seed in (21, 22) for o in corpus.make_orders(300, seed, "woocommerce")]
    assert len(ids) == len(set(ids))


def test_phone_expectations_match_phonenumbers() -> None:
    phonenumbers = pytest.importorskip("phonenumbers")
    for platform in corpus.PLATFORMS:
        for o in corpus.make_orders(200, 3, platform):
            if o.phone is None:
                continue
            try:
                parsed = phonenumbers.parse(o.phone, o.billing.country_code)
            except phonenumbers.NumberParseException:
                assert o.phone_e164 is None
                continue
            if o.phone_e164 is None:
                assert not phonenumbers.is_valid_number(parsed), o.phone
            else:
                assert phonenumbers.is_valid_number(parsed), o.phone
                e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
                assert e164 == o.phone_e164


@pytest.mark.parametrize("columns", [75, 78, 79])
def test_shopify_csv_columns_and_first_row_rule(tmp_path: Path, columns: int) -> None:
    orders = corpus.make_orders(40, 2, "shopify")
    path = corpus.write_shopify_csv(orders, tmp_path / "o.csv", columns=columns)
    with path.open(encoding="utf-8", newline="") as handle:
        header = next(csv.reader(handle))
    assert len(header) == columns
    assert ("Payment References" in header) == (columns == 79)
    rows = _read_csv(path)
    assert len(rows) == sum(len(o.lines) for o in orders)
    by_name: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        assert row["Name"] and row["Created at"] and row["Lineitem name"]
        by_name.setdefault(row["Name"], []).append(row)
    names = list(dict.fromkeys(row["Name"] for row in rows))
    assert names == [o.number for o in sorted(orders, key=lambda o: o.created_at, reverse=True)]
    truth = {o.number: o for o in orders}
    order_level = [c for c in header if c not in corpus.SHOPIFY_REPEATED]
    for name, group in by_name.items():
        first, rest = group[0], group[1:]
        assert first["Id"] == truth[name].id
        assert first["Financial Status"] and first["Currency"] and first["Total"]
        total = Decimal(first["Subtotal"]) + Decimal(first["Shipping"]) + Decimal(first["Taxes"])
        assert Decimal(first["Total"]) == total == truth[name].total
        assert all(row[c] == "" for row in rest for c in order_level)
        assert all(row["Email"] == first["Email"] for row in rest)


def test_shopify_csv_quirks(tmp_path: Path) -> None:
    orders = corpus.make_orders(60, 4, "shopify")
    path = corpus.write_shopify_csv(orders, tmp_path / "o.csv", bom=True, crlf=False)
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbfName,") and b"\r\n" not in raw.split(b"\n")[0]
    rows = _read_csv(path, encoding="utf-8-sig")
    firsts = [r for r in rows if r["Id"]]
    assert any(r["Billing Zip"].startswith("'0") for r in firsts)
    assert any("\n" in r["Notes"] and '"' in r["Notes"] for r in firsts)
    assert any(r["Refunded Amount"] not in ("0.00", r["Total"]) for r in firsts)
    assert any(r["Cancelled at"] for r in firsts) and any(r["Fulfilled at"] for r in firsts)
    created = datetime.strptime(firsts[0]["Created at"], "%Y-%m-%d %H:%M:%S %z")
    assert created.utcoffset() is not None
    skus = Counter((r["Name"], r["Lineitem sku"]) for r in rows if r["Lineitem sku"])
    assert max(skus.values()) >= 2  # the same SKU on two lines of one order
    assert any(r["Lineitem name"] == "Tip" and Decimal(r["Lineitem price"]) > 0 for r in rows)


@pytest.mark.parametrize("shape", ["wrapped", "array", "jsonl"])
def test_shopify_json_shapes(tmp_path: Path, shape: str) -> None:
    orders = corpus.make_orders(25, 6, "shopify")
    path = corpus.write_shopify_json(orders, tmp_path / "o.json", shape=shape)
    text = path.read_text(encoding="utf-8")
    if shape == "jsonl":
        docs = [json.loads(line) for line in text.splitlines()]
    else:
        loaded = json.loads(text)
        if shape == "wrapped":
            assert list(loaded) == ["orders"]
            loaded = loaded["orders"]
        docs = loaded
    assert len(docs) == 25
    doc = docs[0]
    assert isinstance(doc["id"], int) and isinstance(doc["total_price"], str)
    assert datetime.fromisoformat(doc["created_at"]).utcoffset() is not None
    assert any(line["product_id"] is None for d in docs for line in d["line_items"])
    assert any(
        d["refunds"] and d["refunds"][0]["transactions"][0]["kind"] == "refund" for d in docs
    )


def test_woo_json_dates_and_entities(tmp_path: Path) -> None:
    orders = corpus.make_orders(40, 7, "woocommerce")
    path = corpus.write_woo_json(orders, tmp_path / "o.json")
    docs = json.loads(path.read_text(encoding="utf-8"))
    truth = {int(o.id): o for o in orders}
    for doc in docs:
        order = truth[doc["id"]]
        local = datetime.fromisoformat(doc["date_created"])
        gmt = datetime.fromisoformat(doc["date_created_gmt"])
        assert local.tzinfo is None and gmt.tzinfo is None
        assert gmt.replace(tzinfo=UTC) == order.created_at
        assert local - gmt == order.created_at.utcoffset()
        assert doc["status"] == order.woo_status
        assert all(r["total"].startswith("-") for r in doc["refunds"])
    names = [line["name"] for doc in docs for line in doc["line_items"]]
    assert any("&ndash;" in n or "&amp;" in n for n in names)
    assert {d["status"] for d in docs} >= {"completed", "cancelled", "refunded", "processing"}


def test_woo_csv_bom_header_and_repeated_order_columns(tmp_path: Path) -> None:
    orders = corpus.make_orders(30, 8, "woocommerce")
    path = corpus.write_woo_csv(orders, tmp_path / "o.csv")
    raw = path.read_bytes()
    assert raw.startswith(b'\xef\xbb\xbf"Order Number","Order Status","Order Date"')
    assert raw.split(b"\r\n")[0][3:].decode() == corpus.WOO_CSV_HEADER
    rows = _read_csv(path, encoding="utf-8-sig")
    assert len(rows[0]) == 48 and "Currency" not in rows[0]
    assert len(rows) == sum(len(o.lines) for o in orders)
    truth = {o.number: o for o in orders}
    for row in rows:
        order = truth[row["Order Number"]]
        assert row["Order Total Amount"] == corpus.money(order.total)  # on every row
        assert row["Order Date"] == order.created_at.strftime("%Y-%m-%d %H:%M")


def test_broken_files(tmp_path: Path) -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    files = corpus.broken_files(tmp_path, now=now)
    assert files["empty"].stat().st_size == 0
    with pytest.raises(json.JSONDecodeError):
        json.loads(files["truncated_json"].read_text(encoding="utf-8"))
    with pytest.raises(UnicodeDecodeError):
        files["latin1"].read_bytes().decode("utf-8")
    assert "é" in files["latin1"].read_bytes().decode("latin-1")
    assert _read_csv(files["header_only"]) == []
    assert "Created at" not in _read_csv(files["missing_created_at"])[0]

    def victim(key: str) -> dict[str, str]:
        rows = _read_csv(files[key])
        return next(r for r in rows if r["Name"] == corpus.BROKEN_ORDER_NAME and r["Id"])

    assert victim("bad_date")["Created at"] == "not a date"
    assert victim("bad_total")["Total"] == "12,3x"
    assert victim("year_1970")["Created at"].startswith("1970-")
    future = datetime.strptime(victim("future_date")["Created at"], "%Y-%m-%d %H:%M:%S %z")
    assert future > now + timedelta(days=3 * 365)
    csv.field_size_limit(10**7)
    try:
        assert len(victim("huge_note")["Notes"]) >= 200 * 1024
    finally:
        csv.field_size_limit(131072)


def test_sample_data_is_current(tmp_path: Path) -> None:
    """sample_data/ holds what sample_data/generate.py writes (else: rerun it)."""
    script = SAMPLE_DATA / "generate.py"
    spec = importlib.util.spec_from_file_location("sample_data_generate", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with contextlib.redirect_stdout(io.StringIO()):
        module.main(tmp_path)
    for name in module.FILES:
        assert (tmp_path / name).read_bytes() == (SAMPLE_DATA / name).read_bytes(), name
