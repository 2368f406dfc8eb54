"""A dry run (and `inspect`) on several processes says and writes exactly what one process does.

The pieces are made tiny here (a few KB), so that orders, quoted multi-line notes and
duplicate ids fall across the cuts many times over; the workers are real processes.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import corpus
import pytest
from click.testing import CliRunner

from klaviyo_backfill.cli import main
from klaviyo_backfill.pipeline import parallel


@pytest.fixture
def small_pieces(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Pieces of 3 KB; returns how many pieces each split file was cut into."""
    monkeypatch.setattr(parallel, "PIECE_BYTES", 3000)
    monkeypatch.setattr(parallel, "SPLIT_FROM_BYTES", 0)
    counted: list[int] = []
    cuts = parallel.cuts

    def counting(path: str, every: int) -> Iterator[tuple[int, int]]:
        found = list(cuts(path, every))
        counted.append(len(found) + 1)
        return iter(found)

    monkeypatch.setattr(parallel, "cuts", counting)
    return counted


@pytest.fixture(scope="module")
def shop_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("parallel")
    orders = corpus.make_orders(300, 11, "shopify")
    return corpus.write_shopify_csv(orders, folder / "orders.csv")


def _row_starts(path: Path) -> dict[int, int]:
    """Byte offset -> line number of every row start, the slow and obvious way."""
    data = path.read_bytes()
    starts: dict[int, int] = {0: 1}
    line, quoted = 1, False
    for i, byte in enumerate(data):
        if byte == ord('"'):
            quoted = not quoted
        elif byte == ord("\n"):
            line += 1
            if not quoted and i + 1 < len(data):
                starts[i + 1] = line
    return starts


@pytest.mark.parametrize("every", [1, 700, 3000, 50_000])
def test_every_cut_is_a_row_start_with_its_line_number(shop_csv: Path, every: int) -> None:
    starts = _row_starts(shop_csv)
    found = list(parallel.cuts(str(shop_csv), every))
    assert found, "a file of this size is cut at least once"
    for offset, line in found:
        assert starts.get(offset) == line, (offset, line)
    offsets = [offset for offset, _ in found]
    assert offsets == sorted(set(offsets)) and offsets[0] > 0
    assert offsets[-1] < shop_csv.stat().st_size
    if every == 1:  # every row start but the header's
        assert offsets == sorted(starts)[1:]


def test_a_cut_never_falls_inside_a_quoted_newline(shop_csv: Path) -> None:
    text = shop_csv.read_bytes()
    assert b'"Please leave' in text or b'"Gift for my mum' in text  # the corpus has such notes
    width = len(next(csv.reader(io.StringIO(text.decode("utf-8")))))
    for offset, _ in parallel.cuts(str(shop_csv), 1):
        reader = csv.reader(io.StringIO(text[offset : offset + 20_000].decode("utf-8", "ignore")))
        rows = list(itertools.islice(reader, 2))
        assert [len(row) for row in rows] == [width] * len(rows) and rows, offset


SEND_ONLY = ("--endpoint", "--public-key", "--profile-attributes")


def _dry_run(files: list[Path], out: Path, jobs: str, *extra: str) -> dict[str, Any]:
    tag = f"jobs{jobs}"
    output, failures = out / f"{tag}.jsonl", out / f"{tag}.failures"
    # no preview: the bodies are compared whole, in `--output` (`--preview 1` rendered the
    # first one again, 1,000 events highlighted: 6 s of CPU a run, 95% of this file's time)
    args = ["send", *map(str, files), "--dry-run", "--preview", "0", "--output", str(output)]
    args += ["--failures", str(failures), "--jobs", jobs, *extra]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    pairs = [extra[i : i + 2] for i in range(0, len(extra), 2)]
    shared = [word for pair in pairs if pair[0] not in SEND_ONLY for word in pair]
    inspect = CliRunner().invoke(
        main, ["inspect", *map(str, files), "--json", "--jobs", jobs, *shared]
    )
    return {
        "exit": result.exit_code,
        "stdout": result.output.replace(tag, "<tag>"),
        "bodies": output.read_bytes() if output.exists() else b"",
        "failures": failures.read_bytes() if failures.exists() else b"",
        "inspect": json.loads(inspect.output) if inspect.exit_code in (0, 1) else inspect.output,
    }


def _same(files: list[Path], tmp_path: Path, *extra: str) -> dict[str, Any]:
    one = _dry_run(files, tmp_path, "1", *extra)
    many = _dry_run(files, tmp_path, "3", *extra)
    for key in ("exit", "stdout", "bodies", "failures", "inspect"):
        assert many[key] == one[key], key
    return one


@pytest.mark.slow
def test_a_split_dry_run_writes_the_same_bytes(
    small_pieces: list[int], shop_csv: Path, tmp_path: Path
) -> None:
    one = _same([shop_csv], tmp_path)
    assert small_pieces and min(small_pieces) > 50  # the dry run and inspect were split
    assert b'"events-bulk-create"' in one["bodies"] and one["failures"]
    assert one["inspect"]["orders_read"] == 300


@pytest.mark.slow
@pytest.mark.parametrize("endpoint", ["single", "legacy"])
def test_each_endpoint(
    small_pieces: list[int], shop_csv: Path, tmp_path: Path, endpoint: str
) -> None:
    one = _same([shop_csv], tmp_path, "--public-key", "ABC123", "--endpoint", endpoint)
    assert one["bodies"].count(b"\n") > 300 and isinstance(one["inspect"], dict)


@pytest.mark.slow
def test_filters_limit_and_several_files(
    small_pieces: list[int], shop_csv: Path, tmp_path: Path
) -> None:
    orders = corpus.make_orders(120, 12, "woocommerce")
    woo = corpus.write_woo_json(orders, tmp_path / "woo.json", shape="array")
    _same([shop_csv, woo], tmp_path, "--since", "2018-01-01", "--until", "2024-01-01")
    one = _same([shop_csv], tmp_path, "--limit", "77")
    assert one["inspect"]["orders_mapped"] == 77


@pytest.mark.slow
def test_a_single_byte_encoding(small_pieces: list[int], shop_csv: Path, tmp_path: Path) -> None:
    latin = tmp_path / "latin.csv"
    latin.write_bytes(shop_csv.read_text("utf-8").encode("latin-1", "replace"))
    one = _same([latin], tmp_path, "--encoding", "latin-1")
    assert "Crème Brûlée".encode() in one["bodies"]
    assert small_pieces and min(small_pieces) > 50


@pytest.mark.slow
def test_duplicate_ids_across_pieces_are_skipped_once(
    small_pieces: list[int], shop_csv: Path, tmp_path: Path
) -> None:
    rows = shop_csv.read_bytes()
    header, _, body = rows.partition(b"\n")
    doubled = tmp_path / "doubled.csv"
    doubled.write_bytes(header + b"\n" + body + body)  # every order twice, far apart
    one = _same([doubled], tmp_path)
    assert one["inspect"]["skipped"]["duplicate order id"] == 300


@pytest.mark.slow
def test_an_unreadable_row_stops_both_at_the_same_order(
    small_pieces: list[int], shop_csv: Path, tmp_path: Path
) -> None:
    data = shop_csv.read_bytes()
    broken = tmp_path / "broken.csv"
    cut = len(data) * 2 // 3
    cut = data.index(b"\n", cut) + 1
    broken.write_bytes(data[:cut] + b"\xff\xfe not utf-8\n" + data[cut:])
    # `all`: no pass over the export before the run (`latest` finds the bad row in it, first)
    one = _same([broken], tmp_path, "--profile-attributes", "all")
    assert one["exit"] == 2 and "broken.csv:" in one["stdout"]
    assert one["failures"]  # what came before the bad row was read and reported
    latest = _same([broken], tmp_path)
    assert latest["exit"] == 2 and "broken.csv:" in latest["stdout"]
    assert not latest["bodies"]  # stopped before a body was made


@pytest.mark.slow
def test_a_stray_quote_that_misleads_the_cutter_costs_speed_not_orders(
    small_pieces: list[int], shop_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`5" screen` in an unquoted field is text to csv but flips the cutter's quote parity:
    cuts may then land inside a quoted multi-line note. Each cut is checked against the rows
    a worker really read, and the rest of the file is read in order from the last good one."""
    data = shop_csv.read_bytes()
    at = data.index(b",Classic Tee - ", len(data) // 10)
    stray = tmp_path / "stray.csv"
    stray.write_bytes(data[:at] + b',Classic 5" Tee - ' + data[at + len(b",Classic Tee - ") :])
    assert b'Classic 5" Tee' in stray.read_bytes()
    in_order = parallel._in_order
    fell_back: list[int] = []

    def spy(*args: Any, **kwargs: Any) -> Any:
        fell_back.append(args[-1].offset)
        return in_order(*args, **kwargs)

    monkeypatch.setattr(parallel, "_in_order", spy)
    one = _same([stray], tmp_path)
    assert fell_back and min(fell_back) > at  # each split run read on in order after the quote
    assert one["inspect"]["orders_read"] == 300
    assert any('Classic 5\\" Tee' in line for line in one["bodies"].decode().splitlines())


def test_a_worker_knows_a_cut_inside_a_quoted_note_from_a_row_start(shop_csv: Path) -> None:
    from klaviyo_backfill.mapping.convert import Settings
    from klaviyo_backfill.model import Filters
    from klaviyo_backfill.pipeline.job import resolve_inputs

    data = shop_csv.read_bytes()
    inside = data.index(b"Gate code")  # the second line of a quoted note
    assert data[inside - 1 : inside] == b"\n"
    row = next(offset for offset in sorted(_row_starts(shop_csv)) if offset > inside)
    (source,), _ = resolve_inputs([str(shop_csv)], None, None, None)

    def checked(end: int) -> bool:
        work = parallel._Prepare(0, Filters(), None)
        piece = parallel._Piece(source, 0, 1, end, Settings(), work)
        done = parallel._work_piece(piece)
        assert done.error is None and done.next_at is not None
        return done.cut_ok

    assert checked(row) is True
    assert checked(inside) is False


def _big_export(shop_csv: Path, tmp_path: Path) -> tuple[Path, int]:
    """Over SPLIT_FROM_BYTES: the same orders again and again (duplicates after the first)."""
    header, _, body = shop_csv.read_bytes().partition(b"\n")
    copies = parallel.SPLIT_FROM_BYTES // len(body) + 1
    big = tmp_path / "big.csv"
    big.write_bytes(header + b"\n" + body * copies)
    return big, copies


@pytest.mark.slow
@pytest.mark.e2e
def test_the_real_cli_splits_a_large_export_by_default(shop_csv: Path, tmp_path: Path) -> None:
    """No knobs turned: a CSV over SPLIT_FROM_BYTES, the installed CLI, real processes."""
    big, copies = _big_export(shop_csv, tmp_path)

    def dry_run(*jobs: str) -> tuple[int, str, bytes]:
        out = tmp_path / f"out{jobs}.jsonl"
        cmd = [sys.executable, "-m", "klaviyo_backfill", "send", str(big), "--dry-run"]
        cmd += ["--preview", "0", "--output", str(out), "--failures", str(tmp_path / "f"), *jobs]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        return done.returncode, done.stdout, out.read_bytes()

    default, one = dry_run(), dry_run("--jobs", "1")
    assert default == one
    assert f"{300 * (copies - 1):,}" in one[1]  # the duplicates were found across pieces


@pytest.mark.slow
@pytest.mark.e2e
def test_a_worker_that_dies_is_a_message_not_a_traceback(shop_csv: Path, tmp_path: Path) -> None:
    big, _ = _big_export(shop_csv, tmp_path)
    big.write_bytes(big.read_bytes() * 4)  # long enough to be caught at work
    cmd = [sys.executable, "-m", "klaviyo_backfill", "send", str(big), "--dry-run", "--jobs", "2"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        workers: list[int] = []
        while len(workers) < 2 and proc.poll() is None:
            assert time.monotonic() < deadline, "no workers started"
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            workers = [int(pid) for pid in children]
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before a worker could be killed"
        os.kill(workers[0], signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    message = err.decode()
    assert proc.returncode == 2, message
    assert "a worker process died" in message and "--jobs 1" in message
    assert "Traceback" not in message


@pytest.mark.slow
def test_a_worker_that_dies_between_pieces_is_a_worker_error(
    shop_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker killed while the main process is still handing on a piece's orders, or while
    it writes its result: a WorkerError, never a traceback (it escaped as BrokenProcessPool
    2 runs in ~50) nor a hang (concurrent.futures' shared result pipe: once in a loop)."""
    from klaviyo_backfill.errors import WorkerError
    from klaviyo_backfill.mapping.convert import Settings
    from klaviyo_backfill.model import Filters
    from klaviyo_backfill.pipeline.job import resolve_inputs

    big, _ = _big_export(shop_csv, tmp_path)
    (source,), _ = resolve_inputs([str(big)], None, None, None)
    pools: list[Any] = []
    made = parallel._Pool.__init__

    def kept(pool: Any, *args: Any) -> None:  # the workers, whatever started them (a
        made(pool, *args)  # forkserver, when this process has threads, is their parent)
        pools.append(pool)

    monkeypatch.setattr(parallel._Pool, "__init__", kept)
    stamps = parallel.stamped_pieces(source, Settings(), Filters(), 2)
    next(stamps)  # the first piece is back; the others are at work or queued
    (pool,) = pools
    os.kill(pool.workers[0].process.pid, signal.SIGKILL)
    time.sleep(0.5)
    with pytest.raises(WorkerError, match="a worker process died"):
        for _ in stamps:
            pass


_FORK_INTERRUPTS: list[bool] = []  # armed by the test below; at-fork hooks cannot be removed


def _interrupt_in_the_fork_hook() -> None:
    if _FORK_INTERRUPTS and not _FORK_INTERRUPTS[0]:
        _FORK_INTERRUPTS[0] = True
        os.kill(os.getpid(), signal.SIGINT)  # its handler runs here, inside os.fork's hook


os.register_at_fork(after_in_parent=_interrupt_in_the_fork_hook)


@pytest.mark.skipif(sys.platform != "linux", reason="workers are forked on Linux only")
def test_ctrl_c_while_the_workers_fork_is_raised_once_they_have_started() -> None:
    """test_progress's Ctrl-C-while-reading test once saw the send run to the end, exit 0:
    the SIGINT came while a worker was forked, and a KeyboardInterrupt raised inside
    os.fork's at-fork hooks (logging's lock) is printed as "Exception ignored" and lost."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    _FORK_INTERRUPTS[:] = [False]
    try:
        with pytest.raises(KeyboardInterrupt):
            parallel._Pool(2, parallel.multiprocessing.get_context("fork")).close()
        assert _FORK_INTERRUPTS == [True]  # the signal came, inside the fork's hook
    finally:
        _FORK_INTERRUPTS.clear()
        signal.signal(signal.SIGINT, previous)
