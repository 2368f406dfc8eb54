"""Stores (issue #20, item 4): two shops into one Klaviyo account. WooCommerce numbers its
orders from 1 in every shop: with `--store`, an order is keyed by store and id, in its events'
unique ids, the account's ledger and the per-order proof, so the second shop's order 1001 is
never taken for the first's. An account that holds a shop's orders sent without a store
refuses them sent again with one (they would be held twice)."""

from __future__ import annotations

import csv
import json
import secrets
import subprocess
from pathlib import Path

import cli_helpers
import corpus
import pytest
import standin as st
from cli_helpers import said

from klaviyo_backfill.errors import ExitCode

pytestmark = pytest.mark.e2e
KEY = "pk_stores_" + secrets.token_hex(12)
ORDERS = 40


@pytest.fixture(scope="module")
def shops(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two WooCommerce shops' exports whose order numbers are the same (seeds 1 and 1001:
    the same id range, other customers and times)."""
    where = tmp_path_factory.mktemp("stores")
    a = corpus.write_woo_csv(corpus.make_orders(ORDERS, 1, "woocommerce"), where / "a.csv")
    b = corpus.write_woo_csv(corpus.make_orders(ORDERS, 1001, "woocommerce"), where / "b.csv")
    return a, b


def cli(cwd: Path, s: st.StandIn, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in this process, on the stand-in's clock (no rate window waited for)."""
    return cli_helpers.in_process(cwd, KEY, *args, "--base-url", s.url, clock=s.clock)


def unique_ids(cwd: Path, export: str, *args: str) -> set[tuple[str, str]]:
    """(metric, unique id) of each event a dry run of `export` would send (its --output's
    request bodies)."""
    out = cwd / f"{export}.{'-'.join(args) or 'plain'}.jsonl"
    done = cli_helpers.run(cwd, None, "send", export, "--dry-run", "--output", str(out),
                           "--preview", "0", "--failures", str(out) + ".failures", *args)  # fmt: skip
    assert done.returncode in (0, 1), said(done)
    ids: set[tuple[str, str]] = set()
    for line in out.read_text().splitlines():
        body = json.loads(line)["data"]["attributes"]["events-bulk-create"]["data"]
        for entry in body:
            for event in entry["attributes"]["events"]["data"]:
                attributes = event["attributes"]
                metric = attributes["metric"]["data"]["attributes"]["name"]
                ids.add((metric, attributes["unique_id"]))
    return ids


def numbers(export: Path) -> set[str]:
    with export.open(encoding="utf-8-sig", newline="") as fh:
        return {row["Order Number"] for row in csv.DictReader(fh)}


@pytest.mark.slow  # ~4 s: two verifies, each a few hundred reads (their 429s retried)
def test_two_shops_with_the_same_order_numbers_land_in_one_account_each_once(
    shops: tuple[Path, Path], tmp_path: Path
) -> None:
    a, b = (tmp_path / "a.csv", tmp_path / "b.csv")
    a.write_bytes(shops[0].read_bytes())
    b.write_bytes(shops[1].read_bytes())
    assert numbers(a) == numbers(b)  # every order number of one shop is one of the other's
    want_a = unique_ids(tmp_path, "a.csv", "--store", "a")
    want_b = unique_ids(tmp_path, "b.csv", "--store", "b")
    assert want_a and all(uid.startswith("a:") for _, uid in want_a)
    assert want_b and all(uid.startswith("b:") for _, uid in want_b)
    with st.StandIn(api_key=KEY) as s:
        for export, store in (("a.csv", "a"), ("b.csv", "b")):
            done = cli(tmp_path, s, "send", export, "--store", store)
            assert done.returncode in (0, 1), said(done)  # the corpus's awkward orders
            assert "changed since it was sent" not in done.stdout + done.stderr
        held = [(e.metric, e.unique_id) for e in s.events]
        assert sorted(held) == sorted(want_a | want_b)  # every event of both shops, once
        assert s.stats["duplicates_skipped"] == 0
        stores = {e.properties.get("Store") for e in s.events}
        assert stores == {"a", "b"}
        assert {e.properties["OrderId"] for e in s.events} <= numbers(a)  # the shop's own id
        requests = len(s.requests)
        for export, store in (("a.csv", "a"), ("b.csv", "b")):  # again: nothing to send
            done = cli(tmp_path, s, "send", export, "--store", store)
            assert done.returncode in (0, 1), said(done)
        assert len(s.requests) == requests
        s.clock.advance(600)  # Klaviyo has processed everything
        for export in ("a.csv", "b.csv"):
            s.clock.advance(60)  # the last verify's minute of aggregate queries is over
            done = cli(tmp_path, s, "verify", export, "--json", f"{export}.verify.json")
            doc = json.loads((tmp_path / f"{export}.verify.json").read_text())
            assert done.returncode == 0 and doc["status"] == "ok", said(done)
            proof = doc["per_order"]
            assert proof["orders_held_twice"] == 0, said(done)  # the other shop's 1001 apart
            assert proof["events_missing"] == 0 and proof["orders_different"] == 0
            assert proof["events_held"] == proof["events_sent"] > 0
        status = cli_helpers.in_process(tmp_path, KEY, "status", "b.csv", clock=s.clock)
    assert "Store (--store)" in status.stdout and " b" in status.stdout, said(status)


def test_a_shop_is_refused_under_another_store_than_it_was_sent_with_and_another_shop_goes(
    shops: tuple[Path, Path], tmp_path: Path
) -> None:
    a, b = (tmp_path / "a.csv", tmp_path / "b.csv")
    a.write_bytes(shops[0].read_bytes())
    b.write_bytes(shops[1].read_bytes())
    with st.StandIn(api_key=KEY) as s:
        done = cli(tmp_path, s, "send", "a.csv")
        assert done.returncode in (0, 1), said(done)
        requests, events = len(s.requests), len(s.events)
        refused = cli(tmp_path, s, "send", "a.csv", "--store", "a")
        out = " ".join(said(refused).split())
        assert refused.returncode == ExitCode.USAGE == 2, out
        assert "as sent without a store" in out and "Send this shop without --store" in out
        assert len(s.requests) == requests  # nothing sent
        again = cli(tmp_path, s, "send", "a.csv")  # as before: nothing new
        assert again.returncode in (0, 1) and len(s.events) == events, said(again)
        other = cli(tmp_path, s, "send", "b.csv", "--store", "b")  # the same numbers, another shop
        assert other.returncode in (0, 1), said(other)
        assert {(e.metric, e.unique_id) for e in s.events[events:]} == unique_ids(
            tmp_path, "b.csv", "--store", "b"
        )
        requests = len(s.requests)
        for wrong in ([], ["--store", "B"]):  # --store forgotten, or mistyped, next month
            refused = cli(tmp_path, s, "send", "b.csv", *wrong)
            out = " ".join(said(refused).split())
            assert refused.returncode == 2, out
            assert "as sent with --store b:" in out and "Send this shop with --store b" in out
            # preflight says so first, in the send's words (exit 6, as for an overlap)
            told = cli(tmp_path, s, "preflight", "b.csv", *wrong, "--json", "p.json")
            out = " ".join(said(told).split())
            assert told.returncode == ExitCode.OVERLAP == 6, out
            assert "Held under another store: the send would be refused" in out
            held = json.loads((tmp_path / "p.json").read_text())["held_under_another_store"]
            assert "as sent with --store b:" in held and "Send this shop with --store b" in held
        assert len(s.requests) == requests  # nothing sent
        told = cli(tmp_path, s, "preflight", "b.csv", "--store", "b", "--json", "p.json")
        assert told.returncode == 0, said(told)
        assert json.loads((tmp_path / "p.json").read_text())["held_under_another_store"] is None


def test_preflight_of_a_store_names_orders_held_without_a_store_not_another_stores(
    shops: tuple[Path, Path], tmp_path: Path
) -> None:
    """Another API sender (a live integration) that names no store may be this shop's: its
    OrderId counts; one whose events carry another Store is another shop's."""
    (tmp_path / "a.csv").write_bytes(shops[0].read_bytes())
    orders = [o for o in corpus.make_orders(ORDERS, 1, "woocommerce") if o.identifiable]
    live = [st.other_event("Placed Order", o.created_at.isoformat(), integration=st.API,
                           uid=f"live-{o.number}", properties={"OrderId": o.number})
            for o in orders[:3]]  # fmt: skip
    other_shop = [st.other_event("Placed Order", o.created_at.isoformat(), integration=st.API,
                                 uid=f"b-{o.number}", properties={"OrderId": o.number,
                                                                  "Store": "b"})
                  for o in orders[3:8]]  # fmt: skip
    with st.StandIn(api_key=KEY) as s:
        s.preload(live + other_shop)
        done = cli(tmp_path, s, "preflight", "a.csv", "--store", "a", "--json", "p.json")
    held = json.loads((tmp_path / "p.json").read_text())["held_by_another_api_sender"]
    assert done.returncode == 6, said(done)
    assert held["orders"] == 3
    assert set(held["sample_ids"]) == {f"a:{o.number}" for o in orders[:3]}
