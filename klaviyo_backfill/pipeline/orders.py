"""Stage one of every run: inputs -> prepared orders, settled in file order.

    orders read = orders mapped + orders rejected + orders skipped

Skipped orders are duplicates (the same order id in an earlier row or file), orders outside
--since/--until, orders a checkpoint already holds as sent, and orders another API sender
holds (presend/overlap.py: sent, they would count twice). A dry run, `inspect` and a
send all take their orders from `mapped_orders`; only a send passes a `Resume`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from functools import partial

from ..inputs.csv_orders import Start
from ..inputs.export import read_orders
from ..inputs.layouts import Layout
from ..inputs.sources import Input
from ..mapping.convert import Converter, Settings
from ..mapping.encode import Encoder, Part
from ..mapping.events import AttributeRule
from ..model import Event, Filters, Position, RawOrder, Rejection, utc_month
from ..presend.delta import Delta, Elsewhere
from ..presend.survey import Duplicate, HeldRun, Survey
from ..state.failures import Failures
from .distinct import SeenIds
from .job import Job
from .parallel import prepared_pieces, splittable, workers_for
from .prepare import Held, Prepared, prepare, raw_id
from .summary import Stats

__all__ = ["ELSEWHERE", "MappedOrder", "Resume", "mapped_orders"]

_HELD = "already in Klaviyo (this account)"  # the reason a skipped order is counted under
ELSEWHERE = "held by another API sender"  # ... and one the shop's own integration sent


@dataclass(slots=True)
class MappedOrder:
    key: str  # the order's id: what dedupe and the checkpoint know it by
    events: list[Event]
    source: str = ""
    line: int = 0
    at: Position = (0, 0)  # where a resumed run would pick this order up
    after: Position = (0, 0)  # where it would pick up the order after it
    parts: list[Part] = field(default_factory=list)  # its events encoded
    held: Held | None = None  # a send: what the account held already (delta.py)
    stamp: tuple[str, float, str] | None = None  # (profile, time, id): carries its attributes


@dataclass(frozen=True)
class Resume:
    """What a checkpoint tells stage one: which orders are done, where to pick up, and where
    an order the export could not give is reported (kept for a resumed run's failures file)."""

    is_done: Callable[[str], bool] | None  # None: the checkpoint holds no order yet
    at: Position | None = None
    on_reject: Callable[[Rejection, Position], None] | None = None
    delta: Delta | None = None  # what the account holds already (None: --resend)
    survey: Survey | None = None  # one reading against the account, to replay (survey.py)
    only: Callable[[Event], bool] | None = None  # a repair: the events it sends (repair.py)
    elsewhere: Elsewhere | None = None  # the orders another API sender holds: skipped


class _Mapper:
    def __init__(
        self,
        settings: Settings,
        filters: Filters,
        stats: Stats,
        failures: Failures,
        encoder: Encoder | None,
        resume: Resume | None,
        rule: AttributeRule | None = None,
    ) -> None:
        self.settings, self.filters, self.stats, self.failures = settings, filters, stats, failures
        self.rule = rule
        self.already_sent = resume.is_done if resume is not None else None
        self.on_reject = resume.on_reject if resume is not None else None
        self.delta = resume.delta if resume is not None else None
        self.survey = resume.survey if resume is not None else None
        self.only = resume.only if resume is not None else None
        self.elsewhere = resume.elsewhere if resume is not None else None
        self.encoder = encoder
        self.seen = SeenIds()
        self.converters: dict[int, Converter] = {}

    def one(self, raw: RawOrder, layout: Layout, index: int) -> MappedOrder | None:
        """Read, prepare and settle one order here (skipped ones are not even converted)."""
        self.stats.orders_read += 1
        if raw.already_sent:
            self.stats.skipped["already sent (checkpoint)"] += 1
            return None
        # a CSV reader asked the checkpoint already (raw.already_sent); JSON asks here
        if not self.first_sight(raw_id(raw), raw.source, raw.line, layout.kind != "csv"):
            return None
        converter = self.converter(layout, index)
        if self.only is not None:
            return self.only_these(raw, converter, index, self.only)
        if self.delta is not None:
            return self.new_for_account(raw, converter, index, self.delta, layout.kind == "csv")
        return self.settle(prepare(raw, converter, self.filters, index, self.encoder, self.rule))

    def only_these(
        self, raw: RawOrder, converter: Converter, index: int, keeps: Callable[[Event], bool]
    ) -> MappedOrder | None:
        """A repair: the order mapped as a send maps it, with only the events it resends."""
        prepared = prepare(raw, converter, self.filters, index, None)
        prepared.events = [event for event in prepared.events if keeps(event)]
        if prepared.rejected is None and not prepared.events:
            self.stats.skipped["not to repair"] += 1
            return None
        if self.encoder is not None:
            prepared.parts = self.encoder.parts(prepared.events)
        return self.settle(prepared)

    def surveyed(self, raw: RawOrder, layout: Layout, index: int) -> MappedOrder | None:
        """An order the survey (survey.py) found new to the account and not a repeat."""
        assert self.delta is not None  # a survey is taken against an account
        self.stats.orders_read += 1
        return self.new_for_account(raw, self.converter(layout, index), index, self.delta, True)

    def converter(self, layout: Layout, index: int) -> Converter:
        converter = self.converters.get(index)
        if converter is None:
            converter = self.converters[index] = Converter(layout, self.settings)
        return converter

    def held_run(self, run: HeldRun) -> None:
        """Orders in a row the account holds unchanged (the survey found them)."""
        stats = self.stats
        stats.orders_read += run.orders
        stats.skipped[_HELD] += run.orders
        stats.already_in_klaviyo += run.events

    def duplicate(self, repeat: Duplicate) -> None:
        self.stats.orders_read += 1
        self.repeated(repeat.source, repeat.line)

    def new_for_account(
        self, raw: RawOrder, converter: Converter, index: int, delta: Delta, csv: bool
    ) -> MappedOrder | None:
        """Skip what the account holds (unread where the order is unchanged); encode the rest.
        The CSV reader asked the account already (`raw.held`, `raw.digest`); JSON asks here."""
        digest, held = (raw.digest or b"", raw.held) if csv else delta.unchanged(raw)
        if held is not None:
            self.stats.skipped[_HELD] += 1
            self.stats.already_in_klaviyo += held.events
            return None
        prepared = prepare(raw, converter, self.filters, index, None, self.rule)
        for detail in delta.sift(prepared, digest):
            self.failures.write(
                Rejection(raw.source, raw.line, prepared.key, "changed since it was sent", detail)
            )
        if prepared.held is not None:
            self.stats.already_in_klaviyo += prepared.held.events
            if not prepared.events:
                self.stats.skipped[_HELD] += 1
                return None
        if self.encoder is not None:
            prepared.parts = self.encoder.parts(prepared.events)
        return self.settle(prepared)

    def prepared(self, prepared: Prepared) -> MappedOrder | None:
        """Settle an order prepared elsewhere (a dry run on several cores: no checkpoint)."""
        self.stats.orders_read += 1
        if not self.first_sight(prepared.raw_id, prepared.source, prepared.line, False):
            return None
        return self.settle(prepared)

    def first_sight(self, order_id: str | None, source: str, line: int, ask: bool) -> bool:
        """False for an order to skip: a duplicate id, or (when `ask`) one already sent."""
        if not order_id:
            return True
        stats = self.stats
        if not self.seen.add(order_id):
            self.repeated(source, line)
            return False
        if ask and self.already_sent is not None and self.already_sent(order_id):
            stats.skipped["already sent (checkpoint)"] += 1
            return False
        return True

    def repeated(self, source: str, line: int) -> None:
        stats = self.stats
        stats.skipped["duplicate order id"] += 1
        stats.warnings["duplicate order id skipped"] += 1
        stats.example("duplicate order id skipped", source, line)

    def settle(self, prepared: Prepared) -> MappedOrder | None:
        stats = self.stats
        if prepared.rejected is not None:
            self.reject(prepared)
            return None
        if prepared.outside:
            stats.skipped["outside --since/--until"] += 1
            return None
        if self.elsewhere is not None and self.elsewhere.holds(prepared) and prepared.tally:
            stats.skipped[ELSEWHERE] += 1
            stats.held_elsewhere[prepared.key] = utc_month(prepared.tally.time)
            return None
        for warning in dict.fromkeys(prepared.warnings):
            stats.warnings[warning] += 1
            stats.example(warning, prepared.source, prepared.line)
        assert prepared.tally is not None  # every mapped order has one
        stats.count_order(prepared.tally, prepared.lines)
        p = prepared
        return MappedOrder(
            p.key, p.events, p.source, p.line, p.at, p.after, p.parts, p.held, p.stamp
        )

    def reject(self, prepared: Prepared) -> None:
        assert prepared.rejected is not None
        field_name, reason, message = prepared.rejected
        self.stats.orders_rejected += 1
        key = f"{field_name}: {reason}"
        self.stats.rejected[key] += 1
        self.stats.example(key, prepared.source, prepared.line)
        rejection = Rejection(prepared.source, prepared.line, prepared.raw_id, reason, message)
        self.failures.write(rejection)
        if self.on_reject is not None:
            self.on_reject(rejection, prepared.at)


def mapped_orders(
    job: Job,
    encoder: Encoder | None,
    stats: Stats,
    failures: Failures,
    resume: Resume | None = None,
) -> Iterator[MappedOrder]:
    """Mapped orders from every input in turn, each with its events encoded by `encoder`;
    rejections go to `failures`, counts to `stats`.

    A resumed run starts at `resume.at`: inputs before it are passed over whole, and a CSV
    input is picked up at the byte offset of the first order not yet settled. Without a
    checkpoint (a dry run, inspect), a large CSV input is prepared on every core
    (parallel.py) and settled here, in file order, as if prepared here.
    """
    mapper = _Mapper(job.settings, job.filters, stats, failures, encoder, resume, job.attributes)
    workers = workers_for(job.jobs) if resume is None else 1
    resume_at = resume.at if resume is not None else None
    limit = job.filters.limit
    stats.bytes_total = sum(os.path.getsize(source.path) for source in job.inputs)
    stats.skipped_files = [(s.path, s.why) for s in job.skipped]
    stats.since, stats.until = job.filters.since, job.filters.until
    stats.limit = limit
    try:
        yield from _settled(job, mapper, stats, workers, resume_at, encoder)
    finally:
        stats.read_all = True  # what it holds is whole: the progress's total is exact


def _settled(
    job: Job,
    mapper: _Mapper,
    stats: Stats,
    workers: int,
    resume_at: tuple[int, int] | None,
    encoder: Encoder | None,
) -> Generator[MappedOrder, None, None]:
    limit, taken, before = job.filters.limit, 0, 0
    for index, source in enumerate(job.inputs):
        start = _start(source, index, resume_at)
        if start is None and resume_at is not None and index < resume_at[0]:
            before += os.path.getsize(source.path)
            continue
        if start is not None:
            stats.resumed_at = f"{source.shown}:{start.line}"
        elsewhere = None
        if splittable(source, workers):
            elsewhere = prepared_pieces(
                source, index, job.settings, job.filters, encoder, workers, job.attributes
            )
        with closing(_orders_of(mapper, source, index, start, elsewhere)) as orders:
            for offset, settle in orders:
                stats.bytes_done = before + offset
                if limit is not None and taken >= limit:
                    return
                mapped = settle()
                if mapped is not None:
                    taken += 1
                    yield mapped
        before += os.path.getsize(source.path)


def _orders_of(
    mapper: _Mapper,
    source: Input,
    index: int,
    start: Start | None,
    prepared: Generator[Prepared, None, None] | None,
) -> Generator[tuple[int, Callable[[], MappedOrder | None]], None, None]:
    """Each order's offset, and what settles it: read and prepared here, or prepared elsewhere
    (`closing` this stops the workers when --limit ends the run early)."""
    if prepared is not None:
        with closing(prepared):
            for order in prepared:
                yield order.at[1], partial(mapper.prepared, order)
        return
    layout, delta = source.layout, mapper.delta
    if mapper.survey is not None:  # read once already: replayed
        for entry in mapper.survey.replay(source, index):
            if isinstance(entry, RawOrder):
                yield entry.offset, partial(mapper.surveyed, entry, layout, index)
            elif isinstance(entry, HeldRun):
                yield entry.offset, partial(mapper.held_run, entry)
            else:
                yield entry.offset, partial(mapper.duplicate, entry)
        return
    held = delta if delta is not None and layout.kind == "csv" else None
    raws = read_orders(source, mapper.already_sent, start, held)
    if delta is not None and held is None:
        raws = delta.batched(raws)
    for raw in raws:
        yield raw.offset, partial(mapper.one, raw, layout, index)


def _start(source: Input, index: int, resume_at: Position | None) -> Start | None:
    if resume_at is None or resume_at[0] != index or resume_at[1] == 0:
        return None
    return Start(resume_at[1], _line_at(source.path, resume_at[1]))


def _line_at(path: str, offset: int) -> int:
    """The line number of the line starting at `offset` (counting newline bytes: fast)."""
    lines, left = 1, offset
    with open(path, "rb") as fh:
        while left > 0:
            chunk = fh.read(min(left, 1 << 20))
            if not chunk:
                break
            lines += chunk.count(b"\n")
            left -= len(chunk)
    return lines
