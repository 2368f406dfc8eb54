"""Work on the orders of a large CSV export on every core (a dry run, `inspect`, the reading
before a send).

The file is cut into pieces at row starts: after a newline that is outside quotes, found by
counting quote bytes, which is exact for CSV in UTF-8 and the single-byte encodings. Worker
processes read, convert, map and encode a piece each; the main process settles the prepared
orders in file order, as one process would (duplicates, the summary, the failures file and the
requests come out the same, byte for byte: the tests compare them).

An order whose rows cross a cut belongs to the piece its first row is in: that worker reads on
past the cut to the order's last row, and the next piece's orders that start before where it
stopped (those same rows, without their first) are dropped.

Quote parity can be misled: csv takes the quote in an unquoted `27" monitor` as text. So
each worker checks that the next piece's cut is a row start of the rows it read itself, in
order; where it is not, the rest of the file is read in this process from the last order
that worker saw begin. A misleading file costs speed, never an order.

Before a send, the same pieces find each customer's latest order (latest.py) and, for a
later export, what the account holds (survey.py). The send itself maps in one process:
Klaviyo's rate limits, not mapping, set its pace (measured: preparing a real-limit send on
both cores gained nothing, as its 10/s window, not the mapping, paces each burst).
"""

from __future__ import annotations

import codecs
import itertools
import multiprocessing
import os
import signal
import sys
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from multiprocessing.connection import Connection, wait
from typing import Any, cast

from ..errors import BackfillError, FieldError, WorkerError
from ..inputs.csv_orders import BYTE_EXACT, HeldRows, Start, row_starts
from ..inputs.export import read_orders
from ..inputs.sources import Input
from ..mapping.convert import Converter, Settings
from ..mapping.encode import Encoder, Part
from ..mapping.events import AttributeRule, identity_of, map_order
from ..model import Filters, Order, RawOrder
from .prepare import Prepared, in_window, prepare, raw_id
from .summary import Tally

__all__ = [
    "PIECE_BYTES",
    "SPLIT_FROM_BYTES",
    "cuts",
    "pieces",
    "prepared_pieces",
    "splittable",
    "stamp",
    "stamped_pieces",
    "workers_for",
]

PIECE_BYTES = 1 << 19  # a piece of work: ~500 Shopify orders
SPLIT_FROM_BYTES = 16 << 20  # below this, starting workers costs more than it saves
_BLOCK = 1 << 20
_AHEAD = 2  # pieces in flight per worker: enough to keep them busy, bounded in memory


def workers_for(requested: int | None) -> int:
    """--jobs, or the cores this process may use."""
    if requested:
        return requested
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def splittable(source: Input, workers: int) -> bool:
    """A CSV file in a byte-exact encoding, big enough to be worth splitting."""
    if workers < 2 or source.layout.kind != "csv" or source.name is not None:
        return False  # (a spooled stream is read in one process, its orders named as given)
    if codecs.lookup(source.encoding).name not in BYTE_EXACT:
        return False
    return os.path.getsize(source.path) >= max(SPLIT_FROM_BYTES, 2 * PIECE_BYTES)


def cuts(path: str, every: int) -> Iterator[tuple[int, int]]:
    """(byte offset, line number) of row starts about `every` bytes apart, the first not 0,
    as the file is scanned (so the first pieces are at work while the rest is cut)."""
    quoted = False  # inside a quoted field at the start of the block
    target, pos, lines = every, 0, 1
    with open(path, "rb") as fh:
        while block := fh.read(_BLOCK):
            i = 0
            while (j := max(i, target - pos)) < len(block):
                quoted ^= bool(block.count(b'"', i, j) & 1)
                newline = block.find(b"\n", j)
                if newline < 0:
                    quoted ^= bool(block.count(b'"', j) & 1)
                    target = pos + len(block)  # the next newline is in a later block
                    i = len(block)
                    break
                quoted ^= bool(block.count(b'"', j, newline) & 1)
                i = newline + 1
                if quoted:  # a newline inside a field: try the next one
                    target = pos + i
                    continue
                if i < len(block) or fh.peek(1):  # not at the very end of the file
                    yield pos + i, lines + block.count(b"\n", 0, i)
                target = pos + i + every
            quoted ^= bool(block.count(b'"', i) & 1)
            lines += block.count(b"\n")
            pos += len(block)


Work = Callable[[RawOrder, Converter], Any]  # what a worker makes of each order: picklable


@dataclass(frozen=True, slots=True)
class _Piece:
    source: Input
    start: int  # 0: the file's first row, after its header
    line: int
    end: int  # orders that start here or later belong to the next piece
    settings: Settings
    work: Work
    held: HeldRows | None = None  # what the account holds (delta.py), asked as rows are read


@dataclass(slots=True)
class _Done:
    orders: list[tuple[int, Any]]  # (offset, what `work` made of the order)
    last_end: int  # where the piece's last order ends (past `end` when it crossed the cut)
    error: BackfillError | None = None
    next_at: Start | None = None  # the first order past the piece (None: the file ended)
    cut_ok: bool = True  # the next piece starts at a row start this worker read


@dataclass(frozen=True, slots=True)
class _Prepare:
    """Work: prepare the order (`prepare.prepare`), packed for the trip back."""

    index: int
    filters: Filters
    encoder: Encoder | None  # None: map only, as `inspect` needs
    rule: AttributeRule | None = None  # which orders carry profile attributes (events.py)

    def __call__(self, raw: RawOrder, converter: Converter) -> tuple[Any, ...]:
        return _pack(prepare(raw, converter, self.filters, self.index, self.encoder, self.rule))


@dataclass(frozen=True, slots=True)
class _Stamp:
    """Work: only each order's customer and time (`stamp`), as latest.py needs."""

    filters: Filters
    months: bool = False

    def __call__(self, raw: RawOrder, converter: Converter) -> Stamp:
        return stamp(raw, converter, self.filters, self.months)


def _pack(p: Prepared) -> tuple[Any, ...]:
    """What the main process needs of a Prepared order (not its events), as plain values."""
    t = p.tally  # times and money as text: their own pickling is slow
    tally = None if t is None else (t.metrics, t.time.isoformat(), _text(t.revenue), t.currency,
                                    t.who, t.months, _text(t.cancelled), _text(t.refunded))  # fmt: skip
    parts = tuple((part.body, part.who, part.metrics, part.unique_ids) for part in p.parts)
    return (p.line, p.at, p.after, p.raw_id, p.key, p.rejected, p.outside, p.lines,
            p.warnings, tally, parts)  # fmt: skip


def _text(amount: Decimal | None) -> str | None:
    return None if amount is None else str(amount)


def _money(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


def _tally(
    metrics: tuple[str, ...],
    time: str,
    revenue: str | None,
    currency: str | None,
    who: Any,
    months: tuple[str, ...],
    cancelled: str | None,
    refunded: str | None,
) -> Tally:
    return Tally(metrics, datetime.fromisoformat(time), _money(revenue), currency, who, months,
                 _money(cancelled), _money(refunded))  # fmt: skip


def _unpack(packed: tuple[Any, ...], source: str) -> Prepared:
    line, at, after, raw_id, key, rejected, outside, lines, warnings, tally, parts = packed
    return Prepared(
        source, line, at, after, raw_id, key, rejected, outside, lines, warnings,
        None if tally is None else _tally(*tally), [],
        [Part(body, who, metrics, ids, []) for body, who, metrics, ids in parts],
    )  # fmt: skip


def _work_piece(piece: _Piece) -> _Done:
    """In a worker: the piece's `work` on every order that starts in the piece."""
    source, work = piece.source, piece.work
    converter = Converter(source.layout, piece.settings)
    start = Start(piece.start, piece.line) if piece.start else None
    done = _Done([], piece.start)
    last = None
    try:
        for raw in read_orders(source, None, start, piece.held):
            if raw.offset >= piece.end:
                done.next_at = Start(raw.offset, raw.line)
                break
            done.orders.append((raw.offset, work(raw, converter)))
            done.last_end = raw.end if raw.end is not None else raw.offset
            last = raw
        if done.next_at is not None:
            known = row_starts(source, Start(last.offset, last.line), piece.end) if last else set()
            done.cut_ok = piece.end in known
    except BackfillError as exc:
        done.error = exc
    return done


def _in_order(
    source: Input, settings: Settings, work: Work, held: HeldRows | None, start: Start
) -> Generator[Any, None, None]:
    converter = Converter(source.layout, settings)
    for raw in read_orders(source, None, start, held):
        yield work(raw, converter)


def _start_method() -> multiprocessing.context.BaseContext:
    """fork on Linux, while this process has one thread: the pool starts every worker at once,
    and they share the modules already loaded (measured: ~10% faster, ~40 MB less than a
    forkserver). Otherwise a forkserver, or spawn where there is no fork (Windows)."""
    methods = multiprocessing.get_all_start_methods()
    if sys.platform == "linux" and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def _quiet_worker() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process handles Ctrl-C


@contextmanager
def _ctrl_c_held() -> Iterator[None]:
    """Ctrl-C while workers start is raised once they have started. A fork runs Python's
    at-fork hooks (logging's lock), and a KeyboardInterrupt raised inside one is printed as
    "Exception ignored" and lost: the run went on to the end as if no key had been pressed."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread can set a handler, and only it runs one
        return
    came: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: came.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if came:
            signal.raise_signal(signal.SIGINT)  # to the handler of before, now it is back


# offset, raw id, who, time, id, (with `months`) its events' (metric, UTC month) pairs, and
# the store its row names ('': none; the raw id is then the bare id, else "<store>:<id>")
Stamp = tuple[int, str | None, str | None, float, str, tuple[tuple[str, str], ...], str]


def stamp(raw: RawOrder, converter: Converter, filters: Filters, months: bool = False) -> Stamp:
    """An order's customer and creation time, as deciding each customer's latest order needs
    (latest.py); who is None where the order would not be mapped. With `months`, also the
    metric and UTC month of each event it yields (the overlap check's count, in the same
    pass)."""
    store = str(raw.fields.get("store") or "")
    try:
        order = converter.order(raw, who_and_when=True)
        if in_window(order.created_at, filters):
            who = order.email or identity_of(order)  # Klaviyo keys a profile by its email first
            pairs = _months(order) if months else ()
            at = order.created_at.timestamp()
            return raw.offset, raw_id(raw), who, at, order.key, pairs, store
    except FieldError:
        pass
    return raw.offset, raw_id(raw), None, 0.0, "", (), store


def _months(order: Order) -> tuple[tuple[str, str], ...]:
    tally = Tally.of(map_order(order, attributes=False))
    return tuple(zip(tally.metrics, tally.months, strict=True))


def stamped_pieces(
    source: Input, settings: Settings, filters: Filters, workers: int, months: bool = False
) -> Generator[Stamp, None, None]:
    """The file's orders' stamps (`stamp`), made by `workers` processes, in file order."""
    return pieces(source, settings, _Stamp(filters, months), workers)


def prepared_pieces(
    source: Input,
    index: int,
    settings: Settings,
    filters: Filters,
    encoder: Encoder | None,
    workers: int,
    rule: AttributeRule | None = None,
) -> Generator[Prepared, None, None]:
    """The file's orders, prepared by `workers` processes, in file order."""
    path = source.path
    with closing(
        pieces(source, settings, _Prepare(index, filters, encoder, rule), workers)
    ) as packed:
        for order in packed:
            yield _unpack(order, path)


def pieces(
    source: Input, settings: Settings, work: Work, workers: int, held: HeldRows | None = None
) -> Generator[Any, None, None]:
    """`work` on each order of the file, done by `workers` processes, in file order (each
    order's rows read with `held` asked about them, as `read.read_orders` does)."""
    size = os.path.getsize(source.path)
    starts = itertools.chain([(0, 1)], cuts(source.path, PIECE_BYTES), [(size + 1, 0)])
    todo = (
        _Piece(source, start, line, end, settings, work, held)
        for (start, line), (end, _) in itertools.pairwise(starts)
    )
    pool = _Pool(workers, _start_method())
    try:
        pending: deque[int] = deque()  # the worker of each piece handed out, in file order
        handed = 0
        floor = 0  # orders that start before this were read by the previous piece's worker
        while True:
            try:
                while len(pending) < workers * _AHEAD and (nxt := next(todo, None)) is not None:
                    pool.hand(handed % workers, nxt)
                    pending.append(handed % workers)
                    handed += 1
                if not pending:
                    return
                done = pool.result(pending.popleft())
            except _Died:
                raise WorkerError(
                    f"a worker process died while reading {source.path} (out of memory, or killed)",
                    "Rerun with --jobs 1 to read it in one process.",
                ) from None
            for offset, made in done.orders:
                if offset >= floor:
                    yield made
            if done.error is not None:
                raise done.error
            floor = done.last_end
            if done.next_at is None:  # this worker read on to the end of the file
                return
            if not done.cut_ok:  # the next piece began inside a row: read on here, in order
                pool.close()
                yield from _in_order(source, settings, work, held, done.next_at)
                return
    finally:
        pool.close()


class _Died(Exception):
    """A worker process ended without giving back the piece it had."""


@dataclass(slots=True)
class _Worker:
    process: multiprocessing.process.BaseProcess
    tasks: Connection  # pieces to it
    results: Connection  # their `_Done`s back, in the order handed


class _Pool:
    """Worker processes, each with a pipe of its own each way.

    Not a ProcessPoolExecutor: its workers share one result pipe and its lock, so one killed
    while writing a result (the OOM killer) left the others waiting on the lock and the pool
    reading a message that never ends: the run hung, and then hung again at exit. Here a
    worker's death ends its own pipe (no other process holds its writing end), and is found
    by its sentinel or by the end of its pipe mid-message."""

    def __init__(self, count: int, context: multiprocessing.context.BaseContext) -> None:
        self.workers: list[_Worker] = []
        forked = context.get_start_method() == "fork"
        try:
            with _ctrl_c_held():
                self._start(count, context, forked)
        except BaseException:
            self.close()
            raise

    def _start(
        self, count: int, context: multiprocessing.context.BaseContext, forked: bool
    ) -> None:
        for _ in range(count):
            tasks_out, tasks_in = context.Pipe(duplex=False)
            results_out, results_in = context.Pipe(duplex=False)
            # a forked worker holds copies of this process's ends of its pipes and of
            # the others': it closes them, so that each pipe ends with one process (a
            # worker left behind by a killed run then sees the end, and exits)
            ends = [(w.tasks, w.results) for w in self.workers] + [(tasks_in, results_out)]
            others = [end.fileno() for pair in ends for end in pair]
            args = (tasks_out, results_in, others if forked else [])
            process = context.Process(target=_serve, args=args, daemon=True)  # type: ignore[attr-defined]
            process.start()
            tasks_out.close()  # the worker's ends: only it holds them now
            results_in.close()
            self.workers.append(_Worker(process, tasks_in, results_out))

    def hand(self, index: int, piece: _Piece) -> None:
        try:
            self.workers[index].tasks.send(piece)
        except OSError:  # its end of the pipe is gone: it died
            raise _Died from None

    def result(self, index: int) -> _Done:
        worker = self.workers[index]
        ready = wait([worker.results, worker.process.sentinel])
        if worker.results not in ready:
            raise _Died
        try:
            answer = worker.results.recv()
        except (EOFError, OSError):  # it died before, or while, writing its answer
            raise _Died from None
        if isinstance(answer, BaseException):
            raise answer  # a bug in the worker: its own exception, here
        return cast(_Done, answer)

    def close(self) -> None:
        """Stop every worker: those at work are not waited for (their pieces are not wanted)."""
        for worker in self.workers:
            if worker.process.is_alive():
                worker.process.kill()
        for worker in self.workers:
            worker.process.join()
            worker.tasks.close()
            worker.results.close()
        self.workers = []


def _serve(tasks: Connection, results: Connection, others: list[int]) -> None:
    """A worker process: each piece handed to it, worked on, its `_Done` sent back."""
    _quiet_worker()
    for fd in others:
        os.close(fd)
    while True:
        try:
            piece = tasks.recv()
        except EOFError:  # the main process is gone
            return
        try:
            done: object = _work_piece(piece)
        except Exception as exc:  # a bug: told to the main process rather than lost here
            done = exc
        results.send(done)
