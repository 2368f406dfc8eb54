"""A job: a run's options, checked and resolved once (inputs and their layouts, zone, dates,
the endpoint): the one input of the stages in pipeline/stages.py."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

from ..errors import FieldError, InputError, NotAnExport, UsageError
from ..inputs.detect import detect_layout, fits, sniff_kind, with_delimiter
from ..inputs.json_orders import load_side_lines
from ..inputs.layouts import Layout, builtin_layouts, delimiter_named, load
from ..inputs.sources import Input, Skipped, gather, is_stream, spool
from ..inputs.values import STORE_LENGTH, is_currency, parse_period, store_problem, zone
from ..klaviyo.endpoints import BACKFILL_REVISION, BULK, DEFAULT_REVISION, ENDPOINTS, Endpoint
from ..klaviyo.throttle import parse_rate_limit
from ..mapping.convert import Settings, earliest_for
from ..mapping.events import AttributeRule
from ..model import Filters
from ..options import PROFILE_ATTRIBUTES, InputOptions, SendOptions

__all__ = [
    "DATE_ORDERS",
    "Job",
    "check_revision",
    "default_failures",
    "gather_inputs",
    "job_from",
    "parse_when",
    "resolve_inputs",
]


# what a checkpoint's fingerprint covers, besides the exports: named when they differ
FINGERPRINTED = (
    "endpoint, timezone, currency, since, until, revision, trigger-flows, layout, "
    "profile-attributes, store"
)


_WHEN_HINT = (
    "Give a year (2024), a month (2024-03), a day (2024-03-05) or a moment (2024-03-05 14:30)."
)


@dataclass(frozen=True)
class Job:
    inputs: list[Input]
    settings: Settings
    filters: Filters = field(default_factory=Filters)
    endpoint: Endpoint = BULK
    backfill: bool = True
    revision: str = DEFAULT_REVISION
    output: str | None = None
    failures: str | None = None
    layout_texts: tuple[str, ...] = field(default=())
    jobs: int | None = None  # processes for a dry run or inspect (None: one per core)
    profile_attributes: str = "latest"  # which orders carry a profile's attributes (latest.py)
    attributes: AttributeRule | None = (
        None  # the rule profile_attributes gives (stages.profiles_for)
    )
    skipped: tuple[Skipped, ...] = ()  # what the folders given held that is no export
    store: str | None = None  # `--store`: every order's store, where a row names none

    def payload_salt(self) -> bytes:
        """A digest of what changes an order's events apart from the order itself (the zone
        of naive times, the currency, the layouts): an order read alike under another salt
        is mapped again, not skipped as unchanged."""
        s = self.settings
        layouts = sorted({source.layout.name for source in self.inputs})
        text = "|".join([str(s.timezone), str(s.currency), *layouts, *self.layout_texts])
        return hashlib.sha256(text.encode()).digest()

    def fingerprint(self) -> str:
        """What binds a checkpoint to its inputs and to the options that change payloads."""
        h = hashlib.sha256()
        for source in self.inputs:
            stat = os.stat(source.path)
            side = sum(len(items) for items in (source.side_lines or {}).values())
            h.update(
                f"{source.name or os.path.abspath(source.path)}|{stat.st_size}|{source.layout.name}|"
                f"{source.encoding}|{side}\n".encode()
            )
            with open(source.path, "rb") as fh:
                h.update(fh.read(1 << 16))
        s = self.settings
        h.update(
            f"{self.endpoint.name}|{self.backfill}|{self.revision}|{s.timezone}|{s.currency}".encode()
        )
        h.update(f"|{self.filters.since}|{self.filters.until}".encode())
        h.update(f"|profile-attributes={self.profile_attributes}".encode())
        if self.store is not None:  # a job of one store never continues as another's
            h.update(f"|store={self.store}".encode())
        for text in self.layout_texts:
            h.update(text.encode())
        return h.hexdigest()[:32]


DATE_ORDERS = ("dmy", "mdy")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")  # fmt: skip
# a day, a month and a year in figures: 05/01/2024, 5.1.2024, 05-01-24, then perhaps a time
_NUMERIC = re.compile(r"(\d{1,2})([/.-])(\d{1,2})\2(\d{4}|\d{2})(?=$|[ T])(.*)", re.S)


def _figures(value: str, option: str, order: str | None) -> str:
    """A day and month in figures (`05/01/2024`) as an ISO date (`2024-01-05`): in the
    --date-order given, or where only one order makes a date; refused where both do, with
    the ISO forms of each (a European merchant's 5 January is an American's 1 May)."""
    match = _NUMERIC.fullmatch(value)
    if match is None:
        return value
    first, _, second, year, rest = match.groups()
    a, b = int(first), int(second)
    yyyy = int(year) if len(year) == 4 else 2000 + int(year) if int(year) < 70 else 1900 + int(year)
    readings = {}
    for name, (day, month) in (("dmy", (a, b)), ("mdy", (b, a))):
        if 1 <= month <= 12 and 1 <= day <= 31:
            readings[name] = f"{yyyy:04d}-{month:02d}-{day:02d}"
    if order is not None:
        if order not in readings:
            raise UsageError(f"{option} {value!r} is not a date in --date-order {order}",
                             _WHEN_HINT)  # fmt: skip
        return readings[order] + rest
    if len(set(readings.values())) > 1:
        day, month = a, b
        iso_dmy, iso_mdy = readings["dmy"], readings["mdy"]
        raise UsageError(
            f"{option} {value!r} could be {day} {_MONTHS[month - 1]} or {month} "
            f"{_MONTHS[day - 1]} {yyyy}",
            f"Write {iso_dmy} or {iso_mdy} (year-month-day), or say which with --date-order "
            "dmy (day first) or mdy (month first).",
        )
    return next(iter(readings.values()), value) + rest


def parse_when(
    value: str | None, option: str, tz: tzinfo, date_order: str | None = None
) -> datetime | None:
    """The moment --since or --until stands for, in `tz` unless the value has an offset.

    A year, month or day (`2024`, `2024-03`, `2024-03-05`) is a period: --since is its first
    moment (orders at or after it pass), --until the first moment after it (orders before it
    pass), so `--since 2024 --until 2024` is the orders of 2024. A value with a time of day
    is that moment for both. A value without a year (`Monday`, `March`, `Dec 5`) is refused,
    never completed from today; so is a day and month in figures that could be either
    (`05/01/2024`) unless `date_order` (`dmy`, `mdy`) says which."""
    if value is None:
        return None
    try:
        start, end = parse_period(_figures(value.strip(), option, date_order), option, tz)
    except FieldError as exc:
        raise UsageError(f"{option} {value!r} is {exc.reason}", _WHEN_HINT) from None
    return end if option == "--until" else start


def _layout_for(
    path: str,
    fmt: str | None,
    custom: Layout | None,
    encoding: str | None,
    side_lines: dict[str, list[Any]] | None = None,
    delimiter: str | None = None,
) -> Input:
    layouts = builtin_layouts()
    if custom is not None:
        layout = custom if custom.kind else replace(custom, kind=sniff_kind(path, encoding))
    elif fmt is not None:
        layout = layouts[fmt]
    else:
        layout = detect_layout(path, layouts, encoding or "utf-8-sig", delimiter)
    text = encoding or layout.options.encoding or "utf-8-sig"
    return Input(path, with_delimiter(path, layout, text, delimiter), text, side_lines)


def resolve_inputs(
    paths: list[str],
    fmt: str | None,
    layout_path: str | None,
    encoding: str | None,
    products: str | None = None,
    delimiter: str | None = None,
) -> tuple[list[Input], tuple[str, ...]]:
    inputs, texts, _ = gather_inputs(paths, fmt, layout_path, encoding, products, delimiter)
    return inputs, texts


def gather_inputs(
    paths: list[str],
    fmt: str | None,
    layout_path: str | None,
    encoding: str | None,
    products: str | None = None,
    delimiter: str | None = None,
) -> tuple[list[Input], tuple[str, ...], list[Skipped]]:
    """The inputs with their layouts, the layout file's text, and what the folders held that
    is no export (skipped and listed, never a reason to stop: a named file that is no export
    stops the run)."""
    files, skipped = gather(paths)
    side = load_side_lines(products, encoding or "utf-8-sig") if products else None
    custom = load(layout_path) if layout_path else None
    texts = (Path(layout_path).read_text("utf-8"),) if layout_path else ()
    inputs: list[Input] = []
    for path, named in files:
        if is_stream(path):
            inputs.append(_spooled(path, fmt, custom, encoding, side, delimiter))
            continue
        try:
            source = _layout_for(path, fmt, custom, encoding, side, delimiter)
            why = None if named or (fmt is None and custom is None) else fits(
                path, source.layout, source.encoding
            )  # fmt: skip
        except NotAnExport as exc:
            if named:
                raise
            why = exc.why.removeprefix("is ")
        if why is None:
            inputs.append(source)
        else:
            skipped.append(Skipped(path, why))
    if not inputs:
        told = "; ".join(f"{Path(s.path).name} ({s.why})" for s in skipped)
        raise UsageError(
            "no export files found in " + ", ".join(paths) + (f": skipped {told}" if told else "")
        )
    return inputs, texts, skipped


def _spooled(
    name: str,
    fmt: str | None,
    custom: Layout | None,
    encoding: str | None,
    side: dict[str, list[Any]] | None,
    delimiter: str | None,
) -> Input:
    """A stream ('-', a FIFO) read once into a private copy, named as given."""
    copy = spool(name)  # read once: '-' and a FIFO cannot be opened twice
    try:
        found = _layout_for(copy, fmt, custom, encoding, side, delimiter)
    except InputError as exc:
        raise exc.at(name) from None
    return replace(found, name=name)


def check_revision(revision: str, backfill: bool) -> None:
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}(\.[a-z0-9]+)?", revision):
        raise UsageError(f"--revision {revision!r} is not a revision", "Write e.g. 2026-07-15.")
    if backfill and revision[:10] < BACKFILL_REVISION:
        raise UsageError(
            f"--revision {revision} is older than {BACKFILL_REVISION}, the first with backfill",
            "Use a newer revision: without backfill, old orders would trigger your flows.",
        )


def default_failures(paths: tuple[str, ...]) -> str:
    """<first export's name>.failures.jsonl, in the current folder."""
    stem = "stdin" if paths[0] == "-" else Path(paths[0].rstrip("/")).stem or "export"
    return f"{stem}.failures.jsonl"


def _filters(source: InputOptions, zone_info: tzinfo) -> Filters:
    if source.date_order is not None and source.date_order not in DATE_ORDERS:
        raise UsageError(f"--date-order {source.date_order!r} is not dmy or mdy")
    since = parse_when(source.since, "--since", zone_info, source.date_order)
    until = parse_when(source.until, "--until", zone_info, source.date_order)
    if since and until and since >= until:
        raise UsageError(
            f"--since {source.since} is not before --until {source.until}: no order could pass"
        )
    return Filters(since, until, source.limit)


def _store(name: str | None) -> str | None:
    if name is None:
        return None
    problem = store_problem(name)
    if problem is not None:
        raise UsageError(
            f"--store {name!r} {problem}",
            f"Name the store in up to {STORE_LENGTH} printable characters, e.g. --store eu-shop.",
        )
    return name


def _currency(code: str | None) -> str | None:
    if code and not is_currency(code):
        raise UsageError(f"--currency {code!r} is not an ISO 4217 code", "Write e.g. EUR.")
    return code.upper() if code else None


def job_from(options: SendOptions) -> Job:
    """Check the options and resolve them: every problem a UsageError (or an InputError
    naming a file) before any order is read."""
    source = options.inputs
    if options.profile_attributes not in PROFILE_ATTRIBUTES:
        raise UsageError(
            f"--profile-attributes {options.profile_attributes!r} is not latest, all or none"
        )
    endpoint = ENDPOINTS.get(options.endpoint)
    if endpoint is None:
        raise UsageError(f"--endpoint {options.endpoint!r} is not one of {', '.join(ENDPOINTS)}")
    check_revision(options.revision, not options.trigger_flows)
    if options.rate_limit:
        parse_rate_limit(options.rate_limit)
    zone_info = zone(source.timezone)
    store = _store(source.store)
    delimiter = delimiter_named(source.delimiter, "--delimiter") if source.delimiter else None
    inputs, texts, skipped = gather_inputs(
        list(source.paths), source.fmt, source.layout, source.encoding, source.products, delimiter
    )
    if store is not None:
        inputs = [replace(one, store=store) for one in inputs]
    filters = _filters(source, zone_info)
    # the time floor is the v3 API's, by revision; the legacy Track API sends no revision
    settings = Settings(
        timezone=zone_info,
        zone_named=source.timezone_given,
        currency=_currency(source.currency),
        earliest=earliest_for(options.revision if endpoint.versioned else None),
    )
    return Job(
        inputs=inputs, settings=settings, filters=filters, endpoint=endpoint,
        backfill=not options.trigger_flows, revision=options.revision, output=options.output,
        failures=options.failures or default_failures(source.paths), layout_texts=texts,
        jobs=source.jobs, profile_attributes=options.profile_attributes, skipped=tuple(skipped),
        store=store,
    )  # fmt: skip
