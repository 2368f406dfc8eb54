"""A later export's survey: one reading of the exports, before anything is sent, of what the
account holds.

A new job to an account that holds orders already reads each CSV export once, on every core
(parallel.py), asking the account's ledger (delta.py) about each order as its rows are read,
and records in file order what it found: runs of orders the account holds unchanged (how
many, and how many of their events), orders to map (where they are, and their rows' digest),
and repeated order ids (skipped, as stage one skips them).
With `--profile-attributes latest` the same reading fills the table of each profile's latest
order (latest.py): the ledger's profile and time for a held order, the converted order's for
the rest; given a counter, it counts there the events per metric and UTC month of the orders
a run would map, held ones too (the overlap check's count: held orders are then extracted and
converted as well). Stage one of the send (orders.py) then replays the record: a run of held orders is
counted at once, the orders to map are read again from their own offsets. The first new
request so comes after one reading of the export, not two. (A resumed run takes the survey
for its profile table alone, and reads from its resume point.)

The record is a private temporary file in the state folder (`survey-<pid>-*.record`: plain
values in `marshal` batches, written and read back by this process alone; ~50 bytes per order
to map or repeated, a few per run of held ones), so memory stays flat; it is removed at the
end, or, after a killed run, by the next. A job with a JSON export is not surveyed (JSON cannot
be read from an offset): it is read twice, as before.
"""

from __future__ import annotations

import marshal
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ..errors import InputError
from ..inputs.csv_orders import Start
from ..inputs.export import read_orders
from ..inputs.sources import Input
from ..mapping.convert import Converter
from ..model import Filters, RawOrder
from ..pipeline.distinct import SeenIds
from ..pipeline.parallel import Stamp, pieces, splittable, stamp, workers_for
from ..pipeline.prepare import raw_id
from ..state.sqlite import FULL
from .latest import Latest, Mark, scratch, scratch_trouble

if TYPE_CHECKING:
    from ..pipeline.job import Job
    from .delta import Delta
    from .stores import StoresCheck

__all__ = ["Duplicate", "HeldRun", "Survey"]

_BATCH = 2000
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
# what a worker sends back of an order: held unchanged (offset, line, id, events, profile,
# time), or to map (offset, line, id, digest)
_Item = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class HeldRun:
    """Orders in a row that the account holds unchanged: skipped unread."""

    offset: int  # of the last of them
    orders: int
    events: int  # their events, all in Klaviyo already


@dataclass(frozen=True, slots=True)
class Duplicate:
    """An order whose id came earlier in the job: skipped."""

    offset: int
    source: str
    line: int


@dataclass(frozen=True, slots=True)
class _Look:
    """Work for parallel.py: what the survey keeps of one order (and its stamp, for
    `latest`, or of every order, held ones too, with the months of its events: `months`)."""

    filters: Filters
    stamps: bool
    months: bool = False

    def __call__(self, raw: RawOrder, converter: Converter) -> tuple[_Item, Stamp | None]:
        held = raw.held
        if held is not None:
            mark = stamp(raw, converter, self.filters, True) if self.months else None
            return (raw.offset, raw.line, raw_id(raw), held.events, held.who, held.at), mark
        mark = (
            stamp(raw, converter, self.filters, self.months) if self.stamps or self.months else None
        )
        return (raw.offset, raw.line, raw_id(raw), raw.digest), mark


class Survey:
    """The record of one reading; `replay` gives an input's orders back from it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.starts: dict[int, int] = {}  # input index -> where its batches begin
        self.latest: Latest | None = None

    @staticmethod
    def suits(job: Job) -> bool:
        """Whether the job's exports can be surveyed: CSV, every one."""
        return all(source.layout.kind == "csv" for source in job.inputs)

    @classmethod
    def take(
        cls,
        job: Job,
        delta: Delta,
        latest: bool,
        months: Counter[tuple[str, str]] | None = None,
        stores: StoresCheck | None = None,
    ) -> Survey:
        """Read the job's exports against the account; with `latest`, fill `survey.latest`;
        given `months`, count there the events per metric and UTC month of every order a run
        would map (--limit's first), as a pass over mapped orders counts them (the overlap
        check's count: `delta` then has the reader extract the orders it holds too); given
        `stores`, show it each order the account does not hold unchanged (stores.py)."""
        survey = cls(scratch("survey", ".record"))
        try:
            with os.fdopen(os.open(survey.path, os.O_WRONLY | _NOFOLLOW), "wb") as fh:
                marks = survey._read(job, delta, latest, fh, months, stores)
                if latest:
                    survey.latest = Latest.of(marks)
                else:
                    for _ in marks:
                        pass
        except OSError as exc:
            survey.close()
            if exc.errno not in FULL:
                raise
            raise scratch_trouble(survey.path, exc, "the export against the account") from None
        except BaseException:
            survey.close()
            raise
        return survey

    def _read(
        self,
        job: Job,
        delta: Delta,
        latest: bool,
        fh: IO[bytes],
        months: Counter[tuple[str, str]] | None = None,
        stores: StoresCheck | None = None,
    ) -> Iterator[tuple[str, Mark]]:
        """Record each input; yield (profile, mark) of every order a run would map."""
        seen = SeenIds()
        workers = workers_for(job.jobs)
        look = _Look(job.filters, latest or stores is not None, months is not None)
        left = job.filters.limit  # orders whose months are counted yet (as latest._stamps)
        delta.extract = months is not None
        for index, source in enumerate(job.inputs):
            self.starts[index] = fh.tell()
            record = _Record(fh)
            for item, mark in _looked(source, job, delta, look, workers):
                order_id = item[2]
                first = order_id is None or seen.add(order_id)
                if (
                    first
                    and months is not None
                    and mark is not None
                    and mark[2] is not None  # an order a run would map
                    and (left is None or left > 0)
                ):
                    months.update(mark[5])
                    left = None if left is None else left - 1
                if len(item) == 6:  # held unchanged
                    if first:
                        record.held(item[0], item[3])
                        if latest and item[5] is not None:
                            yield item[4], (item[5], order_id)
                        continue
                elif first:
                    record.add(("n", item[0], item[1], item[3]))
                    if stores is not None and mark is not None:
                        stores.see(mark)
                    if latest and mark is not None and mark[2] is not None:
                        yield mark[2], (mark[3], mark[4])
                    continue
                record.add(("d", item[0], item[1]))
            record.end()

    def replay(self, source: Input, index: int) -> Iterator[RawOrder | HeldRun | Duplicate]:
        """The input's orders as recorded: runs of held ones counted, repeated ids named, and
        the orders to map read again from their offsets (with the digest of their rows)."""
        name = source.name if source.name is not None else source.path
        reader: Iterator[RawOrder] | None = None
        expected = -1
        try:
            for entry in self._entries(index):
                kind = entry[0]
                if kind == "h":
                    yield HeldRun(*entry[1:])
                elif kind == "d":
                    yield Duplicate(entry[1], name, entry[2])
                else:
                    _, offset, line, digest = entry
                    if reader is None or offset != expected:
                        _close(reader)
                        reader = read_orders(source, None, Start(offset, line))
                    raw = next(reader, None)
                    if raw is None or raw.offset != offset:
                        raise InputError(source.shown, "changed while it was being sent", line)
                    raw.digest = digest
                    expected = raw.end if raw.end is not None else -1
                    yield raw
        finally:
            _close(reader)

    def _entries(self, index: int) -> Iterator[tuple[Any, ...]]:
        with os.fdopen(os.open(self.path, os.O_RDONLY | _NOFOLLOW), "rb") as fh:
            fh.seek(self.starts[index])
            while True:
                for entry in marshal.load(fh):
                    if not entry:
                        return
                    yield entry

    def close(self) -> None:
        if self.latest is not None:
            self.latest.close()
        Path(self.path).unlink(missing_ok=True)


class _Record:
    """One input's entries, written in batches; consecutive held orders as one run."""

    def __init__(self, fh: IO[bytes]) -> None:
        self.fh = fh
        self.batch: list[tuple[Any, ...]] = []
        self.run: list[int] = [0, 0, 0]  # last offset, orders, events

    def held(self, offset: int, events: int) -> None:
        run = self.run
        run[0] = offset
        run[1] += 1
        run[2] += events

    def add(self, entry: tuple[Any, ...]) -> None:
        self._flush_run()
        self.batch.append(entry)
        if len(self.batch) >= _BATCH:
            marshal.dump(self.batch, self.fh)
            self.batch = []

    def end(self) -> None:
        self._flush_run()
        self.batch.append(())
        marshal.dump(self.batch, self.fh)

    def _flush_run(self) -> None:
        if self.run[1]:
            self.batch.append(("h", *self.run))
            self.run = [0, 0, 0]


def _looked(
    source: Input, job: Job, delta: Delta, look: _Look, workers: int
) -> Iterator[tuple[_Item, Stamp | None]]:
    if splittable(source, workers):
        return pieces(source, job.settings, look, workers, held=delta)
    return _in_process(source, job, delta, look)


def _in_process(
    source: Input, job: Job, delta: Delta, look: _Look
) -> Iterator[tuple[_Item, Stamp | None]]:
    converter = Converter(source.layout, job.settings)
    for raw in read_orders(source, None, None, delta):
        yield look(raw, converter)


def _close(reader: Iterator[RawOrder] | None) -> None:
    """Close a reader left part-way (its file), as a generator is closed."""
    close = getattr(reader, "close", None)
    if close is not None:
        close()
