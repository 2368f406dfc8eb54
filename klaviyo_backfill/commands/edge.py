"""The command line's edge: where errors become messages and exit codes (no traceback ever
reaches a user), warnings become one line each, and the command that resumes a run is told."""

from __future__ import annotations

import logging
import os
import shlex
import sys
import warnings
from collections.abc import Callable
from functools import wraps
from typing import Any

import click

from ..errors import (
    BackfillError,
    BackfillWarning,
    ExitCode,
    ExportChanged,
    SendError,
    Stopped,
    UnfinishedRun,
)

__all__ = ["ask_key", "edge", "quiet_stdout", "resume_command"]


def edge(func: Callable[..., int]) -> Callable[..., None]:
    """The one place errors become messages: no traceback ever reaches a user."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        warnings_as_lines()
        try:
            code = func(*args, **kwargs)
        except UnfinishedRun as exc:
            click.echo(f"Error: {exc.message}", err=True)
            click.echo(f"Continue it with:\n  {exc.command or resume_command()}\n"
                       "or start its progress over with --restart (what the account holds "
                       "stays held).", err=True)  # fmt: skip
            sys.exit(int(exc.exit_code))
        except ExportChanged as exc:
            click.echo(f"Error: {exc}", err=True)
            if exc.command:
                click.echo(f"Send it with:\n  {exc.command}", err=True)
            sys.exit(int(exc.exit_code))
        except Stopped as exc:
            _logged(exc)
            click.echo(f"Error: {exc}", err=True)
            if exc.continue_with:  # after a refusal (SendError), once what it names is fixed
                then = (
                    "When that is fixed, continue"
                    if isinstance(exc.cause, SendError)
                    else "Continue"
                )
                click.echo(f"{then} with:\n  {exc.continue_with}", err=True)
            sys.exit(int(exc.exit_code))
        except BackfillError as exc:
            _logged(exc)
            click.echo(f"Error: {exc}", err=True)
            sys.exit(int(exc.exit_code))
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(int(ExitCode.INTERRUPTED))
        except BrokenPipeError:  # `... --output - | head`: the reader has what it wanted
            quiet_stdout()
            sys.exit(int(ExitCode.OK))
        except OSError as exc:  # a file this run writes: output, failures, checkpoint
            where = f"{exc.filename}: " if exc.filename else ""
            click.echo(f"Error: {where}{exc.strerror or exc}", err=True)
            sys.exit(int(ExitCode.USAGE))
        sys.exit(int(code))

    return wrapper


def _logged(exc: BackfillError) -> None:
    """The error that ends a run, as the last line of its --log (and -v's stderr)."""
    logging.getLogger("klaviyo_backfill").error("stopped: %s", exc.message)


def warnings_as_lines() -> None:
    """The core's BackfillWarnings as one "Warning: ..." line each on stderr."""
    shown = warnings.showwarning

    def show(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if issubclass(category, BackfillWarning):
            click.echo(f"Warning: {message}", err=True)
        else:
            shown(message, category, *args, **kwargs)

    warnings.showwarning = show
    warnings.simplefilter("default", BackfillWarning)


def quiet_stdout() -> None:
    """stdout's reader went away: point it at /dev/null so the exit flush does not fail."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def ask_key() -> str | None:
    if not sys.stdin.isatty():
        return None
    key: str = click.prompt("Klaviyo private API key", hide_input=True)
    return key


def resume_command() -> str:
    """The command line that continues this run, without the key and with --resume."""
    args, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
            continue
        if arg in ("--api-key", "--restart", "--resume", "--limit"):
            skip = arg in ("--api-key", "--limit")
            continue
        if arg.startswith(("--api-key=", "--limit=")):
            continue
        args.append(shlex.quote(arg))
    return " ".join(["klaviyo-backfill", *args, "--resume"])
