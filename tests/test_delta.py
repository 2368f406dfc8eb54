"""Again next month: a later export sent to the same account sends only what is new for it,
and what Klaviyo cannot take is reported, not sent (account_ledger.py, delta.py).

End to end: the real CLI against the stand-in; a first export taken at 70% of the shop's
time span (orders after it absent, fulfilments, cancellations and refunds after it not yet
there), then the full export.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import cli_helpers
import corpus
import pytest
import standin as st
from cli_helpers import free_port

pytestmark = pytest.mark.e2e
KEY = "pk_delta_" + secrets.token_hex(12)
FAST = [*cli_helpers.FAST, "--failures", "failures.jsonl"]
Key = tuple[str, str, str]


def as_of(order: corpus.TruthOrder, cut: datetime) -> corpus.TruthOrder:
    """The order as an export taken at `cut` shows it."""
    refunds = [r for r in order.refunds if r.created_at <= cut]
    cancelled = order.cancelled_at is not None and order.cancelled_at <= cut
    fulfilled = order.fulfilled_at is not None and order.fulfilled_at <= cut
    status = order.financial_status
    if len(refunds) < len(order.refunds) or (order.cancelled_at and not cancelled):
        status = "partially_refunded" if refunds else "paid"
    return replace(
        order, refunds=refunds, financial_status=status,
        fulfilled_at=order.fulfilled_at if fulfilled else None,
        cancelled_at=order.cancelled_at if cancelled else None,
        cancel_reason=order.cancel_reason if cancelled else None,
    )  # fmt: skip


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """early.csv (at 70% of the span) and full.csv, of 400 Shopify orders."""
    where = tmp_path_factory.mktemp("delta")
    orders = corpus.make_orders(400, 23, "shopify")
    first = min(o.created_at for o in orders)
    last = max(o.created_at for o in orders)
    cut = first + (last - first) * 0.7
    early = [as_of(o, cut) for o in orders if o.created_at <= cut]
    assert 0 < len(early) < len(orders)
    corpus.write_shopify_csv(early, where / "early.csv")
    corpus.write_shopify_csv(orders, where / "full.csv")
    return where


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return cli_helpers.run(cwd, KEY, *args)


def sent_since(s: st.StandIn, first: int) -> tuple[int, int]:
    """(events in the bodies Klaviyo took, events it stored as new) since request `first`."""
    logs = [r for r in s.requests[first:] if r.status == 202]
    return sum(r.n_events for r in logs), sum(r.n_stored for r in logs)


def summary(cwd: Path) -> dict[str, object]:
    return dict(json.loads((cwd / "summary.json").read_text()))


@pytest.mark.slow
def test_a_later_export_sends_only_what_is_new(exports: Path, tmp_path: Path) -> None:
    for name in ("early.csv", "full.csv"):
        shutil.copy(exports / name, tmp_path / name)
    port = free_port()
    with st.StandIn(api_key=KEY, port=port) as s:
        first = run(tmp_path, "send", "early.csv", "--base-url", s.url, *FAST)
        assert first.returncode in (0, 1), first.stderr
        early_keys = s.keys()
        mark = len(s.requests)
        second = run(tmp_path, "send", "full.csv", "--base-url", s.url, *FAST,
                     "--summary-json", "summary.json")  # fmt: skip
        assert second.returncode in (0, 1), second.stderr
        sent, stored = sent_since(s, mark)
        union = s.keys()
    assert sent == stored, f"{sent - stored} events the account held were sent again"
    assert sent == len(union - early_keys) > 0
    done = summary(tmp_path)
    skipped = dict(done["skipped"])  # type: ignore[call-overload]
    assert skipped.get("already in Klaviyo (this account)", 0) > 0
    assert done["events_already_in_klaviyo"] == len(early_keys)
    assert "Already in Klaviyo" in second.stdout

    with st.StandIn(api_key=KEY, port=free_port()) as fresh:  # another account: all of it
        whole = run(tmp_path, "send", "full.csv", "--base-url", fresh.url, *FAST)
        assert whole.returncode in (0, 1), whole.stderr
        held = fresh.keys()
    # said in full on failure: it failed once in a full-suite run (load 3 on 2 cores) and not
    # in 12 runs alone; what was missing or extra, and what the send said, find the cause
    assert union == held, (sorted(union - held)[:5], sorted(held - union)[:5], whole.stdout,
                           whole.stderr, fresh.summary())  # fmt: skip


def test_a_later_export_saved_over_the_old_file_sends_only_what_is_new(
    exports: Path, tmp_path: Path
) -> None:
    """Shopify names every export orders_export.csv: next month's, saved over last month's
    and sent with the same command, is a new export (issue: "a new export saved over the old
    one is not sent")."""
    export = tmp_path / "orders_export.csv"
    shutil.copy(exports / "early.csv", export)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with st.StandIn(api_key=KEY, port=free_port()) as s:
        first = run(tmp_path, "send", "orders_export.csv", "--base-url", s.url, *FAST)
        assert first.returncode in (0, 1), first.stderr
        early_keys = s.keys()
        shutil.copy(exports / "full.csv", export)
        mark = len(s.requests)
        second = run(elsewhere, "send", str(export), "--base-url", s.url, *FAST,
                     "--summary-json", "summary.json")  # fmt: skip
        assert second.returncode in (0, 1), second.stdout + second.stderr
        assert "Nothing to do" not in second.stdout + second.stderr
        sent, stored = sent_since(s, mark)
        union = s.keys()
        assert sent == stored, f"{sent - stored} events the account held were sent again"
        assert sent == len(union - early_keys) > 0
        assert summary(elsewhere)["events_already_in_klaviyo"] == len(early_keys)
        mark = len(s.requests)
        third = run(tmp_path, "send", "orders_export.csv", "--base-url", s.url, *FAST)
        assert "Nothing to do" in third.stdout, third.stdout + third.stderr
        assert sent_since(s, mark) == (0, 0)


def test_two_windows_of_one_export_sent_apart_both_land(exports: Path, tmp_path: Path) -> None:
    """`--until A`, then `--since B` of the same file: the second is not 'nothing to do'."""
    shutil.copy(exports / "full.csv", tmp_path / "full.csv")
    with st.StandIn(api_key=KEY, port=free_port()) as s:
        early = run(tmp_path, "send", "full.csv", "--base-url", s.url, *FAST, "--until",
                    "2020-06-30")  # fmt: skip
        assert early.returncode in (0, 1), early.stderr
        first = {e.time for e in s.events if e.metric == "Placed Order"}
        late = run(tmp_path, "send", "full.csv", "--base-url", s.url, *FAST, "--since",
                   "2020-07-01")  # fmt: skip
        assert late.returncode in (0, 1), late.stdout + late.stderr
        assert "Nothing to do" not in late.stdout
        second = {e.time for e in s.events if e.metric == "Placed Order"} - first
    assert first and max(t or "" for t in first) < "2020-07-01"
    assert second and min(t or "~" for t in second) >= "2020-07-01"


def test_resend_sends_what_the_account_holds_too(exports: Path, tmp_path: Path) -> None:
    shutil.copy(exports / "early.csv", tmp_path / "early.csv")
    with st.StandIn(api_key=KEY, port=free_port()) as s:
        assert run(tmp_path, "send", "early.csv", "--base-url", s.url, *FAST).returncode in (0, 1)
        held = len(s.keys())
        mark = len(s.requests)
        again = run(tmp_path, "send", "early.csv", "--base-url", s.url, *FAST, "--restart")
        assert again.returncode in (0, 1)
        assert sent_since(s, mark) == (0, 0)  # everything was held: nothing went
        mark = len(s.requests)
        resent = run(tmp_path, "send", "early.csv", "--base-url", s.url, *FAST, "--restart",
                     "--resend")  # fmt: skip
        assert resent.returncode in (0, 1)
        assert sent_since(s, mark) == (held, 0)  # all again; Klaviyo dropped the repeats


HEADER = "Name,Email,Financial Status,Currency,Total,Refunded Amount,Created at,Lineitem quantity,Lineitem name,Lineitem price,Lineitem sku,Id"


def shop(path: Path, *orders: str) -> None:
    path.write_text("\n".join([HEADER, *orders]) + "\n", encoding="utf-8")


def test_what_klaviyo_cannot_take_is_listed_and_not_sent(tmp_path: Path) -> None:
    at = "2024-03-01 10:00:00 +0000"
    shop(tmp_path / "march.csv",
         f"#1,a@example.com,paid,USD,10.00,0.00,{at},1,Tee,10.00,T1,1",
         f"#2,b@example.com,paid,USD,20.00,0.00,{at},1,Mug,20.00,M1,2",
         f"#3,c@example.com,partially_refunded,USD,30.00,5.00,{at},1,Hat,30.00,H1,3",
         f"#4,d@example.com,paid,USD,40.00,0.00,{at},1,Cap,40.00,C1,4")  # fmt: skip
    shop(tmp_path / "april.csv",
         f"#1,a@example.com,paid,USD,12.00,0.00,{at},1,Tee,12.00,T1,1",  # another total
         f"#2,new@example.com,paid,USD,20.00,0.00,{at},1,Mug,20.00,M1,2",  # another profile
         f"#3,c@example.com,partially_refunded,USD,30.00,8.00,{at},1,Hat,30.00,H1,3",  # refund
         f"#4,d@example.com,refunded,USD,40.00,40.00,{at},1,Cap,40.00,C1,4",  # new: refunded
         f"#5,e@example.com,paid,USD,50.00,0.00,{at},1,Bag,50.00,B1,5")  # new order  # fmt: skip
    with st.StandIn(api_key=KEY, port=free_port()) as s:
        assert run(tmp_path, "send", "march.csv", "--base-url", s.url, *FAST).returncode == 0
        before = s.keys()
        april = run(tmp_path, "send", "april.csv", "--base-url", s.url, *FAST)
        new = s.keys() - before
    assert april.returncode == 1, april.stdout + april.stderr  # changes were listed
    assert new == {
        ("d@example.com", "Refunded Order", "4"),
        ("e@example.com", "Placed Order", "5"),
        ("e@example.com", "Ordered Product", "5_B1"),
    }
    failures = [json.loads(x) for x in (tmp_path / "failures.jsonl").read_text().splitlines()]
    by_order = {f["order_id"]: f["detail"] for f in failures}
    assert set(by_order) == {"1", "2", "3"}
    assert "total 10.00 USD, now 12.00 USD" in by_order["1"]
    assert "sent for profile b@example.com, now new@example.com" in by_order["2"]
    assert "refund 5.00, now 8.00 USD" in by_order["3"]
    assert all("Klaviyo keeps the first event for this order" in d for d in by_order.values())


def test_events_of_orders_sent_in_part_are_not_sent_again(tmp_path: Path) -> None:
    """Klaviyo refused one event of every order: no order is whole in the account's ledger,
    but the events it took are, and a run again sends only the refused ones."""
    at = "2024-03-01 10:00:00 +0000"
    shop(tmp_path / "march.csv",
         f"#1,a@example.com,paid,USD,10.00,0.00,{at},1,Tee,10.00,T1,1",
         f"#2,b@example.com,paid,USD,20.00,0.00,{at},1,Mug,20.00,M1,2")  # fmt: skip
    faults = st.Faults(refuse_uids=frozenset({"1_T1", "2_M1"}))  # their Ordered Product
    with st.StandIn(api_key=KEY, faults=faults, port=free_port()) as s:
        first = run(tmp_path, "send", "march.csv", "--base-url", s.url, *FAST,
                    "--endpoint", "single")  # fmt: skip
        assert first.returncode == 1, first.stdout + first.stderr  # two events refused
        mark = len(s.requests)
        again = run(tmp_path, "send", "march.csv", "--base-url", s.url, *FAST, "--restart",
                    "--endpoint", "single")  # fmt: skip
        assert again.returncode == 1
        sent = [r for r in s.requests[mark:] if r.path == "/api/events"]
    assert len(sent) == 2  # only the two refused events went again
