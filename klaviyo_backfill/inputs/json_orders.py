"""JSON exports as a stream of RawOrders, one order object at a time (`{"orders": [...]}`,
a bare array, or JSON Lines), so memory does not grow with the file."""

from __future__ import annotations

import html
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from ..errors import InputError
from ..model import RawOrder
from .graphql import bulk_records, line_items, orders_of
from .hooks import HOOKS
from .layouts import Layout, Options, Source
from .sources import CAP, CHUNK, decode_error, open_text


def _long_int(text: str) -> int | str:
    """A JSON integer as an int, or as its text when it has more digits than Python converts
    (4,300): a field that needs a number then rejects its order, with its file and line."""
    try:
        return int(text)
    except ValueError:
        return text


# Python's int() refuses over 4,300 digits, and json raises that ValueError for the whole
# document: the few values that hold such an integer are decoded again with this decoder
_LONG_INTS = json.JSONDecoder(parse_int=_long_int)


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except ValueError:  # an integer of over 4,300 digits
        return _LONG_INTS.decode(text)


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
        data = self.fh.read(min(max(CHUNK, held), CAP + 1 - held))
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
                try:
                    obj, end = self.decoder.raw_decode(self.buf, self.pos)
                except json.JSONDecodeError:
                    raise
                except ValueError:  # an integer of over 4,300 digits
                    obj, end = _LONG_INTS.raw_decode(self.buf, self.pos)
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
                    _loads(text)
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
            obj = _loads(text)
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


def _teller(fh: TextIO, path: str) -> Callable[[], int]:
    """Where reading `fh` has come to, in bytes; its size once it is read and closed (a bulk
    file's last order is settled after its reading ends)."""

    def tell() -> int:
        try:
            return fh.buffer.tell()
        except ValueError:
            return os.path.getsize(path)

    return tell


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
                    position[:] = [_teller(fh, path)]
                yield from _json_lines(fh, path)
            return
        with open_text(path, encoding) as fh:
            stream = _JsonStream(fh, path)
            if position is not None:
                position[:] = [_teller(fh, path)]
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
                position[:] = [_teller(fh, path)]
            yield from _json_lines(fh, path) if whole else _lines(_JsonStream(fh, path))
    except UnicodeError as exc:
        raise decode_error(path, exc, encoding, None) from None


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


def layout_records(
    path: str, encoding: str, options: Options, position: list[Callable[[], int]] | None = None
) -> Iterator[tuple[int, Any]]:
    """`iter_json`'s values as a layout sees them: a bulk operation's child lines grouped
    under their parents (`bulk`), and the orders of each document that holds them at
    `orders_path` (a paged GraphQL answer) in its place."""
    if options.bulk:
        records = bulk_records(lambda: iter_json(path, encoding, position), path)
    else:
        records = iter_json(path, encoding, position)
    for line, record in records:
        found = orders_of(record, options.orders_path) if options.orders_path else None
        if found is None:
            yield line, record
            continue
        errors = record.get("errors") if isinstance(record, dict) else None
        if errors and not record.get("data"):
            raise InputError(path, f"holds a GraphQL error, not orders: {_first_message(errors)}",
                             line)  # fmt: skip
        for order in found:
            yield line, order


def _first_message(errors: Any) -> str:
    first = errors[0] if isinstance(errors, list) and errors else errors
    message = first.get("message") if isinstance(first, dict) else first
    return str(message)[:200]


def iter_json_orders(
    path: str, layout: Layout, encoding: str, side_lines: dict[str, list[Any]] | None = None
) -> Iterator[RawOrder]:
    hook: Callable[[Any, RawOrder], None] | None = HOOKS[layout.hook] if layout.hook else None
    lines_path = layout.options.lines
    unescape = layout.options.unescape_html
    position: list[Callable[[], int]] = [lambda: 0]
    line = 0
    for line, record in layout_records(path, encoding, layout.options, position):
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
        if isinstance(lines_path, tuple) or (lines_path and "[]" in lines_path):
            paths = lines_path if isinstance(lines_path, tuple) else (lines_path,)
            items: Any = line_items(record, paths)
        else:
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
