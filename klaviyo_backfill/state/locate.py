"""Where a job's checkpoint is: the one locator every command uses. Checkpoints live in the
user's state folder, keyed by the exports' absolute paths and the Klaviyo account, so a run
from any folder finds them."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Literal

from .files import state_dir

Mode = Literal["new", "resume", "restart"]  # how a send opens its job's checkpoint


def _name(paths: list[str], account: str | None) -> str:
    """<first export's name>-<hash of every export's absolute path>[-<account>].sqlite"""
    key = "\n".join(sorted(os.path.abspath(p) for p in paths))
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    stem = "stdin" if paths[0] == "-" else Path(paths[0].rstrip("/")).stem or "export"
    suffix = f"-{account}" if account else ""
    return f"{stem}-{digest}{suffix}.sqlite"


def files_print(paths: list[str], names: list[str] | None = None) -> str | None:
    """What tells the files at these paths apart from a later one saved there (each one's
    name, size and first 64 KB), read from the files alone, as `status` can without the
    send's options; None where one is no regular file (standard input) or is gone.
    `names`: what each is called where the file read is a copy (standard input, spooled):
    the same data then gives the same print (by default, each its path)."""
    h = hashlib.sha256()
    for path, name in zip(paths, names or paths, strict=True):
        try:
            with open(path, "rb") as fh:
                if not os.path.isfile(path):
                    return None
                h.update(f"{name}|{os.fstat(fh.fileno()).st_size}\n".encode())
                h.update(fh.read(1 << 16))
        except OSError:
            return None
    return h.hexdigest()[:32]


def saved_over(inputs: str | None, was: str | None) -> bool:
    """Whether a job's exports (its checkpoint's `inputs`, as JSON) are no longer the files
    its send recorded (`files_print`, where it did): a later export saved over them."""
    try:
        paths = [str(p) for p in json.loads(inputs or "[]")] if was else []
    except ValueError:
        return False
    now = files_print(paths) if paths else None
    return now is not None and now != was


def restarted(command: str) -> str:
    """The continuation of a job whose export was saved over: the same send with --restart
    (the send refuses --resume for it, and prints this)."""
    return command.removesuffix(" --resume") + " --restart"


def checkpoints_dir() -> Path:
    """Where checkpoints live: the user's state folder, whatever the current folder."""
    return state_dir() / "checkpoints"


def default_path(paths: list[str], account: str) -> Path:
    """$XDG_STATE_HOME/klaviyo-backfill/checkpoints/<export>-<hash>-<account>.sqlite: keyed
    by the exports' absolute paths and the account, so a run from any folder finds it."""
    return checkpoints_dir() / _name(paths, account)


def locate(paths: list[str], account: str, mode: Mode, explicit: str | None = None) -> Path:
    """The checkpoint of these exports for this account: `explicit` if given, else the one in
    the state folder."""
    return Path(explicit) if explicit else default_path(paths, account)


def archive(path: Path) -> None:
    """Put a job's checkpoint aside, never delete it: a restart, or a new export saved over
    the old file, another window, starts a new job, and `verify` still counts what the old
    one sent (the account's history is never reset). checkpoints/archive/<name>~<time>.sqlite,
    with the failures file beside it (the new job's run would replace it: the rejected
    orders of another window would be listed nowhere)."""
    if not path.exists():
        return
    folder = path.parent / "archive"
    folder.mkdir(mode=0o700, exist_ok=True)
    stamp = f"{time.time():.6f}".replace(".", "")
    target = folder / f"{path.name.removesuffix('.sqlite')}~{stamp}.sqlite"
    with contextlib.suppress(FileNotFoundError):
        os.replace(failures_beside(path), failures_beside(target))
    move(path, target)


def move(path: Path, target: Path) -> None:
    """A checkpoint (an SQLite file) renamed with its -wal and -shm, the main file last: it
    names the others. One another run moved first is passed over."""
    for suffix in ("-wal", "-shm", ""):
        with contextlib.suppress(FileNotFoundError):
            os.replace(f"{path}{suffix}", f"{target}{suffix}")


def failures_beside(checkpoint: Path) -> Path:
    """The job's failures file: <checkpoint>.failures.jsonl, beside it."""
    return checkpoint.with_name(checkpoint.name.removesuffix(".sqlite") + ".failures.jsonl")


def archived(path: Path) -> list[Path]:
    """The earlier jobs of this checkpoint (`archive`), oldest first."""
    folder = path.parent / "archive"
    pattern = f"{path.name.removesuffix('.sqlite')}~*.sqlite"
    return sorted(folder.glob(pattern)) if folder.is_dir() else []


def discard(path: Path, earlier: bool = False) -> None:
    """Delete a checkpoint, with its -wal and -shm (and, `earlier`, its archived jobs)."""
    for old in archived(path) if earlier else []:
        discard(old)
        failures_beside(old).unlink(missing_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


_REPAIR = re.compile(r"\.sqlite\.repair(-\d+)?\.sqlite$")


def is_job(path: Path) -> bool:
    """A job's checkpoint, not a repair's (`<checkpoint>.repair[-N].sqlite`, beside it:
    commands/repair.py), which resends events the job holds already and is no job."""
    return _REPAIR.search(path.name) is None


def found_for(paths: list[str]) -> list[Path]:
    """Every checkpoint of these exports in the state folder: one per account."""
    pattern = _name(paths, None).removesuffix(".sqlite") + "-*.sqlite"
    folder = checkpoints_dir()
    return sorted(filter(is_job, folder.glob(pattern))) if folder.is_dir() else []
