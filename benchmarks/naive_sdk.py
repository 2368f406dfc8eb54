"""The loop a developer would write with Klaviyo's official Python SDK, against the tool.

Both run against the stand-in (tests/standin.py, unmodified, Klaviyo's real limits: bulk 10/s
and 150/min, single 350/s and 3,500/min; 50 ms latency), over the same events: those of
`klaviyo-backfill send FILE --dry-run --endpoint single --output events.jsonl`, one
`POST /api/events` body per line.

* SDK: `pip install klaviyo-api`; `KlaviyoAPI(key, test_host=URL)` points it at the
  stand-in (the wrapper's own option: it sets `configuration.host`; plain http is accepted);
  then, as its README shows, `klaviyo.Events.create_event(body)` per event, one at a time,
  with the SDK's built-in retries. Capped at --seconds; events/s is extrapolated from there.
* Tool: `klaviyo-backfill send FILE --endpoint bulk --base-url URL` (a fresh stand-in), timed
  as a process, start-up included.

    .venv/bin/pip install klaviyo-api      # benchmark only, not a dependency of the tool
    .venv/bin/python benchmarks/naive_sdk.py [--orders 300] [--seconds 60]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import _common as c


def sdk_loop(url: str, events_file: Path, cap: float) -> dict[str, Any]:
    try:
        from klaviyo_api import KlaviyoAPI
        from openapi_client.exceptions import ApiException
    except ImportError:
        raise SystemExit(
            "klaviyo-api is not installed: .venv/bin/pip install klaviyo-api (benchmark only)"
        ) from None
    import klaviyo_api

    klaviyo = KlaviyoAPI(c.API_KEY, test_host=url)  # max_retries=3, max_delay=60 by default
    done = failed = 0
    errors: dict[str, int] = {}
    started = time.perf_counter()
    capped = False
    with events_file.open(encoding="utf-8") as fh:
        for line in fh:
            if time.perf_counter() - started >= cap:
                capped = True
                break
            body = json.loads(line)
            try:
                klaviyo.Events.create_event(body)
                done += 1
            except ApiException as exc:
                failed += 1
                errors[str(exc.status)] = errors.get(str(exc.status), 0) + 1
    elapsed = time.perf_counter() - started
    version = getattr(klaviyo_api, "__version__", None)
    if version is None:
        from importlib.metadata import version as dist_version

        version = dist_version("klaviyo-api")
    return {"sdk_version": version, "events_sent": done, "events_failed": failed,
            "errors": errors, "seconds": round(elapsed, 3), "capped": capped,
            "events_per_s": round(done / elapsed, 2) if elapsed else 0.0}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--orders", type=int, default=300)
    ap.add_argument("--seconds", type=float, default=60.0, help="cap on the SDK loop")
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    info = c.announce()
    env = {**os.environ, "KLAVIYO_API_KEY": c.API_KEY}
    env.pop("KLAVIYO_BASE_URL", None)
    with c.tempdir(args.keep) as tmp:
        export = c.write_shopify_export(tmp / "orders.csv", args.orders)
        events_file = tmp / "events.jsonl"
        dry = c.run_measured([*c.cli(), "send", str(export.path), "--dry-run", "--endpoint",
                              "single", "--preview", "0", "--failures", "/dev/null",
                              "--output", str(events_file)])  # fmt: skip
        if dry.returncode not in (0, 1) or not events_file.exists():
            print(dry.stdout, dry.stderr, file=sys.stderr)
            raise SystemExit("the dry run that writes the events failed")
        with events_file.open("rb") as fh:
            total = sum(1 for _ in fh)
        print(f"{args.orders:,} orders -> {total:,} events; SDK loop capped at {args.seconds:g} s",
              flush=True)  # fmt: skip

        with c.standin_process(latency=args.latency) as s:
            sdk = sdk_loop(s.url, events_file, args.seconds)
        sdk["standin_stats"] = s.stats

        summary_path = tmp / "summary.json"
        with c.standin_process(latency=args.latency) as s:
            run = c.run_measured([*c.cli(), "send", str(export.path), "--endpoint", "bulk",
                                  "--base-url", s.url, "-q", "--summary-json", str(summary_path),
                                  "--checkpoint", str(tmp / "ck.sqlite"),
                                  "--failures", str(tmp / "failures.jsonl")], env=env)  # fmt: skip
        if not summary_path.exists():
            print(run.stdout, run.stderr, file=sys.stderr)
            raise SystemExit(f"the tool's run failed (exit {run.returncode})")
        summary = json.loads(summary_path.read_text())
        sent = sum(summary["events_sent"].values())
        tool = {"events_sent": sent, "requests": summary["requests"], "exit_code": run.returncode,
                "wall_s": round(run.seconds, 3), "send_s": summary["elapsed_seconds"],
                "events_per_s_wall": round(sent / run.seconds, 1),
                "events_per_s_send": round(sent / summary["elapsed_seconds"], 1)
                if summary["elapsed_seconds"] else 0.0,
                "standin_stats": s.stats}  # fmt: skip

    ratio = tool["events_per_s_wall"] / sdk["events_per_s"] if sdk["events_per_s"] else float("inf")
    sdk_all = total / sdk["events_per_s"] if sdk["events_per_s"] else float("inf")
    print(c.table(
        ["client", "events", "requests", "seconds", "events/s", "time for all events"],
        [("official SDK, create_event loop", sdk["events_sent"], s_requests(sdk),
          sdk["seconds"], sdk["events_per_s"],
          f"{sdk_all:,.0f} s" + (" (extrapolated)" if sdk["capped"] else "")),
         ("klaviyo-backfill --endpoint bulk (wall, start-up incl.)", tool["events_sent"],
          tool["requests"], tool["wall_s"], tool["events_per_s_wall"], f"{tool['wall_s']:.1f} s"),
         ("klaviyo-backfill (send phase only)", tool["events_sent"], tool["requests"],
          tool["send_s"], tool["events_per_s_send"], f"{tool['send_s']:.1f} s")],
        title=f"\nSame {total:,} events, stand-in at Klaviyo's real limits, {args.latency * 1000:.0f} ms latency"))  # fmt: skip
    print(f"\nThe tool is {ratio:,.0f}x the SDK loop's events/s (wall clock, start-up included). "
          f"SDK {sdk['sdk_version']}: {sdk['events_failed']} failed; errors {sdk['errors'] or 'none'}.")  # fmt: skip
    print(
        "(A small export: the tool's figure is start-up and mapping bound, not rate-limit bound;"
        " at Klaviyo's bulk limits its ceiling is 150 requests x 1,000 events a minute.)"
    )
    c.emit_json({"benchmark": "naive_sdk", "machine": info, "orders": args.orders,
                 "events": total, "latency_s": args.latency, "sdk": sdk, "tool": tool,
                 "ratio_events_per_s": round(ratio, 1)})  # fmt: skip


def s_requests(sdk: dict[str, Any]) -> int:
    return int(sdk["standin_stats"].get("requests", sdk["events_sent"] + sdk["events_failed"]))


if __name__ == "__main__":
    main()
