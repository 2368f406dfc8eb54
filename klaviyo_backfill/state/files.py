"""Files that hold customer data (--output, the failures file, the summary, the log, the
checkpoint): created 0600, opened without following a symbolic link planted in their place,
in folders created 0700 (with a warning where others may write in one).

A link is refused rather than followed: whoever can plant one where a file is about to be
written could otherwise have this tool overwrite, or reveal to them, any file it may write.
"""

from __future__ import annotations

import errno
import os
import stat
import warnings
from pathlib import Path
from typing import IO, Any

from ..errors import BackfillError, BackfillWarning, UsageError

__all__ = ["open_private", "private_folder", "state_dir", "write_private"]

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def open_private(
    path: str | Path, what: str, text: bool = False, error: type[BackfillError] = UsageError
) -> IO[Any]:
    """`path` opened for writing from its start, 0600 (a regular file made so if it was not),
    never through a symbolic link. `what` names it in messages ('--output')."""
    try:
        fd = os.open(path, _FLAGS, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise error(
                f"{what} {path} is a symbolic link: refusing to follow it",
                "Name the file itself, not a link to it (or remove the link).",
            ) from None
        raise
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):  # not /dev/null, a FIFO or a terminal
            os.fchmod(fd, 0o600)
    except OSError:
        os.close(fd)
        raise
    if text:
        return open(fd, "w", encoding="utf-8")
    return open(fd, "wb")


def write_private(path: str | Path, data: str, what: str) -> None:
    with open_private(path, what, text=True) as fh:
        fh.write(data)


def private_folder(folder: Path) -> None:
    """Create `folder` 0700 (its parents as the umask says); warn, once a run, when others may
    write in it: they could replace what this tool keeps there."""
    if not folder.is_dir():
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        mode = folder.stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IWGRP | stat.S_IWOTH) and not mode & stat.S_ISVTX:
        warnings.warn(
            f"{folder} is writable by other users (mode {stat.S_IMODE(mode):o}): they could "
            f"replace the checkpoint kept there; chmod 700 {folder}",
            BackfillWarning,
            stacklevel=2,
        )


def state_dir() -> Path:
    """The user's state folder for this tool: $XDG_STATE_HOME/klaviyo-backfill, by default
    ~/.local/state/klaviyo-backfill."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return Path(base) / "klaviyo-backfill"
