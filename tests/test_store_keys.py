"""Stores (issue #20, item 4), unit by unit: an order is keyed by store and id where a store
is named, in its unique ids, the reader's keys, the account's ledger and the read-back;
without a store every key is what it always was."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from klaviyo_backfill.errors import UsageError
from klaviyo_backfill.inputs.export import read_orders
from klaviyo_backfill.inputs.layouts import builtin_layouts, load
from klaviyo_backfill.inputs.sources import Input
from klaviyo_backfill.inputs.values import store_problem
from klaviyo_backfill.klaviyo.shapes import HeldEvent, events_page
from klaviyo_backfill.mapping.convert import Converter, Settings
from klaviyo_backfill.mapping.events import map_order
from klaviyo_backfill.model import Line, Order
from klaviyo_backfill.options import InputOptions, SendOptions
from klaviyo_backfill.pipeline.job import job_from
from klaviyo_backfill.pipeline.prepare import raw_id
from klaviyo_backfill.state.account_ledger import AccountLedger

WOO = builtin_layouts()["woocommerce-csv"]
HEADER = '"Order Number","Order Status","Order Date","Email (Billing)","Order Total Amount",'
HEADER += '"Name","Quantity","Item Cost","SKU"\n'


def order(store: str | None = None) -> Order:
    return Order(
        source="t", line=1, id="1001", created_at=datetime(2024, 1, 1, tzinfo=UTC),
        currency="USD", total=Decimal("30.00"), email="a@example.com", fulfilled=True,
        lines=[Line("Mug", 2, Decimal("15.00"), sku="MUG")], store=store,
    )  # fmt: skip


def test_without_a_store_unique_ids_and_properties_are_as_they_always_were() -> None:
    events = map_order(order())
    assert [(e.metric, e.unique_id) for e in events] == [
        ("Placed Order", "1001"), ("Ordered Product", "1001_MUG"), ("Fulfilled Order", "1001"),
    ]  # fmt: skip
    assert all("Store" not in e.properties and e.order_id == "1001" for e in events)


def test_with_a_store_unique_ids_carry_it_and_order_id_stays_the_shops() -> None:
    events = map_order(order("eu"))
    assert [e.unique_id for e in events] == ["eu:1001", "eu:1001_MUG", "eu:1001"]
    assert all(e.order_id == "eu:1001" for e in events)  # the checkpoint's and ledger's key
    assert all(e.properties["OrderId"] == "1001" for e in events)
    assert all(e.properties["Store"] == "eu" for e in events)


def export(tmp_path: Path, *rows: str) -> Path:
    path = tmp_path / "orders.csv"
    path.write_text(HEADER + "".join(row + "\n" for row in rows), encoding="utf-8")
    return path


ROWS = (
    "1001,completed,2024-01-02 10:00,a@example.com,30.00,Mug,2,15.00,MUG",
    "1002,completed,2024-01-03 10:00,b@example.com,10.00,Cup,1,10.00,CUP",
)


class Asked:
    """What the reader asks the account's ledger (a stand-in for delta.Delta's `rows`)."""

    BATCH = 10

    def __init__(self) -> None:
        self.keys: list[str | None] = []

    def rows(self, orders: list[tuple[str | None, list[list[str]]]]) -> list[tuple[bytes, Any]]:
        self.keys.extend(key for key, _ in orders)
        return [(b"digest", None) for _ in orders]


@pytest.mark.parametrize("held", [False, True], ids=["read", "asked-the-ledger"])
def test_the_reader_keys_each_order_by_store_and_id(tmp_path: Path, held: bool) -> None:
    source = Input(str(export(tmp_path, *ROWS)), WOO, "utf-8", store="a")
    asked = Asked()
    skipped: list[str] = []
    raws = list(read_orders(source, skipped.append if not held else None, None,
                            asked if held else None))  # fmt: skip
    assert [raw_id(raw) for raw in raws] == ["a:1001", "a:1002"]
    if held:
        assert asked.keys == ["a:1001", "a:1002"]
    else:
        assert skipped == ["a:1001", "a:1002"]  # the checkpoint is asked by key
    converted = Converter(WOO, Settings()).order(raws[0]) if not held else None
    if converted is not None:
        assert (converted.id, converted.store, converted.key) == ("1001", "a", "a:1001")


def test_without_a_store_the_reader_keys_orders_by_id_alone(tmp_path: Path) -> None:
    source = Input(str(export(tmp_path, *ROWS)), WOO, "utf-8")
    raws = list(read_orders(source))
    assert [raw_id(raw) for raw in raws] == ["1001", "1002"]
    assert all("store" not in raw.fields for raw in raws)


def test_a_layouts_store_column_wins_over_store_and_fills_where_blank(tmp_path: Path) -> None:
    text = Path(__file__).parent.parent / "sample_data" / "custom_cart" / "layout.toml"
    layout_file = tmp_path / "layout.toml"
    layout_file.write_text(text.read_text().replace('id = "Order No"',
                                                    'id = "Order No"\nstore = "Shop"'))  # fmt: skip
    layout = load(layout_file)
    csv_text = (text.parent / "orders.csv").read_text(encoding="utf-8-sig").splitlines()
    header, first, second = csv_text[0], csv_text[1], csv_text[2]
    path = tmp_path / "orders.csv"
    path.write_text(f"{header},Shop\n{first},north\n{second},\n", encoding="utf-8")
    raws = list(read_orders(Input(str(path), layout, "utf-8", store="main")))
    stores = [raw.fields.get("store") for raw in raws]
    assert stores[0] == "north" and stores[-1] == "main", stores


@pytest.mark.parametrize(
    "name",
    ["", "x" * 41, "a\x00b", "tab\there", "a:b", " eu", "eu "],
)
def test_a_store_name_is_short_printable_and_without_a_colon(name: str) -> None:
    assert store_problem(name) is not None


@pytest.mark.parametrize("name", ["eu", "Boutique Zürich", "shop-2", "x" * 40])
def test_usable_store_names(name: str) -> None:
    assert store_problem(name) is None


def test_store_is_checked_before_anything_is_read_and_binds_the_job(tmp_path: Path) -> None:
    path = str(export(tmp_path, *ROWS))
    with pytest.raises(UsageError, match="--store 'a:b'"):
        job_from(SendOptions(InputOptions((path,), store="a:b")))
    plain = job_from(SendOptions(InputOptions((path,))))
    a = job_from(SendOptions(InputOptions((path,), store="a")))
    b = job_from(SendOptions(InputOptions((path,), store="b")))
    assert len({plain.fingerprint(), a.fingerprint(), b.fingerprint()}) == 3
    assert plain.store is None and all(source.store is None for source in plain.inputs)
    assert all(source.store == "a" for source in a.inputs)


def test_a_ledger_from_before_stores_holds_its_orders_without_a_store(tmp_path: Path) -> None:
    path = tmp_path / "account.sqlite"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE orders (id TEXT PRIMARY KEY, digest BLOB, who TEXT NOT NULL, total TEXT,"
        " refunded TEXT, currency TEXT, events INTEGER NOT NULL, at REAL) WITHOUT ROWID;"
        "INSERT INTO orders VALUES ('1001', NULL, 'a@example.com', '30', NULL, 'USD', 3, 0);"
    )
    old.commit()
    old.close()
    path.chmod(0o600)
    ledger = AccountLedger(path)
    try:
        assert ledger.holds_storeless()
    finally:
        ledger.close()


@pytest.mark.parametrize(("store", "storeless"), [("a", False), (None, True)])
def test_a_send_notes_the_store_it_keys_orders_by(
    tmp_path: Path, store: str | None, storeless: bool
) -> None:
    ledger = AccountLedger(tmp_path / "account.sqlite")
    try:
        assert not ledger.holds_storeless()  # a new account holds nothing
        ledger.sending_for(store)
        assert ledger.holds_storeless() is storeless
    finally:
        ledger.close()


def page(properties: dict[str, Any]) -> list[HeldEvent]:
    doc = {"data": [{"type": "event", "id": "e1", "attributes": {
        "uuid": "u1", "timestamp": 100, "event_properties": properties}}]}  # fmt: skip
    into: list[HeldEvent] = []
    assert events_page(doc, "M1", 0, 200, into) is None
    return into


def test_the_read_back_keys_an_event_by_its_store_and_order_id() -> None:
    assert page({"OrderId": "1001", "Store": "b", "$value": 3})[0].order_id == "b:1001"
    assert page({"OrderId": "1001", "$value": 3})[0].order_id == "1001"
    assert page({"$value": 3})[0].order_id == ""


def test_json_orders_take_the_store_too() -> None:
    sample = Path(__file__).parent.parent / "sample_data" / "woocommerce_orders.json"
    layout = builtin_layouts()["woocommerce-json"]
    plain = [raw_id(raw) for raw in read_orders(Input(str(sample), layout, "utf-8"))]
    stored = [raw_id(raw) for raw in read_orders(Input(str(sample), layout, "utf-8", store="b"))]
    assert plain and all(key is not None and ":" not in key for key in plain)
    assert stored == [f"b:{key}" for key in plain]


def test_the_commands_the_tool_prints_carry_the_store() -> None:
    from klaviyo_backfill.commands.continuation import continuation
    from klaviyo_backfill.commands.repair import replay_args

    options = SendOptions(InputOptions(("/shops/eu.csv",), store="Boutique Zürich"))
    assert continuation(options).endswith("--store 'Boutique Zürich' --resume")
    args = replay_args(options)
    assert args[args.index("--store") + 1] == "Boutique Zürich"
    plain = SendOptions(InputOptions(("/shops/eu.csv",)))
    assert "--store" not in continuation(plain) and "--store" not in replay_args(plain)


def test_a_layouts_row_stores_are_noted_and_a_send_under_another_store_is_refused(
    tmp_path: Path,
) -> None:
    from klaviyo_backfill.mapping.events import identity_of
    from klaviyo_backfill.state.account_ledger import OrderFacts

    sample = Path(__file__).parent.parent / "sample_data" / "custom_cart"
    header, first, second = (sample / "orders.csv").read_text("utf-8-sig").splitlines()[:3]
    (tmp_path / "stores.toml").write_text((sample / "layout.toml").read_text().replace(
        'id = "Order No"', 'id = "Order No"\nstore = "Shop"'))  # fmt: skip
    (tmp_path / "shops.csv").write_text(f"{header},Shop\n{first},north\n{second},\n")
    (tmp_path / "north.csv").write_text(f"{header}\n{first}\n")
    rows = job_from(SendOptions(InputOptions((str(tmp_path / "shops.csv"),),
                                             layout=str(tmp_path / "stores.toml"))))  # fmt: skip
    ledger = AccountLedger(tmp_path / "account.sqlite")
    try:
        _refuse(rows, ledger)  # the account holds nothing: it goes
        assert ledger.stores() == {"north"}  # the rows' stores, noted
        source = rows.inputs[0]
        order = Converter(source.layout, rows.settings).order(next(read_orders(source)))
        assert order.key == "north:70001"
        facts = OrderFacts(identity_of(order), order.total, None, order.currency, 2,
                           order.created_at.timestamp())  # fmt: skip
        ledger.record([], [(order.key, None, facts)])  # sent
        layout = str(sample / "layout.toml")
        for store in ("south", None):  # the same order, under another store or none
            job = job_from(SendOptions(InputOptions((str(tmp_path / "north.csv"),),
                                                    layout=layout, store=store)))  # fmt: skip
            with pytest.raises(
                UsageError, match=r"1 of these orders .* as sent with --store north"
            ):
                _refuse(job, ledger)
        _refuse(rows, ledger)  # as sent before: goes
    finally:
        ledger.close()


def test_the_same_number_held_for_another_shop_does_not_hide_this_shops_order(
    tmp_path: Path,
) -> None:
    """The order is held as sent with --store north; another shop's order of the same number
    is held without a store. Sent without --store (forgotten) it is refused: the order held
    under its own key is another customer's. Held under both keys as the same order (doubled
    already), a send adds nothing: it is no reason to refuse."""
    from dataclasses import replace

    from klaviyo_backfill.mapping.events import identity_of
    from klaviyo_backfill.state.account_ledger import OrderFacts

    sample = Path(__file__).parent.parent / "sample_data" / "custom_cart"
    header, first = (sample / "orders.csv").read_text("utf-8-sig").splitlines()[:2]
    (tmp_path / "north.csv").write_text(f"{header}\n{first}\n")
    job = job_from(SendOptions(InputOptions((str(tmp_path / "north.csv"),),
                                            layout=str(sample / "layout.toml"))))  # fmt: skip
    source = job.inputs[0]
    order = Converter(source.layout, job.settings).order(next(read_orders(source)))
    facts = OrderFacts(identity_of(order), order.total, None, order.currency, 2,
                       order.created_at.timestamp())  # fmt: skip
    theirs = replace(facts, who="someone.else@example.com")
    for held, refused in ((theirs, True), (facts, False)):
        ledger = AccountLedger(tmp_path / f"account-{refused}.sqlite")
        try:
            ledger.sending_for("north")
            ledger.record([], [(f"north:{order.id}", None, facts), (order.id, None, held)])
            if refused:
                with pytest.raises(UsageError, match=r"1 of these orders .* --store north"):
                    _refuse(job, ledger)
            else:
                _refuse(job, ledger)
        finally:
            ledger.close()


def _refuse(job: Any, ledger: AccountLedger) -> None:
    """The stores check of a send of `job` to the account `ledger`, in a pass of its own:
    UsageError where it refuses; else the stores the rows name noted."""
    from klaviyo_backfill.presend.stores import StoresCheck

    check = StoresCheck(job, ledger)
    check.read(job)
    check.end()
