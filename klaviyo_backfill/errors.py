"""The one exception tree of klaviyo-backfill, and the exit codes it maps to.

    BackfillError                  (exit 2 unless said otherwise)
     ├── UsageError                a bad option or combination of options
     │    └── OverlapError         another integration's metric holds events in the send's months
     ├── InputError                a file that cannot be read at all (names file and line)
     │    ├── LayoutError          a layout file, or a column it names, that does not fit
     │    └── NotAnExport          a file that is no export (in a folder: skipped and listed)
     ├── CheckpointError           a checkpoint that does not belong to this run, or that
     │    │                        cannot be read or written (corrupt, read-only, disk full)
     │    └── UnfinishedRun        a new run over an unfinished one (--resume or --restart)
     ├── WorkerError               a worker process of a split dry run or inspect died
     ├── InternalError             an unexpected error in the sender: a bug, reported in one line
     ├── CertificateError          the server's TLS certificate is not trusted here
     ├── OutputError               --output stopped taking bodies during a send
     │    └── WriteError           the failures file or --log could not be written (a full
     │         │                   disk): the run stops, naming it
     │         └── LogError        --log
     ├── SendError                 (exit 3) Klaviyo refused the whole job
     │    ├── AuthError            401/403: key missing, wrong or lacking scope
     │    │    └── ScopeError      403 to a read: the key lacks the scope it names
     │    ├── RetiredApiError      410 from the retired Track API
     │    └── QueryError           a read Klaviyo refused (4xx), or an answer too large to read
     ├── GaveUp                    (exit 4) retries ran out; --resume continues
     └── Stopped                   a send that stopped on one of the above after it began
                                   (its exit code; how to continue)

`BackfillWarning` is the one warning category: a condition worth a line on stderr that does
not stop the run (a state folder others may write in, a key on the command line).

Row-level problems are not exceptions that escape: `FieldError` is raised while one
order is converted and becomes a rejection of that order, and the run goes on.
"""

from __future__ import annotations

import errno
import os
import re
from enum import IntEnum
from typing import Any

__all__ = [
    "AuthError",
    "BackfillError",
    "BackfillWarning",
    "CertificateError",
    "CheckpointError",
    "ExitCode",
    "FieldError",
    "GaveUp",
    "InputError",
    "InternalError",
    "LayoutError",
    "LogError",
    "NotAnExport",
    "OutputError",
    "OverlapError",
    "QueryError",
    "RetiredApiError",
    "ScopeError",
    "SendError",
    "Stopped",
    "UnfinishedRun",
    "UsageError",
    "WorkerError",
    "WriteError",
    "printable",
]


class ExitCode(IntEnum):
    """What a script can tell from the exit status (the README's table, test_docs holds them
    equal): 0 whenever everything asked for is done, nothing new to send included."""

    OK = 0  # done: sent (or, dry run and inspect, would be), verified, no overlap
    REJECTED = 1  # done, but some orders (or events) were rejected: see the failures file
    USAGE = 2  # unusable input, options or checkpoint; nothing more was done
    REFUSED = 3  # Klaviyo refused the job (auth, retired API)
    GAVE_UP = 4  # retries exhausted or Klaviyo unreachable; --resume continues
    SHORT = 5  # verify: Klaviyo holds less than was sent
    OVERLAP = 6  # preflight: another integration holds events of these metrics and months
    UNFINISHED = 7  # verify: the job is not finished (what it sent so far was compared)
    INTERRUPTED = 130  # Ctrl-C; progress is checkpointed, --resume continues
    TERMINATED = 143  # SIGTERM; the same


# ANSI escape sequences (CSI, OSC), then any other C0/C1 control or bidirectional override
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x9b[0-?]*[ -/]*[@-~]"
)
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str, keep_lines: bool = True) -> str:
    """Server text made safe to print: escape sequences and control characters (a terminal
    would obey them: clear the screen, retitle the window, hide what follows) taken out; a
    tab becomes a space, and so do line breaks unless `keep_lines`."""
    text = _CONTROLS.sub("", _ESCAPES.sub("", text)).replace("\t", " ")
    return text if keep_lines else text.replace("\r", " ").replace("\n", " ")


class BackfillError(Exception):
    """Base of every error this tool reports to a user."""

    exit_code: ExitCode = ExitCode.USAGE

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        """The message, and its hint on a line of its own: never a control character (a
        server's text in it, a terminal escape in a file's name, is printed inert)."""
        return printable(self.message if self.hint is None else f"{self.message}\n{self.hint}")

    def __reduce__(self) -> tuple[Any, ...]:
        """Picklable whatever a subclass's __init__ takes (a worker process raises these)."""
        return _rebuild, (type(self), self.args, self.__dict__)


def _rebuild(cls: type[BackfillError], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class Stopped(BackfillError):
    """A send that stopped on an error after it began: its summary is shown, then the error
    (`cause`, whose exit code it keeps) and, where the send can go on, how to continue."""

    def __init__(self, cause: BackfillError, continue_with: str | None = None) -> None:
        super().__init__(cause.message, cause.hint)
        self.cause = cause
        self.exit_code = cause.exit_code
        self.continue_with = continue_with


class BackfillWarning(UserWarning):
    """Said on stderr as "Warning: ...", and the run goes on."""


class UsageError(BackfillError):
    """An option, or a combination of options, that cannot work."""


class OverlapError(UsageError):
    """A new send whose metrics another integration (Shopify's own, say) already holds events
    of in the same months: sending would count those orders twice in Klaviyo's reports."""


class InputError(BackfillError):
    """A file that cannot be read at all."""

    def __init__(
        self, path: str, message: str, line: int | None = None, hint: str | None = None
    ) -> None:
        where = path if line is None else f"{path}:{line}"
        super().__init__(f"{where}: {message}", hint)
        self.path = path
        self.line = line
        self.what = message

    def at(self, path: str) -> InputError:
        """The same error, naming the file `path` (a stream's spooled copy: its own name)."""
        return type(self)(path, self.what, self.line, self.hint)


class LayoutError(InputError):
    """A layout file, or the columns it names, do not fit the export."""


class NotAnExport(InputError):
    """A file that is no export (empty, a spreadsheet, a note): named, it stops the run; in
    a folder, it is skipped and listed in the summary. `why` is the reason, on its own."""

    def __init__(
        self, path: str, why: str, line: int | None = None, hint: str | None = None
    ) -> None:
        super().__init__(path, why, line, hint)
        self.why = why


class CheckpointError(BackfillError):
    """A checkpoint that does not belong to this run, or a run that would overwrite one."""


class UnfinishedRun(CheckpointError):
    """A new run where an unfinished one has a checkpoint: it must be resumed or restarted
    (the command line adds the exact command that resumes it)."""

    command: str | None = None  # the command that continues it (commands/continuation.py)


class ExportChanged(CheckpointError):
    """An unfinished job whose export changed since it began (a later export saved over it):
    it cannot be continued; the new export is sent with --restart (the command line adds the
    exact command)."""

    command: str | None = None  # the same send with --restart (commands/continuation.py)


class InternalError(BackfillError):
    """An error nobody foresaw in the sender (a bug): the run stops, its checkpoint consistent,
    with one line naming it (the traceback goes to the log, -v or --log)."""


class CertificateError(BackfillError):
    """The server's TLS certificate could not be verified: a local matter (a proxy that
    inspects TLS, a missing CA bundle, a wrong base URL), never retried."""


class WorkerError(BackfillError):
    """A worker process preparing a piece of an export died (out of memory, or killed)."""


class OutputError(BackfillError):
    """--output could not be written during a real send (a closed pipe, a full disk): sending
    stops there, with what was acknowledged in the checkpoint."""

    def __init__(self, output: str, exc: OSError) -> None:
        where = "standard output" if output == "-" else output
        if isinstance(exc, BrokenPipeError):
            why = "its reader went away (broken pipe)"
        else:
            why = exc.strerror or str(exc)
        super().__init__(f"--output: {where} could not be written: {why}; sending stopped")
        self.broken_pipe = isinstance(exc, BrokenPipeError)


class WriteError(OutputError):
    """A file the run writes as it goes (the failures file, --log) could not be written (a
    full disk): the run stops there, resumable, naming the file."""

    def __init__(
        self, what: str, path: str, exc: OSError, option: str = "--failures FILE",
        full_hint: str = "Free some space there, then run again.",
    ) -> None:  # fmt: skip
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        BackfillError.__init__(
            self,
            f"{what} {os.path.abspath(path)} could not be written: {exc.strerror or exc}; the "
            "run stopped there (nothing is lost)",
            full_hint if full else "Its folder cannot be written in (or is gone): run from a "
            f"folder you may write in, or name the file with {option}, then run again.",
        )  # fmt: skip
        self.broken_pipe = False


class LogError(WriteError):
    """--log could not be written (a full disk): the run stops there, resumable, rather than
    going on with a log that lacks its end."""

    def __init__(self, path: str, exc: OSError) -> None:
        super().__init__("--log", path, exc, "--log FILE",
                         "Free some space there (or name another --log file), then run again.")  # fmt: skip


class SendError(BackfillError):
    """Klaviyo refused the whole job; sending more would not help."""

    exit_code = ExitCode.REFUSED


class AuthError(SendError):
    """The API key is missing, wrong, or lacks the events:write scope."""


class ScopeError(AuthError):
    """Klaviyo answered 403 to a read: the key lacks a scope it needs (or is not valid)."""

    def __init__(self, what: str, scopes: tuple[str, ...], detail: str) -> None:
        needed = " and ".join(scopes)
        super().__init__(
            f"Klaviyo refused the key for {what} (HTTP 403: {detail})",
            f"The key needs the {needed} scope{'s' if len(scopes) > 1 else ''}: add "
            f"{'them' if len(scopes) > 1 else 'it'} to the key in Klaviyo (Settings > API keys), "
            "or check KLAVIYO_API_KEY.",
        )
        self.scopes = scopes


class QueryError(SendError):
    """Klaviyo refused a read (a 4xx other than 401, 403 and 429), or answered more than a
    reader takes."""


class RetiredApiError(SendError):
    """The Track API answered 410 Gone."""


class GaveUp(BackfillError):
    """Retries ran out; the checkpoint holds everything acknowledged so far."""

    exit_code = ExitCode.GAVE_UP


class FieldError(ValueError):
    """One field of one order cannot be used; the order is rejected, the run goes on."""

    def __init__(self, field: str, value: object, reason: str) -> None:
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        super().__init__(f"{field}: {reason}" + ("" if value is None else f" ({shown})"))
        self.field = field
        self.value = value
        self.reason = reason
