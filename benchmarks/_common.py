"""Shared helpers for the benchmarks: a fast Shopify CSV generator, the stand-in as a process,
child processes measured with their own rusage, the greedy rate-limit schedule, tables.

Not a test module and not part of the package: run the scripts next to it with the venv's
python (`.venv/bin/python benchmarks/pipeline.py`).
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
TESTS = ROOT / "tests"
API_KEY = "pk_test_0123456789abcdef"  # the stand-in's default key; not a real one

if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))


# ---------------------------------------------------------------- machine and CLI


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {
        "nproc": usable,
        "cpu": model or platform.processor(),
        "python": platform.python_version(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def announce() -> dict[str, Any]:
    """`machine()`, printed as every benchmark's first line."""
    info = machine()
    print(f"machine: {info['nproc']} cores, {info['cpu']}, Python {info['python']}, "
          f"load {info['loadavg_1m']}")  # fmt: skip
    return info


def orders_for(events: int) -> int:
    """How many orders of the benchmark export make about `events` events."""
    pool = make_pool()
    return math.ceil(events / (sum(pool.event_counts()) / len(pool.rows)))


def cli() -> list[str]:
    """The installed console script of this venv (what a user runs), else `python -m`."""
    script = Path(sys.executable).parent / "klaviyo-backfill"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "klaviyo_backfill"]


@dataclass
class Measured:
    seconds: float
    returncode: int
    max_rss_mb: float  # this child's peak resident set (ru_maxrss), MB
    user: float
    system: float
    stdout: str = ""
    stderr: str = ""
    tree_rss_mb: float = 0.0  # peak of the summed PSS of the child and its own children


def _tree_rss_kb(pid: int) -> int:
    """The memory of a process and its descendants: the sum of their PSS (a page that forked
    workers share with their parent counts once, split between them; RSS where no PSS)."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        with contextlib.suppress(OSError, ValueError):
            rollup = Path(f"/proc/{current}/smaps_rollup")
            status = rollup if rollup.exists() else Path(f"/proc/{current}/status")
            for line in status.read_text().splitlines():
                if line.startswith(("Pss:", "VmRSS:")):
                    total += int(line.split()[1])
                    break
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
    return total


def run_measured(
    cmd: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
    timeout: float = 900.0,
) -> Measured:
    """Run a child, time it, and read ITS OWN peak RSS with wait4 (RUSAGE_CHILDREN would be
    the maximum over every child this script ever waited for)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=err, env=env, cwd=cwd)
        deadline = started + timeout
        tree_kb, polls = 0, 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            polls += 1
            if polls % 4 == 0 and Path("/proc").is_dir():  # every ~20 ms
                tree_kb = max(tree_kb, _tree_rss_kb(proc.pid))
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.005)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        own = usage.ru_maxrss / 1024
        return Measured(seconds, proc.returncode, own, usage.ru_utime, usage.ru_stime,
                        out.read(), err.read(), max(own, tree_kb / 1024))  # fmt: skip


@dataclass
class Launched:
    returncode: int
    stdout: str
    stderr: str
    first_request: float  # seconds from launch to the first request the stand-in received
    seconds: float  # launch to exit


def launch(
    cmd: Sequence[str], standin: Any, env: dict[str, str], timeout: float, cwd: Path | None = None
) -> Launched:
    """Run the CLI to its end (killed after `timeout`) against an in-process stand-in, and
    time its first request there (inf: none came)."""
    launched = time.monotonic()
    proc = subprocess.Popen(list(cmd), env=env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    seconds = time.monotonic() - launched
    requests = standin.requests
    first = requests[0].time_received - launched if requests else math.inf
    return Launched(proc.returncode, out, err, first, seconds)


def startup_seconds(repeat: int = 3) -> float:
    """`klaviyo-backfill --version`: interpreter start plus every import of the CLI."""
    return min(run_measured([*cli(), "--version"]).seconds for _ in range(repeat))


@contextlib.contextmanager
def tempdir(keep: bool = False) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="kb-bench-"))
    try:
        yield path
    finally:
        if keep:
            print(f"(kept {path})", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------- the export generator


@dataclass
class Export:
    path: Path
    orders: int
    rows: int
    bytes: int
    line_items: int
    seconds: float
    pool: Pool
    id_base: int

    def order_id(self, i: int) -> str:
        return str(self.id_base + i)

    def rows_before(self, n: int) -> int:
        """Data rows (line items) of the first n orders."""
        return self.pool.sum_over(n, self.pool.lines)

    def events_before(self, n: int) -> int:
        """Events the tool maps from the first n orders (0 for rejected ones)."""
        return self.pool.sum_over(n, self.pool.event_counts())


@dataclass
class Pool:
    """Corpus orders rendered once as Shopify CSV rows; the export repeats them with new
    ids, names and (from the second copy on) distinct emails."""

    header: tuple[str, ...]
    rows: list[list[list[str]]]  # per order, its rows
    lines: list[int]
    seed: int
    _events: list[int] | None = field(default=None, repr=False)

    def sum_over(self, n: int, per_order: list[int]) -> int:
        full, rest = divmod(n, len(per_order))
        return full * sum(per_order) + sum(per_order[:rest])

    def event_counts(self) -> list[int]:
        """Events per pool order, by running the tool's own reader and mapper over the pool."""
        if self._events is None:
            from klaviyo_backfill.inputs.layouts import builtin_layouts
            from klaviyo_backfill.inputs.sources import Input
            from klaviyo_backfill.inputs.values import zone
            from klaviyo_backfill.mapping.convert import Settings
            from klaviyo_backfill.pipeline.job import Job
            from klaviyo_backfill.pipeline.orders import mapped_orders
            from klaviyo_backfill.pipeline.summary import Stats
            from klaviyo_backfill.state.failures import Failures

            with tempdir() as tmp:
                path = tmp / "pool.csv"
                _write(path, self.header, (r for rows in self.rows for r in rows))
                layout = builtin_layouts()["shopify-csv"]
                inputs = [Input(str(path), layout, "utf-8-sig")]
                counts = dict.fromkeys(range(len(self.rows)), 0)
                ids = [rows[0][self.header.index("Id")] for rows in self.rows]
                index = {oid: i for i, oid in enumerate(ids)}
                settings = Settings(timezone=zone("UTC"), currency=None)
                for mapped in mapped_orders(Job(inputs, settings), None, Stats(), Failures(None)):
                    counts[index[mapped.key]] = len(mapped.events)
            self._events = [counts[i] for i in range(len(self.rows))]
        return self._events


def _write(path: Path, header: Sequence[str], rows: Any) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\r\n")
        writer.writerow(header)
        writer.writerows(rows)


_POOLS: dict[tuple[int, int, float, bool], Pool] = {}


def make_pool(
    seed: int = 1, size: int = 2000, mean_lines: float = 2.5, rejects: bool = False
) -> Pool:
    """`size` corpus orders (tests/corpus.py) as rows. Unless `rejects`, orders the tool must
    reject (nobody to attribute them to: 15% of the corpus, which over-represents awkward
    cases) are left out, and single-line orders are thinned so an order has `mean_lines`
    line items on average (the corpus alone gives ~1.85)."""
    key = (seed, size, mean_lines, rejects)
    if key in _POOLS:
        return _POOLS[key]
    from corpus import make_orders, shopify_columns, shopify_csv_rows

    orders = make_orders(size, seed, "shopify")
    if not rejects:
        orders = [o for o in orders if o.identifiable]
    multi = [o for o in orders if len(o.lines) > 1]
    lines_multi = sum(len(o.lines) for o in multi)
    singles_wanted = max(0, math.floor((lines_multi - mean_lines * len(multi)) / (mean_lines - 1)))
    kept_singles = 0
    chosen = []
    for order in orders:  # keep the corpus order; drop single-line orders past the quota
        if len(order.lines) == 1:
            if kept_singles >= singles_wanted:
                continue
            kept_singles += 1
        chosen.append(order)
    header = shopify_columns(79)
    rows = [[[row.get(c, "") for c in header] for row in shopify_csv_rows(o)] for o in chosen]
    pool = Pool(header, rows, [len(r) for r in rows], seed)
    _POOLS[key] = pool
    return pool


def write_shopify_export(
    path: Path,
    orders: int,
    *,
    seed: int = 1,
    mean_lines: float = 2.5,
    rejects: bool = False,
    id_base: int = 5_000_000_000,
) -> Export:
    """A Shopify 'Export orders' CSV (79 columns, one row per line item) of `orders` orders,
    by templating corpus orders: order i is pool order i % P with Id id_base+i, Name
    #(100000+i), and from the second copy on the email's local part prefixed ("r3.jane@..."),
    so distinct profiles grow with the export as in a real shop."""
    started = time.perf_counter()
    pool = make_pool(seed, mean_lines=mean_lines, rejects=rejects)
    header = pool.header
    name_i, id_i, email_i = header.index("Name"), header.index("Id"), header.index("Email")
    size = len(pool.rows)

    def rows() -> Iterator[list[str]]:
        for i in range(orders):
            copy, k = divmod(i, size)
            name = f"#{100000 + i}"
            for j, base in enumerate(pool.rows[k]):
                row = base.copy()
                row[name_i] = name
                if j == 0:
                    row[id_i] = str(id_base + i)
                if copy and row[email_i]:
                    row[email_i] = f"r{copy}.{row[email_i]}"
                yield row

    _write(path, header, rows())
    n_rows = pool.sum_over(orders, pool.lines)
    return Export(path, orders, n_rows, path.stat().st_size, n_rows,
                  time.perf_counter() - started, pool, id_base)  # fmt: skip


def bare_parse(path: Path, max_rows: int | None = None, repeat: int = 2) -> tuple[float, float]:
    """(wall, CPU) seconds for a bare csv.DictReader pass (every row built, nothing touched);
    best of `repeat` (the file was just written, so it is in the page cache either way)."""
    best, best_cpu = math.inf, math.inf
    for _ in range(repeat):
        started, cpu = time.perf_counter(), time.process_time()
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            if max_rows is None:
                for _row in reader:
                    pass
            else:
                for i, _row in enumerate(reader, 1):
                    if i >= max_rows:
                        break
        best = min(best, time.perf_counter() - started)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best, best_cpu


# ---------------------------------------------------------------- the stand-in, as a process


@dataclass
class StandInProcess:
    url: str
    proc: subprocess.Popen[str]
    stats: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def standin_process(
    bulk_limits: str | None = None,
    single_limits: str | None = None,
    latency: float = 0.05,
    schema: bool = True,
) -> Iterator[StandInProcess]:
    """tests/standin.py as its own process; `stats` holds its JSON stats line after exit.
    schema=False runs it through benchmarks/_standin_noschema.py (see there)."""
    script = TESTS / "standin.py" if schema else BENCH / "_standin_noschema.py"
    cmd = [sys.executable, str(script), "--port", "0", "--latency", str(latency)]
    if bulk_limits:
        cmd += ["--bulk-limits", bulk_limits]
    if single_limits:
        cmd += ["--single-limits", single_limits]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    first = proc.stdout.readline().strip()
    if not first.startswith("listening "):
        proc.kill()
        raise RuntimeError(f"stand-in did not start: {first!r}")
    handle = StandInProcess(first.split(" ", 1)[1], proc)
    try:
        yield handle
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rest, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            rest, _ = proc.communicate()
        for line in reversed(rest.splitlines()):
            if line.startswith("{"):
                handle.stats = json.loads(line)
                break


def stand_in_limits_to_client(text: str) -> str:
    """'10/1,30/6' (stand-in: count/seconds) -> '10/1s,30/6s' (the CLI's --rate-limit)."""
    parts = []
    for part in text.split(","):
        count, seconds = part.split("/")
        parts.append(f"{int(count)}/{float(seconds):g}s")
    return ",".join(parts)


def windows(text: str) -> list[tuple[int, float]]:
    return [(int(c), float(s)) for c, s in (p.split("/") for p in text.split(","))]


def schedule(requests: int, limits: str) -> list[float]:
    """The greedy schedule under these sliding windows (a request at t is admitted when each
    window holds fewer than its limit in (t - w, t]): t_k = max(t_{k-1}, t_{k-limit} + w)."""
    ws = windows(limits)
    times: list[float] = []
    for k in range(requests):
        t = times[-1] if times else 0.0
        for limit, seconds in ws:
            if k >= limit:
                t = max(t, times[k - limit] + seconds)
        times.append(t)
    return times


def ideal_seconds(requests: int, limits: str, latency: float = 0.0) -> float:
    """The fastest any client can make `requests` requests under these sliding windows:
    the greedy schedule (`schedule`), from the first request at 0 to the last one's answer
    (+ latency)."""
    times = schedule(requests, limits)
    return (times[-1] if times else 0.0) + latency


# ---------------------------------------------------------------- output


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str = "") -> str:
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]  # fmt: skip
    out = []
    if title:
        out.append(title)
    out.append("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    out.append("  ".join("-" * w for w in widths))
    for row in cells:
        out.append("  ".join(c.rjust(w) if _numeric(c) else c.ljust(w)
                             for c, w in zip(row, widths, strict=True)))  # fmt: skip
    return "\n".join(out)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}" if abs(value) < 0.01 else f"{value:.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _numeric(text: str) -> bool:
    return bool(text) and (text[0].isdigit() or text[0] in "-+.") and not text.startswith("--")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def emit_json(payload: dict[str, Any]) -> None:
    print(json.dumps(payload, sort_keys=False), flush=True)
