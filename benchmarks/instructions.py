"""Instructions per order: the dry run against a bare csv.DictReader pass, counted by
valgrind's callgrind, which counts instructions rather than seconds. The count is the same on
every run of the same code on the same kind of machine, busy or not, so it can show a change
of a few percent that wall-clock ratios on a shared machine hide, and an independent
measurement gets the same figure.

For N and 2N orders (a Shopify CSV from benchmarks/_common.py): count a bare DictReader pass
and `klaviyo-backfill send FILE --dry-run --preview 0 --failures /dev/null --jobs 1` (one
process: callgrind follows no workers). The 2N count minus the N count is N orders' work,
start-up and imports cancelled out. A dry run's instructions are not its time: the bare pass
is C code, which does more per clock cycle than the interpreter (wall-clock ratios are
`pipeline.py`'s).

    apt-get install valgrind                                   # once
    .venv/bin/python benchmarks/instructions.py                # 1,000 and 2,000 orders, ~3 min
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import _common as c

_BARE = (
    "import csv, sys\n"
    "with open(sys.argv[1], newline='', encoding='utf-8') as f:\n"
    "    for row in csv.DictReader(f):\n"
    "        pass\n"
)


def instructions(cmd: list[str]) -> int:
    """Instructions the command executed (callgrind's "Collected"), its output thrown away."""
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *cmd],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONHASHSEED": "0"},  # the same hashes, so the same count
    )
    found = re.search(r"Collected\s*:\s*(\d+)", done.stderr)
    if done.returncode not in (0, 1) or found is None:
        sys.exit(f"valgrind failed on {' '.join(cmd)}:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def dry_run(path: Path) -> list[str]:
    return [sys.executable, "-m", "klaviyo_backfill", "send", str(path), "--dry-run",
            "--preview", "0", "--failures", "/dev/null", "--jobs", "1"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=1000, help="N (default 1000)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed: apt-get install valgrind (or your system's package)")
    n = args.orders
    print(f"machine: {c.machine()}")
    with c.tempdir(args.keep) as tmp:
        small, large = tmp / f"o{n}.csv", tmp / f"o{2 * n}.csv"
        c.write_shopify_export(small, n)
        c.write_shopify_export(large, 2 * n)
        bare = [sys.executable, "-c", _BARE]
        bare_n = instructions([*bare, str(large)]) - instructions([*bare, str(small)])
        tool_n = instructions(dry_run(large)) - instructions(dry_run(small))
    per_bare, per_tool = bare_n / n, tool_n / n
    ratio = tool_n / bare_n
    headers = ["orders", "bare DictReader, instructions/order",
               "dry run --jobs 1, instructions/order", "ratio"]  # fmt: skip
    row = [n, round(per_bare), round(per_tool), f"{ratio:.2f}x"]
    print(c.table(headers, [row], "Instructions per order (2N minus N orders, start-up cancelled)"))
    c.emit_json(
        {
            "benchmark": "instructions",
            "orders": n,
            "bare_per_order": round(per_bare),
            "dry_run_per_order": round(per_tool),
            "ratio": round(ratio, 3),
        }
    )


if __name__ == "__main__":
    main()
