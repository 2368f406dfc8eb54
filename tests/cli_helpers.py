"""Running the CLI in tests: the console script's `main()` in a process of its own, forked from
this process's launcher (tests/launcher.py, which imported the package once), or in this
process with its rate windows on a test's clock (`in_process`); in an environment that does
not depend on who runs the tests (none of the user's KLAVIYO_* variables, proxies, certificate
paths or terminal size). Also: a free port for a server to listen on, the sample export, and
where runs keep their checkpoints (conftest gives every test its own state folder)."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from unittest import mock

from click.testing import CliRunner, Result
from launcher import Forked, Launcher

if TYPE_CHECKING:
    from standin import Clock

CLI = shutil.which("klaviyo-backfill", path=str(Path(sys.executable).parent)) or str(
    Path(sys.executable).parent / "klaviyo-backfill"
)
SAMPLES = Path(__file__).resolve().parent.parent / "sample_data"
EXPORT = SAMPLES / "shopify_orders_export.csv"  # 27 orders, every one of them sendable
FAST = ["--rate-limit", "100/s,1000/m", "-q"]  # far below the stand-in's limits' wait
_DROP = {"COLUMNS", "LINES", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY",
         "SSL_CERT_FILE", "SSL_CERT_DIR"}  # fmt: skip


def env(key: str | None = None, **extra: str) -> dict[str, str]:
    """This process's environment less what would make a run depend on who runs the tests,
    with KLAVIYO_API_KEY=key (none when None) and `extra`."""
    out = {k: v for k, v in os.environ.items()
           if not k.startswith("KLAVIYO_") and k.upper() not in _DROP}  # fmt: skip
    if key is not None:
        out["KLAVIYO_API_KEY"] = key
    out.update(extra)
    return out


_launcher: list[Launcher] = []
Stream = int | IO[Any] | None  # as subprocess.Popen takes one: PIPE, DEVNULL, a file, None


def _ends(how: Stream, ours_reads: bool, text: bool) -> tuple[IO[Any] | None, int]:
    """(the test's end of a stream, or None; the run's end, a file descriptor to close)."""
    if how == subprocess.PIPE:
        r, w = os.pipe()
        mode = ("r" if ours_reads else "w") + ("" if text else "b")
        return open(r if ours_reads else w, mode), (w if ours_reads else r)
    if how is None or how == subprocess.DEVNULL:
        return None, os.open(os.devnull, os.O_RDWR)
    return None, os.dup(how if isinstance(how, int) else how.fileno())


def launched(
    cwd: Path,
    variables: dict[str, str],
    args: tuple[str, ...],
    stdin: Stream = None,
    stdout: Stream = None,
    stderr: Stream = None,
    text: bool = False,
    memory: int | None = None,
) -> Forked:
    """The CLI started in `cwd` as subprocess.Popen starts it (stdin None: nothing to read),
    forked by this process's launcher (tests/launcher.py: no imports to wait for)."""
    if not _launcher or _launcher[0].owner != os.getpid():
        _launcher[:] = [Launcher(env())]
        atexit.register(_launcher[0].close)
    ends = {"stdin": _ends(stdin, False, text), "stdout": _ends(stdout, True, text),
            "stderr": _ends(stderr, True, text)}  # fmt: skip
    theirs = tuple(fd for _, fd in ends.values())
    try:
        pid, status = _launcher[0].start([CLI, *args], variables, cwd, theirs, memory)
    finally:
        for fd in theirs:
            os.close(fd)
    ours = {name: end for name, (end, _) in ends.items() if end is not None}
    return Forked([CLI, *args], pid, status, ours)


def run(
    cwd: Path,
    key: str | None,
    *args: str,
    timeout: float = 120,
    columns: int | None = 200,
    memory: int | None = None,
    stdin: str | None = None,
    **extra: str,
) -> subprocess.CompletedProcess[str]:
    """The CLI in `cwd` with KLAVIYO_API_KEY=key, `columns` wide (None: as a pipe is, 80),
    its address space limited to `memory` bytes (past it: MemoryError) when given; as
    subprocess.run(capture_output=True, text=True) says it."""
    variables = env(key, **({"COLUMNS": str(columns)} if columns else {}), **extra)
    given = subprocess.DEVNULL if stdin is None else subprocess.PIPE
    proc = launched(cwd, variables, args, given, subprocess.PIPE, subprocess.PIPE, text=True,
                    memory=memory)  # fmt: skip
    try:
        out, err = proc.communicate(stdin, timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def invoke(key: str | None, *args: str, **extra: str) -> Result:
    """The CLI in this process (click's runner: no process to start, and what it calls may be
    patched), in the environment `env` gives; the working folder is the test's to set."""
    from klaviyo_backfill.cli import main

    unset: dict[str, str | None] = {k: None for k in os.environ
                                    if k.startswith("KLAVIYO_") or k.upper() in _DROP}  # fmt: skip
    variables = unset | ({"KLAVIYO_API_KEY": key} if key is not None else {}) | extra
    return CliRunner().invoke(main, list(args), env=variables)


def in_process(
    cwd: Path, key: str | None, *args: str, clock: Clock, columns: int = 200, **extra: str
) -> subprocess.CompletedProcess[str]:
    """The CLI in this process, in `cwd`, every rate window it waits for (its sends', its
    reads') waited on `clock` (a standin.Clock: the stand-in's, so both skip the same time);
    what it did as `run` says it."""
    from klaviyo_backfill.klaviyo import reading, sender
    from klaviyo_backfill.klaviyo.throttle import Limiter

    clocked = partial(Limiter, clock=clock, sleep=clock.sleep)
    with (
        contextlib.chdir(cwd),
        mock.patch.object(sender, "Limiter", clocked),
        mock.patch.object(reading, "Limiter", clocked),
    ):
        done = invoke(key, *args, COLUMNS=str(columns), **extra)
    if done.exception is not None and not isinstance(done.exception, SystemExit):
        raise done.exception
    return subprocess.CompletedProcess(["klaviyo-backfill", *args], done.exit_code,
                                       done.stdout, done.stderr)  # fmt: skip


def popen(cwd: Path, key: str | None, *args: str, **extra: str) -> Forked:
    """The CLI started in `cwd`, its output and errors in pipes (text)."""
    return launched(cwd, env(key, **extra), args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    text=True)  # fmt: skip


def start(cwd: Path, key: str | None, name: str, *args: str, **extra: str) -> Forked:
    """The CLI started in `cwd`, its output and errors in files `name`.out and .err (no pipe
    to fill up while the test waits): read them with `logs`."""
    with open(cwd / f"{name}.out", "wb") as out, open(cwd / f"{name}.err", "wb") as err:
        return launched(cwd, env(key, **extra), args, stdout=out, stderr=err)


def logs(cwd: Path, name: str) -> str:
    """What a run `start`ed as `name` wrote: its output, then its errors."""
    return (cwd / f"{name}.out").read_text() + (cwd / f"{name}.err").read_text()


def said(done: subprocess.CompletedProcess[str]) -> str:
    """A finished run, for an assertion's message."""
    return f"exit {done.returncode}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"


def wait_until(
    condition: Callable[[], bool],
    proc: Forked | subprocess.Popen[bytes] | subprocess.Popen[str] | None = None,
    limit: float = 30,
    what: str | Callable[[], str] = "",
) -> None:
    """Until `condition()` holds; fails after `limit` seconds, or once `proc` (if given) ended,
    saying `what` (a callable: what it returns then, e.g. the run's output so far)."""
    deadline = time.monotonic() + limit
    while not condition():
        ended = proc is not None and proc.poll() is not None
        if ended or time.monotonic() > deadline:
            told = what() if callable(what) else what
            raise AssertionError(
                f"{'the run ended' if ended else f'{limit} s passed'} first {told}"
            )
        time.sleep(0.005)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def state_folder() -> Path:
    """This test's state folder (conftest's `own_state_folder`)."""
    return Path(os.environ["XDG_STATE_HOME"])


def checkpoints_in(state: Path | None = None) -> list[Path]:
    """The checkpoints runs kept in `state` (default: this test's state folder)."""
    folder = (state or state_folder()) / "klaviyo-backfill" / "checkpoints"
    return sorted(folder.glob("*.sqlite"))


def the_checkpoint(state: Path | None = None) -> Path:
    """The one checkpoint runs kept in `state` (default: this test's state folder)."""
    found = checkpoints_in(state)
    assert len(found) == 1, found
    return found[0]
