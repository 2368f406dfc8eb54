"""The offline pipeline: how much slower than reading the CSV is a full dry run, and does its
memory stay flat as the export grows?

For each size: write a Shopify CSV export of N orders (benchmarks/_common.py templating corpus
orders), time (a) a bare csv.DictReader pass over it and (b) `klaviyo-backfill send FILE
--dry-run --preview 0 --failures /dev/null` as a child process (read, convert, map and encode
every order; nothing sent), on every core (the default) and with `--jobs 1`, and read the
peak memory: the child's own RSS (wait4) and its process tree's (PSS, workers included).

Targets: dry run <= 3x the bare parse at 100k orders; peak memory flat in export size.

    .venv/bin/python benchmarks/pipeline.py                       # 20k and 100k orders
    .venv/bin/python benchmarks/pipeline.py --orders 1000000      # 200k and 1M
    .venv/bin/python benchmarks/pipeline.py --sizes 20000,100000,300000 --output-variant
    .venv/bin/python benchmarks/pipeline.py --sizes 20000 --profile   # + pyinstrument top 15
"""

from __future__ import annotations

import argparse
import importlib.util
import pstats
import re
import sys
from pathlib import Path

import _common as c

TARGET_RATIO = 3.0
# "Flat": the largest export may use at most this much more peak RSS per 100k extra orders.
FLAT_MB_PER_100K = 10.0


def _events(stdout: str) -> tuple[int, int]:
    """(orders read, events) from the dry run's summary table."""
    read = events = 0
    for line in stdout.splitlines():
        if m := re.search(r"Orders read\s*│\s*([\d,]+)", line):
            read = int(m.group(1).replace(",", ""))
        elif m := re.search(r"Events: [^│]*│\s*([\d,]+)", line):
            events += int(m.group(1).replace(",", ""))
    return read, events


def dry_run_cmd(path: Path, output: str | None = None, jobs: int | None = None) -> list[str]:
    cmd = [*c.cli(), "send", str(path), "--dry-run", "--preview", "0", "--failures", "/dev/null"]
    if output:
        cmd += ["--output", output]
    if jobs:
        cmd += ["--jobs", str(jobs)]
    return cmd


def profile(path: Path, tmp: Path, top: int = 15) -> list[tuple[str, float, float, int]]:
    """pyinstrument (or cProfile) over the dry run; the `top` functions by self time."""
    out = tmp / "profile.pstats"
    args = ["send", str(path), "--dry-run", "--preview", "0", "--failures", "/dev/null"]
    if importlib.util.find_spec("pyinstrument"):
        cmd = [sys.executable, "-m", "pyinstrument", "--show-all", "-r", "pstats", "-o", str(out),
               "-m", "klaviyo_backfill", *args]  # fmt: skip
        tool = "pyinstrument"
    else:
        cmd = [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "klaviyo_backfill", *args]
        tool = "cProfile"
    measured = c.run_measured(cmd)
    if not out.exists():
        print(measured.stderr, file=sys.stderr)
        return []
    stats = pstats.Stats(str(out))
    rows = []
    total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
    for (file, line, func), (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        where = Path(file).name if file != "~" else ""
        rows.append((f"{func} ({where}:{line})" if where else func, tt, ct, nc))
    rows.sort(key=lambda r: r[1], reverse=True)
    print(f"\nProfile of the dry run ({tool}, {measured.seconds:.1f} s wall with the profiler; "
          f"self time sums to {total:.1f} s) - top {top} by self time:")  # fmt: skip
    print(c.table(["function", "self s", "self %", "cumulative s"],
                  [(r[0], r[1], f"{100 * r[1] / total:.1f}%", r[2]) for r in rows[:top]]))  # fmt: skip
    by_file: dict[str, float] = {}
    for (file, _line, func), (_cc, _nc, tt, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        area = f"built-in {func}" if file in ("~", "<built-in>") else _area(file)
        by_file[area] = by_file.get(area, 0.0) + tt
    areas = sorted(by_file.items(), key=lambda kv: kv[1], reverse=True)[:12]
    print(
        "\nSelf time by file (package modules by name, libraries by name, built-ins by function):"
    )
    print(c.table(["where", "self s", "self %"],
                  [(a, t, f"{100 * t / total:.1f}%") for a, t in areas]))  # fmt: skip
    return rows[:top]


def _area(file: str) -> str:
    path = Path(file)
    if "klaviyo_backfill" in path.parts:
        return "klaviyo_backfill/" + path.name
    for lib in (
        "phonenumbers",
        "dateutil",
        "rich",
        "click",
        "httpx",
        "json",
        "csv",
        "re",
        "zoneinfo",
        "decimal",
        "datetime",
        "importlib",
        "encodings",
        "codecs",
    ):
        if lib in path.parts or path.stem == lib or path.stem == "_" + lib:
            return lib
    return path.name or file


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--orders", type=int, default=100_000, help="largest size (default 100000)")
    ap.add_argument("--sizes", help="comma-separated sizes (default: orders/5,orders)")
    ap.add_argument("--output-variant", action="store_true",
                    help="also time the dry run with --output /dev/null at the largest size")  # fmt: skip
    ap.add_argument("--profile", action="store_true",
                    help="profile the dry run at the smallest size (pyinstrument if installed)")  # fmt: skip
    ap.add_argument("--with-rejects", action="store_true",
                    help="keep the corpus's 15%% unattributable orders (rejected, not mapped)")  # fmt: skip
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = ap.parse_args()
    sizes = (
        sorted({int(s) for s in args.sizes.split(",")})
        if args.sizes
        else sorted({max(1, args.orders // 5), args.orders})
    )

    info = c.announce()
    startup = c.startup_seconds()
    print(f"CLI start-up (klaviyo-backfill --version, best of 3): {startup:.2f} s\n")
    results = []
    with c.tempdir(args.keep) as tmp:
        for n in sizes:
            path = tmp / f"orders_{n}.csv"
            export = c.write_shopify_export(path, n, rejects=args.with_rejects)
            bare, bare_cpu = c.bare_parse(path)
            dry = c.run_measured(dry_run_cmd(path))
            one = c.run_measured(dry_run_cmd(path, jobs=1))
            for measured in (dry, one):
                if measured.returncode not in (0, 1):
                    print(measured.stdout, measured.stderr, file=sys.stderr)
                    raise SystemExit(f"dry run failed with exit code {measured.returncode}")
            read, events = _events(dry.stdout)
            row = {
                "orders": n, "rows": export.rows, "mb": round(export.bytes / 1e6, 1),
                "generate_s": round(export.seconds, 2), "bare_parse_s": round(bare, 3),
                "dry_run_s": round(dry.seconds, 3), "dry_run_cpu_s": round(dry.user + dry.system, 3),
                "ratio": round(dry.seconds / bare, 2),
                "ratio_cpu": round((dry.user + dry.system) / bare_cpu, 2),
                "ratio_without_startup": round((dry.seconds - startup) / bare, 2),
                "orders_read": read, "events": events,
                "events_per_s": round(events / dry.seconds), "orders_per_s": round(n / dry.seconds),
                "peak_rss_mb": round(dry.max_rss_mb, 1),
                "peak_tree_rss_mb": round(dry.tree_rss_mb, 1),
                "one_process_s": round(one.seconds, 3), "one_process_ratio": round(one.seconds / bare, 2),
                "one_process_cpu_ratio": round((one.user + one.system) / bare_cpu, 2),
                "one_process_rss_mb": round(one.max_rss_mb, 1),
            }  # fmt: skip
            if args.output_variant and n == sizes[-1]:
                out = c.run_measured(dry_run_cmd(path, "/dev/null"))
                row["dry_run_output_devnull_s"] = round(out.seconds, 3)
                row["ratio_output_devnull"] = round(out.seconds / bare, 2)
                row["peak_rss_output_mb"] = round(out.max_rss_mb, 1)
            results.append(row)
            path.unlink()
        prof = []
        if args.profile:
            path = tmp / "profile.csv"
            c.write_shopify_export(path, sizes[0], rejects=args.with_rejects)
            prof = profile(path, tmp)

    print(c.table(
        ["orders", "rows", "MB", "bare parse s", "dry run s", "ratio", "ratio - startup",
         "events", "events/s", "peak RSS MB", "with workers MB", "--jobs 1 s", "--jobs 1 ratio",
         "--jobs 1 CPU ratio", "--jobs 1 RSS MB"],
        [(r["orders"], r["rows"], r["mb"], r["bare_parse_s"], r["dry_run_s"], r["ratio"],
          r["ratio_without_startup"], r["events"], r["events_per_s"], r["peak_rss_mb"],
          r["peak_tree_rss_mb"], r["one_process_s"], r["one_process_ratio"],
          r["one_process_cpu_ratio"], r["one_process_rss_mb"]) for r in results],
        title=f"\nDry run ({info['nproc']} cores, then --jobs 1) vs bare csv.DictReader pass"))  # fmt: skip
    for r in results:
        if "dry_run_output_devnull_s" in r:
            print(f"\n--output /dev/null at {r['orders']:,} orders: {r['dry_run_output_devnull_s']:.2f} s "
                  f"({r['ratio_output_devnull']:.1f}x bare), peak RSS {r['peak_rss_output_mb']:.0f} MB")  # fmt: skip

    print(
        "(ratio: wall/wall; ratio - startup: the CLI's start-up taken off the dry run; CPU ratio: "
        "user+sys over the bare pass's CPU - steadier when the machine is shared; with workers: "
        "the summed PSS of the process tree, so pages the workers share with it count once)"
    )
    at_target = [r for r in results if r["orders"] >= 100_000] or results[-1:]
    worst = max(r["ratio"] for r in at_target)
    small, large = results[0], results[-1]
    span = (large["orders"] - small["orders"]) / 100_000
    growth = (large["peak_tree_rss_mb"] - small["peak_tree_rss_mb"]) / span if span else 0.0
    flat = len(results) < 2 or growth <= FLAT_MB_PER_100K
    print(f"\nTarget: dry run <= {TARGET_RATIO:g}x bare parse at >= 100k orders: "
          f"{c.verdict(worst <= TARGET_RATIO)} (worst {worst:.1f}x)")  # fmt: skip
    if len(results) > 1:
        print(f"Target: memory flat in export size: {c.verdict(flat)} (peak RSS with workers {small['peak_tree_rss_mb']:.0f} MB "
              f"at {small['orders']:,} -> {large['peak_tree_rss_mb']:.0f} MB at {large['orders']:,} orders; "
              f"{growth:+.1f} MB per 100k orders, {growth * 1048576 / 1e5:+.0f} bytes an order; "
              f"flat means <= {FLAT_MB_PER_100K:g} MB per 100k)")  # fmt: skip
    c.emit_json({
        "benchmark": "pipeline", "machine": info, "startup_s": round(startup, 3),
        "sizes": results,
        "targets": {"ratio_max": TARGET_RATIO, "ratio_worst": worst, "ratio_ok": worst <= TARGET_RATIO,
                    "rss_growth_mb_per_100k_orders": round(growth, 1), "memory_flat": flat},
        "profile_top": [{"function": f, "self_s": round(s, 3), "cumulative_s": round(cu, 3)}
                        for f, s, cu, _ in prof],
    })  # fmt: skip


if __name__ == "__main__":
    main()
