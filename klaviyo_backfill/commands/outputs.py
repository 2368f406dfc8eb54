"""The files a command writes for its user besides its results: `--summary-json` and
`--log`, created private (state/files.py), and checked writable before any work."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import sys
from pathlib import Path
from typing import Any

from ..errors import LogError, UsageError
from ..state.files import open_private, replace_private


def refuse_inputs(paths: tuple[str, ...] | list[str], outputs: dict[str, str | None]) -> None:
    """Before any file is opened: an output option (`--failures`, `--output`, `--log`,
    `--summary-json`, `--html`, `--json`) that names one of the exports read, by any spelling
    of its path or a link to it (the same device and inode), is refused: writing it would
    truncate, delete or overwrite the export."""
    from ..inputs.sources import gather

    given = [p for p in paths if p != "-"]
    if not given or not any(outputs.values()):
        return
    files, _ = gather(given)
    exports: dict[tuple[int, int], str] = {}
    for name, _named in files:
        found = _identity(name)
        if found is not None:
            exports.setdefault(found, name)
    for option, path in outputs.items():
        if not path or path == "-":
            continue
        found = _identity(path)
        if found is not None and found in exports:
            raise UsageError(
                f"{option} {path} is the export {exports[found]}: writing it would destroy it",
                f"Name another file for {option}.",
            )


def _identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of a regular file, through links; None for anything else."""
    try:
        found = os.stat(path)
    except (OSError, ValueError):
        return None
    return (found.st_dev, found.st_ino) if stat.S_ISREG(found.st_mode) else None


def check_writable(path: str, option: str) -> None:
    """Before any work: a file the run writes at its end must be writable then ('-', the
    standard output, always is)."""
    if path == "-":
        return
    target = Path(path)
    if target.is_symlink():
        raise UsageError(f"{option} {path} is a symbolic link: refusing to follow it",
                         "Name the file itself, not a link to it (or remove the link).")  # fmt: skip
    folder = target.parent
    if target.is_dir() or not folder.is_dir() or not os.access(folder, os.W_OK):
        why = "is a folder" if target.is_dir() else f"cannot be written in {folder}"
        raise UsageError(f"{option} {path} {why}")
    if target.exists() and not os.access(target, os.W_OK):
        raise UsageError(f"{option} {path} cannot be written")


def write_json(path: str, data: dict[str, Any], option: str = "--summary-json") -> None:
    """JSON to a private file, or to the standard output for '-'."""
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    replace_private(path, text, option)


def write_report(path: str, text: str, option: str) -> None:
    """A report file (`--html`, `--json`): private, never through a link, put in place whole."""
    replace_private(path, text, option)


def configure_logging(verbose: int, log_file: str | None) -> None:
    """-v: retries, 429 pauses and isolation splits on stderr; -vv: every throttle wait and
    checkpoint commit too. --log FILE: all of it, to a file. Never the key, never personal
    data: lines name requests by their size and orders by their id."""
    root = logging.getLogger("klaviyo_backfill")
    if not verbose and not log_file:
        return
    root.setLevel(logging.DEBUG)
    fmt = logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s")
    if verbose:
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        handler.setLevel(logging.INFO if verbose == 1 else logging.DEBUG)
        handler.setFormatter(fmt)
        root.addHandler(handler)
    if log_file:
        handler = LogFile(log_file)
        handler.setFormatter(fmt)
        root.addHandler(handler)


class LogFile(logging.StreamHandler):  # type: ignore[type-arg]
    """--log FILE, private. A line it cannot write (a full disk) stops the run: the log call
    raises LogError naming the file, once (the run ends as on any error, resumable); the
    handler writes nothing more. Python's own handler printed "--- Logging error ---" with a
    traceback for every line and let the run go on with a log that lacks its end."""

    def __init__(self, path: str) -> None:
        super().__init__(open_private(path, "--log", text=True))
        self.path = path
        self.failed = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.failed:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        exc = sys.exc_info()[1]
        if not isinstance(exc, OSError):
            super().handleError(record)  # a bad format string: Python's report, and on
            return
        self.failed = True
        with contextlib.suppress(OSError):
            self.stream.close()  # what it buffers is lost with the disk's room: never again
        raise LogError(self.path, exc) from None

    def flush(self) -> None:
        if not self.failed:  # (closed once it failed)
            super().flush()


def checkpoints_shown() -> str:
    """The checkpoints' folder as --help shows it: $XDG_STATE_HOME honoured, home as ~."""
    from ..state.locate import checkpoints_dir

    folder, home = str(checkpoints_dir()), os.path.expanduser("~")
    if folder == home or folder.startswith(home.rstrip("/") + "/"):
        folder = "~" + folder[len(home) :]
    return folder + "/"
