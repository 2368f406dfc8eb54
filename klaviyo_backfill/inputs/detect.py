"""Which layout reads an export: detected from its first bytes (CSV header, JSON shape), or
the one named; a file of no known shape is refused naming what it looks like."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from itertools import islice
from typing import Any

from ..errors import NotAnExport
from .csv_orders import missing_column
from .graphql import is_child, orders_of
from .json_orders import iter_json_records
from .layouts import Layout
from .sources import CHUNK, check_not_a_spreadsheet, decode_error, open_text


def _peek(path: str, encoding: str) -> str:
    with open_text(path, encoding) as fh:
        try:
            return fh.read(CHUNK)
        except UnicodeError as exc:
            raise decode_error(path, exc, encoding, None) from None


def sniff_kind(path: str, encoding: str | None) -> str:
    """'json' when the file starts like JSON, else 'csv'."""
    check_not_a_spreadsheet(path)
    head = _peek(path, encoding or "utf-8-sig").lstrip()
    if not head:
        raise NotAnExport(path, "is empty")
    return "json" if head[0] in "[{" else "csv"


DELIMITERS = (",", ";", "\t")


def sniff_delimiter(head: str) -> str:
    """The delimiter of a CSV file's header: whichever of `,` `;` and tab splits its first
    record into the most fields (`,` on a tie). A Shopify export re-saved by a European
    spreadsheet is `;`-separated."""
    best, most = ",", 0
    for delimiter in DELIMITERS:
        fields = len(next(csv.reader(io.StringIO(head), delimiter=delimiter), []))
        if fields > most:
            best, most = delimiter, fields
    return best


def with_delimiter(path: str, layout: Layout, encoding: str, forced: str | None) -> Layout:
    """A CSV layout with its delimiter settled: --delimiter, else the layout's own, else the
    one the file's header shows."""
    if layout.kind != "csv":
        return layout
    delimiter = forced or layout.options.delimiter or sniff_delimiter(_peek(path, encoding))
    if delimiter == layout.options.delimiter:
        return layout
    return replace(layout, options=replace(layout.options, delimiter=delimiter))


def fits(path: str, layout: Layout, encoding: str) -> str | None:
    """Why a file of a folder is no export of the layout the run was told to use (its kind,
    or the columns it needs), or None when it may be one."""
    kind = sniff_kind(path, encoding)
    if layout.kind and layout.kind != kind:
        return f"not a {layout.name} export (a {kind} file)"
    if kind == "csv":
        delimiter = layout.options.delimiter or ","
        reader = csv.reader(io.StringIO(_peek(path, encoding)), delimiter=delimiter)
        missing = missing_column(layout, [h.strip() for h in next(reader, [])])
        if missing is not None:
            return f"not a {layout.name} export (no column {missing[0]})"
    return None


def _first_order(path: str, encoding: str) -> Any:
    """The file's first JSON value that is not a bulk operation's child line (those may
    come before their parents), looking at the first few thousand."""
    for record in islice(iter_json_records(path, encoding), 5000):
        if not is_child(record):
            return record
    return None


def _json_value(head: str, path: str) -> str | None:
    """The whole file, where it is one JSON value that is neither a list nor an object
    (`null`, a number, true or false; a string in a file named .json: elsewhere it may be a
    CSV's one quoted column), as it is written; else None."""
    text = head.strip()
    if len(head) >= CHUNK or len(text) > 40:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return None if isinstance(value, str) and not path.lower().endswith(".json") else text


def detect_layout(
    path: str, layouts: dict[str, Layout], encoding: str, delimiter: str | None = None
) -> Layout:
    """The layout whose signature columns (CSV, split at `delimiter` or the one its header
    shows) or keys (JSON) the file has."""
    check_not_a_spreadsheet(path)
    head = _peek(path, encoding)
    if not head.strip():
        raise NotAnExport(path, "is empty")
    if head.lstrip()[0] in "[{":
        first = _first_order(path, encoding)
        kind = "json"
        none = first is None  # `[]`, `{"orders": []}`: an export of a time without orders
        for layout in layouts.values():
            order = first
            if layout.options.orders_path:
                found = orders_of(first, layout.options.orders_path)
                order = next(found, None) if found is not None else first
                none = none or (found is not None and order is None)
            keys = set(order) if isinstance(order, dict) else set()
            if layout.kind == kind and layout.detect and keys.issuperset(layout.detect):
                return layout
        if none:
            raise NotAnExport(path, "holds no orders (a JSON export with none in it)")
        keys = set()
    elif (value := _json_value(head, path)) is not None:
        raise NotAnExport(
            path,
            f"is a JSON file that holds {value}, not orders (a JSON export is a list of "
            "orders, or an object that holds them)",
        )
    else:
        split = delimiter or sniff_delimiter(head)
        keys = {key.strip() for key in next(csv.reader(io.StringIO(head), delimiter=split), [])}
        kind = "csv"
    for layout in layouts.values():
        if layout.kind == kind and layout.detect and keys.issuperset(layout.detect):
            return layout
    names = ", ".join(sorted(layouts))
    what = "JSON" if kind == "json" else "CSV or text"
    raise NotAnExport(
        path,
        f"is not an export this tool recognises (a {what} file without the columns of one)",
        hint=f"Formats: {names}. Choose one with --format, or describe yours with --layout.",
    )
