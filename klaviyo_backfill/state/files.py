"""Files that hold customer data (--output, the failures file, the summary, the log, the
checkpoint): created 0600, opened without following a symbolic link planted in their place,
in folders created 0700 (with a warning where others may write in one).

A link is refused rather than followed: whoever can plant one where a file is about to be
written could otherwise have this tool overwrite, or reveal to them, any file it may write.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import warnings
from pathlib import Path
from typing import IO, Any

from ..errors import BackfillError, BackfillWarning, CheckpointError, UsageError

__all__ = [
    "inside_state",
    "open_private",
    "private_folder",
    "replace_private",
    "state_dir",
    "state_folder",
    "write_private",
]

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


def replace_private(path: str | Path, data: str, what: str) -> None:
    """A report (`--summary-json`, `--html`, `--json`) written whole, then put in place: a
    0600 file created beside `path` (never through a link), renamed over it. A link planted
    at `path` meanwhile is replaced, never followed; a reader never sees half a report. A
    path that is no regular file (/dev/stdout, a FIFO) is written as it is.
    An error (a full disk) is a UsageError naming the file and what was left as it was."""
    target = os.fspath(path)
    try:
        found = os.lstat(target)
    except OSError:
        found = None
    if found is not None and not stat.S_ISREG(found.st_mode) and not stat.S_ISLNK(found.st_mode):
        write_private(target, data, what)
        return
    folder, name = os.path.split(os.path.abspath(target))
    temporary = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with open(fd, "w", encoding="utf-8") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
    except OSError as exc:
        raise UsageError(
            f"{what} {target} could not be written: {exc.strerror or exc}",
            f"{target} was left as it was.",
        ) from None


def private_folder(folder: Path) -> None:
    """Create `folder` 0700 (its parents as the umask says). Inside the state folder the one
    rule of `state_folder` holds; elsewhere (a --checkpoint beside the export) a warning, once
    a run, when others may write in it: they could replace what this tool keeps there."""
    if inside_state(folder):
        state_folder(folder)
        return
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


_TREE = ("checkpoints", "accounts", "tmp")  # the state folder's own folders


def state_folder(folder: Path) -> Path:
    """`folder` of the state tree (the state folder itself, `checkpoints/`, `accounts/`,
    `tmp/`), created 0700 where missing; it and every folder above it up to the state folder
    must be a folder (not a link), the user's own, that no one else may write in. Otherwise
    a CheckpointError names it and the fix: whoever can write there could plant a ledger that
    makes later exports skip orders, or a checkpoint that says they were sent."""
    root, folder = Path(os.path.abspath(state_dir())), Path(os.path.abspath(folder))
    root.mkdir(mode=0o700, parents=True, exist_ok=True)  # above it: as the umask says
    chain = [root]
    if folder != root:
        for part in folder.relative_to(root).parts:
            chain.append(chain[-1] / part)
    for place in chain:
        place.mkdir(mode=0o700, exist_ok=True)  # each 0700, whatever the umask
    # the whole tree, whichever of its folders this run uses: the ones it holds already too
    chain += [root / name for name in _TREE if os.path.lexists(root / name)]
    for place in chain:
        found = os.lstat(place)
        if stat.S_ISLNK(found.st_mode) or not stat.S_ISDIR(found.st_mode):
            what = "a symbolic link" if stat.S_ISLNK(found.st_mode) else "not a folder"
            raise CheckpointError(
                f"the state folder {place} is {what}: refusing to keep state there",
                f"Make it a folder of your own: mv {place} {place}.old && mkdir -m 700 {place}",
            )
        if found.st_uid != os.getuid():
            raise CheckpointError(
                f"the state folder {place} belongs to another user (uid {found.st_uid}): "
                "refusing to trust what it holds",
                f"Move it aside and let the tool make its own: mv {place} {place}.old",
            )
        if found.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise CheckpointError(
                f"the state folder {place} is writable by other users (mode "
                f"{stat.S_IMODE(found.st_mode):o}): they could plant state that makes "
                "later exports skip orders",
                f"chmod 700 {place}",
            )
    return folder


def inside_state(folder: Path) -> bool:
    """Whether `folder` is in the state tree (where `state_folder`'s rule holds)."""
    try:
        Path(os.path.abspath(folder)).relative_to(os.path.abspath(state_dir()))
    except ValueError:
        return False
    return True


def state_dir() -> Path:
    """The user's state folder for this tool: $XDG_STATE_HOME/klaviyo-backfill, by default
    ~/.local/state/klaviyo-backfill."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return Path(base) / "klaviyo-backfill"
