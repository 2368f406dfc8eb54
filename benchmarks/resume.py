"""Resuming a big run: how long until the first new request, and how does skipping the orders
the checkpoint holds compare with just reading their rows?

Writes an export of N + --new orders, and a checkpoint holding the first N (in file order) as
sent - built with klaviyo_backfill.state.checkpoint.Ledger directly, bound to the fingerprint the
CLI computes (the Job is built by job.job_from with the CLI's defaults), state "stopped",
exactly as an interrupted run leaves it. Then runs `klaviyo-backfill send FILE --resume
--checkpoint CK --base-url URL` against the stand-in (in this process, real limits, 50 ms
latency) and reads the time from launching the process to the stand-in receiving its first
request. For comparison: a bare csv.DictReader pass over the first N orders' rows, and the
CLI's start-up (`--version`).

The checkpoint holds the resume point (the byte offset of the first unsent order) as the
tool records it; `--no-resume-point` leaves it out, so the run skips the sent orders by
their ids (the path JSON inputs take).

Targets: <= 10 s to the first new request; skipping <= 1.5x a bare CSV pass over the part
already sent.

    .venv/bin/python benchmarks/resume.py                 # N for ~1M events (~230k orders)
    .venv/bin/python benchmarks/resume.py --orders 50000 --new 1000
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

TARGET_FIRST_S = 10.0
TARGET_SKIP_RATIO = 1.5


def resume_offset(export: c.Export, sent: int) -> int:
    """The byte offset of order number `sent` (0-based): the resume point the tool records."""
    from klaviyo_backfill.inputs.export import read_orders
    from klaviyo_backfill.inputs.layouts import builtin_layouts
    from klaviyo_backfill.inputs.sources import Input

    source = Input(str(export.path), builtin_layouts()["shopify-csv"], "utf-8-sig")
    for number, raw in enumerate(read_orders(source, skip=lambda _: True)):
        if number == sent:
            return raw.offset
    raise ValueError(f"the export has fewer than {sent + 1} orders")


def make_checkpoint(path: Path, export: c.Export, sent: int, watermark: bool = True) -> float:
    """The ledger an interrupted run leaves after `sent` orders; returns seconds taken
    (finding the resume point's offset is not counted)."""
    from klaviyo_backfill.options import InputOptions, SendOptions
    from klaviyo_backfill.pipeline.job import job_from
    from klaviyo_backfill.state.checkpoint import Landmarks, Ledger

    offset = resume_offset(export, sent) if watermark else None

    started = time.perf_counter()
    options = SendOptions(InputOptions((str(export.path),)),
                          failures=str(path.parent / "failures.jsonl"))  # fmt: skip
    job = job_from(options)  # the CLI's defaults: the fingerprint a CLI run computes
    ledger = Ledger(path)
    try:
        ledger.claim(job.fingerprint(), "benchmark")
        ledger.put(state="running", started=str(time.time()))
        chunk = 50_000
        for first in range(0, sent, chunk):
            ledger.record(
                [(export.order_id(i), False) for i in range(first, min(sent, first + chunk))]
            )
        if offset is not None:  # what the tool commits with its last acknowledgement
            point = (0, offset)
            ledger.record([], [], point, Landmarks([str(export.path)]).at(point))
        ledger.put(state="stopped", ended=str(time.time()))
    finally:
        ledger.close()
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--orders", type=int, help="orders already sent (default: ~--events events)")
    ap.add_argument("--events", type=int, default=1_000_000, help="size the sent part by events")
    ap.add_argument("--new", type=int, default=1000, help="orders not sent yet")
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument(
        "--no-resume-point",
        action="store_true",
        help="a checkpoint without the byte offset (as JSON inputs have): skip by id only",
    )
    args = ap.parse_args()
    from standin import Faults, StandIn

    info = c.announce()
    sent = args.orders if args.orders is not None else c.orders_for(args.events)
    total = sent + args.new
    startup = c.startup_seconds()
    env = {**os.environ, "KLAVIYO_API_KEY": c.API_KEY}
    env.pop("KLAVIYO_BASE_URL", None)
    with c.tempdir(args.keep) as tmp:
        export = c.write_shopify_export(tmp / "orders.csv", total)
        sent_rows, sent_events = export.rows_before(sent), export.events_before(sent)
        new_events = export.events_before(total) - sent_events
        print(f"export: {total:,} orders, {export.rows:,} rows, {export.bytes / 1e6:.0f} MB "
              f"(written in {export.seconds:.1f} s); checkpoint: first {sent:,} orders "
              f"= {sent_rows:,} rows, {sent_events:,} events", flush=True)  # fmt: skip
        env["XDG_STATE_HOME"] = str(tmp / "state")  # the account ledger: not the user's
        checkpoint = tmp / "checkpoint.sqlite"
        ck_seconds = make_checkpoint(checkpoint, export, sent, not args.no_resume_point)
        bare, bare_cpu = c.bare_parse(export.path, max_rows=sent_rows)

        summary_path = tmp / "summary.json"
        cmd = [*c.cli(), "send", str(export.path), "--resume", "--checkpoint", str(checkpoint),
               "-q", "--summary-json", str(summary_path), "--failures", str(tmp / "failures.jsonl")]  # fmt: skip
        with StandIn(faults=Faults(latency=args.latency)) as s:
            cmd += ["--base-url", s.url]
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            run = c.launch(cmd, s, env, args.timeout)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            stand = s.summary()
        if not summary_path.exists():
            print(run.stdout, run.stderr, file=sys.stderr)
            raise SystemExit(f"the resumed run failed (exit {run.returncode})")
        summary = json.loads(summary_path.read_text())

    first = run.first_request
    skip = first - startup
    ratio = skip / bare
    skipped = summary["skipped"].get("already sent (checkpoint)", 0)
    sent_now = sum(summary["events_sent"].values())
    resumed_at = summary.get("resumed_at")
    # with the resume point the sent orders are not read at all; without it, skipped by id
    passed_over = summary["orders_read"] == args.new if resumed_at else skipped == sent
    correct = passed_over and stand["events_stored"] == new_events == sent_now
    print(c.table(
        ["what", "seconds"],
        [(f"checkpoint built (Ledger, {sent:,} orders)", ck_seconds),
         ("CLI start-up (--version, best of 3)", startup),
         (f"bare csv.DictReader pass over the sent part ({sent_rows:,} rows)", bare),
         ("launch -> first new request at the stand-in", first),
         ("  minus start-up: skipping (+ mapping the first request)", skip),
         ("whole resumed run (launch -> exit)", run.seconds),
         ("  its CPU time (user + sys; far below wall = a busy machine)", cpu)],
        title=f"\nResume after {sent:,} sent orders ({sent_events:,} events), {args.new:,} new"))  # fmt: skip
    print(
        f"\nskipping / bare pass: {ratio:.2f}x (start-up excluded; {first / bare:.2f}x including it)"
    )
    how = (
        f"resumed at {resumed_at}" if resumed_at else f"{skipped:,} orders skipped as already sent"
    )
    print(f"resumed run: exit {run.returncode}, {how}, "
          f"{summary['orders_sent']:,} orders / {sent_now:,} events sent in {summary['requests']} "
          f"requests; stand-in stored {stand['events_stored']:,} (expected {new_events:,}): "
          f"{'consistent' if correct else 'INCONSISTENT'}")  # fmt: skip
    print(
        f"Target: <= {TARGET_FIRST_S:g} s to the first new request: "
        f"{c.verdict(first <= TARGET_FIRST_S)} ({first:.2f} s)"
    )
    print(
        f"Target: skipping <= {TARGET_SKIP_RATIO:g}x a bare CSV pass: "
        f"{c.verdict(ratio <= TARGET_SKIP_RATIO)} ({ratio:.2f}x)"
    )
    c.emit_json({
        "benchmark": "resume", "machine": info, "orders_sent_before": sent,
        "events_sent_before": sent_events, "rows_sent_before": sent_rows, "orders_new": args.new,
        "export_mb": round(export.bytes / 1e6, 1), "checkpoint_build_s": round(ck_seconds, 2),
        "startup_s": round(startup, 3), "bare_parse_s": round(bare, 3),
        "bare_parse_cpu_s": round(bare_cpu, 3), "first_request_s": round(first, 3),
        "skip_s": round(skip, 3), "skip_ratio": round(ratio, 2),
        "skip_ratio_with_startup": round(first / bare, 2),
        "run_s": round(run.seconds, 3), "run_cpu_s": round(cpu, 3), "exit_code": run.returncode,
        "orders_skipped": skipped, "resumed_at": resumed_at, "events_sent_now": sent_now,
        "standin_events_stored": stand["events_stored"], "consistent": correct,
        "targets": {"first_request_max_s": TARGET_FIRST_S, "skip_ratio_max": TARGET_SKIP_RATIO,
                    "first_ok": first <= TARGET_FIRST_S, "skip_ok": ratio <= TARGET_SKIP_RATIO},
    })  # fmt: skip


if __name__ == "__main__":
    main()
