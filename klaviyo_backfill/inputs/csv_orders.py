"""CSV exports as a stream of RawOrders: read row by row, rows grouped into orders by the
layout's order column; a resume point (`Start`) seeks to a row start."""

from __future__ import annotations

import codecs
import csv
import html
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from operator import itemgetter, methodcaller
from typing import IO, Any, BinaryIO, Protocol, TextIO

from ..errors import InputError, LayoutError
from ..model import RawOrder, order_key
from .layouts import Layout, Source
from .sources import CAP, Input, decode_error, open_text


def _check_columns(path: str, layout: Layout, header: list[str]) -> None:
    """Every column the layout names must exist (built-in layouts: the ones they require)."""
    missing = missing_column(layout, header)
    if missing is not None:
        names, section, key = missing
        raise LayoutError(
            path, f"has no column {names} (needed for [{section}] {key} by {layout.name})", line=1
        )


def missing_column(layout: Layout, header: list[str]) -> tuple[str, str, str] | None:
    """The first column the layout needs that the header lacks: (its names, section, key)."""
    present = set(header)
    for section, table in (("order", layout.order), ("line", layout.line)):
        for key, sources in table.items():
            if layout.required is not None and f"{section}.{key}" not in layout.required:
                continue
            if not any(s.path in present for s in sources):
                return " or ".join(repr(s.path) for s in sources), section, key
    return None


class HeldRows(Protocol):
    """What an account holds already (delta.py), asked about CSV orders as their rows."""

    BATCH: int
    extract: bool  # an order it holds unchanged is extracted all the same (its months counted)

    def rows(self, orders: list[tuple[str | None, list[list[str]]]]) -> list[tuple[bytes, Any]]:
        """Each order's digest, and what the account holds of it (account_ledger.HeldOrder)
        where it holds the order exactly so (None: it must be extracted and mapped)."""
        ...


def _key(ident: dict[str, Any]) -> str | None:
    """What the checkpoint and the account's ledger know an order by (model.order_key)."""
    order_id = ident.get("id")
    return None if order_id is None else order_key(ident.get("store"), order_id)


class _CsvOrders:
    """Groups adjacent rows that share the order's key column into RawOrders.

    Values are stripped here, and blank ones left out, so later layers see text or nothing.
    """

    def __init__(
        self,
        path: str,
        layout: Layout,
        header: list[str],
        skip: Callable[[str], bool] | None = None,
        store: str | None = None,
    ) -> None:
        self.path = path
        self.skip = skip
        self.store = store  # `--store`: the store of an order whose row names none
        self.width = len(header)
        self.header = header
        self.delimiter = layout.options.delimiter or ","
        named: dict[str, tuple[Source, ...]] = {
            k: layout.order[k] for k in ("id", "store") if k in layout.order
        }
        self.id_plan = _Plan(header, named)
        self.order = _Plan(header, layout.order)
        self.line = _Plan(header, layout.line)
        key_column = layout.group_by or layout.order["id"][0].path
        self.key = header.index(key_column) if key_column in header else None
        self.unescape = layout.options.unescape_html
        self.wide: str | None = None  # the warning of rows wider than the header, once found

    def built(self, groups: Iterator[Group], held: HeldRows | None) -> Iterator[RawOrder]:
        """The orders of these row groups. Given `held` (a send to an account that holds
        orders already), it is asked about each batch of orders at once: one it holds
        unchanged comes back unextracted (unless `held.extract`), with the events it holds
        (`RawOrder.held`)."""
        if held is None:
            for group in groups:
                yield self.build(*group)
            return
        while batch := list(islice(groups, held.BATCH)):
            idents = [self.ident(rows[0]) for rows, *_ in batch]
            keys = [_key(ident) for ident in idents]
            verdicts = held.rows([(key, rows) for key, (rows, *_) in zip(keys, batch, strict=True)])
            for (rows, line, offset, end), ident, key, (digest, known) in zip(
                batch, idents, keys, verdicts, strict=True
            ):
                if known is not None and key is not None and not held.extract:
                    yield RawOrder(self.path, line, ident, [], offset=offset, end=end,
                                   held=known)  # fmt: skip
                    continue
                raw = self.build(rows, line, offset, end)
                raw.digest, raw.held = digest, known
                yield raw

    def ident(self, row: list[str]) -> dict[str, Any]:
        """The order's id, and its store (its row's, else `--store`'s) where one is named."""
        cells = self.id_plan.cells(row)
        if self.store and "store" not in cells:
            cells["store"] = self.store
        return cells

    def build(self, rows: list[list[str]], line: int, offset: int, end: int) -> RawOrder:
        """Order fields come from the order's first row (Shopify fills them only there)."""
        if self.skip is not None:
            ident = self.ident(rows[0])
            key = _key(ident)
            if key is not None and self.skip(key):
                return RawOrder(
                    self.path, line, ident, [], already_sent=True, offset=offset, end=end
                )
        zones: dict[str, str] = {}
        fields = self.order.cells(rows[0], zones)
        if self.store and "store" not in fields:
            fields["store"] = self.store
        plan = self.line
        lines = [plan.cells(row) for row in rows] if plan else []
        if self.unescape:
            for table in (fields, *lines):
                for key, value in table.items():
                    if "&" in value:
                        table[key] = html.unescape(value)
        notes = self.wider(rows)
        return RawOrder(self.path, line, fields, lines, zones=zones, offset=offset, end=end,
                        notes=notes)  # fmt: skip

    def wider(self, rows: list[list[str]]) -> tuple[str, ...]:
        """The warning of an order with a row that has values past the header's last column
        (they are not read): one text for the file, so the summary says it once, with the
        orders it counts and the first one's line."""
        width = self.width
        for row in rows:
            if len(row) > width and any(cell.strip() for cell in row[width:]):
                self.wide = self.wide or (
                    f"rows of {os.path.basename(self.path)} with values past its header's "
                    f"{width} columns: those values are not read (a delimiter too many, or a "
                    "column without a name?)"
                )
                return (self.wide,)
        return ()


class _Plan:
    """Which cells of a row make which fields, for one header.

    A field with one column and no zone of its own is read by one `itemgetter` over the row
    (the common case, done in C); fields with fallback columns or a zone go through a loop.
    """

    def __init__(self, header: list[str], table: dict[str, tuple[Source, ...]]) -> None:
        index = {name: i for i, name in enumerate(header)}
        names: list[str] = []
        columns: list[int] = []
        self.fallbacks: list[tuple[str, tuple[tuple[int, str | None], ...]]] = []
        for name, sources in table.items():
            found = tuple((index[s.path], s.timezone) for s in sources if s.path in index)
            if len(found) == 1 and found[0][1] is None:
                names.append(name)
                columns.append(found[0][0])
            elif found:
                self.fallbacks.append((name, found))
        self.names = tuple(names)
        self.width = max(columns, default=-1) + 1
        self.take = itemgetter(*columns) if len(columns) > 1 else None
        self.columns = tuple(columns)

    def __bool__(self) -> bool:
        return bool(self.names or self.fallbacks)

    def cells(self, row: list[str], zones: dict[str, str] | None = None) -> dict[str, Any]:
        """Stripped, non-blank values by field name."""
        if self.take is not None and len(row) >= self.width:
            # (name, stripped value) pairs, the blank ones filtered out: all in C
            out = dict(filter(_VALUE, zip(self.names, map(str.strip, self.take(row)), strict=True)))
        else:  # one column, or a short row
            width = len(row)
            out = {
                name: text
                for name, i in zip(self.names, self.columns, strict=True)
                if i < width and (text := row[i].strip())
            }
        for name, sources in self.fallbacks:
            for i, tz in sources:
                if i < len(row) and (value := row[i].strip()):
                    out[name] = value
                    if tz and zones is not None:
                        zones[name] = tz
                    break
        return out


_VALUE = itemgetter(1)


@dataclass(frozen=True, slots=True)
class Start:
    """Where a resumed run picks a CSV file up: an order's first row."""

    offset: int  # in bytes
    line: int


# Encodings in which b"\n" always ends a character, and no state runs from one line to the
# next: a line of bytes decodes on its own (and a file can be cut at any row start).
BYTE_EXACT = {"utf-8", "utf-8-sig", "ascii", "iso8859-1", "iso8859-15"} | {
    f"cp{n}" for n in range(1250, 1259)
}


class _Lines:
    """A file's lines as text, counting the bytes read, so an order's offset is exact."""

    def __init__(self, raw: BinaryIO, encoding: str) -> None:
        self.raw = raw
        self.offset = 0
        self._decoder(encoding)

    def _decoder(self, encoding: str) -> None:
        self.decode: Callable[[bytes], str]
        name = codecs.lookup(encoding).name
        if name not in BYTE_EXACT:
            self.decode = codecs.getincrementaldecoder(encoding)().decode
        elif name == "utf-8-sig" and self.offset > 0:  # a byte order mark only opens a file
            self.decode = _decoding("utf-8")
        else:
            self.decode = _decoding(name)

    def seek(self, offset: int, encoding: str) -> None:
        self.raw.seek(offset)
        self.offset = offset
        self._decoder(encoding)

    def ends_a_line(self) -> bool:
        """Whether the file's last byte ends a line (read once, at the end)."""
        self.raw.seek(-1, os.SEEK_END)
        return self.raw.read(1) in (b"\n", b"\r")

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line = self.raw.readline(CAP + 1)
        if not line:
            raise StopIteration
        if len(line) > CAP:
            raise _TooLong
        text = self.decode(line)
        if self.decode is _SIG:  # a byte order mark only opens a file
            self.decode = _decoding("utf-8")
        self.offset += len(line)
        return text.replace("\x00", "") if "\x00" in text else text  # csv refuses NUL


def _decoding(name: str) -> Callable[[bytes], str]:
    """Decode one line on its own, in C (the incremental decoders are Python code)."""
    return _SIG if name == "utf-8-sig" else methodcaller("decode", name)


_SIG = methodcaller("decode", "utf-8-sig")


class _TooLong(Exception):
    """A line longer than CAP."""


class _TextLines:
    """UTF-16/32 cannot be split at b"\n": read as text, with no offsets (no resume point)."""

    offset = 0

    def __init__(self, fh: TextIO) -> None:
        self.fh = fh

    def __iter__(self) -> _TextLines:
        return self

    def __next__(self) -> str:
        line = self.fh.readline(CAP + 1)
        if not line:
            raise StopIteration
        if len(line) > CAP:
            raise _TooLong
        return line

    def ends_a_line(self) -> bool:
        return True  # not checked in UTF-16/32


def _open_lines(path: str, encoding: str) -> tuple[IO[Any], _Lines | _TextLines]:
    if codecs.lookup(encoding).name.startswith(("utf-16", "utf-32")):
        fh = open_text(path, encoding)
        return fh, _TextLines(fh)
    open_text(path, encoding).close()  # the same checks and messages as text files get
    raw = open(path, "rb")  # noqa: SIM115
    return raw, _Lines(raw, encoding)


def iter_csv(
    path: str,
    layout: Layout,
    encoding: str,
    skip: Callable[[str], bool] | None = None,
    start: Start | None = None,
    held: HeldRows | None = None,
    store: str | None = None,
) -> Iterator[RawOrder]:
    fh, lines = _open_lines(path, encoding)
    csv.field_size_limit(CAP)
    delimiter = layout.options.delimiter or ","
    reader = csv.reader(lines, delimiter=delimiter)
    base = 0  # physical lines before the ones this reader counts
    try:
        with fh:
            header = next(reader, None)
            if not header:
                raise InputError(path, "is empty")
            header = [h.strip() for h in header]
            _check_columns(path, layout, header)
            orders = _CsvOrders(path, layout, header, skip, store)
            resumed = (
                start is not None and isinstance(lines, _Lines) and start.offset > lines.offset
            )
            if resumed and isinstance(lines, _Lines) and start is not None:
                lines.seek(start.offset, encoding)
                reader = csv.reader(lines, delimiter=delimiter)
                base = start.line - 1
            empty = True
            for raw in orders.built(_group_rows(reader, orders, lines, base), held):
                empty = False
                yield raw
            if empty and not resumed:
                raise InputError(path, "has a header but no orders", 2)
    except UnicodeError as exc:
        raise decode_error(path, exc, encoding, base + reader.line_num + 1) from None
    except _TooLong:
        raise InputError(path, f"has a line longer than {CAP >> 20} MB: not a CSV export?",
                         base + reader.line_num + 1) from None  # fmt: skip
    except csv.Error as exc:
        if "field limit" in str(exc):
            raise InputError(path, f"has a field longer than {CAP >> 20} MB (an unclosed quote?)",
                             base + reader.line_num) from None  # fmt: skip
        raise InputError(path, f"is not readable CSV: {exc}", base + reader.line_num) from None


def row_starts(source: Input, start: Start, upto: int) -> set[int]:
    """Offsets where CSV records begin, read in order from a known record start up to `upto`."""
    fh, lines = _open_lines(source.path, source.encoding)
    found: set[int] = set()
    with fh:
        if not isinstance(lines, _Lines):
            return found
        lines.seek(start.offset, source.encoding)
        reader = csv.reader(lines, delimiter=source.layout.options.delimiter or ",")
        while lines.offset <= upto:
            found.add(lines.offset)
            if next(reader, None) is None:
                break
    return found


Group = tuple[list[list[str]], int, int, int]  # an order's rows, first line, offset, end


def _group_rows(
    reader: Any, orders: _CsvOrders, lines: _Lines | _TextLines, base: int
) -> Iterator[Group]:
    """Adjacent rows with the same key, with the first line and byte span of each order."""
    rows: list[list[str]] = []
    current: str | None = None
    start_line = start_offset = 0
    end_line, end_offset = reader.line_num, lines.offset  # where the previous row ended
    key = orders.key
    folded: tuple[int, int] | None = None  # (line, fields) of a row far short of the header
    for row in reader:
        if folded is not None:  # not the file's last row, so not one cut short: folded
            raise _folded(orders, *folded)
        row_line, row_offset = base + end_line + 1, end_offset
        end_line, end_offset = reader.line_num, lines.offset
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank line
        if len(row) < orders.width // 2:
            folded = row_line, len(row)
        elif len(row) != orders.width and "\n" in "".join(row):
            _no_stray_quote(orders, row, row_line)
        value = row[key].strip() if key is not None and key < len(row) else ""
        if rows and (key is None or value != current):
            yield rows, start_line, start_offset, row_offset
            rows = []
        if not rows:
            current, start_line, start_offset = value, row_line, row_offset
        rows.append(row)
    if rows:
        if len(rows[-1]) < orders.width and not lines.ends_a_line():
            raise InputError(
                orders.path,
                f"ends inside a row: its last row has {len(rows[-1])} of {orders.width} columns"
                " and no line break (cut short?)",
                base + end_line,
                hint="If the file is complete, end its last line with a line break.",
            )
        if folded is not None:
            raise _folded(orders, *folded)
        yield rows, start_line, start_offset, lines.offset


def _no_stray_quote(orders: _CsvOrders, row: list[str], line: int) -> None:
    """A row of another length than the header whose field holds a line break followed by a
    row (its delimiters, with the fields that follow this one, are about a whole row's): a
    stray '"' opened that field, and the rows after it were read into it until the next
    quote; read on, their orders would be lost without a word."""
    whole = orders.width - 1  # a row's delimiters
    for i, field in enumerate(row):
        parts = [part.count(orders.delimiter) for part in field.split("\n")[1:]]
        if parts:  # a row swallowed whole, or the start of one whose end follows this field
            parts[-1] += len(row) - 1 - i
        if any(abs(count - whole) <= 3 for count in parts):
            name = orders.header[i] if i < len(orders.header) else f"column {i + 1}"
            raise InputError(
                orders.path,
                f"a quote opens the field {name!r} (column {i + 1}) and runs into the rows "
                "after it: a stray '\"' joined them into this one, and their orders would be "
                "lost",
                line,
                hint='Remove that quote (or double it: "") in the file, or export the orders '
                "again.",
            )


def _folded(orders: _CsvOrders, line: int, fields: int) -> InputError:
    """A row with far fewer fields than the header: a spreadsheet's re-save that folded each
    line into one field, or the wrong delimiter; read, it would be thousands of rejections."""
    return InputError(
        orders.path,
        f"has {fields} field{'s' if fields != 1 else ''} on this line where the header has "
        f"{orders.width} columns: the rows look folded into one field (a spreadsheet re-save?)",
        line,
        hint="Export the orders again, or open the file and save it as CSV with its columns "
        "kept; --delimiter names the delimiter if the rows use another than the header.",
    )
