"""Starting the CLI for a test in a few milliseconds: a process that has imported the package
once forks a child for each run (cli_helpers.run, popen, start use it).

A fresh `klaviyo-backfill` spends ~0.3 s of CPU importing Python, click, httpx, rich,
phonenumbers and the package before it reads its first argument, and the tests start it
several hundred times. Here the child of a fork is the run: a process of its own (its own pid,
signals, exit code, standard streams, environment, working folder and limits), whose imports
were done before it was asked for; it then runs the console script's `main()` and exits as
the console script does. Its state is a fresh process's: default signal handlers, a reseeded
`random`, nothing the CLI ran before it.

    python tests/launcher.py klaviyo-backfill FD   (FD: a Unix socket to take runs from)

Each run is one message: a JSON header (argv, env, cwd, memory) with four file descriptors
(stdin, stdout, stderr, and a pipe to write its exit status to); the answer is its pid. The
status written is `Popen.returncode`'s (-N for a signal N). EOF on the socket ends it.
"""

from __future__ import annotations

import array
import contextlib
import importlib
import json
import os
import pkgutil
import random
import resource
import select
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

_HEADER = 1 << 16


def _serve(sock: socket.socket) -> dict[str, Any] | None:
    """Take runs until EOF; in each forked child, return its run; in the server, None."""
    running: dict[int, int] = {}  # pid -> its status pipe
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ)
    while True:
        ready = selector.select(timeout=0.005)
        while running:  # report every run that ended
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            out = running.pop(pid)
            os.write(out, f"{os.waitstatus_to_exitcode(status)}\n".encode())
            os.close(out)
        if not ready:
            continue
        fds = array.array("i")
        data, ancillary, _, _ = sock.recvmsg(_HEADER, socket.CMSG_SPACE(4 * fds.itemsize))
        if not data:
            for out in running.values():
                os.close(out)
            return None
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
        run = json.loads(data)
        pid = os.fork()
        if pid == 0:
            selector.close()
            sock.close()
            for out in running.values():
                os.close(out)
            run["fds"] = list(fds)
            return run  # type: ignore[no-any-return]
        stdin, stdout, stderr, status = fds
        for fd in (stdin, stdout, stderr):
            os.close(fd)
        running[pid] = status
        sock.sendall(json.dumps({"pid": pid}).encode())


def _become(run: dict[str, Any]) -> None:
    """This child becomes the run: its streams, folder, environment, limits and arguments."""
    stdin, stdout, stderr, status = run["fds"]
    os.close(status)
    for fd, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(run["cwd"])
    os.environ.clear()
    os.environ.update(run["env"])
    if run["memory"] is not None:
        resource.setrlimit(resource.RLIMIT_AS, (run["memory"], run["memory"]))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in (signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
    random.seed()
    sys.argv = run["argv"]


# ---------------------------------------------------------------- the test's side


class Forked:
    """A run the launcher forked, as subprocess.Popen shows one: pid, poll, wait,
    send_signal, kill, terminate, communicate, returncode, and stdin/stdout/stderr (file
    objects where a pipe was asked for)."""

    def __init__(self, args: list[str], pid: int, status: int, pipes: dict[str, IO[Any]]) -> None:
        self.args, self.pid, self.returncode = args, pid, None
        self._status = status
        self.stdin, self.stdout, self.stderr = (pipes.get(n) for n in ("stdin", "stdout", "stderr"))

    def _reap(self, timeout: float | None) -> bool:
        if self.returncode is None:
            if not select.select([self._status], [], [], timeout)[0]:
                return False
            told = b""
            while not told.endswith(b"\n"):
                chunk = os.read(self._status, 64)
                if not chunk:
                    raise RuntimeError(f"the launcher went away while {self.pid} ran")
                told += chunk
            os.close(self._status)
            self.returncode = int(told)
        return True

    def poll(self) -> int | None:
        self._reap(0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._reap(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def communicate(self, input: Any = None, timeout: float | None = None) -> tuple[Any, Any]:
        """Write `input`, read stdout and stderr to their ends, wait: as Popen does."""
        read: dict[str, Any] = {}

        def drain(name: str, stream: IO[Any]) -> None:
            read[name] = stream.read()
            stream.close()

        threads = [threading.Thread(target=drain, args=(n, s), daemon=True)
                   for n, s in (("out", self.stdout), ("err", self.stderr)) if s is not None]  # fmt: skip
        for thread in threads:
            thread.start()
        if self.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                if input:
                    self.stdin.write(input)
                self.stdin.close()
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
        self.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return read.get("out"), read.get("err")


class Launcher:
    """This test process's launcher, started at its first run, ended with the process."""

    def __init__(self, env: dict[str, str]) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.server = subprocess.Popen(
            [sys.executable, __file__, "klaviyo-backfill", str(theirs.fileno())],
            pass_fds=[theirs.fileno()], env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        theirs.close()
        self.sock, self.lock, self.owner = ours, threading.Lock(), os.getpid()

    def start(
        self,
        argv: list[str],
        env: dict[str, str],
        cwd: Path | str,
        streams: tuple[int, int, int],
        memory: int | None = None,
    ) -> tuple[int, int]:
        """Fork a run with these standard streams (file descriptors, kept by the caller):
        (its pid, the file descriptor its exit status will be written to)."""
        status, status_w = os.pipe()
        header = json.dumps({"argv": argv, "env": env, "cwd": str(cwd), "memory": memory})
        fds = array.array("i", [*streams, status_w])
        with self.lock:
            self.sock.sendmsg([header.encode()], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
            answer = self.sock.recv(_HEADER)
        os.close(status_w)
        if not answer:
            raise RuntimeError("the launcher ended (see its error above)")
        return int(json.loads(answer)["pid"]), status

    def close(self) -> None:
        if os.getpid() == self.owner:
            self.sock.close()
            self.server.wait(10)


def _preload() -> None:
    """Every module of the package, and so what each command imports at its top; and what
    phonenumbers loads and compiles at its first use (its metadata, the patterns of the
    countries the tests' orders come from): pure, so a child may inherit it."""
    import phonenumbers

    import klaviyo_backfill

    for module in pkgutil.walk_packages(klaviyo_backfill.__path__, "klaviyo_backfill."):
        if not module.name.endswith(".__main__"):
            importlib.import_module(module.name)
    phonenumbers.PhoneMetadata.load_all()
    for region in ("US", "CA", "GB", "FR", "DE", "JP", "IN", "AU", "IE", "ES", "IT", "NL"):
        example = phonenumbers.example_number(region)
        if example is not None:
            phonenumbers.is_valid_number(example)
            phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)


if __name__ == "__main__":
    _preload()
    job = _serve(socket.socket(fileno=int(sys.argv[2])))
    if job is None:
        sys.exit(0)
    _become(job)
    from klaviyo_backfill.cli import main

    sys.exit(main())
