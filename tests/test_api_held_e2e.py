"""The send and another API sender (issue #21 item 4): orders the account holds already in
the API's Placed Order under other unique ids (the shop's own live integration) are skipped,
named, and sent only with --allow-overlap; `verify` then names them as held twice.

Which orders the other sender holds is the stand-in's (preloaded), never the tool's word."""

from __future__ import annotations

import functools
import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import corpus
import pytest
import standin as st
from cli_helpers import FAST, in_process, said

KEY = "pk_api_held_0123456789abcdef"
RECENT = (datetime(2023, 1, 1, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC))


@functools.cache
def _recent() -> list[corpus.Order]:
    return [o for o in corpus.make_orders(1200, 17, "shopify")
            if RECENT[0] <= o.created_at < RECENT[1] and o.identifiable]  # fmt: skip


def orders_of(limit: int) -> list[corpus.Order]:
    return _recent()[:limit]


def export(folder: Path, limit: int = 80) -> list[corpus.Order]:
    orders = orders_of(limit)
    corpus.write_shopify_csv(orders, folder / "orders.csv")
    return orders


def preload_theirs(s: st.StandIn, theirs: list[corpus.Order]) -> None:
    """Another API sender's Placed Order for each: the same OrderId, its own unique id."""
    s.preload([st.other_event("Placed Order", o.created_at.isoformat(), integration=st.API,
                              uid=f"live-{o.id}", properties={"OrderId": o.id})
               for o in theirs])  # fmt: skip


def send(cwd: Path, s: st.StandIn, *extra: str) -> tuple[Any, dict[str, Any]]:
    done = in_process(cwd, KEY, "send", "orders.csv", "--base-url", s.url, *FAST,
                      "--summary-json", "s.json", *extra, clock=s.clock)  # fmt: skip
    assert "Traceback" not in done.stderr, said(done)
    return done, json.loads((cwd / "s.json").read_text())


def placed_per_order(s: st.StandIn) -> Counter[str]:
    """Placed Order events the stand-in holds, per OrderId (every sender's)."""
    return Counter(e.properties.get("OrderId") for e in s.events + s.preloaded
                   if e.metric == "Placed Order")  # fmt: skip


def months_of(orders: list[corpus.Order]) -> dict[str, int]:
    return dict(sorted(Counter(o.created_at.astimezone(UTC).strftime("%Y-%m")
                               for o in orders).items()))  # fmt: skip


def verify_twice(cwd: Path, s: st.StandIn) -> set[str]:
    """The orders `verify` names as held twice or more."""
    s.clock.advance(600)  # Klaviyo has processed everything
    done = in_process(cwd, KEY, "verify", "orders.csv", "--base-url", s.url, "--json", "v.json",
                      clock=s.clock)  # fmt: skip
    assert "Traceback" not in done.stderr, said(done)
    doc = json.loads((cwd / "v.json").read_text())
    return {o["order_id"] for o in doc["per_order"]["orders"] if o["kind"] == "twice"}


@pytest.mark.e2e
def test_the_send_skips_and_names_the_orders_another_api_sender_holds(tmp_path: Path) -> None:
    orders = export(tmp_path)
    theirs = orders[::4][:20]
    elsewhere = orders_of(95)[90:]  # the other sender's orders not in this export
    with st.StandIn(api_key=KEY, clock=st.Clock()) as s:
        preload_theirs(s, theirs + elsewhere)
        done, doc = send(tmp_path, s)
        held = placed_per_order(s)
    assert done.returncode == 0, said(done)
    ids = {o.id for o in theirs}
    assert doc["skipped"] == {"held by another API sender": 20} and doc["balanced"]
    assert doc["orders_read"] == len(orders) == doc["orders_mapped"] + 20
    named = doc["held_by_another_api_sender"]
    assert set(named["order_ids"]) == ids and named["orders"] == 20
    assert named["months"] == months_of(theirs)
    assert max(held.values()) == 1  # no order doubled
    assert set(held) == {o.id for o in orders + elsewhere}
    text = " ".join(done.stdout.split())
    assert "held by another API sender" in text and "20 order(s) in" in text
    sample = text.split("e.g. order(s) ", 1)[1].split(".")[0].split(", ")
    assert len(sample) == 10 and set(sample) <= ids


@pytest.mark.e2e
def test_allow_overlap_sends_them_and_verify_names_them_held_twice(tmp_path: Path) -> None:
    orders = export(tmp_path)
    theirs = orders[1::4][:20]
    with st.StandIn(api_key=KEY, clock=st.Clock()) as s:
        preload_theirs(s, theirs)
        done, doc = send(tmp_path, s, "--allow-overlap")
        held = placed_per_order(s)
        twice = verify_twice(tmp_path, s)
    assert done.returncode == 0, said(done)
    assert doc["skipped"] == {} and doc["orders_mapped"] == len(orders)
    assert doc["held_by_another_api_sender"]["orders"] == 0
    assert "--allow-overlap" in done.stderr and "count twice" in done.stderr
    assert {o for o, n in held.items() if n > 1} == {o.id for o in theirs}
    assert twice == {o.id for o in theirs}


@pytest.mark.e2e
def test_a_continued_job_still_skips_them_and_a_later_export_is_not_another_sender(
    tmp_path: Path,
) -> None:
    orders = export(tmp_path)
    theirs = orders[2::4][:20]
    with st.StandIn(api_key=KEY, clock=st.Clock()) as s:
        preload_theirs(s, theirs)
        first, one = send(tmp_path, s, "--limit", "30")
        second, two = send(tmp_path, s)  # a plain rerun continues the limited job: no new
        # check, what the first run's found is remembered
        export(tmp_path, limit=95)  # a later export: the first 80 are this tool's own
        third, three = send(tmp_path, s)
        held = placed_per_order(s)
    for done in (first, second, third):
        assert done.returncode == 0, said(done)
    skipped = [doc["held_by_another_api_sender"]["order_ids"] for doc in (one, two)]
    assert sorted(skipped[0] + skipped[1]) == sorted(o.id for o in theirs)
    assert one["orders_mapped"] == 30 and skipped[1]
    assert set(three["held_by_another_api_sender"]["order_ids"]) == {o.id for o in theirs}
    assert max(held.values()) == 1
    assert set(held) == {o.id for o in orders_of(95)}


@pytest.mark.e2e
def test_without_events_read_the_send_says_so_in_one_line_and_sends(tmp_path: Path) -> None:
    orders = export(tmp_path, limit=30)
    with st.StandIn(api_key=KEY, clock=st.Clock(),
                    faults=st.Faults(missing_scopes=frozenset({"events:read"}))) as s:  # fmt: skip
        preload_theirs(s, orders[:5])
        done, doc = send(tmp_path, s)
    assert done.returncode == 0, said(done)
    warned = [line for line in done.stderr.splitlines() if "events:read" in line]
    assert len(warned) == 1 and "not checked" in warned[0], said(done)
    assert doc["orders_mapped"] == 30 and doc["skipped"] == {}


def product_uids(bodies: Path) -> dict[str, list[str]]:
    """OrderId -> the unique ids of its Ordered Product events, from a dry run's bodies."""
    out: dict[str, list[str]] = {}
    for line in bodies.read_text().splitlines():
        body = json.loads(line)["data"]["attributes"]["events-bulk-create"]["data"]
        for one in body:
            for event in one["attributes"]["events"]["data"]:
                a = event["attributes"]
                if a["metric"]["data"]["attributes"]["name"] == "Ordered Product":
                    out.setdefault(a["properties"]["OrderId"], []).append(a["unique_id"])
    return out


@pytest.mark.e2e
def test_an_order_sent_in_part_is_this_tools_own_not_another_senders(tmp_path: Path) -> None:
    """Klaviyo refused a line item of 3 orders: the account's ledger holds no whole order of
    them, but their Placed Order; preflight does not name them and a new job sends their
    refused events, while it skips the 3 orders another API sender holds."""
    orders = export(tmp_path, limit=24)
    clock = st.Clock()
    dry = in_process(tmp_path, KEY, "send", "orders.csv", "--dry-run", "--output", "b.jsonl",
                     "-q", clock=clock)  # fmt: skip
    assert dry.returncode == 0, said(dry)
    uids = product_uids(tmp_path / "b.jsonl")
    part = list(uids)[:3]  # the first orders in the file (a --limit 12 run sends them)
    refused = frozenset(uids[order_id][0] for order_id in part)
    with st.StandIn(api_key=KEY, clock=clock, faults=st.Faults(refuse_uids=refused)) as s:
        first, _ = send(tmp_path, s, "--limit", "12", "--endpoint", "single")
        sent = set(placed_per_order(s))
        assert set(part) <= sent, said(first)
        theirs = [o for o in orders if o.id not in sent][:3]
        preload_theirs(s, theirs)
        s.faults = st.Faults()
        pre = in_process(tmp_path, KEY, "preflight", "orders.csv", "--base-url", s.url,
                         "--json", "p.json", clock=clock)  # fmt: skip
        again, doc = send(tmp_path, s, "--restart", "--endpoint", "single")
        held = placed_per_order(s)
        stored = {e.unique_id for e in s.events}
    assert first.returncode == 1, said(first)  # the refused line items
    named = json.loads((tmp_path / "p.json").read_text())["held_by_another_api_sender"]
    assert pre.returncode == 6 and named["orders"] == 3, said(pre)
    assert set(named["sample_ids"]) == {o.id for o in theirs}
    assert again.returncode == 0, said(again)
    assert set(doc["held_by_another_api_sender"]["order_ids"]) == {o.id for o in theirs}
    assert refused <= stored  # the orders sent in part, completed
    assert max(held.values()) == 1
