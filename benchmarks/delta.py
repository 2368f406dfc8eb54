"""A later export to the same account: how long until its first new request, against a bare
CSV pass over the orders the account holds already?

Writes an export of N + --new orders and the account's ledger (account_ledger.py) holding the
first N as an earlier send leaves it: each order's digest as read (delta.Delta.digest, with
the job's payload salt) and its event count. Built directly, not by sending N orders (that
would take the account's rate limit for half an hour), through the tool's own reader, so the
digests are exactly those a send computes. Then runs `klaviyo-backfill send FILE` (a new job:
no checkpoint) against the stand-in (in this process, real limits, 50 ms latency) and reads
the time from launch to the first request the stand-in receives.

Target (issue "Again next month"): first new request within 1.5x a bare csv.DictReader pass
over the orders already sent; memory flat (the ledger is looked up on disk).

    .venv/bin/python benchmarks/delta.py                 # N for ~1M events (~230k orders)
    .venv/bin/python benchmarks/delta.py --orders 50000 --new 1000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import _common as c

TARGET_RATIO = 1.5


def build_ledger(
    state: Path, export: c.Export, sent: int, base_url: str, mode: str
) -> tuple[float, int]:
    """The account ledger after the first `sent` orders went: (seconds, bytes on disk)."""
    os.environ["XDG_STATE_HOME"] = str(state)
    from klaviyo_backfill.inputs.export import read_orders
    from klaviyo_backfill.klaviyo.account import account_id
    from klaviyo_backfill.options import InputOptions, SendOptions
    from klaviyo_backfill.pipeline.job import job_from
    from klaviyo_backfill.presend.delta import Delta
    from klaviyo_backfill.state.account_ledger import AccountLedger, OrderFacts, account_ledger_path

    started = time.perf_counter()
    job = job_from(SendOptions(InputOptions((str(export.path),)), profile_attributes=mode))
    path = account_ledger_path(account_id(base_url, c.API_KEY))
    ledger = AccountLedger(path)
    delta = Delta(ledger, job.payload_salt())
    facts = OrderFacts("", None, None, None, 4)
    batch: list[tuple[str, bytes | None, OrderFacts]] = []
    # the reader, asked by the delta (as a send asks it), gives each order its rows' digest
    for number, raw in enumerate(read_orders(job.inputs[0], held=delta)):
        if number == sent:
            break
        batch.append((str(raw.get("id")).strip(), delta.digest(raw), facts))
        if len(batch) >= 20_000:
            ledger.record([], batch)
            batch = []
    ledger.record([], batch)
    ledger.close()
    return time.perf_counter() - started, path.stat().st_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--orders", type=int, help="orders sent before (default: ~--events events)")
    ap.add_argument("--events", type=int, default=1_000_000, help="size the sent part by events")
    ap.add_argument("--new", type=int, default=1000, help="orders new in this export")
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--profile-attributes", default="latest", choices=["latest", "all", "none"],
                    help="latest (the default) reads the export once more before sending")  # fmt: skip
    args = ap.parse_args()
    from standin import Faults, StandIn

    info = c.announce()
    sent = args.orders if args.orders is not None else c.orders_for(args.events)
    total = sent + args.new
    startup = c.startup_seconds()
    with c.tempdir(args.keep) as tmp, StandIn(faults=Faults(latency=args.latency)) as s:
        export = c.write_shopify_export(tmp / "orders.csv", total)
        sent_rows, sent_events = export.rows_before(sent), export.events_before(sent)
        new_events = export.events_before(total) - sent_events
        print(f"export: {total:,} orders, {export.bytes / 1e6:.0f} MB; the account holds the "
              f"first {sent:,} orders ({sent_events:,} events)", flush=True)  # fmt: skip
        ledger_s, ledger_bytes = build_ledger(
            tmp / "state", export, sent, s.url, args.profile_attributes
        )
        bare, _ = c.bare_parse(export.path, max_rows=sent_rows)
        env = {**os.environ, "KLAVIYO_API_KEY": c.API_KEY, "XDG_STATE_HOME": str(tmp / "state")}
        env.pop("KLAVIYO_BASE_URL", None)
        summary_path = tmp / "summary.json"
        cmd = [*c.cli(), "send", str(export.path), "-q", "--base-url", s.url, "--summary-json",
               str(summary_path), "--failures", str(tmp / "failures.jsonl"),
               "--profile-attributes", args.profile_attributes]  # fmt: skip
        run = c.launch(cmd, s, env, args.timeout, cwd=tmp)
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        stand = s.summary()
        if not summary_path.exists():
            print(run.stdout, run.stderr, file=sys.stderr)
            raise SystemExit(f"the send failed (exit {run.returncode})")
        summary = json.loads(summary_path.read_text())

    first = run.first_request
    skip = first - startup
    ratio = skip / bare
    skipped = summary["skipped"].get("already in Klaviyo (this account)", 0)
    correct = skipped == sent and stand["events_stored"] == new_events
    print(c.table(
        ["what", "seconds"],
        [(f"account ledger built ({sent:,} orders, {ledger_bytes / 1e6:.1f} MB)", ledger_s),
         ("CLI start-up (--version, best of 3)", startup),
         (f"bare csv.DictReader pass over the part already sent ({sent_rows:,} rows)", bare),
         ("launch -> first new request at the stand-in", first),
         ("  minus start-up: skipping what the account holds", skip),
         ("whole send (launch -> exit)", run.seconds)],
        title=f"\nA later export: {sent:,} orders held by the account, {args.new:,} new, "
              f"--profile-attributes {args.profile_attributes}"))  # fmt: skip
    print(f"\nskipping / bare pass: {ratio:.2f}x (start-up excluded; {first / bare:.2f}x with it)")
    print(f"send: exit {run.returncode}, {skipped:,} orders skipped as already in Klaviyo, "
          f"stand-in stored {stand['events_stored']:,} (expected {new_events:,}): "
          f"{'consistent' if correct else 'INCONSISTENT'}; peak RSS of all children "
          f"{usage.ru_maxrss / 1024:.0f} MB")  # fmt: skip
    print(f"Target: <= {TARGET_RATIO:g}x a bare CSV pass: {c.verdict(ratio <= TARGET_RATIO)} "
          f"({ratio:.2f}x)")  # fmt: skip
    c.emit_json({
        "benchmark": "delta", "machine": info, "orders_held": sent, "events_held": sent_events,
        "orders_new": args.new, "ledger_mb": round(ledger_bytes / 1e6, 1),
        "startup_s": round(startup, 3), "bare_parse_s": round(bare, 3),
        "first_request_s": round(first, 3), "skip_ratio": round(ratio, 2),
        "run_s": round(run.seconds, 3), "peak_rss_mb": round(usage.ru_maxrss / 1024),
        "consistent": correct,
    })  # fmt: skip


if __name__ == "__main__":
    main()
