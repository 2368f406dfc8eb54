"""A run's settings, resolved once from the command line: the typed core's one input."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field, replace
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

from .convert import Settings
from .errors import FieldError, UsageError
from .layout import Layout, builtin_layouts, load
from .pipeline import Filters
from .read import Input, detect_layout, expand_paths, load_side_lines, sniff_kind
from .values import parse_period

__all__ = ["Job", "parse_when", "resolve_inputs"]

_WHEN_HINT = (
    "Give a year (2024), a month (2024-03), a day (2024-03-05) or a moment (2024-03-05 14:30)."
)


@dataclass(frozen=True)
class Job:
    inputs: list[Input]
    settings: Settings
    filters: Filters = field(default_factory=Filters)
    endpoint: str = "bulk"
    backfill: bool = True
    revision: str = "2026-07-15"
    output: str | None = None
    failures: str | None = None
    layout_texts: tuple[str, ...] = field(default=())
    jobs: int | None = None  # processes for a dry run or inspect (None: one per core)

    def fingerprint(self) -> str:
        """What binds a checkpoint to its inputs and to the options that change payloads."""
        h = hashlib.sha256()
        for source in self.inputs:
            stat = os.stat(source.path)
            side = sum(len(items) for items in (source.side_lines or {}).values())
            h.update(
                f"{os.path.abspath(source.path)}|{stat.st_size}|{source.layout.name}|"
                f"{source.encoding}|{side}\n".encode()
            )
            with open(source.path, "rb") as fh:
                h.update(fh.read(1 << 16))
        s = self.settings
        h.update(
            f"{self.endpoint}|{self.backfill}|{self.revision}|{s.timezone}|{s.currency}".encode()
        )
        h.update(f"|{self.filters.since}|{self.filters.until}".encode())
        for text in self.layout_texts:
            h.update(text.encode())
        return h.hexdigest()[:32]


def parse_when(value: str | None, option: str, tz: tzinfo) -> datetime | None:
    """The moment --since or --until stands for, in `tz` unless the value has an offset.

    A year, month or day (`2024`, `2024-03`, `2024-03-05`) is a period: --since is its first
    moment (orders at or after it pass), --until the first moment after it (orders before it
    pass), so `--since 2024 --until 2024` is the orders of 2024. A value with a time of day
    is that moment for both. A value without a year (`Monday`, `March`, `Dec 5`) is refused,
    never completed from today."""
    if value is None:
        return None
    try:
        start, end = parse_period(value.strip(), option, tz)
    except FieldError as exc:
        raise UsageError(f"{option} {value!r} is {exc.reason}", _WHEN_HINT) from None
    return end if option == "--until" else start


def _layout_for(
    path: str,
    fmt: str | None,
    mapping: Layout | None,
    encoding: str | None,
    side_lines: dict[str, list[Any]] | None = None,
) -> Input:
    layouts = builtin_layouts()
    if mapping is not None:
        layout = mapping if mapping.kind else replace(mapping, kind=sniff_kind(path, encoding))
    elif fmt is not None:
        layout = layouts[fmt]
    else:
        layout = detect_layout(path, layouts, encoding or "utf-8-sig")
    return Input(path, layout, encoding or layout.options.encoding or "utf-8-sig", side_lines)


def resolve_inputs(
    paths: list[str],
    fmt: str | None,
    mapping_path: str | None,
    encoding: str | None,
    products: str | None = None,
) -> tuple[list[Input], tuple[str, ...]]:
    files = expand_paths(paths)
    side = load_side_lines(products, encoding or "utf-8-sig") if products else None
    if not files:
        raise UsageError("no export files found in " + ", ".join(paths))
    mapping = load(mapping_path) if mapping_path else None
    texts = (Path(mapping_path).read_text("utf-8"),) if mapping_path else ()
    return [_layout_for(p, fmt, mapping, encoding, side) for p in files], texts
