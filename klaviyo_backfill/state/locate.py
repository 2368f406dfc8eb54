"""Where a job's checkpoint is: the one locator every command uses. Checkpoints live in the
user's state folder, keyed by the exports' absolute paths and the Klaviyo account, so a run
from any folder finds them."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Literal

from ..errors import CheckpointError
from .files import state_dir

Mode = Literal["new", "resume", "restart"]  # how a send opens its job's checkpoint


def _name(paths: list[str], account: str | None) -> str:
    """<first export's name>-<hash of every export's absolute path>[-<account>].sqlite"""
    key = "\n".join(sorted(os.path.abspath(p) for p in paths))
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    stem = "stdin" if paths[0] == "-" else Path(paths[0].rstrip("/")).stem or "export"
    suffix = f"-{account}" if account else ""
    return f"{stem}-{digest}{suffix}.sqlite"


def checkpoints_dir() -> Path:
    """Where checkpoints live: the user's state folder, whatever the current folder."""
    return state_dir() / "checkpoints"


def default_path(paths: list[str], account: str) -> Path:
    """$XDG_STATE_HOME/klaviyo-backfill/checkpoints/<export>-<hash>-<account>.sqlite: keyed
    by the exports' absolute paths and the account, so a run from any folder finds it."""
    return checkpoints_dir() / _name(paths, account)


def earlier_path(paths: list[str], account: str | None = None) -> Path:
    """Where versions before 0.3 kept it: ./.klaviyo-backfill/, under the folder the run was
    started from (without `account`: the name of versions before 0.2, for any account)."""
    return Path(".klaviyo-backfill") / _name(paths, account)


def locate(paths: list[str], account: str, mode: Mode, explicit: str | None = None) -> Path:
    """The checkpoint of these exports for this account: `explicit` if given, else the one in
    the state folder, unless an earlier version left one under the current folder (which is
    continued where it is; `--restart` discards it and starts afresh in the state folder).

    A checkpoint of versions before 0.2 (keyed by the exports alone, whichever account they
    went to) is never taken for this account's silently: resuming it must name it, so that a
    staging account's progress cannot hide orders from another."""
    if explicit:
        return Path(explicit)
    path, earlier = default_path(paths, account), earlier_path(paths, account)
    if mode == "restart":
        discard(earlier)
    elif earlier.exists() and not path.exists():
        return earlier
    older = earlier_path(paths)
    if mode == "resume" and not path.exists() and older.exists():
        raise CheckpointError(
            f"the checkpoint of these exports, {older}, was written by an earlier version, "
            "which did not record the Klaviyo account it sent to",
            f"If it was this account, continue it with --checkpoint {older} --resume.\n"
            "If not, run without --resume: everything is sent (Klaviyo drops repeats).",
        )
    return path


def discard(path: Path) -> None:
    """Delete a checkpoint, with its -wal and -shm."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def found_for(paths: list[str]) -> list[Path]:
    """Every checkpoint of these exports: one per account in the state folder, and those an
    earlier version left under the current folder (per account, and one without)."""
    pattern = _name(paths, None).removesuffix(".sqlite") + "-*.sqlite"
    found: list[Path] = []
    for folder in (checkpoints_dir(), Path(".klaviyo-backfill")):
        found.extend(sorted(folder.glob(pattern)) if folder.is_dir() else [])
    older = earlier_path(paths)
    return found + ([older] if older.exists() else [])
