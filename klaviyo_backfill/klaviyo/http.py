"""HTTP for every Klaviyo endpoint, sending or reading: one bounded exchange (`within`), the
client (TLS verified; plain http only to this machine), the key's checks and its redaction."""

from __future__ import annotations

import asyncio
import base64
import re
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import TypeVar

import httpx

from ..errors import (
    CertificateError,
    UsageError,
    printable,
)
from .retry import Retry

T = TypeVar("T")


def certificate_failure(exc: BaseException) -> str | None:
    """Why the server's certificate was not trusted, when that is what failed."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLCertVerificationError):
            return str(seen.verify_message or seen.reason or "not trusted")
        seen = seen.__cause__ or seen.__context__
    return None


async def within(budget: float, url: str | httpx.URL, exchange: Awaitable[T]) -> T:
    """One exchange, the whole of it bounded by `budget` seconds (not each read): a timeout
    or a broken connection is a Retry (`unreachable` while the host has never answered this
    process: a short bounded retry), an untrusted certificate a CertificateError at once."""
    where = httpx.URL(url)
    try:
        async with asyncio.timeout(budget):
            answer = await exchange
    except TimeoutError:
        raise Retry(f"no complete answer within {budget:.0f} s") from None
    except httpx.TransportError as exc:
        reason = certificate_failure(exc)
        if reason is not None:
            raise untrusted(url, reason) from None
        raise unreachable(where, exc) from None
    _ANSWERED.add(where.netloc)
    return answer


_ANSWERED: set[bytes] = set()  # the hosts (and ports) that answered this process


def unreachable(where: httpx.URL, exc: httpx.TransportError) -> Retry:
    """A failed connection in words: the host, what happened, what to check; never a class
    name. Before the host's first answer it is `unreachable` (retried briefly: a wrong base
    URL or a dead network does not mend in minutes); after, a blip retried as usual."""
    host = where.host + (f":{where.port}" if where.port else "")
    cause, detail = _why(exc, host)
    first = where.netloc not in _ANSWERED
    hint = (
        f"Check the base URL (--base-url or KLAVIYO_BASE_URL; now {where.scheme}://{host}) and "
        "this machine's network: DNS, a proxy (HTTPS_PROXY), a firewall."
    )
    if not first:
        hint += " Progress is saved: rerun with --resume when it answers again."
    return Retry(cause, detail=detail, hint=hint, unreachable=first)


def _why(exc: httpx.TransportError, host: str) -> tuple[str, str]:
    """(a short cause, counted among retries; the sentence that names the host)."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            break
        if isinstance(seen, socket.gaierror):
            return "host not found", f"the host name {host} does not resolve (DNS)"
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused", f"{host} refused the connection"
        seen = seen.__cause__ or seen.__context__
    if isinstance(exc, httpx.ConnectTimeout):
        return "connect timeout", f"{host} did not answer a connection (timed out)"
    if isinstance(exc, httpx.TimeoutException):
        return "timeout", f"{host} stopped answering (timed out)"
    if isinstance(exc, httpx.ConnectError):
        said = str(exc) or "no reason given"
        return "connection error", f"could not connect to {host} ({said})"
    return "connection broken", f"the connection to {host} broke"


def untrusted(url: str | httpx.URL, reason: str) -> CertificateError:
    return CertificateError(
        f"the TLS certificate of {httpx.URL(url).host} could not be verified ({reason}): "
        "this machine does not trust it",
        "If a proxy or your network inspects TLS, point SSL_CERT_FILE at its CA bundle (a "
        "PEM file); otherwise check KLAVIYO_BASE_URL.",
    )


def clean_key(key: str | None, name: str) -> str | None:
    """A key as given, without the whitespace around it (a pasted line's end, a trailing
    space). A key with any other character that is not printable ASCII is refused before any
    request: it would fail as Klaviyo's refusal (or as a traceback) far from its cause."""
    if key is None:
        return None
    key = key.strip()
    for position, char in enumerate(key, 1):
        if not (char.isascii() and char.isprintable()) or char.isspace():
            kind = "a character that is not ASCII" if not char.isascii() else (
                "a space" if char == " " else "a control character"
            )  # fmt: skip
            raise UsageError(
                f"{name} has {kind} (at position {position} of {len(key)}): no Klaviyo key does",
                "Copy the key again from Klaviyo (Settings > API keys); it is never shown here.",
            )
    return key


class Redactor:
    """Takes the key out of a text a server wrote, in any form it may echo it: the key itself
    or its distinctive part (without `pk_`) in any case, hex, base64 (standard or URL-safe,
    at any alignment inside a longer base64 text), whatever follows `Klaviyo-API-Key` (an echo
    of the Authorization header); and every control character (terminal escapes) with it."""

    _HEADER = re.compile(r"(Klaviyo-API-Key)(\s*[:=]?\s*)[^\s\"',;]+", re.IGNORECASE)

    def __init__(self, *keys: str | None) -> None:
        secrets = {k for key in keys if key for k in (key, key.removeprefix("pk_"))}
        plain = sorted((k for k in secrets if len(k) >= 8), key=len, reverse=True)
        forms = {re.escape(k) for k in plain} | {k.encode().hex() for k in plain}
        for k in plain:
            forms |= {re.escape(form) for form in _base64_forms(k.encode())}
        ordered = sorted(forms, key=len, reverse=True)
        self.secrets = plain
        self._pattern = re.compile("|".join(ordered), re.IGNORECASE) if ordered else None

    def __call__(self, text: str) -> str:
        if self._pattern is not None:
            text = self._pattern.sub("[redacted]", text)
        return printable(self._HEADER.sub(r"\1\2[redacted]", text))


def _base64_forms(secret: bytes) -> set[str]:
    """The base64 text that stands for `secret` wherever it starts inside a longer text: for
    each of the three alignments, the characters that depend on its bytes alone."""
    forms = set()
    for shift in range(3):
        whole = (len(shift * b"\0" + secret) // 3) * 3
        encoded = base64.b64encode((shift * b"\0" + secret)[:whole]).decode()
        core = encoded[(0, 2, 3)[shift] :]
        if len(core) >= 8:
            forms |= {core, core.replace("+", "-").replace("/", "_")}
    return forms


_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def loopback_only(url: str) -> None:
    """A base URL with its scheme and without /api (the tool adds it); TLS always; plain
    http:// only to this machine (tests, a local stand-in); never a user name or password in
    the URL (it would be printed, logged, and sent)."""
    if "://" not in url:
        bare = url.strip().strip("/").removesuffix("/api")
        api = (
            " and ends in /api, which the tool adds itself"
            if bare != url.strip().strip("/")
            else ""
        )
        raise UsageError(
            f"the base URL {url!r} has no scheme{api}",
            f"Give it with https://, as in https://{bare} (--base-url or KLAVIYO_BASE_URL).",
        )
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise UsageError(
            f"the base URL {url!r} is not a URL ({exc})",
            "Give KLAVIYO_BASE_URL (or --base-url) as https://a.klaviyo.com, nothing around it.",
        ) from None
    if parsed.userinfo:
        shown = parsed.copy_with(username=None, password=None)
        raise UsageError(
            f"the base URL {shown} carries a user name or password (user:pass@): refused",
            "Give KLAVIYO_BASE_URL (or --base-url) without them.",
        )
    if parsed.path.rstrip("/").endswith("/api"):
        bare = url.rstrip("/").removesuffix("/api")
        raise UsageError(
            f"the base URL {url} ends in /api, which the tool adds to every request itself",
            f"Drop it: give {bare} (--base-url or KLAVIYO_BASE_URL).",
        )
    if parsed.scheme == "https" and parsed.host:
        return
    if parsed.scheme == "http" and parsed.host in _LOOPBACK:
        return
    raise UsageError(
        f"refusing to send to {url}: only https:// (or http:// to 127.0.0.1/localhost for "
        "tests) is allowed",
        f"Give the base URL as https://{parsed.host or 'a.klaviyo.com'}.",
    )


def http_client(
    base_url: str, timeout: float, connections: int, verify: ssl.SSLContext | None = None
) -> httpx.AsyncClient:
    """The HTTP client, for sends and reads: no redirects followed; proxies from the
    environment (HTTPS_PROXY...) except for a base URL on this machine, whose requests (and
    key) never go to a proxy; the CA bundle of SSL_CERT_FILE / SSL_CERT_DIR where set, else
    certifi's (`verify`: a context made so before)."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    local = httpx.URL(base_url).host in _LOOPBACK
    verify = verify or httpx.create_ssl_context(verify=True, trust_env=True)
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout, connect=10.0), limits=limits, verify=verify,
        follow_redirects=False, trust_env=not local,
    )  # fmt: skip


_LENT: ContextVar[tuple[object, httpx.AsyncClient] | None] = ContextVar("lent", default=None)


class Spares:
    """Clients of one connection each (`http_client`'s, one TLS context for all), each lent
    to one task at a time (a listing's pages, read one after the other): httpcore scans
    every connection of its pool at each request and each answer, ~2 ms of a page's CPU
    with 16 pooled; one connection a pool is one to scan."""

    def __init__(self, base_url: str, timeout: float) -> None:
        self.base_url, self.timeout = base_url, timeout
        self.verify = httpx.create_ssl_context(verify=True, trust_env=True)
        self.free: list[httpx.AsyncClient] = []
        self.made: list[httpx.AsyncClient] = []

    @asynccontextmanager
    async def lend(self) -> AsyncIterator[None]:
        """This task's requests go through one spare (`client`) until the block ends."""
        if self.free:
            client = self.free.pop()
        else:
            client = http_client(self.base_url, self.timeout, 1, self.verify)
            self.made.append(client)
        token = _LENT.set((self, client))
        try:
            yield
        finally:
            _LENT.reset(token)
            self.free.append(client)

    def client(self, default: httpx.AsyncClient) -> httpx.AsyncClient:
        """The client lent to this task, else `default`."""
        lent = _LENT.get()
        return lent[1] if lent is not None and lent[0] is self else default

    async def aclose(self) -> None:
        for client in self.made:
            await client.aclose()
