"""`verify` order by order, end to end: the real console script against the stand-in, which
serves GET /api/events as Klaviyo does and can lose a share of events after their 202.

What Klaviyo lacks is never taken from the tool: the stand-in says which events it lost
(`StandIn.lost`), and which orders another API sender holds (preloaded)."""

from __future__ import annotations

import json
import os
import shlex
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import corpus
import pytest
import standin as st
from cli_helpers import FAST, in_process, run, said

KEY = "pk_proof_0123456789abcdef"


def export(folder: Path, start: datetime, end: datetime, limit: int = 10_000) -> Path:
    orders = [o for o in corpus.make_orders(2400, 17, "shopify")
              if start <= o.created_at < end and o.identifiable][:limit]  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    corpus.write_shopify_csv(orders, folder / "orders.csv")
    return folder / "orders.csv"


def send(cwd: Path, s: st.StandIn, *extra: str) -> None:
    done = run(cwd, KEY, "send", "orders.csv", "--base-url", s.url, *FAST, *extra)
    assert done.returncode == 0, said(done)


def sent_in(cwd: Path, s: st.StandIn, *extra: str) -> None:
    """A send in this process, on the stand-in's clock."""
    done = in_process(cwd, KEY, "send", "orders.csv", "--base-url", s.url, *FAST, *extra,
                      clock=s.clock)  # fmt: skip
    assert done.returncode == 0, said(done)


def verify(cwd: Path, s: st.StandIn, *extra: str) -> tuple[Any, dict[str, Any]]:
    """Verify in this process, on the stand-in's clock: its paced reads wait no real time."""
    done = in_process(cwd, KEY, "verify", "orders.csv", "--base-url", s.url, "--json", "v.json",
                      *extra, clock=s.clock)  # fmt: skip
    assert "Traceback" not in done.stderr, said(done)
    return done, json.loads((cwd / "v.json").read_text())


def named(doc: dict[str, Any], kind: str) -> set[str]:
    return {o["order_id"] for o in doc["per_order"]["orders"] if o["kind"] == kind}


RECENT = (datetime(2023, 1, 1, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC))


@pytest.mark.slow
@pytest.mark.e2e
def test_a_clean_send_verifies_with_no_order_named(tmp_path: Path) -> None:
    export(tmp_path, *RECENT, limit=120)
    with st.StandIn(api_key=KEY) as s:
        send(tmp_path, s)
        done, doc = verify(tmp_path, s)
    assert done.returncode == 0, said(done)
    proof = doc["per_order"]
    assert proof["orders"] == [] and proof["events_missing"] == 0
    assert proof["events_sent"] == proof["events_held"] > 120
    assert doc["repair_command"] is None and "OK" in done.stdout


@pytest.mark.slow
@pytest.mark.e2e
def test_verify_names_exactly_the_orders_that_lost_events_and_one_command_repairs_them(
    tmp_path: Path,
) -> None:
    export(tmp_path, *RECENT)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with st.StandIn(api_key=KEY, faults=st.Faults(lost_after_ack=0.02, seed=11)) as s:
        send(tmp_path, s)
        lost = {(e.metric, e.unique_id) for e in s.lost}
        lost_orders = {e.properties["OrderId"] for e in s.lost}
        assert 10 <= len(lost) <= 60
        done, doc = verify(tmp_path, s, "--html", "v.html")
        assert done.returncode == 5, said(done)
        assert named(doc, "missing") == lost_orders
        page = (tmp_path / "v.html").read_text()
        assert all(f">{order}<" in page for order in lost_orders)
        assert all(f"orders.csv:{o['line']}" in page for o in doc["per_order"]["orders"])
        assert named(doc, "twice") == named(doc, "different") == set()
        resent = {(o["metric"], uid) for o in doc["per_order"]["orders"] for uid in o["unique_ids"]}
        assert resent == lost
        for o in doc["per_order"]["orders"]:
            assert o["source"].endswith("orders.csv") and o["line"] >= 2
        command = doc["repair_command"]
        assert command in done.stdout.replace("\n", "")  # printed whole, not cut
        before = len(s.requests)
        repaired = run(elsewhere, KEY, *shlex.split(command)[1:], *FAST)  # from any folder
        assert repaired.returncode == 0, said(repaired)
        again = [(e.metric, e.unique_id) for e in s.events[-len(lost) - 5 :]]
        assert sum(r.n_events for r in s.requests[before:]) == len(lost)
        assert set(again[-len(lost) :]) == lost  # the same unique ids, and no other event
        done, doc = verify(tmp_path, s)
    assert done.returncode == 0, said(done)
    assert doc["per_order"]["orders"] == [] and doc["status"] == "ok"


@pytest.mark.slow
@pytest.mark.e2e
def test_orders_older_than_the_aggregates_reach_are_verified_through_the_events(
    tmp_path: Path,
) -> None:
    export(tmp_path, datetime(2016, 1, 1, tzinfo=UTC), datetime(2019, 1, 1, tzinfo=UTC), 150)
    faults = st.Faults(aggregate_reach_years=5, lost_after_ack=0.02, seed=3)
    with st.StandIn(api_key=KEY, faults=faults) as s:
        send(tmp_path, s)
        lost_orders = {e.properties["OrderId"] for e in s.lost}
        done, doc = verify(tmp_path, s)
        refused = sum(r.path == st.AGGREGATES_PATH and r.status == 400 for r in s.reads)
    years = sorted({int(row["month"][:4]) for row in doc["rows"]})
    assert refused >= len(years) and years[0] == 2016  # every year was asked, and refused
    assert doc["aggregates_refused_years"] == years
    assert all(row.get("via") == "events" for row in doc["rows"])
    months = {(m["metric"], m["month"]) for m in doc["per_order"]["months"]}
    assert months == {(r["metric"], r["month"]) for r in doc["rows"]}  # every month verified
    assert named(doc, "missing") == lost_orders and lost_orders
    assert f"refused {', '.join(map(str, years))}" in " ".join(done.stdout.split())
    assert done.returncode == 5, said(done)


@pytest.mark.slow
@pytest.mark.e2e
def test_orders_another_api_sender_holds_are_named_as_held_twice(tmp_path: Path) -> None:
    export(tmp_path, *RECENT, limit=120)
    with st.StandIn(api_key=KEY) as s:
        send(tmp_path, s)
        placed = [e for e in s.events if e.metric == "Placed Order"][:20]
        s.preload([st.other_event("Placed Order", e.time or "", e.value or 0.0, integration=st.API,
                                  uid=f"live-{e.unique_id}", properties={"OrderId": e.unique_id})
                   for e in placed])  # fmt: skip
        done, doc = verify(tmp_path, s)
    assert named(doc, "twice") == {e.unique_id for e in placed}
    assert named(doc, "missing") == set() and doc["repair_command"] is None
    assert doc["status"] == "held twice" and done.returncode == 5
    assert "cannot delete events" in " ".join(done.stdout.split())


@pytest.mark.slow
@pytest.mark.e2e
def test_without_events_read_the_monthly_proof_runs_with_a_one_line_warning(
    tmp_path: Path,
) -> None:
    export(tmp_path, *RECENT, limit=80)
    with st.StandIn(api_key=KEY) as s:
        send(tmp_path, s)
        s.faults = st.Faults(missing_scopes=frozenset({"events:read"}))
        done, doc = verify(tmp_path, s)
    assert done.returncode == 0, said(done)
    assert doc["per_order"] is None and doc["rows"]
    warnings = [line for line in done.stdout.splitlines() if "events:read" in line]
    assert len(warnings) == 1 and warnings[0].startswith("Warning")


@pytest.mark.slow
@pytest.mark.e2e
def test_a_checkpoint_of_an_earlier_version_is_verified_by_month_and_says_why_not_per_order(
    tmp_path: Path,
) -> None:
    export(tmp_path, *RECENT, limit=40)
    with st.StandIn(api_key=KEY) as s:
        send(tmp_path, s)
        state = Path(os.environ["XDG_STATE_HOME"]) / "klaviyo-backfill" / "checkpoints"
        (checkpoint,) = state.glob("*.sqlite")
        db = sqlite3.connect(checkpoint)
        db.execute("DELETE FROM meta WHERE key = 'acked'")
        db.commit()
        db.close()
        done, doc = verify(tmp_path, s)
    assert done.returncode == 0, said(done)
    assert doc["per_order"] is None and "earlier version" in doc["per_order_note"]


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.parametrize("fault", ["read_server_error", "read_html_200"])
def test_faulty_event_pages_are_retried_and_the_proof_still_holds(
    tmp_path: Path, fault: str
) -> None:
    export(tmp_path, *RECENT, limit=60)
    with st.StandIn(api_key=KEY) as s:
        send(tmp_path, s)
        s.faults = st.Faults(**{fault: 0.2}, seed=4)  # type: ignore[arg-type]
        done, doc = verify(tmp_path, s)
    assert done.returncode == 0, said(done)
    assert doc["per_order"]["orders"] == []


@pytest.mark.e2e
def test_preflight_names_the_orders_another_api_sender_holds_but_not_its_own(
    tmp_path: Path,
) -> None:
    export(tmp_path, *RECENT, limit=100)
    with st.StandIn(api_key=KEY) as s:
        send(tmp_path, s, "--limit", "30")  # this tool's own: never named
        placed = {e.unique_id: e for e in s.events if e.metric == "Placed Order"}
        orders = [o for o in corpus.make_orders(2400, 17, "shopify")
                  if RECENT[0] <= o.created_at < RECENT[1] and o.identifiable][:100]  # fmt: skip
        theirs = [o for o in orders if o.id not in placed][:20]
        ours = [o for o in orders if o.id in placed][:5]  # a resend of this tool's: not named
        s.preload([st.other_event("Placed Order", o.created_at.isoformat(), integration=st.API,
                                  uid=f"live-{o.id}", properties={"OrderId": o.id})
                   for o in theirs + ours])  # fmt: skip
        months: dict[str, int] = {}
        for o in theirs:
            month = o.created_at.astimezone(UTC).strftime("%Y-%m")
            months[month] = months.get(month, 0) + 1
        done = in_process(tmp_path, KEY, "preflight", "orders.csv", "--base-url", s.url,
                          "--json", "p.json", clock=s.clock)  # fmt: skip
    doc = json.loads((tmp_path / "p.json").read_text())
    held = doc["held_by_another_api_sender"]
    assert done.returncode == 6, said(done)
    assert held["orders"] == len(theirs) == 20 and held["months"] == months
    assert set(held["sample_ids"]) <= {o.id for o in theirs}
    assert "Held by another API sender: 20 order(s)" in " ".join(done.stdout.split())


@pytest.mark.slow
@pytest.mark.e2e
def test_two_windows_are_proved_order_by_order_and_one_command_repairs_both(
    tmp_path: Path,
) -> None:
    """`send --until A` then `send --since B`: verify names the orders that lost events in
    either window, with the file:line of the job that sent them, and its one command (from
    any folder) resends exactly those events, whichever window they were in."""
    export(tmp_path, *RECENT, limit=240)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    split = datetime(2023, 8, 1, tzinfo=UTC)
    with st.StandIn(api_key=KEY, faults=st.Faults(lost_after_ack=0.03, seed=5)) as s:
        sent_in(tmp_path, s, "--until", "2023-07-31")
        first = {(e.metric, e.unique_id) for e in s.lost}
        sent_in(tmp_path, s, "--since", "2023-08-01")
        lost = {(e.metric, e.unique_id) for e in s.lost}
        lost_orders = {e.properties["OrderId"] for e in s.lost}
        assert first and lost - first  # events lost in both windows
        assert {datetime.fromisoformat(e.time or "") < split for e in s.lost} == {True, False}
        done, doc = verify(tmp_path, s)
        assert done.returncode == 5, said(done)
        assert named(doc, "missing") == lost_orders
        resent = {(o["metric"], uid) for o in doc["per_order"]["orders"] for uid in o["unique_ids"]}
        assert resent == lost
        assert all(o["source"].endswith("orders.csv") and o["line"] >= 2
                   for o in doc["per_order"]["orders"])  # fmt: skip
        sent = doc["per_order"]["events_sent"]
        assert sent == sum(row["sent_count"] for row in doc["rows"]) == len(s.keys())
        command = doc["repair_command"]
        assert "--since" not in command and "--until" not in command
        before = len(s.requests)
        repaired = in_process(elsewhere, KEY, *shlex.split(command)[1:], *FAST, clock=s.clock)
        assert repaired.returncode == 0, said(repaired)
        assert sum(r.n_events for r in s.requests[before:]) == len(lost)
        assert {(e.metric, e.unique_id) for e in s.events[-len(lost) :]} == lost
        done, doc = verify(tmp_path, s)
        listed = in_process(elsewhere, KEY, "status", clock=s.clock)  # the repair is no job
    assert done.returncode == 0, said(done)
    assert doc["per_order"]["orders"] == [] and doc["status"] == "ok"
    assert doc["per_order"]["events_held"] == sent
    assert "Jobs in" in listed.stdout and "(1)" in listed.stdout, said(listed)
    assert ".repair" not in listed.stdout


@pytest.mark.slow
@pytest.mark.e2e
def test_an_export_saved_over_the_file_is_proved_with_the_one_before(tmp_path: Path) -> None:
    """Last month's export, then this month's (every order so far) saved over the file:
    verify names the orders of either job that lost events, and the repair resends them from
    the file as it is now."""
    orders = [o for o in corpus.make_orders(2400, 17, "shopify")
              if RECENT[0] <= o.created_at < RECENT[1] and o.identifiable][:240]  # fmt: skip
    split = datetime(2023, 8, 1, tzinfo=UTC)
    with st.StandIn(api_key=KEY, faults=st.Faults(lost_after_ack=0.03, seed=5)) as s:
        corpus.write_shopify_csv([o for o in orders if o.created_at < split],
                                 tmp_path / "orders.csv")  # fmt: skip
        sent_in(tmp_path, s)
        first = {(e.metric, e.unique_id) for e in s.lost}
        corpus.write_shopify_csv(orders, tmp_path / "orders.csv")
        sent_in(tmp_path, s)
        lost = {(e.metric, e.unique_id) for e in s.lost}
        assert first and lost - first  # events lost by both jobs
        done, doc = verify(tmp_path, s)
        assert done.returncode == 5, said(done)
        assert named(doc, "missing") == {e.properties["OrderId"] for e in s.lost}
        assert {
            (o["metric"], u) for o in doc["per_order"]["orders"] for u in o["unique_ids"]
        } == lost
        repaired = in_process(tmp_path / "..", KEY, *shlex.split(doc["repair_command"])[1:], *FAST,
                              clock=s.clock)  # fmt: skip
        assert repaired.returncode == 0, said(repaired)
        assert {(e.metric, e.unique_id) for e in s.events[-len(lost) :]} == lost
        done, doc = verify(tmp_path, s)
    assert done.returncode == 0, said(done)
    assert doc["per_order"]["orders"] == [] and doc["per_order"]["events_held"] == len(s.keys())


@pytest.mark.slow
@pytest.mark.e2e
def test_rows_that_only_hold_more_are_one_line_a_metric_saying_whose(tmp_path: Path) -> None:
    """Another export of this tool in the same months, and another API sender's events: at
    80 columns verify lists no such row, one line a metric says how many and whose they are
    (the account's ledger), --json keeps every row; exit 0."""
    orders = [o for o in corpus.make_orders(2400, 17, "shopify")
              if RECENT[0] <= o.created_at < RECENT[1] and o.identifiable][:200]  # fmt: skip
    (tmp_path / "b").mkdir()
    corpus.write_shopify_csv(orders[::2], tmp_path / "orders.csv")
    corpus.write_shopify_csv(orders[1::2], tmp_path / "b" / "orders.csv")
    with st.StandIn(api_key=KEY) as s:
        sent_in(tmp_path, s)
        ours = {(e.metric, e.unique_id) for e in s.events}
        sent_in(tmp_path / "b", s)
        months = {(e.time or "")[:7] for e in s.events if (e.metric, e.unique_id) in ours
                  and e.metric == "Placed Order"}  # fmt: skip
        busiest = max(months)
        s.preload([st.other_event("Placed Order", f"{busiest}-15T12:00:00+00:00", 5.0,
                                  integration=st.API, uid=f"live-{n}",
                                  properties={"OrderId": f"live-{n}"}) for n in range(3)])  # fmt: skip
        done = in_process(tmp_path, KEY, "verify", "orders.csv", "--base-url", s.url, "--json",
                          "v.json", clock=s.clock, columns=80)  # fmt: skip
    doc = json.loads((tmp_path / "v.json").read_text())
    assert done.returncode == 0, said(done)
    more = [r for r in doc["rows"] if r["klaviyo_count"] > r["sent_count"]]
    assert len(more) > 20 and not any(r["klaviyo_count"] < r["sent_count"] for r in doc["rows"])
    text = " ".join(done.stdout.split())
    assert f"Rows that hold more than the job sent: {len(more)} (" in text
    assert "Rows that are short" not in text and "--json or --html lists every row" in text
    assert f"; {len(more):,} row(s) hold more, not a failure (see above)." in text, text
    placed = [r for r in more if r["metric"] == "Placed Order"]
    shown = {r["month"] for r in placed}
    others = [e for e in s.events + s.preloaded if e.metric == "Placed Order"
              and (e.time or "")[:7] in shown and (e.metric, e.unique_id) not in ours]  # fmt: skip
    live = sum((e.unique_id or "").startswith("live-") for e in others)
    extra = sum(r["klaviyo_count"] - r["sent_count"] for r in placed)
    assert live == 3 and len(others) > 3 * live
    assert (f"Placed Order: {len(placed)} row(s) ({min(shown)} to {max(shown)}), +{extra} "
            f"event(s) held more in those months: {len(others) - live} event(s) this tool "
            f"sent from other exports, {live} from other sources") in text  # fmt: skip
    assert len(done.stdout.splitlines()) < 40 + len(doc["totals"])
    lines = done.stdout.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("  Placed Order: "))
    assert all(line.startswith("    ") for line in lines[first + 1 : first + 3]), lines  # folded
