"""Bounded-memory bookkeeping for exports of any size.

`SeenIds` answers "was this order id seen before?" exactly: in memory up to a point, then in
a temporary SQLite table on disk. `DistinctCount` counts distinct profiles exactly up to a
point, then estimates (HyperLogLog, 16 KB, about 1% error) and says that it does. Both switch at
50,000, so memory stops growing there.
"""

from __future__ import annotations

import hashlib
import math
import sqlite3
from collections.abc import Iterable

__all__ = ["DistinctCount", "SeenIds", "stable_hash"]


def stable_hash(parts: Iterable[str | None]) -> int:
    """A 64-bit hash that is the same in every run and process (Python's hash() of a str is
    salted per process, which would make an estimate differ from one run to the next)."""
    text = "\x1f".join("" if part is None else part for part in parts)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


class SeenIds:
    def __init__(self, spill_after: int = 50_000) -> None:
        self.spill_after = spill_after
        self.memory: set[str] = set()
        self.db: sqlite3.Connection | None = None

    def add(self, key: str) -> bool:
        """Record `key`; True when it is new."""
        if self.db is None:
            if key in self.memory:
                return False
            self.memory.add(key)
            if len(self.memory) > self.spill_after:
                self._spill()
            return True
        cursor = self.db.execute("INSERT OR IGNORE INTO seen VALUES (?)", (key,))
        return cursor.rowcount == 1

    def _spill(self) -> None:
        self.db = sqlite3.connect("")  # "": a temporary database on disk, gone when closed
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute("CREATE TABLE seen (id TEXT PRIMARY KEY) WITHOUT ROWID")
        self.db.executemany("INSERT INTO seen VALUES (?)", ((k,) for k in self.memory))
        self.memory = set()


_P = 14
_M = 1 << _P
_MASK64 = (1 << 64) - 1


class DistinctCount:
    def __init__(self, exact_up_to: int = 50_000) -> None:
        self.exact_up_to = exact_up_to
        self.exact: set[int] | None = set()
        self.registers = bytearray(_M)

    @property
    def estimated(self) -> bool:
        return self.exact is None

    def add(self, value: int) -> None:
        """Add a value's 64-bit hash (`stable_hash`)."""
        if self.exact is not None:
            self.exact.add(value)
            if len(self.exact) > self.exact_up_to:
                for seen in self.exact:
                    self._register(seen)
                self.exact = None
        else:
            self._register(value)

    def _register(self, value: int) -> None:
        h = _mix(value & _MASK64)
        index, rest = h & (_M - 1), h >> _P
        rank = (64 - _P) - rest.bit_length() + 1
        if rank > self.registers[index]:
            self.registers[index] = rank

    def __len__(self) -> int:
        if self.exact is not None:
            return len(self.exact)
        alpha = 0.7213 / (1 + 1.079 / _M)
        estimate = alpha * _M * _M / sum(2.0**-r for r in self.registers)
        zeros = self.registers.count(0)
        if estimate <= 2.5 * _M and zeros:
            estimate = _M * math.log(_M / zeros)
        return round(estimate)


def _mix(h: int) -> int:
    """splitmix64's finaliser: spreads the bits of Python's hash evenly."""
    h = (h ^ (h >> 30)) * 0xBF58476D1CE4E5B9 & _MASK64
    h = (h ^ (h >> 27)) * 0x94D049BB133111EB & _MASK64
    return h ^ (h >> 31)
