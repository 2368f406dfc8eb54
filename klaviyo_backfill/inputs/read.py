"""Read exports as a stream of RawOrders: CSV (rows grouped into orders) and JSON.

Nothing here holds a whole file: CSV is read row by row, JSON one order object at a time
(`{"orders": [...]}`, a bare array, or JSON Lines), so memory does not grow with the file.
"""

from __future__ import annotations

import atexit
import codecs
import csv
import html
import io
import json
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from operator import itemgetter, methodcaller
from pathlib import Path
from typing import IO, Any, BinaryIO, Protocol, TextIO

from ..errors import InputError, LayoutError, NotAnExport
from ..model import RawOrder
from .hooks import HOOKS
from .layouts import Layout, Source

__all__ = [
    "SPREADSHEETS",
    "Input",
    "Skipped",
    "Start",
    "check_not_a_spreadsheet",
    "detect_layout",
    "expand_paths",
    "fits",
    "gather",
    "is_stream",
    "load_side_lines",
    "read_orders",
    "row_starts",
    "sniff_kind",
    "spool",
]

# A line, a CSV field or a JSON value longer than this is an error naming file and line, not
# a buffer that grows with the file (`/dev/zero` read as CSV). Shopify notes pass csv's 128 KB.
CAP = 64 << 20

SUFFIXES = (".csv", ".json", ".jsonl", ".ndjson", ".txt")
_CHUNK = 1 << 16


@dataclass(frozen=True, slots=True)
class Input:
    path: str
    layout: Layout
    encoding: str
    # line items kept in a separate file (--products), by order id
    side_lines: dict[str, list[Any]] | None = None
    name: str | None = None  # what the user gave, where `path` is its spooled copy (spool)

    @property
    def shown(self) -> str:
        """The input as the user named it: in messages, the failures file, fingerprints."""
        return self.name or self.path


def is_stream(path: str) -> bool:
    """'-' (standard input) or a FIFO: data that can be read once only."""
    if path == "-":
        return True
    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except OSError:
        return False


def spool(path: str) -> str:
    """A stream ('-' or a FIFO) read once, as it comes, into a private temporary file (0600
    in a 0700 folder, removed at exit), which is then read like any export: detected,
    fingerprinted, read, and for --resume checked against the stream given then. A stream
    whose first 64 MB hold no line break is refused as it comes (`cat /dev/zero |`)."""
    folder = tempfile.mkdtemp(prefix="klaviyo-backfill-")
    atexit.register(shutil.rmtree, folder, True)
    copy = os.path.join(folder, "stdin" if path == "-" else os.path.basename(path) or "stream")
    try:
        source = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
    except OSError as exc:
        raise InputError(path, f"cannot open: {exc.strerror}") from None
    unbroken = 0  # bytes since the last line break
    try:
        with open(os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
            while chunk := source.read(1 << 20):
                out.write(chunk)
                end = chunk.rfind(b"\n")
                unbroken = unbroken + len(chunk) if end < 0 else len(chunk) - end - 1
                if unbroken > CAP:
                    raise InputError(path, f"has a line longer than {CAP >> 20} MB: not an export?")
    finally:
        if source is not sys.stdin.buffer:
            source.close()
    return copy


def load_side_lines(path: str, encoding: str) -> dict[str, list[Any]]:
    """Line items from their own JSON file, grouped by their "order_id" (held in memory)."""
    grouped: dict[str, list[Any]] = {}
    for line, item in iter_json(path, encoding):
        if isinstance(item, Broken):
            raise InputError(path, item.message, line)
        if not isinstance(item, dict) or item.get("order_id") is None:
            raise InputError(path, "holds a line item without an order_id", line)
        grouped.setdefault(str(item["order_id"]), []).append(item)
    return grouped


# spreadsheets, by their suffix: never an export as they are, but one "Save as CSV" away
SPREADSHEETS = {
    ".xlsx": "an Excel workbook", ".xlsm": "an Excel workbook", ".xls": "an Excel workbook",
    ".numbers": "a Numbers spreadsheet", ".ods": "an OpenDocument spreadsheet",
}  # fmt: skip
_SAVE_AS_CSV = (
    "Save it as CSV: in Excel, File > Save As > CSV UTF-8; in Numbers, File > Export To > CSV; "
    "in LibreOffice, File > Save As > Text CSV."
)


@dataclass(frozen=True, slots=True)
class Skipped:
    """A file or folder a folder given held besides its exports, and why it was not read."""

    path: str
    why: str


def expand_paths(paths: list[str]) -> list[str]:
    """Files as given; a folder becomes its export files, sorted by name."""
    return [path for path, _ in gather(paths)[0]]


def gather(paths: list[str]) -> tuple[list[tuple[str, bool]], list[Skipped]]:
    """(file, named) for each file to read: as given (named), or a folder's files with an
    export's suffix, sorted by name; and what else the folders hold (hidden files aside)."""
    files: list[tuple[str, bool]] = []
    skipped: list[Skipped] = []
    for name in paths:
        path = Path(name)
        if not path.is_dir():
            files.append((name, True))
            continue
        for entry in sorted(path.iterdir()):
            suffix = entry.suffix.lower()
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                skipped.append(
                    Skipped(str(entry), "a folder: not read (only the files of a folder given are)")
                )
            elif suffix in SPREADSHEETS:
                skipped.append(
                    Skipped(str(entry), f"{SPREADSHEETS[suffix]}: save it as CSV to send it")
                )
            elif suffix not in SUFFIXES:
                skipped.append(Skipped(str(entry), f"not an export ({suffix or 'no suffix'})"))
            elif entry.is_file():
                files.append((str(entry), False))
    return files, skipped


def check_not_a_spreadsheet(path: str) -> None:
    """A workbook, whatever its name says (a zip or an OLE file), or a spreadsheet's suffix:
    NotAnExport, telling how to save it as CSV."""
    suffix = Path(path).suffix.lower()
    try:
        with open(path, "rb") as fh:
            magic = fh.read(8)
    except OSError:
        return  # said by the reader, with its own message
    if magic.startswith(b"PK\x03\x04") or magic.startswith(b"\xd0\xcf\x11\xe0"):
        kind = SPREADSHEETS.get(suffix, "an Excel workbook")
    elif suffix in SPREADSHEETS:
        kind = SPREADSHEETS[suffix]
    else:
        return
    raise NotAnExport(path, f"is {kind}, not a CSV or JSON export", hint=_SAVE_AS_CSV)


def open_text(path: str, encoding: str) -> TextIO:
    try:
        return open(path, encoding=encoding, newline="")
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except IsADirectoryError:
        raise InputError(path, "is a folder with no export files in it") from None
    except OSError as exc:
        raise InputError(path, f"cannot open: {exc.strerror}") from None
    except LookupError:
        raise InputError(path, f"unknown encoding {encoding!r}") from None


def _decode_error(path: str, exc: UnicodeError, encoding: str, line: int | None) -> InputError:
    if not isinstance(exc, UnicodeDecodeError):  # e.g. utf-16 asked of a file without its BOM
        return InputError(path, f"cannot be decoded as {encoding} ({exc})", line,
                          hint="Name the file's own encoding with --encoding, or leave it out for UTF-8.")  # fmt: skip
    data = bytes(exc.object)
    if (
        data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
        or data.count(0) > len(data) // 4
    ):
        hint = "The file looks like UTF-16: try --encoding utf-16."
    else:
        hint = "Try --encoding latin-1 (or cp1252) if the file was saved by Excel."
    return InputError(
        path, f"cannot be decoded as {encoding} (byte 0x{data[exc.start]:02x})", line, hint=hint
    )


# ---------------------------------------------------------------- detection


def _peek(path: str, encoding: str) -> str:
    with open_text(path, encoding) as fh:
        try:
            return fh.read(_CHUNK)
        except UnicodeError as exc:
            raise _decode_error(path, exc, encoding, None) from None


def sniff_kind(path: str, encoding: str | None) -> str:
    """'json' when the file starts like JSON, else 'csv'."""
    check_not_a_spreadsheet(path)
    head = _peek(path, encoding or "utf-8-sig").lstrip()
    if not head:
        raise NotAnExport(path, "is empty")
    return "json" if head[0] in "[{" else "csv"


def fits(path: str, layout: Layout, encoding: str) -> str | None:
    """Why a file of a folder is no export of the layout the run was told to use (its kind,
    or the columns it needs), or None when it may be one."""
    kind = sniff_kind(path, encoding)
    if layout.kind and layout.kind != kind:
        return f"not a {layout.name} export (a {kind} file)"
    if kind == "csv":
        reader = csv.reader(io.StringIO(_peek(path, encoding)), delimiter=layout.options.delimiter)
        missing = _missing_column(layout, [h.strip() for h in next(reader, [])])
        if missing is not None:
            return f"not a {layout.name} export (no column {missing[0]})"
    return None


def detect_layout(path: str, layouts: dict[str, Layout], encoding: str) -> Layout:
    """The layout whose signature columns (CSV) or keys (JSON) the file has."""
    check_not_a_spreadsheet(path)
    head = _peek(path, encoding)
    if not head.strip():
        raise NotAnExport(path, "is empty")
    if head.lstrip()[0] in "[{":
        first = next(iter_json_records(path, encoding), None)
        keys = set(first) if isinstance(first, dict) else set()
        kind = "json"
    else:
        keys = set(next(csv.reader(io.StringIO(head)), []))
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


# ---------------------------------------------------------------- CSV


def _check_columns(path: str, layout: Layout, header: list[str]) -> None:
    """Every column the layout names must exist (built-in layouts: the ones they require)."""
    missing = _missing_column(layout, header)
    if missing is not None:
        names, section, key = missing
        raise LayoutError(
            path, f"has no column {names} (needed for [{section}] {key} by {layout.name})", line=1
        )


def _missing_column(layout: Layout, header: list[str]) -> tuple[str, str, str] | None:
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

    def rows(self, orders: list[tuple[str | None, list[list[str]]]]) -> list[tuple[bytes, Any]]:
        """Each order's digest, and what the account holds of it (account_ledger.HeldOrder)
        where it holds the order exactly so (None: it must be extracted and mapped)."""
        ...


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
    ) -> None:
        self.path = path
        self.skip = skip
        self.width = len(header)
        self.id_plan = _Plan(header, {"id": layout.order["id"]})
        self.order = _Plan(header, layout.order)
        self.line = _Plan(header, layout.line)
        key_column = layout.group_by or layout.order["id"][0].path
        self.key = header.index(key_column) if key_column in header else None
        self.unescape = layout.options.unescape_html

    def built(self, groups: Iterator[Group], held: HeldRows | None) -> Iterator[RawOrder]:
        """The orders of these row groups. Given `held` (a send to an account that holds
        orders already), it is asked about each batch of orders at once: one it holds
        unchanged comes back unextracted, with the events it holds (`RawOrder.held`)."""
        if held is None:
            for group in groups:
                yield self.build(*group)
            return
        while batch := list(islice(groups, held.BATCH)):
            ids = [self.id_plan.cells(rows[0]).get("id") for rows, *_ in batch]
            verdicts = held.rows([(oid, rows) for oid, (rows, *_) in zip(ids, batch, strict=True)])
            for (rows, line, offset, end), oid, (digest, known) in zip(
                batch, ids, verdicts, strict=True
            ):
                if known is not None and oid is not None:
                    yield RawOrder(self.path, line, {"id": oid}, [], offset=offset, end=end,
                                   held=known)  # fmt: skip
                    continue
                raw = self.build(rows, line, offset, end)
                raw.digest = digest
                yield raw

    def build(self, rows: list[list[str]], line: int, offset: int, end: int) -> RawOrder:
        """Order fields come from the order's first row (Shopify fills them only there)."""
        if self.skip is not None:
            order_id = self.id_plan.cells(rows[0]).get("id")
            if order_id is not None and self.skip(order_id):
                return RawOrder(
                    self.path, line, {"id": order_id}, [], already_sent=True, offset=offset, end=end
                )
        zones: dict[str, str] = {}
        fields = self.order.cells(rows[0], zones)
        plan = self.line
        lines = [plan.cells(row) for row in rows] if plan else []
        if self.unescape:
            for table in (fields, *lines):
                for key, value in table.items():
                    if "&" in value:
                        table[key] = html.unescape(value)
        return RawOrder(self.path, line, fields, lines, zones=zones, offset=offset, end=end)


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
) -> Iterator[RawOrder]:
    fh, lines = _open_lines(path, encoding)
    csv.field_size_limit(CAP)
    delimiter = layout.options.delimiter
    reader = csv.reader(lines, delimiter=delimiter)
    base = 0  # physical lines before the ones this reader counts
    try:
        with fh:
            header = next(reader, None)
            if not header:
                raise InputError(path, "is empty")
            header = [h.strip() for h in header]
            _check_columns(path, layout, header)
            orders = _CsvOrders(path, layout, header, skip)
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
        raise _decode_error(path, exc, encoding, base + reader.line_num + 1) from None
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
        reader = csv.reader(lines, delimiter=source.layout.options.delimiter)
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
    for row in reader:
        row_line, row_offset = base + end_line + 1, end_offset
        end_line, end_offset = reader.line_num, lines.offset
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank line
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
        yield rows, start_line, start_offset, lines.offset


# ---------------------------------------------------------------- JSON


@dataclass(frozen=True, slots=True)
class Nested:
    """In place of a JSON value nested too deep to decode: how deep it went."""

    depth: int


class _JsonStream:
    """Top-level JSON values one at a time, through a sliding buffer (C decoder)."""

    def __init__(self, fh: TextIO, path: str) -> None:
        self.fh, self.path = fh, path
        self.buf, self.pos = "", 0
        self.line, self.line_pos = 1, 0  # line number at buf[line_pos]
        self.decoder = json.JSONDecoder()
        self.eof = False

    def _fill(self) -> bool:
        if self.eof:
            return False
        held = len(self.buf) - self.pos  # of the value being read
        if held > CAP:
            raise InputError(self.path, f"holds a JSON value longer than {CAP >> 20} MB: "
                             "not an export?", self.line_here())  # fmt: skip
        # a value longer than a chunk is read in chunks as long as it is so far, so that the
        # decoder, which starts over at each, scans it a few times, not once per 64 KB
        data = self.fh.read(min(max(_CHUNK, held), CAP + 1 - held))
        if not data:
            self.eof = True
            return False
        self.line += self.buf.count("\n", self.line_pos, self.pos)
        self.buf, self.pos, self.line_pos = self.buf[self.pos :] + data, 0, 0
        return True

    def peek(self) -> str | None:
        """The next non-blank character, without consuming it."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in " \t\r\n\ufeff":
                self.pos += 1
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._fill():
                return None

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise self.error(f"expected {char!r}")
        self.pos += 1

    def line_here(self) -> int:
        """The line of the next non-blank character."""
        self.peek()
        self.line += self.buf.count("\n", self.line_pos, self.pos)
        self.line_pos = self.pos
        return self.line

    def value(self) -> Any:
        self.peek()
        while True:
            try:
                obj, end = self.decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                if self._fill():
                    continue
                raise self._invalid(exc) from None
            except RecursionError:
                return self._skip_nested()
            if end == len(self.buf) and not isinstance(obj, dict | list) and self._fill():
                continue  # a number may go on in the next chunk
            self.pos = end
            return obj

    def _skip_nested(self) -> Nested:
        """Pass over a value nested too deep for the decoder (it recurses), counting how deep."""
        depth = deepest = 0
        i, in_string = self.pos, False
        while True:
            if i >= len(self.buf):
                start = self.pos
                if not self._fill():
                    raise self.error("ends before the JSON document does (cut short?)")
                i -= start - self.pos  # _fill dropped what was before self.pos
                continue
            char = self.buf[i]
            if in_string:
                if char == "\\":
                    i += 1
                elif char == '"':
                    in_string = False
            elif char == '"':
                in_string = True
            elif char in "[{":
                depth += 1
                deepest = max(deepest, depth)
            elif char in "]}":
                depth -= 1
                if depth == 0:
                    self.pos = i + 1
                    return Nested(deepest)
            i += 1

    def _invalid(self, exc: json.JSONDecodeError) -> InputError:
        line = self.line_here() + self.buf.count("\n", self.pos, exc.pos)
        if exc.pos >= len(self.buf.rstrip()) - 1 or exc.msg.startswith("Unterminated"):
            return InputError(self.path, "ends before the JSON document does (cut short?)", line)
        return InputError(self.path, f"is not valid JSON: {exc.msg}", line)

    def error(self, message: str) -> InputError:
        line = self.line_here()
        if self.peek() is None:
            return InputError(self.path, "ends before the JSON document does (cut short?)", line)
        return InputError(self.path, message, line)


def _records(stream: _JsonStream) -> Iterator[tuple[int, Any]]:
    first = stream.peek()
    if first is None:
        return
    if first == "[":
        yield from _array(stream)
        return
    if first != "{":
        raise stream.error("is not a JSON object, array or JSON Lines")
    # {"orders": [...]} is streamed key by key; anything else is JSON Lines of orders
    line = stream.line_here()
    stream.pos += 1
    if stream.peek() == '"':
        key = stream.value()
        stream.expect(":")
        if key == "orders" and stream.peek() == "[":
            yield from _array(stream)
            while stream.peek() == ",":
                stream.pos += 1
                stream.value()
                stream.expect(":")
                stream.value()
            stream.expect("}")
            return
        raise _Rewind(line)
    raise stream.error("expected an order object")


class _Rewind(Exception):
    def __init__(self, line: int) -> None:
        self.line = line


def _array(stream: _JsonStream) -> Iterator[tuple[int, Any]]:
    stream.expect("[")
    if stream.peek() == "]":
        stream.pos += 1
        return
    while True:
        line = stream.line_here()
        yield line, stream.value()
        nxt = stream.peek()
        if nxt == ",":
            stream.pos += 1
        elif nxt == "]":
            stream.pos += 1
            return
        else:
            raise stream.error("expected ',' or ']' between orders")


def _lines(stream: _JsonStream) -> Iterator[tuple[int, Any]]:
    while stream.peek() is not None:
        line = stream.line_here()
        obj = stream.value()
        if isinstance(obj, dict) and isinstance(obj.get("orders"), list):
            for item in obj["orders"]:
                yield line, item
        else:
            yield line, obj


class Broken:
    """A line of a JSON Lines file that is no JSON: one order the export cannot give."""

    def __init__(self, message: str) -> None:
        self.message = message


_JSON_LINES = (".jsonl", ".ndjson")


def _lines_whole(path: str, encoding: str) -> bool:
    """Whether the first non-blank line is a JSON value of its own: JSON Lines, not a
    pretty-printed document or sequence of objects (read as a stream)."""
    with open_text(path, encoding) as fh:
        for _, text in _bounded_lines(fh, path):
            if text.strip():
                try:
                    json.loads(text)
                except json.JSONDecodeError:
                    return False
                except RecursionError:
                    return True
                return True
    return False


def _bounded_lines(fh: TextIO, path: str) -> Iterator[tuple[int, str]]:
    """(number, text) of each line, none longer than CAP (InputError)."""
    number = 0
    while text := fh.readline(CAP + 1):
        number += 1
        if len(text) > CAP:
            raise InputError(path, f"has a line longer than {CAP >> 20} MB: not an export?", number)
        yield number, text


def _depth(text: str) -> int:
    """How deep a JSON text nests (outside its strings)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            escaped, in_string = (False, True) if escaped else (char == "\\", char != '"')
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _json_lines(fh: TextIO, path: str) -> Iterator[tuple[int, Any]]:
    """JSON Lines, line by line: a line that is no JSON is one `Broken` order, named by its
    own line, and the rest goes on (one nested too deep to decode, `Nested`)."""
    for number, text in _bounded_lines(fh, path):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            yield number, Broken(f"not valid JSON: {exc.msg} (column {exc.colno})")
            continue
        except RecursionError:
            yield number, Nested(_depth(text))
            continue
        if isinstance(obj, dict) and isinstance(obj.get("orders"), list):
            obj = obj["orders"]
        if isinstance(obj, list):  # a page of orders on one line
            for item in obj:
                yield number, item
        else:
            yield number, obj


def iter_json_records(path: str, encoding: str) -> Iterator[Any]:
    for _line, record in iter_json(path, encoding):
        if not isinstance(record, Broken | Nested):
            yield record


def iter_json(
    path: str, encoding: str, position: list[Callable[[], int]] | None = None
) -> Iterator[tuple[int, Any]]:
    """(line, order object) pairs from any of the three JSON shapes. JSON Lines (a .jsonl or
    .ndjson file, or one whose first line is a whole object) are read line by line, a line
    that is no JSON yielded as `Broken`."""
    try:
        if path.lower().endswith(_JSON_LINES) and _lines_whole(path, encoding):
            with open_text(path, encoding) as fh:
                if position is not None:
                    position[:] = [fh.buffer.tell]
                yield from _json_lines(fh, path)
            return
        with open_text(path, encoding) as fh:
            stream = _JsonStream(fh, path)
            if position is not None:
                position[:] = [fh.buffer.tell]
            try:
                yield from _records(stream)
                if stream.peek() is not None:
                    raise stream.error("has more after the end of the JSON document")
                return
            except _Rewind:
                pass
        whole = _lines_whole(path, encoding)
        with open_text(path, encoding) as fh:
            if position is not None:
                position[:] = [fh.buffer.tell]
            yield from _json_lines(fh, path) if whole else _lines(_JsonStream(fh, path))
    except UnicodeError as exc:
        raise _decode_error(path, exc, encoding, None) from None


_PATHS: dict[str, tuple[str | int, ...]] = {}


def _split(path: str) -> tuple[str | int, ...]:
    parts = _PATHS.get(path)
    if parts is None:
        parts = tuple(int(p) if p.isdigit() else p for p in path.split("."))
        _PATHS[path] = parts
    return parts


def dig(record: Any, path: str) -> Any:
    """The value at a dotted path ('billing.email', 'line_items.0.sku'), or None."""
    value = record
    for part in _split(path):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and isinstance(part, int) and part < len(value):
            value = value[part]
        else:
            return None
        if value is None:
            return None
    return value


def _scalar(value: Any, unescape: bool) -> Any:
    """Text stripped (and unescaped), numbers as their text, blanks as None."""
    if isinstance(value, str):
        value = value.strip()
        if unescape and "&" in value:
            value = html.unescape(value)
        return value or None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return str(value)
    return value if value != [] else None


def _json_fields(
    record: Any,
    table: dict[str, tuple[Source, ...]],
    zones: dict[str, str] | None,
    unescape: bool,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, sources in table.items():
        for source in sources:
            value = _scalar(dig(record, source.path), unescape)
            if value is not None:
                out[name] = value
                if zones is not None and source.timezone:
                    zones[name] = source.timezone
                break
    return out


def iter_json_orders(
    path: str, layout: Layout, encoding: str, side_lines: dict[str, list[Any]] | None = None
) -> Iterator[RawOrder]:
    hook: Callable[[Any, RawOrder], None] | None = HOOKS[layout.hook] if layout.hook else None
    lines_path = layout.options.lines
    unescape = layout.options.unescape_html
    position: list[Callable[[], int]] = [lambda: 0]
    line = 0
    for line, record in iter_json(path, encoding, position):
        if isinstance(record, Broken):  # rejected by the mapper; the rest goes on
            yield RawOrder(path, line, {}, [], problem=record.message)
            continue
        if isinstance(record, Nested):
            problem = f"nested {record.depth:,} levels deep (Klaviyo takes 10)"
            yield RawOrder(path, line, {}, [], problem=problem)
            continue
        if not isinstance(record, dict):
            kind = type(record).__name__
            yield RawOrder(path, line, {}, [], problem=f"a JSON {kind} where an order should be")
            continue
        zones: dict[str, str] = {}
        fields = _json_fields(record, layout.order, zones, unescape)
        items = dig(record, lines_path) if lines_path else None
        if not isinstance(items, list):
            if items is not None and side_lines is None:  # a link to them (BigCommerce V2)
                raise InputError(
                    path,
                    f"order {fields.get('id')} has no line items in the export, only a link "
                    f"to them ({lines_path!r})",
                    line,
                    hint="Export the line items too and pass them with --products FILE.",
                )
            items = side_lines.get(str(fields.get("id")), []) if side_lines else []
        lines = [_json_fields(item, layout.line, None, unescape) for item in items or ()]
        raw = RawOrder(path, line, fields, lines, zones=zones, offset=position[0]())
        if side_lines is not None and not lines:
            raw.notes = ("no line items for the order in --products",)
        if hook is not None:
            hook(record, raw)
        yield raw
    if line == 0:  # as a CSV file with a header and no rows
        raise InputError(path, "holds no orders")


def read_orders(
    source: Input,
    skip: Callable[[str], bool] | None = None,
    start: Start | None = None,
    held: HeldRows | None = None,
) -> Iterator[RawOrder]:
    """RawOrders of one input; a CSV order whose id `skip` accepts, or whose rows `held`
    knows, is not even extracted, and a CSV file can be picked up at an order's `start` (a
    resumed run)."""
    if source.layout.kind == "json":
        orders = iter_json_orders(source.path, source.layout, source.encoding, source.side_lines)
    else:
        orders = iter_csv(source.path, source.layout, source.encoding, skip, start, held)
    return orders if source.name is None else _named(orders, source.name)


def _named(orders: Iterator[RawOrder], name: str) -> Iterator[RawOrder]:
    """A spooled stream's orders and errors, named as the user named the stream."""
    try:
        for raw in orders:
            raw.source = name
            yield raw
    except InputError as exc:
        raise exc.at(name) from None
