"""Where exports come from: files, folders and streams (`-`, FIFOs, spooled to a private
temporary file), and which layout reads each (detected from its first bytes, or named)."""

from __future__ import annotations

import atexit
import codecs
import errno
import os
import shutil
import stat
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from ..errors import InputError, NotAnExport
from .layouts import Layout

# A line, a CSV field or a JSON value longer than this is an error naming file and line, not
# a buffer that grows with the file (`/dev/zero` read as CSV). Shopify notes pass csv's 128 KB.
CAP = 64 << 20


SUFFIXES = (".csv", ".json", ".jsonl", ".ndjson", ".txt")


CHUNK = 1 << 16


@dataclass(frozen=True, slots=True)
class Input:
    path: str
    layout: Layout
    encoding: str
    # line items kept in a separate file (--products), by order id
    side_lines: dict[str, list[Any]] | None = None
    name: str | None = None  # what the user gave, where `path` is its spooled copy (spool)
    store: str | None = None  # `--store`: the store of every order that names none itself

    @property
    def shown(self) -> str:
        """The input as the user named it: in messages, the failures file, fingerprints."""
        return self.name or self.path


def is_stream(path: str) -> bool:
    """'-' (standard input) or a FIFO: data that can be read once only."""
    if path == "-":
        return True
    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except OSError:
        return False


# A stream is copied this far at most (a real export piped in fits many times over), and
# never so far that its disk is left with less than SPOOL_RESERVE free: past either, the run
# stops naming the stream, its copy removed at once.
SPOOL_CAP = 16 << 30
SPOOL_RESERVE = 256 << 20


def spool(path: str, cap: int | None = None) -> str:
    """A stream ('-' or a FIFO) read once, as it comes, into a private temporary file (0600
    in a 0700 folder, removed at exit), which is then read like any export: detected,
    fingerprinted, read, and for --resume checked against the stream given then. A stream
    whose first 64 MB hold no line break is refused as it comes (`cat /dev/zero |`); one
    longer than `cap` (SPOOL_CAP), or that would fill its disk, too.

    The folder is named with this process's id: a run killed with SIGKILL cannot remove it
    (nothing runs then), so the next run that spools removes those whose process is gone."""
    cap = SPOOL_CAP if cap is None else cap
    base = tempfile.gettempdir()
    _sweep(base)
    folder = tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=base)
    atexit.register(shutil.rmtree, folder, True)
    copy = os.path.join(folder, "stdin" if path == "-" else os.path.basename(path) or "stream")
    try:
        source = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
    except OSError as exc:
        raise InputError(path, f"cannot open: {exc.strerror}") from None
    unbroken = copied = 0  # bytes since the last line break; in all
    try:
        with open(os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
            while chunk := source.read(1 << 20):
                copied += len(chunk)
                if copied > cap or _free(folder) < SPOOL_RESERVE + len(chunk):
                    raise InputError(
                        path,
                        f"is a stream longer than {min(cap, copied) >> 20:,} MB, more than "
                        "this tool copies aside (or its disk has room for): save it to a file "
                        "and name the file",
                    )
                out.write(chunk)
                end = chunk.rfind(b"\n")
                unbroken = unbroken + len(chunk) if end < 0 else len(chunk) - end - 1
                if unbroken > CAP:
                    raise InputError(path, f"has a line longer than {CAP >> 20} MB: not an export?")
    except OSError as exc:
        shutil.rmtree(folder, True)  # customer data: gone at once, not at exit
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise InputError(path, f"could not be copied aside to {copy}: {exc.strerror}",
                         hint="Save it to a file and name the file (or set TMPDIR to a "
                         "folder with room).") from None  # fmt: skip
    except BaseException:
        shutil.rmtree(folder, True)  # customer data: gone at once, not at exit
        raise
    finally:
        if source is not sys.stdin.buffer:
            source.close()
    return copy


_PREFIX = "klaviyo-backfill-"


def _free(folder: str) -> int:
    try:
        found = os.statvfs(folder)
    except OSError:
        return 1 << 62
    return found.f_bavail * found.f_frsize


def _sweep(base: str) -> None:
    """Remove the spool folders of runs that are gone (killed with SIGKILL): each is named
    `klaviyo-backfill-<pid>-...`, and is this user's."""
    try:
        entries = os.scandir(base)
    except OSError:
        return
    with entries:
        for entry in entries:
            if not entry.name.startswith(_PREFIX):
                continue
            pid = entry.name[len(_PREFIX) :].split("-", 1)[0]
            try:
                mine = (
                    entry.is_dir(follow_symlinks=False)
                    and entry.stat(follow_symlinks=False).st_uid == os.getuid()
                )
            except OSError:
                continue
            if mine and pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(entry.path, True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


# spreadsheets, by their suffix: never an export as they are, but one "Save as CSV" away
SPREADSHEETS = {
    ".xlsx": "an Excel workbook", ".xlsm": "an Excel workbook", ".xls": "an Excel workbook",
    ".numbers": "a Numbers spreadsheet", ".ods": "an OpenDocument spreadsheet",
}  # fmt: skip


_SAVE_AS_CSV = (
    "Save it as CSV: in Excel, File > Save As > CSV UTF-8; in Numbers, File > Export To > CSV; "
    "in LibreOffice, File > Save As > Text CSV."
)


@dataclass(frozen=True, slots=True)
class Skipped:
    """A file or folder a folder given held besides its exports, and why it was not read."""

    path: str
    why: str


def gather(paths: list[str]) -> tuple[list[tuple[str, bool]], list[Skipped]]:
    """(file, named) for each file to read: as given (named), or a folder's files with an
    export's suffix, sorted by name; and what else the folders hold (hidden files aside)."""
    files: list[tuple[str, bool]] = []
    skipped: list[Skipped] = []
    for name in paths:
        path = Path(name)
        if not path.is_dir():
            files.append((name, True))
            continue
        for entry in sorted(path.iterdir()):
            suffix = entry.suffix.lower()
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                skipped.append(
                    Skipped(str(entry), "a folder: not read (only the files of a folder given are)")
                )
            elif suffix in SPREADSHEETS and is_workbook(str(entry)):
                skipped.append(
                    Skipped(str(entry), f"{SPREADSHEETS[suffix]}: save it as CSV to send it")
                )
            elif suffix not in SUFFIXES and suffix not in SPREADSHEETS:
                skipped.append(Skipped(str(entry), f"not an export ({suffix or 'no suffix'})"))
            elif entry.is_file():
                files.append((str(entry), False))
    return files, skipped


def is_workbook(path: str) -> bool:
    """Whether the file is a workbook by its content (a zip: xlsx, numbers, ods; an OLE
    file: xls), whatever its name says: `orders_export (1).xlsx` is often a CSV renamed."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(8)
    except OSError:
        return False  # said by the reader, with its own message
    return magic.startswith((b"PK\x03\x04", b"\xd0\xcf\x11\xe0"))


def check_not_a_spreadsheet(path: str) -> None:
    """A workbook, whatever its name says: NotAnExport, telling how to save it as CSV. A
    file named like a spreadsheet that holds text is read as the export it is."""
    if is_workbook(path):
        kind = SPREADSHEETS.get(Path(path).suffix.lower(), "an Excel workbook")
        raise NotAnExport(path, f"is {kind}, not a CSV or JSON export", hint=_SAVE_AS_CSV)


def open_text(path: str, encoding: str) -> TextIO:
    try:
        return open(path, encoding=encoding, newline="")
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except IsADirectoryError:
        raise InputError(path, "is a folder with no export files in it") from None
    except OSError as exc:
        raise InputError(path, f"cannot open: {exc.strerror}") from None
    except LookupError:
        raise InputError(path, f"unknown encoding {encoding!r}") from None


def _utf16(data: bytes) -> bool:
    """UTF-16 text: a byte order mark, or mostly NULs in every other byte (its ASCII)."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return True
    sample = data[:65536]
    half = len(sample) // 2
    zeros = sorted((sample[0::2].count(0), sample[1::2].count(0)))
    return half > 0 and zeros[1] > half // 2 and zeros[0] < half // 10


def decode_error(path: str, exc: UnicodeError, encoding: str, line: int | None) -> InputError:
    if not isinstance(exc, UnicodeDecodeError):  # e.g. utf-16 asked of a file without its BOM
        return InputError(path, f"cannot be decoded as {encoding} ({exc})", line,
                          hint="Name the file's own encoding with --encoding, or leave it out for UTF-8.")  # fmt: skip
    data = bytes(exc.object)
    asked16 = encoding.lower().replace("-", "").replace("_", "").startswith("utf16")
    if _utf16(data) and not asked16:
        hint = "The file looks like UTF-16: try --encoding utf-16."
    elif 0 in data[:65536] and not _utf16(data):
        hint = ("It is not text (a program's or a spreadsheet's own file?): give the orders "
                "export, saved as CSV.")  # fmt: skip
    else:
        hint = "Try --encoding latin-1 (or cp1252) if the file was saved by Excel."
    return InputError(
        path, f"cannot be decoded as {encoding} (byte 0x{data[exc.start]:02x})", line, hint=hint
    )
