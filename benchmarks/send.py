"""Sending at the rate limits: how close does the real CLI get to the ceiling the limits allow,
in requests and in time, and how often does it get throttled?

Starts the Klaviyo stand-in (tests/standin.py) as a process with scaled-down limits and 50 ms
of latency, runs `klaviyo-backfill send FILE --base-url URL --rate-limit <same limits> -q
--summary-json S` over an export big enough for a few hundred full (1,000-event) bulk
requests, and compares with the ceiling:

* fewest requests possible: ceil(events / 1000) for bulk, one per event for single;
* ideal time: the greedy schedule under both sliding windows for that many requests
  (t_k = max(t_{k-1}, t_{k-limit} + window), first request at 0, + one latency);
* share of the ceiling: ideal time / the tool's send time, and fewest / actual requests;
* share throttled: 429s / requests, from the stand-in's stats line.

Targets: >= 95% of the ceiling; <= 1% of requests throttled.

Defaults keep each endpoint's run near a minute. Bulk 10/1,30/12: Klaviyo's own rates (10/s
burst, 2.5/s steady) with the steady window shortened from 150 per 60 s to 30 per 12 s, so
four steady windows pass in a minute and the client needs no more events per second than
against Klaviyo. (10/1,30/6 - a 5/s steady rate, twice Klaviyo's - also asks the client to map
5,000 events a second; pass --bulk-limits 10/1,30/6 to see whether it keeps up.) Single
30/1,90/6: a tenth of Klaviyo's 350/s and 3,500/min, windows likewise shortened. The
stand-in skips its jsonschema pass unless --full-validation (see _standin_noschema.py: that
pass alone costs ~0.3 s of CPU per 1,000-event body).

    .venv/bin/python benchmarks/send.py                     # bulk, then single
    .venv/bin/python benchmarks/send.py --endpoint bulk --orders 30000
    .venv/bin/python benchmarks/send.py --endpoint single --single-limits 20/1,120/10
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import _common as c

TARGET_CEILING = 0.95
TARGET_THROTTLED = 0.01


def run_endpoint(
    endpoint: str, orders: int, limits: str, args: argparse.Namespace
) -> dict[str, Any]:
    per_request = 1000 if endpoint == "bulk" else 1
    client_limits = args.client_limits or c.stand_in_limits_to_client(limits)
    with c.tempdir(args.keep) as tmp:
        export = c.write_shopify_export(tmp / "orders.csv", orders)
        planned = export.events_before(orders)
        planned_min = math.ceil(planned / per_request)
        print(f"[{endpoint}] {orders:,} orders, {planned:,} events -> at least {planned_min:,} "
              f"requests; limits {limits}, ideal {c.ideal_seconds(planned_min, limits, args.latency):.1f} s",
              flush=True)  # fmt: skip
        summary_path = tmp / "summary.json"
        kwargs = {"bulk_limits": limits} if endpoint == "bulk" else {"single_limits": limits}
        trace = tmp / "trace.jsonl"
        if args.trace:
            os.environ["KB_STANDIN_TRACE"] = str(trace)
        with c.standin_process(latency=args.latency, schema=args.full_validation, **kwargs) as s:
            cmd = [*c.cli(), "send", str(export.path), "--endpoint", endpoint,
                   "--base-url", s.url, "--rate-limit", client_limits,
                   "-q", "--summary-json", str(summary_path),
                   "--checkpoint", str(tmp / "checkpoint.sqlite"),
                   "--failures", str(tmp / "failures.jsonl")]  # fmt: skip
            if args.concurrency:
                cmd += ["--concurrency", str(args.concurrency)]
            cmd += ["--profile-attributes", args.profile_attributes]
            env = {**os.environ, "KLAVIYO_API_KEY": c.API_KEY, "XDG_STATE_HOME": str(tmp)}
            env.pop("KLAVIYO_BASE_URL", None)
            load_before = os.getloadavg()[0]
            launched = time.monotonic()
            run = c.run_measured(cmd, env=env, timeout=args.timeout)
            exited = time.monotonic()
            load_after = os.getloadavg()[0]
        os.environ.pop("KB_STANDIN_TRACE", None)
        if not summary_path.exists():
            print(run.stdout, run.stderr, file=sys.stderr)
            raise SystemExit(f"[{endpoint}] the CLI wrote no summary (exit {run.returncode})")
        summary = json.loads(summary_path.read_text())
        traced = timeline(trace, launched, exited, limits, args) if args.trace else None
    stats = s.stats
    events = sum(summary["events_sent"].values())
    fewest = math.ceil(events / per_request)
    requests = int(stats.get("requests", summary["requests"]))
    throttled = int(stats.get("429", 0))
    ideal = c.ideal_seconds(fewest, limits, args.latency)
    elapsed = float(summary["elapsed_seconds"])
    return {
        "endpoint": endpoint, "limits": limits, "client_rate_limit": client_limits,
        "orders": orders, "events": events,
        "exit_code": run.returncode, "error": summary.get("error"),
        "requests": requests, "fewest_requests": fewest,
        "requests_share": round(fewest / requests, 4) if requests else 0.0,
        "ideal_s": round(ideal, 2), "ideal_for_actual_requests_s": round(
            c.ideal_seconds(requests, limits, args.latency), 2),
        "send_s": round(elapsed, 2), "wall_s": round(run.seconds, 2),
        "ceiling_share": round(ideal / elapsed, 4) if elapsed else 0.0,
        "ceiling_share_wall": round(ideal / run.seconds, 4),
        "throttled": throttled, "throttled_share": round(throttled / requests, 4) if requests else 0.0,
        "client_retries": summary["retries"], "client_throttled": summary["throttled"],
        "events_stored": stats.get("events_stored"),
        "events_per_s": round(events / elapsed, 1) if elapsed else 0.0,
        "tool_cpu_s": round(run.user + run.system, 2), "tool_peak_rss_mb": round(run.max_rss_mb, 1),
        "loadavg_before": round(load_before, 2), "loadavg_after": round(load_after, 2),
        "standin_stats": stats, "timeline": traced,
    }  # fmt: skip


def timeline(
    trace: Path, launched: float, exited: float, limits: str, args: argparse.Namespace
) -> dict[str, Any]:
    """Where the time went, from the stand-in's arrival stamps (time.monotonic(), shared by
    every process on the machine): launch -> first request; each steady window's run of
    requests (a burst at real limits) against the same run in the ideal schedule; the last
    request -> exit. Printed, and kept in the JSON line."""
    if not trace.exists():  # the unmodified stand-in (--full-validation) writes no stamps
        print("  (no trace: --trace needs the stand-in without --full-validation)")
        return {}
    rows = [json.loads(line) for line in trace.read_text().splitlines()]
    pauses = [r for r in rows if "gc" in r]
    rows = [r for r in rows if "gc" not in r]
    got = [r["received"] - launched for r in rows]
    ideal = c.schedule(len(got), limits)
    steady = max(c.windows(limits), key=lambda w: w[1])[0]
    runs = []
    for k in range(0, len(got), steady):
        last = min(k + steady, len(got)) - 1
        runs.append({"first": round(got[k], 2), "last": round(got[last], 2),
                     "took": round(got[last] - got[k], 2),
                     "ideal": round(ideal[last] - ideal[k], 2), "requests": last - k + 1})  # fmt: skip
    out = {"launch_to_first_s": round(got[0], 2) if got else None,
           "last_to_exit_s": round(exited - launched - got[-1], 2) if got else None,
           "windows": runs, "standin_full_gc_s": round(sum(p["seconds"] for p in pauses), 2),
           "standin_full_gcs": len(pauses)}  # fmt: skip
    print(f"  launch -> first request {out['launch_to_first_s']} s; last request -> exit "
          f"{out['last_to_exit_s']} s; wall {exited - launched:.2f} s; the stand-in's full "
          f"garbage collections: {len(pauses)}, {out['standin_full_gc_s']} s")  # fmt: skip
    for i, r in enumerate(runs):
        print(f"  window {i}: requests {r['requests']} from {r['first']} s to {r['last']} s: "
              f"{r['took']} s (ideal {r['ideal']} s)")  # fmt: skip
    if args.keep_trace:
        Path(args.keep_trace).write_text(trace.read_text())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--endpoint", choices=["bulk", "single", "both"], default="both")
    ap.add_argument("--orders", type=int, default=34_000, help="orders for the bulk run")
    ap.add_argument("--single-orders", type=int, default=200, help="orders for the single run")
    ap.add_argument(
        "--bulk-limits", default="10/1,30/12", help="stand-in syntax: count/seconds,..."
    )
    ap.add_argument("--single-limits", default="30/1,90/6")
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--concurrency", type=int, help="passed to the CLI (default: its own)")
    ap.add_argument("--client-limits",
                    help="the CLI's --rate-limit (default: the stand-in's limits, e.g. 10/1s,30/12s)")  # fmt: skip
    ap.add_argument("--full-validation", action="store_true",
                    help="run the unmodified stand-in (with its jsonschema pass)")  # fmt: skip
    ap.add_argument("--real", action="store_true",
                    help="bulk only, at Klaviyo's real limits (10/1,150/60), 101,054 orders "
                    "(442,033 events: 443 requests, the last window not full)")  # fmt: skip
    ap.add_argument("--trace", action="store_true",
                    help="print where the time went, from the stand-in's arrival stamps")  # fmt: skip
    ap.add_argument("--keep-trace", metavar="PATH", help="with --trace: keep the stamps there")
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--profile-attributes", default="latest", choices=["latest", "all", "none"],
                    help="latest (the default) reads the export once before the first request")  # fmt: skip
    args = ap.parse_args()
    if args.real:
        args.endpoint, args.bulk_limits, args.orders = "bulk", "10/1,150/60", 101_054
    args.trace = args.trace or bool(args.keep_trace)

    info = c.announce()
    results = []
    if args.endpoint in ("bulk", "both"):
        results.append(run_endpoint("bulk", args.orders, args.bulk_limits, args))
    if args.endpoint in ("single", "both"):
        results.append(run_endpoint("single", args.single_orders, args.single_limits, args))

    print(c.table(
        ["endpoint", "limits", "events", "requests", "fewest", "ideal s", "send s", "wall s",
         "ceiling (time)", "ceiling (wall)", "requests share", "429s", "throttled", "events/s",
         "exit"],
        [(r["endpoint"], r["limits"], r["events"], r["requests"], r["fewest_requests"],
          r["ideal_s"], r["send_s"], r["wall_s"], f"{100 * r['ceiling_share']:.1f}%",
          f"{100 * r['ceiling_share_wall']:.1f}%", f"{100 * r['requests_share']:.1f}%",
          r["throttled"], f"{100 * r['throttled_share']:.2f}%", r["events_per_s"], r["exit_code"])
         for r in results],
        title="\nSending against the stand-in (50 ms latency) at scaled limits"))  # fmt: skip
    print(
        "(send s: the tool's own elapsed_seconds, from opening the export to the last answer; "
        "wall s adds process start-up. ideal s: the greedy schedule for the fewest requests.)"
    )
    ok = True
    for r in results:
        good = r["ceiling_share"] >= TARGET_CEILING and r["requests_share"] >= TARGET_CEILING
        calm = r["throttled_share"] <= TARGET_THROTTLED
        ok = ok and good and calm
        print(f"[{r['endpoint']}] >= {TARGET_CEILING:.0%} of the ceiling: {c.verdict(good)} "
              f"(time {r['ceiling_share']:.1%}, requests {r['requests_share']:.1%}); "
              f"<= {TARGET_THROTTLED:.0%} throttled: {c.verdict(calm)} ({r['throttled_share']:.2%}); "
              f"tool CPU {r['tool_cpu_s']:.1f} s, peak RSS {r['tool_peak_rss_mb']:.0f} MB, "
              f"load {r['loadavg_before']} -> {r['loadavg_after']}"
              + (f"; error: {r['error']}" if r["error"] else ""))  # fmt: skip
    c.emit_json({"benchmark": "send", "machine": info, "latency_s": args.latency,
                 "full_validation": args.full_validation, "runs": results,
                 "targets": {"ceiling_min": TARGET_CEILING, "throttled_max": TARGET_THROTTLED,
                             "ok": ok}})  # fmt: skip


if __name__ == "__main__":
    main()
