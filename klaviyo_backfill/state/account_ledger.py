"""The account ledger: what one Klaviyo account acknowledged, across every export sent to it.

A per-export checkpoint (checkpoint.py) makes one job crash-safe; this ledger makes the next
export cheap and safe. A store moving onto Klaviyo sends its history, then at the cut-over a
later export: a superset, with new orders and older ones since fulfilled, cancelled or
refunded. Sent to the same account, the later export sends only what the account does not
hold: new orders, and the new events of orders sent before.

    orders   order id -> digest of the order as read, its profile, time, total, refund,
             and how many of its events the account holds
    events   a 12-byte digest of (profile, metric, unique_id): the key Klaviyo keeps events by
    profiles profile -> the order whose attributes it was sent (time, id)

An order whose digest is unchanged is skipped as it is read, without being converted (a
later export whose first million orders were sent before reaches its first new request in
about the time of a bare CSV pass). A changed order is mapped, and only its events the
account does not hold go. What Klaviyo cannot take (it keeps the first event per profile,
metric and id) is reported and not sent: an order now under another profile, a changed
total, a larger refund than was sent.

Size on disk: about 60 bytes per event and 120 per order (SQLite, WITHOUT ROWID). Lookups
go to disk (SQLite's page cache): memory stays flat whatever the account holds. The file
lives in the user's state folder (`$XDG_STATE_HOME/klaviyo-backfill/accounts/`, by default
`~/.local/state/...`), so a run from any folder finds it; it holds no key, only ids, digests
and amounts, and is created 0600 in a 0700 folder.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import NamedTuple

from ..errors import CheckpointError
from .files import inside_state, state_dir, state_folder
from .sqlite import create_private, guarded

__all__ = [
    "AccountLedger",
    "HeldOrder",
    "OrderFacts",
    "account_ledger_path",
    "event_key",
    "journal",
    "replay",
    "state_dir",
]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    id TEXT PRIMARY KEY, digest BLOB, who TEXT NOT NULL, total TEXT, refunded TEXT,
    currency TEXT, events INTEGER NOT NULL, at REAL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (key BLOB PRIMARY KEY) WITHOUT ROWID;
-- the order whose attributes (name, address) each profile was sent: a later export sends
-- attributes only from a newer one (latest.py)
CREATE TABLE IF NOT EXISTS profiles (who TEXT PRIMARY KEY, at REAL, oid TEXT) WITHOUT ROWID;
-- the stores whose orders were sent ('': orders sent without --store, keyed by id alone)
CREATE TABLE IF NOT EXISTS stores (name TEXT PRIMARY KEY) WITHOUT ROWID;
"""
# a ledger from before stores were kept holds orders sent without one
_STORELESS_BEFORE = (
    "INSERT OR IGNORE INTO stores SELECT '' WHERE NOT EXISTS (SELECT 1 FROM stores)"
    " AND (EXISTS (SELECT 1 FROM orders) OR EXISTS (SELECT 1 FROM events))"
)


_HELD = "SELECT digest, events, who, at FROM orders WHERE id = ?"


def account_ledger_path(account: str) -> Path:
    return state_dir() / "accounts" / f"{account}.sqlite"


def event_key(who: str, metric: str, unique_id: str) -> bytes:
    """What Klaviyo keeps an event by: its profile, metric and unique_id (12 bytes)."""
    text = f"{who}\0{metric}\0{unique_id}".encode()
    return hashlib.blake2b(text, digest_size=12).digest()


class HeldOrder(NamedTuple):
    """An order the account holds: the digest it was sent with, its events held, its
    profile and creation time (UNIX seconds)."""

    digest: bytes
    events: int
    who: str
    at: float | None


@dataclass(frozen=True, slots=True)
class OrderFacts:
    """What the account holds of an order, to tell a change Klaviyo cannot take."""

    who: str  # the profile its events went to (email, else phone, else external id)
    total: Decimal | None  # its Placed Order's value
    refunded: Decimal | None  # its Refunded Order's value
    currency: str | None
    events: int = 0
    at: float | None = None  # the order's creation time, UNIX seconds


def _private_folder(folder: Path) -> None:
    if inside_state(folder):  # the state tree's one rule
        state_folder(folder)
        return
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)  # a ledger named elsewhere (tests)
    if folder.is_symlink():
        raise CheckpointError(f"{folder} is a symbolic link: refusing to keep state there")


_guarded = guarded("account ledger")


class AccountLedger:
    """One account's ledger; thread-safe (the reader thread asks, the sender records)."""

    def __init__(self, path: Path, read_only: bool = False) -> None:
        """Open (and create) the ledger; `read_only`, one that exists, to look up only (a
        worker process of a later export's survey, survey.py)."""
        self.path = path
        if not read_only:
            _private_folder(path.parent)
            create_private(path, "account ledger")
        try:
            if read_only:
                self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
            else:
                self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")
                self.db.executescript(_SCHEMA)
                self.db.execute(_STORELESS_BEFORE)
        except sqlite3.DatabaseError as exc:
            raise CheckpointError(
                f"account ledger {path} cannot be read: {exc}",
                "Move it away to start the account's ledger afresh (events are then sent "
                "again; Klaviyo drops repeats).",
            ) from None
        self.lock = threading.Lock()
        self._held = self.db.cursor()

    @_guarded
    def holds_anything(self) -> bool:
        """Whether the account acknowledged any event yet (of a whole order or not)."""
        with self.lock:
            query = "SELECT EXISTS (SELECT 1 FROM events) OR EXISTS (SELECT 1 FROM orders)"
            return bool(self.db.execute(query).fetchone()[0])

    @_guarded
    def held_orders(self, order_ids: list[str]) -> dict[str, HeldOrder]:
        """`held_order` for many orders at once (one query: a later export's fast path)."""
        found: dict[str, HeldOrder] = {}
        for start in range(0, len(order_ids), 500):
            chunk = order_ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT id, digest, events, who, at FROM orders WHERE id IN ({marks})"
            with self.lock:
                rows = self.db.execute(query, chunk).fetchall()
            found.update((row[0], _held(row[1:])) for row in rows)
        return found

    @_guarded
    def sending_for(self, store: str | None) -> None:
        """Note that a send keys its orders by this store (None: by id alone)."""
        with self.lock:
            self.db.execute("INSERT OR IGNORE INTO stores VALUES (?)", (store or "",))

    @_guarded
    def stores(self) -> set[str]:
        """The stores whose orders were sent to the account ('': without a store)."""
        with self.lock:
            return {str(row[0]) for row in self.db.execute("SELECT name FROM stores")}

    def holds_storeless(self) -> bool:
        """Whether orders were sent to the account without a store (keyed by id alone)."""
        return "" in self.stores()

    @_guarded
    def held_order(self, order_id: str) -> HeldOrder | None:
        """The digest an order was sent with, the events the account holds of it, its
        profile and time."""
        with self.lock:
            row = self._held.execute(_HELD, (order_id,)).fetchone()
        return None if row is None else _held(row)

    @_guarded
    def attributes_sent(self, who: str) -> tuple[float, str] | None:
        """(time, order id) of the order whose attributes this profile was sent."""
        with self.lock:
            row = self.db.execute("SELECT at, oid FROM profiles WHERE who = ?", (who,)).fetchone()
        return None if row is None else (float(row[0]), str(row[1]))

    @_guarded
    def facts(self, order_id: str) -> OrderFacts | None:
        with self.lock:
            row = self.db.execute(
                "SELECT who, total, refunded, currency, events FROM orders WHERE id = ?",
                (order_id,),
            ).fetchone()
        if row is None:
            return None
        who, total, refunded, currency, events = row
        return OrderFacts(who, _money(total), _money(refunded), currency, int(events))

    @_guarded
    def held(self, keys: list[bytes]) -> set[bytes]:
        """Which of these event keys the account acknowledged."""
        if not keys:
            return set()
        marks = ",".join("?" * len(keys))
        with self.lock:
            rows = self.db.execute(f"SELECT key FROM events WHERE key IN ({marks})", keys)
            return {bytes(row[0]) for row in rows}

    @_guarded
    def record(
        self,
        keys: Iterable[bytes],
        orders: Iterable[tuple[str, bytes | None, OrderFacts]] = (),
        stamps: Iterable[tuple[str, float, str]] = (),
    ) -> None:
        """Events Klaviyo acknowledged, and orders all of whose events it did (with the
        digest that lets a later export skip them unread)."""
        with self.lock, self.db:
            self.db.execute("BEGIN")
            self.db.executemany(
                "INSERT OR IGNORE INTO events (key) VALUES (?)", [(k,) for k in keys]
            )
            self.db.executemany(
                "INSERT INTO orders (id, digest, who, total, refunded, currency, events, at)"
                " VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET"
                " digest = excluded.digest, events = excluded.events,"
                " refunded = coalesce(excluded.refunded, orders.refunded)",
                [(oid, digest, f.who, _text(f.total), _text(f.refunded), f.currency, f.events,
                  f.at) for oid, digest, f in orders],
            )  # fmt: skip
            self.db.executemany(
                "INSERT INTO profiles VALUES (?, ?, ?) ON CONFLICT(who) DO UPDATE SET"
                " at = excluded.at, oid = excluded.oid"
                " WHERE (excluded.at, excluded.oid) > (profiles.at, profiles.oid)",
                list(stamps),
            )

    def close(self) -> None:
        with self.lock:
            self.db.close()


def journal(
    keys: list[bytes],
    orders: list[tuple[str, bytes | None, OrderFacts]],
    stamps: list[tuple[str, float, str]],
) -> str:
    """What `AccountLedger.record` is about to commit, as text the checkpoint keeps first (in
    the transaction that records the same acknowledgements): a run that stops between the
    two commits (a full disk, kill -9) loses neither; `replay` gives the account's ledger
    what it may lack (recording twice is harmless)."""
    return json.dumps({
        "keys": [k.hex() for k in keys],
        "orders": [[oid, digest.hex() if digest else None, f.who, _text(f.total),
                    _text(f.refunded), f.currency, f.events, f.at] for oid, digest, f in orders],
        "stamps": [list(stamp) for stamp in stamps],
    })  # fmt: skip


def replay(account: AccountLedger, text: str) -> None:
    """Record in the account's ledger what a checkpoint's journal says it was about to."""
    doc = json.loads(text)
    keys = [bytes.fromhex(k) for k in doc["keys"]]
    orders = [
        (oid, bytes.fromhex(digest) if digest else None,
         OrderFacts(who, _money(total), _money(refunded), currency, int(events), at))
        for oid, digest, who, total, refunded, currency, events, at in doc["orders"]
    ]  # fmt: skip
    stamps = [(str(who), float(at), str(oid)) for who, at, oid in doc["stamps"]]
    account.record(keys, orders, stamps)


def _held(row: tuple[object, ...]) -> HeldOrder:
    digest, events, who, at = row
    return HeldOrder(bytes(digest or b""), int(events), str(who), None if at is None else float(at))  # type: ignore[arg-type, call-overload]


def _text(amount: Decimal | None) -> str | None:
    return None if amount is None else str(amount)


def _money(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)
