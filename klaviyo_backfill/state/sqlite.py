"""The state's SQLite files (a checkpoint, the account's ledger): created private without
following a link, and their errors told in words, naming the file."""

from __future__ import annotations

import errno
import functools
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

from ..errors import CheckpointError

# What reading a value a checkpoint cannot hold raises (a valid SQLite file whose stored
# values were edited or damaged: 'x' for a time, '{bad' for a summary, 'abc' for a total)
BAD_VALUES = (ValueError, TypeError, KeyError, IndexError, AttributeError, ArithmeticError)
FULL = (errno.ENOSPC, errno.EDQUOT)  # a full disk, or the user's quota reached


def trouble(path: Path, exc: BaseException, what: str = "checkpoint") -> CheckpointError:
    """What went wrong with a checkpoint (or `what` else), in words, naming it (never a
    traceback)."""
    text = str(exc)
    lower = text.lower()
    if isinstance(exc, OSError) and exc.errno == errno.ELOOP:  # --resume would not help
        return CheckpointError(
            f"{what} {path} is a symbolic link: refusing to follow it",
            f"Remove the link (rm {path}): the tool makes the file itself, private.",
        )
    if isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        lower = "readonly"
    elif isinstance(exc, OSError) and exc.errno in FULL:
        lower = "disk is full"
    elif isinstance(exc, OSError):
        text = exc.strerror or text
    if "disk is full" in lower:
        why, hint = "the disk is full", "Free some space, then continue with --resume."
    elif "locked" in lower or "busy" in lower:
        why = "it is locked by another process"
        hint = "Let that process finish (see `status`), then continue with --resume."
    elif "readonly" in lower or "read-only" in lower:
        why = "it cannot be written (read-only)"
        hint = "Make it (and its folder) writable, or name another with --checkpoint."
    elif "malformed" in lower or "not a database" in lower or isinstance(exc, BAD_VALUES):
        why = f"it is corrupt or not a checkpoint ({text})"
        hint = "Start over with --restart (every order is sent again; Klaviyo drops repeats)."
    elif "unable to open" in lower:
        why = "it cannot be opened"
        hint = "Check that its folder exists and is writable, or name another with --checkpoint."
    elif "disk i/o" in lower:
        why, hint = "a disk error", "Check the disk, then continue with --resume."
    else:
        why, hint = text, "Continue with --resume, or start over with --restart."
    return CheckpointError(f"{what} {path}: {why}", hint)


_F = TypeVar("_F", bound=Callable[..., Any])


def guarded(what: str) -> Callable[[_F], _F]:
    """A method's SQLite errors (a full disk, a lock) as a CheckpointError naming the file of
    its object (`self.path`) as `what` ('checkpoint', 'account ledger')."""

    def decorate(method: _F) -> _F:
        @functools.wraps(method)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return method(self, *args, **kwargs)
            except sqlite3.Error as exc:
                raise trouble(self.path, exc, what) from None

        return cast(_F, wrapper)

    return decorate


def open_read_only(path: Path) -> sqlite3.Connection:
    """A database a command only reads (`status`, `verify`), opened so that it needs no
    write: `mode=ro` (a 0400 file, a file of a read-only mount whose folder still holds
    its -shm), else, where its folder takes no new file (a read-only folder or mount: no
    -shm can be made), `immutable` (read as it is on disk: a run that ended closed it, its
    write-ahead log merged in)."""
    for flags in ("mode=ro", "immutable=1"):
        db = sqlite3.connect(f"{path.absolute().as_uri()}?{flags}", uri=True,
                             isolation_level=None, check_same_thread=False)  # fmt: skip
        try:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return db
        except sqlite3.OperationalError:
            db.close()
            if flags != "mode=ro" or os.access(path.parent, os.W_OK):
                raise
    raise AssertionError("unreachable")


def create_private(path: Path, what: str = "checkpoint") -> None:
    """Create the database file 0600 (or make an old one so), never through a link planted
    in its place."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise trouble(path, exc, what) from None
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
