"""Servers that are not Klaviyo, on 127.0.0.1, for the tests of answers the tool must not trust
(tests/test_hostile.py): a captive portal's login page, a proxy's error page, a server that
drips its headers, a gzip bomb, a server that echoes the key back.

    with Rogue(lambda request: Reply(200, {"Content-Type": "text/html"}, b"<html>")) as r:
        ...run the CLI against r.url...
        assert len(r.seen) == 3

`Reply.raw`, when given, writes the whole answer itself on the socket (a drip, a bomb).
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cli_helpers
from cli_helpers import CLI, EXPORT, env, said

__all__ = ["CLI", "env", "said"]  # tests reach these through this module too

ORDERS = 27  # orders in EXPORT, every one of them sendable
EVENTS = 111  # their events
KEY = "pk_rogue_" + secrets.token_hex(12)  # unique, so "appears nowhere" can be searched for
NO_METRICS = b'{"data": [], "links": {"self": "/api/metrics", "next": null}}'
ACCOUNT = (
    b'{"data": [{"type": "account", "id": "R0gue1", "attributes": {"timezone": "UTC",'
    b' "preferred_currency": "USD"}}], "links": {"self": "/api/accounts", "next": null}}'
)
LOGIN_PAGE = (
    b"<html><head><title>Sign in</title></head><body><form>Wi-Fi login</form></body></html>"
)


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    status: int = 202
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    raw: Callable[[socket.socket], None] | None = None  # writes the whole answer itself


class Rogue:
    def __init__(
        self,
        answer: Callable[[Seen], Reply],
        tls: tuple[str, str] | None = None,
        metrics: bool = True,
        account: bool = True,
    ) -> None:
        self.answer = answer
        self.tls = tls  # (certificate file, key file): https
        # GET /api/metrics answered as Klaviyo answers for an account with no other
        # integration (the overlap check of a new send), and GET /api/accounts with its
        # account (the account a send's history is kept under), kept out of `seen`
        self.metrics, self.account = metrics, account
        self.reads: list[Seen] = []
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        self.url = ""
        self._server: ThreadingHTTPServer | None = None

    def __enter__(self) -> Rogue:
        rogue = self

        class Handler(_Handler):
            owner = rogue

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        scheme = "http"
        if self.tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*self.tls)
            server.socket = context.wrap_socket(server.socket, server_side=True)
            scheme = "https"
        self._server = server
        self.url = f"{scheme}://127.0.0.1:{server.server_address[1]}"
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()  # fmt: skip
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    owner: Rogue
    protocol_version = "HTTP/1.1"
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_CONNECT(self) -> None:
        self._handle()

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        seen = Seen(self.command, self.path, dict(self.headers.items()), body)
        path = self.path.split("?")[0]
        read = NO_METRICS if self.owner.metrics and path.startswith("/api/metrics") else None
        read = ACCOUNT if self.owner.account and path == "/api/accounts" else read
        if self.command == "GET" and read is not None:
            with self.owner.lock:
                self.owner.reads.append(seen)
            reply = Reply(200, {"Content-Type": "application/vnd.api+json"}, read)
        else:
            with self.owner.lock:
                self.owner.seen.append(seen)
            reply = self.owner.answer(seen)
        if reply.raw is not None:
            self.close_connection = True
            with contextlib.suppress(OSError):  # the client went away: what these tests want
                reply.raw(self.connection)
            return
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        with contextlib.suppress(OSError):
            self.wfile.write(reply.body)


def drip(head: bytes, every: float, stop: threading.Event) -> Callable[[socket.socket], None]:
    """An answer whose status line and headers come a byte every `every` seconds, never ending
    (each read gets a byte long before any per-read timeout)."""

    def write(sock: socket.socket) -> None:
        for i in range(10**6):
            if stop.is_set():
                return
            sock.sendall(head[i % len(head) : i % len(head) + 1] if i < len(head) else b"X")
            time.sleep(every)

    return write


def self_signed(where: Path) -> tuple[str, str] | None:
    """A certificate for 127.0.0.1 that nobody trusts (None where openssl is missing)."""
    if shutil.which("openssl") is None:
        return None
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return str(cert), str(key)


MEMORY = 1 << 30  # address space a run may take in the tests of bounded memory


def cli(
    cwd: Path, *args: str, timeout: float = 60, key: str | None = KEY, **extra: Any
) -> subprocess.CompletedProcess[str]:
    """The console script, with the key in KLAVIYO_API_KEY (unless `key` is None); `memory`,
    `stdin` and the environment's `extra` as cli_helpers.run takes them."""
    return cli_helpers.run(cwd, key, *args, timeout=timeout, columns=None, **extra)


def popen(cwd: Path, *args: str, key: str = KEY, **extra: str) -> subprocess.Popen[str]:
    return cli_helpers.popen(cwd, key, *args, **extra)


def export_in(where: Path) -> Path:
    return Path(shutil.copy(EXPORT, where / "orders.csv"))
