"""A job runs once: an advisory lock (flock) on `<checkpoint>.lock`, held for the whole run.

The operating system releases it when the process ends, however it ends (kill -9, a crash),
so no stale lock is ever left to clear, and two runs of one job started together can never
both send: the second is refused before it opens the checkpoint. The lock file stays in
place between runs (deleting it while another run holds it would let a third lock a new
file); it holds the id of the process that last held it, for the message.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path
from types import TracebackType

from ..errors import CheckpointError
from .sqlite import trouble

__all__ = ["JobLock", "lock_path", "locked"]

_OURS: set[Path] = set()  # the locks this process holds: never "another run's"


def lock_path(checkpoint: Path) -> Path:
    return Path(f"{checkpoint}.lock")


def _open(path: Path, checkpoint: Path) -> int:
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        return os.open(path, flags, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise CheckpointError(
                f"lock file {path} is a symbolic link: refusing to follow it",
                "Remove the link.",
            ) from None
        raise trouble(checkpoint, exc) from None  # its folder: read-only, full, missing


class JobLock:
    """Held from `__enter__` to `__exit__`; a second holder is refused at once."""

    def __init__(self, checkpoint: Path) -> None:
        self.checkpoint = checkpoint
        self.path = lock_path(checkpoint)
        self.fd: int | None = None

    def __enter__(self) -> JobLock:
        self.checkpoint.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = _open(self.path, self.checkpoint)
        try:
            _take(fd)
        except OSError as exc:
            holder = _holder(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise trouble(self.path, exc, "lock file") from None
            who = f"process {holder}" if holder else "another run"
            raise CheckpointError(
                f"{who} is sending with checkpoint {self.checkpoint} right now",
                "Let it finish (or stop it with Ctrl-C) before another run of the same export "
                "to the same account; `status` shows its progress.",
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:  # a full disk
            os.close(fd)
            raise trouble(self.path, exc, "lock file") from None
        self.fd = fd
        _OURS.add(self.path)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.fd is not None:
            _OURS.discard(self.path)
            os.close(self.fd)  # closing the descriptor releases the lock
            self.fd = None


def _take(fd: int) -> None:
    """The exclusive lock, or the error of a holder: tried a few times over a quarter of a
    second, as `locked` (status, verify) holds a shared lock for an instant to look."""
    for attempt in range(6):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if attempt == 5 or exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            time.sleep(0.05)


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return text if text.isdigit() else ""


def locked(checkpoint: Path) -> bool:
    """Whether another run holds this job's lock right now (the lock is tried, never kept)."""
    path = lock_path(checkpoint)
    if path in _OURS or not path.is_file() or path.is_symlink():
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False
