"""Reading back at Klaviyo's read limits: `verify` over ten years of history (5 metrics x 10
yearly aggregate queries), and what the overlap check adds to a new send.

verify    A checkpoint whose sent totals cover 5 metrics x 120 months (2016-2025) x 2
          currencies, built with klaviyo_backfill.state.checkpoint.Ledger and bound to the account
          of the stand-in's key, and a stand-in (in this process) at Klaviyo's published read
          limits (GET /api/metrics 10/s and 150/min; POST /api/metric-aggregates 3/s and
          60/min) holding exactly those events, answering each request after --latency
          seconds. Runs `klaviyo-backfill verify --checkpoint CK --json OUT` and reports its
          wall time, the aggregate queries and 429s the stand-in counted, and the least time
          those queries take under the windows (throttle.ideal_seconds).

per order A checkpoint of --events acknowledged events (orders of one Placed Order and
          three Ordered Products, over 2024-2025), built with Ledger.record as a send records
          them, and a stand-in at Klaviyo's published read limits (GET /api/events 350/s and
          3,500/min, 1,000 events a page) holding exactly those events. Runs `verify
          --checkpoint CK --json OUT` and reports its wall time and peak memory against the
          least time the reads take under the windows (pages at GET /api/events' windows, plus
          the aggregate queries at theirs): targets 2x for a million events, 150 MB, and 3x
          for 20,000 orders. Also its own CPU and the stand-in's (this process, on the same
          cores: Klaviyo serves its pages on its own machines), and the load before the run.

overlap   The benchmark export (--orders, dates over 2016-2025) sent against a stand-in that
          holds another integration's Placed Order (in 2014: outside the export, so the check
          runs in full - a pass over the export, then one query per year - and finds nothing),
          and against one that holds none (the check is one GET /api/metrics). Reports the
          time from launch to the first event request in each, and the check's own time from
          the run's log. The send is stopped (SIGINT) once its first request has arrived.

    .venv/bin/python benchmarks/verify.py                       # latency 0.3 s, 20,000 orders
    .venv/bin/python benchmarks/verify.py --latency 1.0 --orders 100000
    .venv/bin/python benchmarks/verify.py --only per-order      # 1,000,000 events, 20,000 orders
    .venv/bin/python benchmarks/verify.py --only per-order --order-latency 0.2  # answers take 0.2 s
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import signal
import subprocess
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import _common as c
import standin as st

METRICS = (
    "Placed Order",
    "Ordered Product",
    "Fulfilled Order",
    "Cancelled Order",
    "Refunded Order",
)
YEARS = range(2016, 2026)
CURRENCIES = ("USD", "EUR")
PER_CELL = 3  # events per metric, month and currency
TARGET_VERIFY_S = 60.0


def months() -> list[str]:
    return [f"{y}-{m:02d}" for y in YEARS for m in range(1, 13)]


def make_checkpoint(path: Path, account: str) -> int:
    """A finished checkpoint of this stand-in's account whose totals are `PER_CELL` events
    of 12.34 per metric, month and currency; returns the number of rows."""
    from klaviyo_backfill.state.checkpoint import Ledger, Total

    ledger = Ledger(path)
    try:
        ledger.claim("benchmark", "benchmark", account)
        totals = {}
        for metric in METRICS:
            for month in months():
                for currency in CURRENCIES:
                    totals[(metric, month, currency)] = Total(PER_CELL, Decimal("12.34") * PER_CELL,
                                                              time.time() - 7200)  # fmt: skip
        ledger.record([("order", False)], totals={"order": totals})
        ledger.put(state="finished")
    finally:
        ledger.close()
    return len(totals)


def held_events() -> list[st.StoredEvent]:
    return [st.other_event(metric, f"{month}-1{i}T12:00:00+00:00", 12.34, currency,
                           integration=st.API, uid=f"{metric}{month}{currency}{i}")
            for metric in METRICS for month in months() for currency in CURRENCIES
            for i in range(PER_CELL)]  # fmt: skip


def bench_verify(tmp: Path, latency: float) -> dict[str, object]:
    from klaviyo_backfill.klaviyo.endpoints import METRIC_AGGREGATES
    from klaviyo_backfill.klaviyo.throttle import ideal_seconds

    env = dict(os.environ, KLAVIYO_API_KEY=c.API_KEY, XDG_STATE_HOME=str(tmp / "state"))
    with st.StandIn(api_key=c.API_KEY, faults=st.Faults(latency=latency)) as s:
        s.preload(held_events())
        rows = make_checkpoint(tmp / "verify.sqlite", s.account["id"])
        started = time.perf_counter()
        done = subprocess.run([*c.cli(), "verify", "--checkpoint", str(tmp / "verify.sqlite"),
                               "--base-url", s.url, "--json", str(tmp / "verify.json")],
                              env=env, capture_output=True, text=True)  # fmt: skip
        wall = time.perf_counter() - started
        queries = sum(r.path == st.AGGREGATES_PATH for r in s.reads)
        throttled = s.stats["read_429"]
    doc = json.loads((tmp / "verify.json").read_text())
    assert done.returncode == 0 and doc["status"] == "ok", done.stdout + done.stderr
    ideal = ideal_seconds(queries - throttled, METRIC_AGGREGATES.windows)
    return {"rows": rows, "queries": queries, "throttled": throttled, "latency_s": latency,
            "wall_s": round(wall, 1), "ideal_s": round(ideal, 1)}  # fmt: skip


ITEMS = 3  # Ordered Product events per order, beside its Placed Order
SPAN = (1704067200, 1767225600)  # 2024-01-01 .. 2026-01-01, UTC


def per_order_job(path: Path, account: str, orders: int) -> list[st.StoredEvent]:
    """A finished checkpoint of `orders` orders (each a Placed Order and ITEMS Ordered
    Products) acknowledged by this stand-in's account, recorded as a send records them; and
    the same events as the stand-in stores them."""
    from datetime import UTC, datetime

    from klaviyo_backfill.model import item_key, utc_month
    from klaviyo_backfill.state.checkpoint import Ledger, Total

    ledger = Ledger(path)
    stored: list[st.StoredEvent] = []
    try:
        ledger.claim("benchmark", "benchmark", account)
        step = (SPAN[1] - SPAN[0]) / orders
        for start in range(0, orders, 10_000):
            done, totals, acked = [], {}, {}
            for i in range(start, min(orders, start + 10_000)):
                oid, at = f"{100000 + i}", int(SPAN[0] + i * step)
                when = datetime.fromtimestamp(at, UTC)
                iso, month = when.isoformat(), utc_month(when)
                events = [("Placed Order", oid, {"OrderId": oid}, "30.00")] + [
                    ("Ordered Product", f"{oid}_SKU{k}",
                     {"OrderId": oid, "SKU": f"SKU{k}", "ProductID": f"P{k}", "Quantity": 1},
                     "10.00") for k in range(ITEMS)]  # fmt: skip
                done.append((oid, False))
                totals[oid] = {}
                acked[oid] = []
                for metric, uid, props, value in events:
                    key = (metric, month, "USD")
                    totals[oid].setdefault(key, Total()).add(Decimal(value), time.time() - 7200)
                    acked[oid].append((metric, at, oid, uid, item_key(props), value, "USD",
                                       "orders.csv", i + 2))  # fmt: skip
                    stored.append(st.StoredEvent(metric, uid, iso, float(value), "USD", True, props,
                                                 {}, "bulk", f"c{i}@example.com", uid))  # fmt: skip
            ledger.record(done, totals=totals, acked=acked)
        ledger.put(state="finished")
    finally:
        ledger.close()
    return stored


def peak_measured(cmd: list[str], env: dict[str, str]) -> tuple[c.Measured, float, float]:
    """The child run and timed, its own peak memory after exec (VmHWM, polled every 10 ms:
    its rusage would count the pages it shared with this large process, a million stored
    events, between fork and exec), and this process's CPU meanwhile (the stand-in serving
    the pages, and the poll). The child's CPU is its own: children's times counted since
    its start, not every earlier run's."""
    before = os.times()
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    peak, status = 0.0, Path(f"/proc/{proc.pid}/status")
    while proc.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) / 1024)
        except OSError:
            pass
        time.sleep(0.01)
    out, err = proc.communicate()
    seconds = time.perf_counter() - started
    after = os.times()
    user = after.children_user - before.children_user
    system = after.children_system - before.children_system
    served = after.user + after.system - before.user - before.system
    return c.Measured(seconds, proc.returncode, peak, user, system, out, err), peak, served


def bench_per_order(tmp: Path, orders: int, latency: float = 0.0) -> dict[str, object]:
    from klaviyo_backfill.klaviyo.endpoints import EVENTS, METRIC_AGGREGATES, METRICS
    from klaviyo_backfill.klaviyo.throttle import ideal_seconds

    env = dict(os.environ, KLAVIYO_API_KEY=c.API_KEY, XDG_STATE_HOME=str(tmp / "state"))
    ck, out = (
        Path(tempfile.mkstemp(".sqlite", "per-order-", tmp)[1]),
        tmp / f"per-order-{orders}.json",
    )
    ck.unlink()
    with st.StandIn(api_key=c.API_KEY, faults=st.Faults(latency=latency)) as s:
        s.store(per_order_job(ck, s.account["id"], orders))
        s.encode_all()  # the stand-in's own JSON, index by time and rollups: before the clock
        gc.collect()
        gc.freeze()  # a million stored events: no collection walks them while it answers
        load = os.getloadavg()[0]
        run, peak, served = peak_measured([*c.cli(), "verify", "--checkpoint", str(ck),
                                           "--base-url", s.url, "--json", str(out)], env)  # fmt: skip
        pages = sum(r.path == st.SINGLE_PATH and r.status == 200 for r in s.reads)
        queries = sum(r.path == st.AGGREGATES_PATH and r.status == 200 for r in s.reads)
        listings = sum(r.path == st.METRICS_PATH and r.status == 200 for r in s.reads)
        throttled = s.stats["read_429"]
    assert out.exists(), run.stdout + run.stderr
    doc = json.loads(out.read_text())
    assert run.returncode == 0 and doc["status"] == "ok", run.stdout + run.stderr
    assert doc["per_order"]["events_held"] == orders * (1 + ITEMS)
    ideal = (ideal_seconds(pages, EVENTS.windows) + ideal_seconds(queries, METRIC_AGGREGATES.windows)
             + ideal_seconds(listings, METRICS.windows))  # fmt: skip
    return {"orders": orders, "events": orders * (1 + ITEMS), "pages": pages,
            "aggregate_queries": queries, "throttled": throttled, "wall_s": round(run.seconds, 2),
            "ideal_s": round(ideal, 2), "ratio": round(run.seconds / ideal, 2),
            "max_rss_mb": round(peak, 1), "cpu_s": round(run.user + run.system, 2),
            "standin_cpu_s": round(served, 2), "load_before": round(load, 2),
            "latency_s": latency}  # fmt: skip


def first_request(tmp: Path, export: Path, other: bool) -> tuple[float, float | None]:
    """(launch -> first event request, the overlap check's own seconds from the log)."""
    env = dict(os.environ, KLAVIYO_API_KEY=c.API_KEY, XDG_STATE_HOME=str(tmp / "state"))
    log = tmp / f"send-{other}.log"
    with st.StandIn(api_key=c.API_KEY) as s:
        if other:
            s.preload([st.other_event("Placed Order", f"2014-{m:02d}-01T00:00:00+00:00")
                       for m in range(1, 13)])  # fmt: skip
        started = time.monotonic()
        proc = subprocess.Popen([*c.cli(), "send", str(export), "--base-url", s.url, "-q",
                                 "--restart", "--log", str(log), "--checkpoint",
                                 str(tmp / f"send-{other}.sqlite")], env=env, cwd=tmp,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
        while not s.requests and proc.poll() is None:
            time.sleep(0.01)
        first = s.requests[0].time_received - started if s.requests else float("nan")
        proc.send_signal(signal.SIGINT)  # Ctrl-C: in-flight requests finish, then it stops
        proc.wait(timeout=120)
    found = re.search(r"overlap check: .* ([\d.]+) s$", log.read_text(), re.MULTILINE)
    return first, float(found.group(1)) if found else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--latency", type=float, default=0.3, help="seconds per read answer")
    ap.add_argument("--order-latency", type=float, default=0.0,
                    help="per order: seconds per read answer (0: the client's own cost)")  # fmt: skip
    ap.add_argument("--orders", type=int, default=20_000, help="orders in the overlap export")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--events", type=int, default=1_000_000, help="per order: events acknowledged")
    ap.add_argument("--only", choices=["per-order", "monthly"], help="run one part only")
    a = ap.parse_args()
    info = c.machine()
    print(f"machine: {info}")
    with c.tempdir(a.keep) as tmp:
        if a.only != "monthly":
            big = bench_per_order(tmp, a.events // (1 + ITEMS), a.order_latency)
            small = bench_per_order(tmp, 20_000, a.order_latency)
            print(c.table(
                ["what", "events", "pages", "aggregate queries", "429s", "wall", "ideal",
                 "ratio", "target", "verify CPU", "stand-in CPU", "peak memory"],
                [[f"verify per order, {r['orders']:,} orders", f"{r['events']:,}", r["pages"],
                  r["aggregate_queries"], r["throttled"], f"{r['wall_s']} s", f"{r['ideal_s']} s",
                  f"{r['ratio']}x", f"<= {limit}x {c.verdict(float(r['ratio']) <= limit)}",  # type: ignore[arg-type]
                  f"{r['cpu_s']} s", f"{r['standin_cpu_s']} s", f"{r['max_rss_mb']} MB"]
                 for r, limit in ((big, 2), (small, 3))],
                "verify order by order at Klaviyo's read limits (peak memory target 150 MB; the "
                "stand-in serves the pages from this process, on the same cores; "
                f"{a.order_latency:g} s per answer)",
            ))  # fmt: skip
            c.emit_json({"benchmark": "verify-per-order", "machine": info,
                         "million": big, "twenty_thousand": small})  # fmt: skip
            if a.only == "per-order":
                return
        v = bench_verify(tmp, a.latency)
        print(c.table(
            ["what", "rows", "aggregate queries", "429s", "latency/answer", "wall", "ideal",
             "target"],
            [["verify, 5 metrics x 10 years", v["rows"], v["queries"], v["throttled"],
              f"{a.latency:.2f} s", f"{v['wall_s']} s", f"{v['ideal_s']} s",
              f"<= {TARGET_VERIFY_S:.0f} s {c.verdict(float(v['wall_s']) <= TARGET_VERIFY_S)}"]],  # type: ignore[arg-type]
            "verify at Klaviyo's read limits",
        ))  # fmt: skip
        export = c.write_shopify_export(tmp / "orders.csv", a.orders)
        without, _ = first_request(tmp, export.path, other=False)
        with_other, check = first_request(tmp, export.path, other=True)
        print(c.table(
            ["orders", "first request, no other integration", "with one (full check)",
             "the check itself (log)", "added"],
            [[a.orders, f"{without:.1f} s", f"{with_other:.1f} s",
              f"{check:.1f} s" if check is not None else "-", f"{with_other - without:.1f} s"]],
            "the overlap check of a new send",
        ))  # fmt: skip
        c.emit_json({"benchmark": "verify", "machine": info, "verify": v, "overlap": {
            "orders": a.orders, "first_request_s": round(without, 2),
            "first_request_with_check_s": round(with_other, 2),
            "check_s": check, "added_s": round(with_other - without, 2)}})  # fmt: skip


if __name__ == "__main__":
    main()
