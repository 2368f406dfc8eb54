"""Running the real CLI in tests: the console script of this venv, in an environment that does
not depend on who runs the tests (none of the user's KLAVIYO_* variables, proxies, certificate
paths or terminal size), a free port for a server to listen on, the sample export, and where
runs keep their checkpoints (conftest gives every test its own state folder)."""

from __future__ import annotations

import os
import resource
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

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
    its address space limited to `memory` bytes (past it: MemoryError) when given."""
    variables = env(key, **({"COLUMNS": str(columns)} if columns else {}), **extra)

    def limit() -> None:
        if memory is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    return subprocess.run([CLI, *args], cwd=cwd, env=variables, capture_output=True, text=True,
                          timeout=timeout, input=stdin, preexec_fn=limit)  # fmt: skip


def popen(cwd: Path, key: str | None, *args: str, **extra: str) -> subprocess.Popen[str]:
    """The CLI started in `cwd`, its output and errors in pipes (text)."""
    return subprocess.Popen([CLI, *args], cwd=cwd, env=env(key, **extra), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def start(
    cwd: Path, key: str | None, name: str, *args: str, **extra: str
) -> subprocess.Popen[bytes]:
    """The CLI started in `cwd`, its output and errors in files `name`.out and .err (no pipe
    to fill up while the test waits): read them with `logs`."""
    with open(cwd / f"{name}.out", "wb") as out, open(cwd / f"{name}.err", "wb") as err:
        return subprocess.Popen([CLI, *args], cwd=cwd, env=env(key, **extra), stdout=out,
                                stderr=err)  # fmt: skip


def logs(cwd: Path, name: str) -> str:
    """What a run `start`ed as `name` wrote: its output, then its errors."""
    return (cwd / f"{name}.out").read_text() + (cwd / f"{name}.err").read_text()


def said(done: subprocess.CompletedProcess[str]) -> str:
    """A finished run, for an assertion's message."""
    return f"exit {done.returncode}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"


def wait_until(
    condition: Callable[[], bool],
    proc: subprocess.Popen[bytes] | subprocess.Popen[str] | None = None,
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
