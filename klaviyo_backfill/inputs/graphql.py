"""Shopify's GraphQL Admin API exports, and JSON paths with lists in them.

A paged query's answer holds its orders at `data.orders.edges[].node` (or
`data.orders.nodes`): a layout names such a path (`[options] orders_path`); each page is
read whole (250 orders at most), one page at a time.

A bulk operation (`bulkOperationRunQuery`) writes JSON Lines: each order a line, and each
node of a connection under it (each line item) a line of its own carrying `__parentId`,
after its parent but not necessarily right after it (nor, in files put together by other
tools, after it at all). A first pass checks whether every child follows its parent with
only its siblings between: then one more pass reads each order with the lines after it.
Otherwise the children are spooled into a private SQLite file (0600, in a 0700 folder,
removed when read), indexed by parent, and each order picks its own up as it is read: the
memory held is that of one order, whatever the file's size.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator
from itertools import chain
from typing import Any

from ..errors import BackfillWarning, InputError

__all__ = ["bulk_records", "child_key", "is_child", "line_items", "orders_of", "select"]

# what a bulk operation's child line carries: the id (a GID) of the line it belongs to
PARENT = "__parentId"


def _segments(path: str) -> list[tuple[str, bool]]:
    """'data.orders.edges[].node' -> [('data', False), ('orders', False), ('edges', True),
    ('node', False)]: each key, and whether its value is a list to go through."""
    return [(part.removesuffix("[]"), part.endswith("[]")) for part in path.split(".")]


def select(value: Any, path: str) -> Iterator[Any]:
    """The values at `path` in `value`: `[]` after a key goes through the list it holds,
    and a list at the end of the path gives its items."""
    yield from _walk(value, _segments(path))


def _walk(value: Any, segments: list[tuple[str, bool]]) -> Iterator[Any]:
    if not segments:
        if isinstance(value, list):
            yield from (item for item in value if item is not None)
        elif value is not None:
            yield value
        return
    (key, through), rest = segments[0], segments[1:]
    found = value.get(key) if isinstance(value, dict) else None
    if through:
        for item in found if isinstance(found, list) else ():
            yield from _walk(item, rest)
    elif found is not None:
        yield from _walk(found, rest)


def orders_of(document: Any, paths: Iterable[str]) -> Iterator[Any] | None:
    """The orders a document holds at the first of `paths` that holds any (a paged answer),
    or None when it has none of their first keys: the document is an order itself (a bulk
    operation's line)."""
    if not isinstance(document, dict):
        return None
    holds = False
    for path in paths:
        if path.split(".", 1)[0].removesuffix("[]") in document:
            holds = True
            found = select(document, path)
            first = next(found, None)
            if first is not None:
                return chain([first], found)
    return iter(()) if holds else None


def line_items(record: Any, paths: tuple[str, ...]) -> list[Any]:
    """The items at the first of `paths` that holds any (`lineItems.edges[].node`,
    `lineItems.nodes`, or the `LineItem` children a bulk file's lines gave)."""
    for path in paths:
        items = list(select(record, path))
        if items:
            return items
    return []


def is_child(record: Any) -> bool:
    return isinstance(record, dict) and PARENT in record


def child_key(child: dict[str, Any]) -> str:
    """Where a child goes in its parent: the type its GID names (`gid://shopify/LineItem/1`
    -> `LineItem`), so a query with two connections keeps them apart."""
    gid = child.get("id")
    if isinstance(gid, str) and gid.startswith("gid://"):
        parts = gid.split("/")
        if len(parts) >= 5:
            return parts[3]
    return "children"


def _attach(order: dict[str, Any], children: Iterable[dict[str, Any]]) -> None:
    for child in children:
        order.setdefault(child_key(child), []).append(child)


Record = tuple[int, Any]  # (line, a decoded value or what stands for a line that is none)


def bulk_records(read: Callable[[], Iterable[Record]], path: str) -> Iterator[Record]:
    """Each order of a bulk operation's lines with its children attached; `read()` reads
    the file (line number, decoded line) once more at each call."""
    current: Any = None
    grouped = True
    for _, record in read():  # the first pass: does every child follow its parent?
        if is_child(record):
            if not isinstance(current, dict) or record[PARENT] != current.get("id"):
                grouped = False
                break
        else:
            current = record
    yield from _grouped(read()) if grouped else _spooled(read, path)


def _grouped(records: Iterable[Record]) -> Iterator[Record]:
    order: Record | None = None
    for line, record in records:
        if is_child(record) and order is not None and isinstance(order[1], dict):
            _attach(order[1], [record])
            continue
        if order is not None:
            yield order
        order = (line, record)
    if order is not None:
        yield order


def _spooled(read: Callable[[], Iterable[Record]], path: str) -> Iterator[Record]:
    """Children kept in a private SQLite file by parent; then each order with its own."""
    folder = tempfile.mkdtemp(prefix="klaviyo-backfill-")
    try:
        store = os.path.join(folder, "children.sqlite")
        os.close(os.open(store, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
        db = sqlite3.connect(store)
        try:
            yield from _with_children(read, db, path)
        except sqlite3.Error as exc:  # the store's disk filled, say
            raise InputError(path, f"cannot group the lines of its orders in {store}: {exc}",
                             hint=f"Free some space in {tempfile.gettempdir()} (or set TMPDIR "
                             "to a folder with room), then run again.") from None  # fmt: skip
        finally:
            db.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _with_children(
    read: Callable[[], Iterable[Record]], db: sqlite3.Connection, path: str
) -> Iterator[Record]:
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("CREATE TABLE child (parent TEXT, body TEXT)")
    children = (
        (str(record[PARENT]), json.dumps(record)) for _, record in read() if is_child(record)
    )
    db.executemany("INSERT INTO child VALUES (?, ?)", children)
    db.execute("CREATE INDEX by_parent ON child (parent)")
    db.commit()
    db.execute("CREATE TABLE seen (id TEXT)")
    for line, record in read():  # the file once more: each order with its children
        if is_child(record):
            continue
        if isinstance(record, dict) and record.get("id") is not None:
            rows = db.execute(
                "SELECT body FROM child WHERE parent = ? ORDER BY rowid", (str(record["id"]),)
            )
            _attach(record, (json.loads(body) for (body,) in rows))
            db.execute("INSERT INTO seen VALUES (?)", (str(record["id"]),))
        yield line, record
    (orphans,) = db.execute(
        "SELECT count(*) FROM child WHERE parent NOT IN (SELECT id FROM seen)"
    ).fetchone()
    if orphans:
        warnings.warn(
            f"{path}: {orphans:,} line{'s' if orphans != 1 else ''} name an order that is not "
            "in the file (cut short, or a part of another export?): not sent",
            BackfillWarning,
            stacklevel=2,
        )
