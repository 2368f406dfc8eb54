"""Reading Klaviyo's answers: what came back, whether it is Klaviyo's JSON:API `errors`, their
detail, and how long to wait.

An answer is taken for Klaviyo's only on its own evidence: an error is Klaviyo's verdict when
its body is a JSON:API `errors` document, never because of its status alone (a captive portal,
an inspecting proxy or a CDN answers 200, 400 or 403 with a page of its own).
"""

from __future__ import annotations

import json
import math
import re
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

import httpx

from ..errors import QueryError

if TYPE_CHECKING:
    from .endpoints import ReadApi

__all__ = [
    "Answer",
    "Listing",
    "detail",
    "json_api_errors",
    "klaviyo_errors",
    "read_capped",
    "retry_after",
]

_EXPECTED = re.compile(r"available in (\d+(?:\.\d+)?) second", re.IGNORECASE)


@dataclass(frozen=True)
class Answer:
    """What came back for one request: its status, headers and (at most a capped part of) body."""

    status: int
    headers: httpx.Headers = field(default_factory=httpx.Headers)
    body: bytes = b""
    complete: bool = True  # False: the body was longer than the cap, and cut there

    @classmethod
    def of(cls, response: httpx.Response) -> Answer:
        """A response read whole (tests, httpx.MockTransport)."""
        return cls(response.status_code, response.headers, response.content)

    @property
    def content_type(self) -> str:
        return str(self.headers.get("Content-Type", "")).split(";")[0].strip().lower()

    def json(self) -> Any:
        """The body as JSON, or None when it is not JSON (or was cut)."""
        if not self.complete or "json" not in self.content_type:
            return None
        try:
            return json.loads(self.body)
        except (ValueError, RecursionError):
            return None

    def errors(self) -> list[dict[str, Any]] | None:
        """The `errors` of Klaviyo's JSON:API error body; None when the body is not one in
        Klaviyo's own shape (see `klaviyo_errors`): only such a body is Klaviyo's verdict."""
        return klaviyo_errors(self.json(), self.status)

    def describe(self) -> str:
        """'HTTP 200 text/html', for a message about an answer that is not Klaviyo's."""
        kind = self.content_type or ("no content type" if self.body else "an empty body")
        return f"HTTP {self.status} {kind}"


async def read_capped(response: httpx.Response, cap: int) -> tuple[bytes, bool]:
    """At most `cap` bytes of a streamed response's body, decompressed (gzip, deflate) a
    bounded piece at a time, so a 1 MB gzip that unpacks to 1 GB costs 1 MB; and whether
    that was all of it. A body in an encoding not asked for is not read at all."""
    try:
        whole = response.content  # read already: a response made in memory (tests)
    except httpx.ResponseNotRead:
        pass
    else:
        return whole[:cap], len(whole) <= cap
    encoding = str(response.headers.get("Content-Encoding", "")).strip().lower()
    if encoding in ("gzip", "x-gzip"):
        inflate: Any = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding == "deflate":
        inflate = zlib.decompressobj()
    elif encoding in ("", "identity"):
        inflate = None
    else:
        return b"", False
    parts: list[bytes] = []  # joined once (a page of events is ~10 chunks: growing one
    size = raw = 0  # buffer chunk by chunk, then copying it out, cost more than decoding it)
    try:
        async for chunk in response.aiter_raw():
            raw += len(chunk)
            if inflate is None:
                parts.append(chunk)
                size += len(chunk)
            else:
                data = chunk
                while data and size <= cap:
                    piece = inflate.decompress(data, cap + 1 - size)
                    parts.append(piece)
                    size += len(piece)
                    data = inflate.unconsumed_tail
            if size > cap or raw > cap:
                return b"".join(parts)[:cap], False
    except zlib.error:
        return b"".join(parts)[:cap], False
    return b"".join(parts), True


def json_api_errors(body: Any) -> list[dict[str, Any]] | None:
    """The error objects of a JSON:API `errors` document, or None when `body` is not one."""
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list) or not errors:
        return None
    found = [e for e in errors if isinstance(e, dict)]
    return found or None


def klaviyo_errors(body: Any, status: int) -> list[dict[str, Any]] | None:
    """The error objects of a JSON:API error document in Klaviyo's own shape, or None.

    Every object must be Klaviyo's: `code`, `title` and `detail` strings, a `status` equal to
    the answer's (Klaviyo writes it as a number; JSON:API allows the string), `id` a string
    where given, `source` an object whose `pointer`/`parameter` are strings. A CDN's
    `{"success": false, "errors": [{"code": 1000}]}`, or `{"errors": [{}]}`, is not one: it is
    a fault to retry, never a rejection of the events sent."""
    errors = body.get("errors") if isinstance(body, dict) else None
    if (
        not isinstance(errors, list)
        or not errors
        or set(body) - {"errors", "meta", "links", "jsonapi"}
    ):
        return None
    for error in errors:
        if not isinstance(error, dict) or not _klaviyos(error, status):
            return None
    return errors


def _klaviyos(error: dict[str, Any], status: int) -> bool:
    if not all(isinstance(error.get(name), str) for name in ("code", "title", "detail")):
        return False
    said = error.get("status")
    if isinstance(said, bool) or not isinstance(said, (int, str)) or str(said) != str(status):
        return False
    if not isinstance(error.get("id", ""), str):
        return False
    source = error.get("source", {})
    return isinstance(source, dict) and all(
        isinstance(source.get(name, ""), str) for name in ("pointer", "parameter")
    )


def detail(error: dict[str, Any]) -> str:
    return str(error.get("detail") or error.get("title") or error.get("code") or "invalid")


def retry_after(answer: Answer) -> float | None:
    """Retry-After in seconds (or an HTTP date), else the 'Expected available in N seconds' of
    the body. Uncapped: inf and nan come back as they are (the client caps every wait)."""
    header = answer.headers.get("Retry-After")
    if header is not None:
        try:
            seconds: float | None = float(header)
        except ValueError:
            seconds = _until(header)
        if seconds is not None:
            return seconds if math.isnan(seconds) else max(0.0, seconds)
    for error in json_api_errors(answer.json()) or ():  # a hint only: any shape will do
        match = _EXPECTED.search(detail(error))
        if match:
            return float(match.group(1))
    return None


def _until(date: str) -> float | None:
    """Seconds from now to an HTTP date ('Wed, 21 Oct 2015 07:28:00 GMT'), or None."""
    try:
        when = parsedate_to_datetime(date)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return (when - datetime.now(UTC)).total_seconds()


class Listing:
    """The pages of one listing read so far: the addresses visited (a loop is seen at its
    first step back, whatever the spelling of the address) and the bytes their answers took,
    against the listing's budget."""

    def __init__(self, api: ReadApi, budget: int) -> None:
        self.api, self.budget = api, budget
        self.what = f"{api.method} {api.path}"
        self.visited: set[tuple[str, str, int | None, str, tuple[tuple[str, str], ...]]] = set()
        self.used = 0

    @property
    def left(self) -> int:
        return max(0, self.budget - self.used)

    def visit(self, url: str, params: dict[str, str] | None) -> httpx.URL:
        """The next page is `url` (with `params`): its address, parsed once (and read so); a
        fault if read before, or one too many."""
        at = httpx.URL(url)
        if params:
            at = at.copy_merge_params(params)
        key = (
            at.scheme,
            at.host,
            at.port,
            at.path.rstrip("/"),
            tuple(sorted(at.params.multi_items())),
        )
        if key in self.visited:
            raise QueryError(
                f"{self.what}: a next link to a page read before (a loop of links, after "
                f"{len(self.visited):,} page{'s' if len(self.visited) > 1 else ''})",
                "Is KLAVIYO_BASE_URL right, or a proxy in the way?",
            )
        if len(self.visited) >= self.api.pages:
            raise QueryError(f"{self.what} gave more than {self.api.pages:,} pages")
        self.visited.add(key)
        return at

    def spend(self, size: int, whole: bool) -> None:
        """An answer of `size` bytes read (`whole`: to its end) for a page."""
        self.used += size
        if not whole and self.used >= self.budget:
            raise QueryError(
                f"{self.what}: answers over {self.budget:,} bytes in {len(self.visited):,} "
                "pages of one listing (far more than Klaviyo sends); stopped there",
                "Is KLAVIYO_BASE_URL right, or a proxy in the way?",
            )
