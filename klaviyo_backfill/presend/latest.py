"""Profiles take only their latest attributes (`--profile-attributes latest`, the default).

Klaviyo applies an event's profile attributes (name, address) last-write-wins, in whatever
order it processes bulk jobs: a 2019 order carrying the 2019 name can overwrite the one a
customer uses today. So only the events of each profile's latest order (by creation time,
then order id) carry its non-identifier attributes; every other event carries identifiers
only (email, phone number, external id).

Which order is a profile's latest needs the whole export: `Latest.build` reads it once
before anything is sent (a pass that converts each order but maps and encodes nothing),
into a temporary SQLite table of profile -> (time, order id), so memory stays flat with any
number of customers (about 100 bytes on disk per profile; 1M profiles ~ 100 MB of temporary
disk). Worker processes of a split dry run open the same file read-only.

Across exports, the account's ledger remembers the time of the order whose attributes each
profile was sent (account_ledger.py): a later run sends attributes only from a newer order.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CheckpointError
from ..inputs.export import read_orders
from ..inputs.sources import Input
from ..mapping.convert import Converter
from ..pipeline.distinct import SeenIds
from ..pipeline.parallel import Stamp, splittable, stamp, stamped_pieces, workers_for
from ..pipeline.prepare import raw_id
from ..state.files import state_dir, state_folder
from ..state.sqlite import trouble

if TYPE_CHECKING:
    from ..model import Order
    from ..pipeline.job import Job
    from ..state.account_ledger import AccountLedger
    from .delta import Delta
    from .stores import StoresCheck

__all__ = ["Latest", "Mark", "scratch", "scratch_trouble"]

Mark = tuple[float, str]  # an order's creation time (UNIX seconds) and id: larger is later


@dataclass
class Latest:
    """Which order of each profile carries its attributes. Picklable (a path, not a
    connection): each process opens the table when it first asks."""

    path: str
    account: AccountLedger | None = field(default=None, repr=False)  # this process only
    _db: sqlite3.Connection | None = field(default=None, repr=False)

    def __getstate__(self) -> dict[str, object]:
        return {"path": self.path, "account": None, "_db": None}

    def __call__(self, who: str, order: Order) -> bool:
        """Whether this order's events carry the profile's attributes."""
        mine: Mark = (order.created_at.timestamp(), order.key)
        if self._db is None:
            # immutable: the table is written once, before anyone asks, and never again, so
            # SQLite takes no file lock and checks for no change at each order's query (~45 us
            # of an order's ~0.5 ms in a send's reader thread, which maps the bursts)
            uri = f"{Path(self.path).absolute().as_uri()}?mode=ro&immutable=1"
            self._db = sqlite3.connect(
                uri, uri=True, check_same_thread=False
            )  # asked by the reader thread, closed by the main one
        row = self._db.execute("SELECT at, oid FROM latest WHERE who = ?", (who,)).fetchone()
        if row is None or (float(row[0]), str(row[1])) != mine:
            return False
        if self.account is not None:
            sent = self.account.attributes_sent(who)
            return sent is None or mine > sent
        return True

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        Path(self.path).unlink(missing_ok=True)

    @classmethod
    def build(
        cls,
        job: Job,
        delta: Delta | None = None,
        months: Counter[tuple[str, str]] | None = None,
        stores: StoresCheck | None = None,
    ) -> Latest:
        """One pass over the job's exports: each profile's latest order. Given the account's
        `delta`, orders it holds unchanged are not converted: their profile and time come
        from its ledger. Given `months`, the same pass counts the events per metric and UTC
        month there; given `stores`, it shows it each order (`stamps`)."""
        return cls.of(stamps(job, delta, months, stores))

    @classmethod
    def of(cls, marks: Iterator[tuple[str, Mark]]) -> Latest:
        """The table of these (profile, mark) pairs: each profile's largest mark."""
        path = scratch("latest")
        try:
            _fill(path, marks)
        except (sqlite3.Error, OSError) as exc:  # a full disk: in words, naming the file
            Path(path).unlink(missing_ok=True)
            raise scratch_trouble(path, exc, "each customer's latest order") from None
        except BaseException:
            Path(path).unlink(missing_ok=True)
            raise
        return cls(path)


def _fill(path: str, marks: Iterator[tuple[str, Mark]]) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("CREATE TABLE latest (who TEXT PRIMARY KEY, at REAL, oid TEXT) WITHOUT ROWID")
    upsert = (
        "INSERT INTO latest VALUES (?, ?, ?) ON CONFLICT(who) DO UPDATE SET"
        " at = excluded.at, oid = excluded.oid"
        " WHERE (excluded.at, excluded.oid) > (latest.at, latest.oid)"
    )
    batch: list[tuple[str, float, str]] = []
    for who, (at, oid) in marks:
        batch.append((who, at, oid))
        if len(batch) >= 5000:
            _flush(db, upsert, batch)
    _flush(db, upsert, batch)
    db.close()


def scratch(kind: str, suffix: str = ".sqlite") -> str:
    """A private file (0600, in the state folder's 0700 `tmp`): `<kind>-<pid>-*<suffix>`.
    Those a killed run left behind (its process gone) are removed first: they hold emails."""
    folder = state_folder(state_dir() / "tmp")
    for stale in folder.glob(f"{kind}-*{suffix}"):
        pid = stale.name.split("-")[1]
        if pid.isdigit() and not _alive(int(pid)):
            stale.unlink(missing_ok=True)
    fd, path = tempfile.mkstemp(prefix=f"{kind}-{os.getpid()}-", suffix=suffix, dir=folder)
    os.close(fd)
    return path


def scratch_trouble(path: str, exc: BaseException, holding: str) -> CheckpointError:
    """A temporary file of the state folder that could not be written (a full disk), named
    with what it holds and where room is needed; nothing is lost (it is made anew)."""
    error = trouble(Path(path), exc, f"the temporary file of {holding},")
    folder = os.path.dirname(path)
    if "disk is full" in error.message:
        error.hint = (
            f"Free some space in {folder} (about 100 bytes a customer), or set "
            "XDG_STATE_HOME to a folder on a disk with room; then run again (nothing is lost)."
        )
    return error


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _flush(db: sqlite3.Connection, upsert: str, batch: list[tuple[str, float, str]]) -> None:
    db.execute("BEGIN")
    db.executemany(upsert, batch)
    db.execute("COMMIT")
    batch.clear()


def stamps(
    job: Job,
    delta: Delta | None,
    months: Counter[tuple[str, str]] | None = None,
    stores: StoresCheck | None = None,
) -> Iterator[tuple[str, Mark]]:
    """(profile, mark) of every order a run would map: read and convert, nothing more; a
    large CSV on every core (parallel.py), as a dry run prepares it. A duplicate id is
    passed over, as the run passes over it. Given `months`, it counts there the events of
    the orders a run would map (--limit's first), per metric and UTC month, as the overlap
    check needs them; given `stores`, it shows it each order (stores.py): the same pass,
    not another reading."""
    seen = SeenIds()
    workers = workers_for(job.jobs)
    left = job.filters.limit
    for source in job.inputs:
        marks: Iterator[Stamp]
        if delta is None and splittable(source, workers):
            marks = stamped_pieces(source, job.settings, job.filters, workers, months is not None)
        else:
            marks = _read_stamps(source, job, delta, months is not None)
        for mark in marks:
            _, order_id, who, at, oid, pairs, _ = mark
            first = order_id is None or seen.add(order_id)
            if first and stores is not None:
                stores.see(mark)
            if first and who is not None:
                if months is not None and (left is None or left > 0):
                    months.update(pairs)
                    left = None if left is None else left - 1
                yield who, (at, oid)


def _read_stamps(
    source: Input, job: Job, delta: Delta | None, months: bool = False
) -> Iterator[Stamp]:
    """`parallel.stamp` of each order of `source`, in this process; an order the account
    holds unchanged is not converted: its profile and time come from the account's ledger."""
    converter = Converter(source.layout, job.settings)
    csv = source.layout.kind == "csv"
    raws = read_orders(source, held=delta if csv else None)
    if delta is not None and not csv:
        raws = delta.batched(raws)
    for raw in raws:
        known = raw.held if csv or delta is None else delta.unchanged(raw)[1]
        if known is None:
            yield stamp(raw, converter, job.filters, months)
            continue
        order_id = raw_id(raw)  # held unchanged: not sent again, but maybe the latest
        store = str(raw.fields.get("store") or "")
        if known.at is not None and order_id is not None:
            yield raw.offset, order_id, known.who, known.at, order_id, (), store
        else:
            yield raw.offset, order_id, None, 0.0, "", (), store
