"""The checkpoint: an SQLite ledger (WAL, synchronous=FULL) of the orders Klaviyo acknowledged,
and the rules for opening one (`open_ledger`): a new job, a resumed one, or a restart.

A row is committed only after Klaviyo acknowledged every event of its order, so a kill -9 at
any instant loses nothing: `--resume` skips what the ledger holds and resends at most the
orders that were in flight (a resend is harmless, every event id is deterministic).
The ledger never holds the API key: only ids, counts, times and the run's fingerprint.

With each settled order it adds the order's acknowledged events to `sent_totals`, per metric,
UTC month and currency (count and value sum), in the same transaction: what `verify`
compares with Klaviyo's own aggregates, without reading the export again. And each of those
events to `acked` (metric, time, order, unique id, line item, value, file and line): what
`verify` matches, order by order, with the events Klaviyo holds, and what a repair resends.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, UnfinishedRun
from ..model import Position, Rejection
from ..results import Finished
from .files import private_folder
from .locate import Mode, archive, discard
from .lock import locked
from .sqlite import create_private, guarded, open_read_only, trouble

FORMAT_VERSION = "2"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, state TEXT NOT NULL, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS rejected (
    kind TEXT NOT NULL,                  -- 'klaviyo': an event Klaviyo refused; 'input': an order
    source TEXT, line INTEGER, order_id TEXT, reason TEXT, detail TEXT,
    input INTEGER, offset INTEGER,       -- 'input': where the order is, for --resume
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sent_totals (  -- events Klaviyo acknowledged, of settled orders
    metric TEXT NOT NULL, month TEXT NOT NULL, currency TEXT NOT NULL,  -- month: UTC 'YYYY-MM'
    events INTEGER NOT NULL, value TEXT NOT NULL,  -- value: an exact decimal, as text
    last_at REAL NOT NULL,                         -- the latest acknowledgement among them
    PRIMARY KEY (metric, month, currency)
);
CREATE TABLE IF NOT EXISTS acked (  -- each event Klaviyo acknowledged, of settled orders
    metric TEXT NOT NULL, at INTEGER NOT NULL,  -- at: the event's time, UNIX seconds
    order_id TEXT NOT NULL, unique_id TEXT NOT NULL,
    item TEXT NOT NULL,  -- the line item (model.item_key) of an Ordered Product, else ''
    value TEXT,          -- an exact decimal, as text
    currency TEXT NOT NULL,                       -- '' when the event carries none
    source TEXT NOT NULL, line INTEGER NOT NULL,  -- where the order is in the export
    PRIMARY KEY (metric, at, order_id, unique_id)
) WITHOUT ROWID;
"""

# (metric, time in UNIX seconds, order id, unique id, line item, value, currency, file, line)
Acked = tuple[str, int, str, str, str, str | None, str, str, int]
AckedKey = tuple[str, str, int, float]

# (metric, UTC month 'YYYY-MM', currency; '' when the events carry none)
TotalKey = tuple[str, str, str]


@dataclass(slots=True)
class Total:
    """Acknowledged events of one metric, month and currency: how many, and their values' sum."""

    events: int = 0
    value: Decimal = Decimal(0)
    last_at: float = 0.0  # when the latest of them was acknowledged (time.time())

    def add(self, value: Decimal | None, at: float = 0.0) -> None:
        self.events += 1
        if value is not None:
            self.value += value
        self.last_at = max(self.last_at, at)


def _dec_add(a: str | None, b: str | None) -> str:
    """SQLite's sum of two decimals kept as text, exactly (REAL would round cents)."""
    return str(Decimal(a or 0) + Decimal(b or 0))


class Landmarks:
    """A digest of the bytes just before a resume point, kept with it: a resumed run seeks to
    the point only where those bytes are still there, so an export edited before the point
    (same size, same first 64 KB: the fingerprint cannot tell) is never read from the middle
    of a row. Elsewhere the run falls back to reading from the start, skipping by id."""

    SPAN = 64

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths

    def at(self, position: Position) -> str:
        index, offset = position
        if offset <= 0 or index >= len(self.paths):
            return ""
        try:
            with open(self.paths[index], "rb") as fh:
                fh.seek(max(0, offset - self.SPAN))
                data = fh.read(min(offset, self.SPAN))
        except OSError:
            return "unreadable"
        return hashlib.blake2b(data, digest_size=8).hexdigest()


_guarded = guarded("checkpoint")


class Ledger:
    @_guarded
    def __init__(self, path: Path, read_only: bool = False) -> None:
        """The checkpoint at `path`, made if need be; `read_only`: one that exists, opened
        for `status` and `verify`, which write nothing (a 0400 file, a read-only folder)."""
        self.path = path
        if not read_only:
            private_folder(path.parent)
        for side in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            if side.is_symlink():  # SQLite would follow it, and write where it points
                raise CheckpointError(
                    f"checkpoint {side} is a symbolic link: refusing to follow it",
                    "Name the file itself with --checkpoint, or remove the link.",
                )
        if read_only:
            self.db = open_read_only(path)
            self.db.create_function("dec_add", 2, _dec_add, deterministic=True)
            return
        create_private(path)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.create_function("dec_add", 2, _dec_add, deterministic=True)
            self.db.executescript(_SCHEMA)
        except BaseException:
            self.db.close()
            raise
        for suffix in ("-wal", "-shm"):
            side = Path(f"{path}{suffix}")
            if side.exists() and not side.is_symlink():
                os.chmod(side, 0o600)

    # ------------------------------------------------------------ meta

    @_guarded
    def get(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    @_guarded
    def put(self, **values: Any) -> None:
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in values.items()],
            )

    @property
    def state(self) -> str | None:
        return self.get("state")

    def drop(self, *keys: str) -> None:
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany("DELETE FROM meta WHERE key = ?", [(k,) for k in keys])

    def mark_running(self, inputs: list[str] | None = None) -> None:
        """State "running", with this process's id, start time and host (see `runner_alive`),
        and the exports' paths; an earlier run's end and summary go (they are not this run's)."""
        pid = os.getpid()
        self.drop("ended", "last_run", "pid_start")
        self.put(state="running", started=str(time.time()), pid=str(pid),
                 host=socket.gethostname(), pid_start=process_start(pid) or "")  # fmt: skip
        if inputs is not None:
            self.put(inputs=[os.path.abspath(p) for p in inputs])

    def runner_alive(self) -> bool | None:
        """For a "running" ledger: whether the process that runs it is still alive (the
        process with its id on this host, started when it was: a process id is reused);
        None when that cannot be told (another host, or not recorded). False means it stopped
        abruptly (kill -9, a crash)."""
        pid, host = self.get("pid"), self.get("host")
        if self.state != "running" or pid is None or host != socket.gethostname():
            return None
        cmdline = Path(f"/proc/{pid}/cmdline")
        if Path("/proc/self/cmdline").exists():  # Linux: the process must be one of ours
            started = self.get("pid_start")
            if started:
                return process_start(int(pid)) == started
            try:
                argv = cmdline.read_bytes().split(b"\0")
            except OSError:
                return False
            # one of its arguments is the tool (the console script, or `-m klaviyo_backfill`):
            # not merely a path that holds the word, as a python in a folder named so would
            return any(os.path.basename(arg) in _OURS for arg in argv)
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except (PermissionError, ValueError):
            return None
        return True

    def claim(self, fingerprint: str, describe: str, account: str | None = None) -> None:
        """Bind a new ledger to this run and account, or check that an old one belongs to
        them (a checkpoint of before accounts were recorded is bound to this one)."""
        self.check_account(account)
        version, known = self.get("version"), self.get("fingerprint")
        if known is None:  # a new ledger: its sent_totals hold every acknowledgement
            self.put(version=FORMAT_VERSION, fingerprint=fingerprint, created=str(time.time()),
                     totals="1", acked="1")  # fmt: skip
        elif version != FORMAT_VERSION or not self.has_totals():
            raise CheckpointError(
                f"checkpoint {self.path} was written by a pre-release version (format "
                f"{version}; this version reads {FORMAT_VERSION}): it cannot be continued",
                "Start over with --restart: the account's ledger skips what it holds already.",
            )
        elif known != fingerprint:
            raise CheckpointError(
                f"checkpoint {self.path} belongs to another run: the exports, or options that "
                f"change what is sent ({describe}), differ",
                "Rerun with the same files and options, or start over with --restart.",
            )
        if account is not None and self.get("account") is None:
            self.put(account=account)

    def check_account(self, account: str | None) -> None:
        """A checkpoint records what one Klaviyo account acknowledged: never another's."""
        known = self.get("account")
        if account is not None and known is not None and known != account:
            raise CheckpointError(
                f"checkpoint {self.path} records what another Klaviyo account acknowledged "
                f"(account {known}; this key and base URL are account {account})",
                "Leave out --checkpoint (each account gets its own), or name another file.",
            )

    # ------------------------------------------------------------ orders

    @_guarded
    def has_orders(self) -> bool:
        return self.db.execute("SELECT 1 FROM orders LIMIT 1").fetchone() is not None

    @_guarded
    def is_done(self, order_id: str) -> bool:
        return (
            self.db.execute("SELECT 1 FROM orders WHERE id = ?", (order_id,)).fetchone() is not None
        )

    @_guarded
    def record(
        self,
        done: Iterable[tuple[str, bool]],
        rejected: Iterable[tuple[Rejection, Position | None]] = (),
        watermark: Position | None = None,
        landmark: str = "",
        totals: Mapping[str, Mapping[TotalKey, Total]] | None = None,
        acked: Mapping[str, list[Acked]] | None = None,
        journal: str | None = None,
    ) -> None:
        """Commit settled orders (id, whether Klaviyo rejected any of its events), rejections
        and the resume point durably, in one transaction. A rejection the ledger holds
        already (an order resent after a kill, refused again) is not added twice.

        `totals` holds, per order id, its events that Klaviyo acknowledged: they are added to
        `sent_totals` for an order the ledger did not hold yet (an order resent after a kill
        counts once); `acked` holds the same events one by one, added to `acked` alike.
        `journal`: what the account's ledger records next (account_ledger.journal)."""
        now = time.time()
        with self.db:
            self.db.execute("BEGIN")
            fresh = [o for o, _ in done if not self.is_done(o)] if totals or acked else []
            if totals:
                self._add_totals([o for o in fresh if o in totals], totals, now)
            if acked:
                self.db.executemany(
                    "INSERT OR IGNORE INTO acked VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [event for o in fresh for event in acked.get(o, ())],
                )
            self.db.executemany(
                "INSERT OR REPLACE INTO orders (id, state, at) VALUES (?, ?, ?)",
                [(o, "rejected" if bad else "sent", now) for o, bad in done],
            )
            self.db.executemany(
                "INSERT INTO rejected (kind, source, line, order_id, reason, detail, input, offset,"
                " at) SELECT ?,?,?,?,?,?,?,?,? WHERE NOT EXISTS (SELECT 1 FROM rejected WHERE"
                " kind = 'klaviyo' AND ? = 'klaviyo' AND order_id IS ? AND detail IS ?)",
                [
                    (kind, r.source, r.line, r.order_id, r.reason, r.detail,
                     *(at or (None, None)), now, kind, r.order_id, r.detail)
                    for r, at in rejected
                    for kind in ("klaviyo" if at is None else "input",)
                ],
            )  # fmt: skip
            marks = [("journal", journal)] if journal else []
            if watermark is not None:
                marks += [("watermark", json.dumps(list(watermark))), ("landmark", landmark)]
            self.db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", marks)

    def _add_totals(
        self, fresh: list[str], totals: Mapping[str, Mapping[TotalKey, Total]], now: float
    ) -> None:
        merged: dict[TotalKey, Total] = {}
        for order_id in fresh:
            for key, total in totals[order_id].items():
                into = merged.setdefault(key, Total())
                into.events += total.events
                into.value += total.value
                into.last_at = max(into.last_at, total.last_at or now)
        self.db.executemany(
            "INSERT INTO sent_totals (metric, month, currency, events, value, last_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (metric, month, currency) DO UPDATE SET "
            "events = events + excluded.events, value = dec_add(value, excluded.value), "
            "last_at = max(last_at, excluded.last_at)",
            [(*key, t.events, str(t.value), t.last_at) for key, t in merged.items()],
        )

    @_guarded
    def has_totals(self) -> bool:
        """Whether `sent_totals` covers the whole job: a ledger begun before they were kept
        (or by hand) does not, and its export must be read again to know what was sent."""
        return self.get("totals") == "1"

    @_guarded
    def totals(self) -> dict[TotalKey, Total]:
        """What Klaviyo acknowledged, per metric, UTC month and currency."""
        rows = self.db.execute(
            "SELECT metric, month, currency, events, value, last_at FROM sent_totals "
            "ORDER BY metric, month, currency"
        )
        totals = {(m, mo, c): Total(int(n), Decimal(v), float(at)) for m, mo, c, n, v, at in rows}
        if not all(t.value.is_finite() and t.events >= 0 for t in totals.values()):
            raise ValueError("a total that is not a finite amount")
        return totals

    @_guarded
    def has_acked(self) -> bool:
        """Whether `acked` covers the whole job (a ledger of an earlier version has none)."""
        return self.get("acked") == "1"

    @_guarded
    def acked(self, metric: str, start: int, end: int) -> list[Acked]:
        """The acknowledged events of a metric with start <= time < end (UNIX seconds)."""
        rows = self.db.execute(
            "SELECT metric, at, order_id, unique_id, item, value, currency, source, line"
            " FROM acked WHERE metric = ? AND at >= ? AND at < ?",
            (metric, start, end),
        )
        return rows.fetchall()  # as stored: (TEXT, INTEGER, TEXT, ...) are Acked's types

    @_guarded
    def acked_keys(self, metric: str, start: int, end: int) -> tuple[list[AckedKey], str | None]:
        """`acked`'s (order_id, item, at, value: a float), cheaply; their currency, if one."""
        where, args = " FROM acked WHERE metric = ? AND at >= ? AND at < ?", (metric, start, end)
        one = self.db.execute("SELECT MIN(currency), COUNT(DISTINCT currency)" + where, args)
        query = "SELECT order_id, item, at, COALESCE(CAST(value AS REAL), 0.0)" + where
        currency, n = one.fetchone()
        return self.db.execute(query, args).fetchall(), currency if n == 1 else None

    @_guarded
    def order_state(self, order_id: str) -> tuple[str, float] | None:
        """('sent' or 'rejected', when it was recorded) of an order the ledger holds."""
        row = self.db.execute("SELECT state, at FROM orders WHERE id = ?", (order_id,)).fetchone()
        return None if row is None else (str(row[0]), float(row[1]))

    @_guarded
    def rejected_events(self, order_id: str) -> list[str]:
        """The details of an order's events Klaviyo refused ('<metric> <unique id>: why')."""
        rows = self.db.execute(
            "SELECT DISTINCT detail FROM rejected WHERE kind = 'klaviyo' AND order_id = ?",
            (order_id,),
        )
        return [str(detail or "") for (detail,) in rows]

    @_guarded
    def watermark(self) -> Position | None:
        """Where a resumed run picks up: (input index, byte offset)."""
        value = self.get("watermark")
        if value is None:
            return None
        try:
            index, offset = json.loads(value)
            return int(index), int(offset)
        except (ValueError, TypeError) as exc:
            raise trouble(self.path, ValueError(f"its resume point {value[:40]!r}")) from exc

    @_guarded
    def still_there(self, point: Position, landmarks: Landmarks) -> bool:
        """Whether the bytes before the resume point are those recorded with it."""
        return landmarks.at(point) == (self.get("landmark") or "")

    @_guarded
    def rejections(self, before: Position | None) -> list[Rejection]:
        """Earlier runs' rejections that a resumed run will not meet again: Klaviyo's, and
        the export's own before the resume point. Each is one row (see `forget_from`): two
        alike are two orders (stray values on one line of a JSON file share its place)."""
        index, offset = before or (-1, -1)
        rows = self.db.execute(
            "SELECT source, line, order_id, reason, detail FROM rejected "
            "WHERE kind = 'klaviyo' OR input < ? OR (input = ? AND offset < ?) ORDER BY rowid",
            (index, index, offset),
        )
        return [
            Rejection(source or "", line, order_id, reason, detail or "")
            for source, line, order_id, reason, detail in rows
        ]

    @_guarded
    def last_run(self) -> dict[str, Any]:
        """The summary the last run left ({} when none)."""
        try:
            value = json.loads(self.get("last_run") or "{}")
        except ValueError:
            return {}  # only shown by `status`: not worth refusing the checkpoint for
        return value if isinstance(value, dict) else {}

    @_guarded
    def rejected_rows(self, limit: int = 1000) -> list[Rejection]:
        """The job's rejections (each is one row), the first `limit` of them."""
        rows = self.db.execute(
            "SELECT source, line, order_id, reason, detail FROM rejected ORDER BY rowid LIMIT ?",
            (limit,),
        )
        return [Rejection(s or "", line, oid, reason, d or "") for s, line, oid, reason, d in rows]

    @_guarded
    def forget_from(self, before: Position | None) -> None:
        """Forget the export's rejections at and after the resume point (all of them for
        None): a resumed run reads the export from there, meets them again and records them
        anew. Klaviyo's stay (`record` adds each once). So every rejection is one row: no
        key could tell one met again from another alike, as a JSON order's place is its
        file's start and its line may be the file's one line."""
        index, offset = before or (-1, -1)
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute(
                "DELETE FROM rejected WHERE kind = 'input'"
                " AND NOT (input < ? OR (input = ? AND offset < ?))",
                (index, index, offset),
            )

    @_guarded
    def counts(self) -> dict[str, int]:
        rows = self.db.execute("SELECT state, count(*) FROM orders GROUP BY state").fetchall()
        out = {str(state): int(n) for state, n in rows}
        out["events_rejected"] = int(
            self.db.execute("SELECT count(*) FROM rejected WHERE kind = 'klaviyo'").fetchone()[0]
        )
        return out

    @_guarded
    def rejected_total(self) -> int:
        """Rejections the job met, each once: orders the export could not give (a row each,
        see `forget_from`), and events Klaviyo refused (one per order and event)."""
        row = self.db.execute(
            "SELECT (SELECT count(*) FROM rejected WHERE kind = 'input')"
            " + (SELECT count(*) FROM (SELECT DISTINCT order_id, detail FROM rejected"
            " WHERE kind = 'klaviyo'))"
        ).fetchone()
        return int(row[0])

    def condition(self) -> str:
        """The state as a person reads it: a "running" ledger whose process is gone
        "stopped abruptly"."""
        alive = True if locked(self.path) else self.runner_alive()
        if alive is True:
            return f"running (process {self.get('pid')})"
        if alive is False:
            return f"stopped abruptly (process {self.get('pid')} is gone)"
        return self.state or "new"

    def unfinished(self) -> str | None:
        """Why the job is not finished, in words (None when it is)."""
        state = self.state
        if state == "finished":
            return None
        condition = self.condition()
        if condition.startswith(("running", "stopped abruptly")):
            return condition
        return {
            "stopped": "stopped before its end (Ctrl-C, an error): the rest is not sent yet",
            "limited": "stopped at its --limit: the rest of the export is not sent yet",
        }.get(state or "", "never run to its end")

    def rejected_apart(self) -> tuple[int, int]:
        """(orders the export could not give, events Klaviyo refused), each counted as
        `rejected_total` counts them."""
        row = self.db.execute(
            "SELECT (SELECT count(*) FROM rejected WHERE kind = 'input'),"
            " (SELECT count(*) FROM (SELECT DISTINCT order_id, detail FROM rejected"
            " WHERE kind = 'klaviyo'))"
        ).fetchone()
        return int(row[0]), int(row[1])

    def reader(self) -> Ledger:
        """A second connection, for the thread that reads the export."""
        return Ledger(self.path)

    def close(self) -> None:
        self.db.close()


def open_ledger(
    path: Path,
    mode: Mode,
    fingerprint: str,
    describe: str,
    account: str | None = None,
    keep: bool = True,
) -> Ledger | Finished:
    """The ledger to send with, bound to this job's `fingerprint` (what `describe` names) and
    to the Klaviyo `account` it sends to (klaviyo/account.py).

    new      refuses an unfinished checkpoint (UnfinishedRun: continue it, or restart),
             returns Finished for one that says this very export was sent completely, and
             starts afresh over a finished one of another export at the same path (a new
             export saved over the old file, another window): the account's ledger, not the
             checkpoint, says what of it is held already (`superseded`)
    resume   continues an existing checkpoint; there must be one
    restart  archives any checkpoint (locate.archive; deletes it and the archived ones when
             not `keep`: --resend counts all again) and starts over
    A checkpoint that a live process is sending with is refused in every mode.
    """
    if mode == "restart" and keep:  # the job starts over; the account's history stays:
        archive(path)  # `verify` still counts the old job
    elif mode == "restart":
        discard(path, earlier=True)
    elif mode == "resume" and not path.exists():
        raise CheckpointError(
            f"no checkpoint at {path} to resume", "Run without --resume to start."
        )
    elif mode == "new" and path.exists():
        ledger = Ledger(path)
        try:
            _refuse_if_running(ledger)
            ledger.check_account(account)
            state, condition, rejected = ledger.state, ledger.condition(), ledger.rejected_apart()
            known = ledger.get("fingerprint")
        finally:
            ledger.close()
        if state != "finished":
            raise UnfinishedRun(f"an unfinished run ({condition}) has a checkpoint at {path}")
        if known == fingerprint:
            return Finished(path, *rejected)
        archive(path)
    ledger = Ledger(path)
    try:
        _refuse_if_running(ledger)
        ledger.claim(fingerprint, describe, account)
    except BaseException:
        ledger.close()
        raise
    return ledger


def superseded(path: Path, mode: Mode, fingerprint: str) -> bool:
    """A new run (`mode` new) over a finished checkpoint of another export or window at the
    same path: `open_ledger` starts that job afresh, and it is sent as a new job is."""
    if mode != "new" or not path.exists():
        return False
    ledger = Ledger(path)
    try:
        return ledger.state == "finished" and ledger.get("fingerprint") != fingerprint
    finally:
        ledger.close()


_OURS = (b"klaviyo-backfill", b"klaviyo_backfill")


def process_start(pid: int) -> str | None:
    """When a process started (Linux: /proc/<pid>/stat field 22, in clock ticks since boot),
    which tells it from a later process given the same id; None where that cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # the name, in parentheses, may hold spaces
    return fields[19] if len(fields) > 19 else None


def _refuse_if_running(ledger: Ledger) -> None:
    """Two runs on one checkpoint would send the same orders twice over."""
    if ledger.runner_alive():
        raise CheckpointError(
            f"process {ledger.get('pid')} is sending with checkpoint {ledger.path} right now",
            "Let it finish (or stop it with Ctrl-C) before another run on the same export.",
        )
