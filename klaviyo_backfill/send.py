"""Send encoded requests to Klaviyo: concurrent, throttled, retried, checkpointed.

    feeder (one thread: read -> map -> encode)  ->  queue  ->  N workers  ->  Klaviyo
                                                                  |
                                                    ledger (after each acknowledgement)

Retried: 429 (the whole sender pauses for Retry-After, or the wait the body names), 5xx,
connection errors and timeouts, with jittered exponential backoff, capped in attempts and
time. A 429 is Klaviyo pacing the account (which other apps share), not a failure: it uses no
attempt, only time. Not retried: 400/413/422 (the offending events are isolated and reported,
the rest resent), 401/403 and 410 (the run stops).
"""

from __future__ import annotations

import asyncio
import base64
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, cast

import httpx

from . import __version__
from .checkpoint import Landmarks, Ledger
from .encode import BULK_PATH, LEGACY_PATH, SINGLE_PATH, Encoder, Request
from .errors import AuthError, ExitCode, RetiredApiError, SendError, UsageError
from .model import Event, Rejection
from .pipeline import Failures, MappedOrder, Position
from .throttle import Limiter, Window

__all__ = ["GaveUp", "SendConfig", "SendStats", "Sender", "Tracker", "client_for", "loopback_only"]

_POINTER = re.compile(
    r"^/data/attributes/events-bulk-create/data/(\d+)(?:/attributes/events/data/(\d+))?"
)
_EXPECTED = re.compile(r"available in (\d+(?:\.\d+)?) second", re.IGNORECASE)
_PATHS = {"bulk": BULK_PATH, "single": SINGLE_PATH, "legacy": LEGACY_PATH}


@dataclass(frozen=True)
class SendConfig:
    base_url: str
    endpoint: str
    windows: tuple[Window, ...]
    api_key: str | None = field(default=None, repr=False)
    public_key: str | None = None
    revision: str = "2026-07-15"
    concurrency: int = 10
    timeout: float = 60.0
    max_attempts: int = 10
    max_retry_seconds: float = 900.0
    backoff_base: float = 0.5
    backoff_cap: float = 30.0

    def headers(self) -> dict[str, str]:
        headers = {"User-Agent": f"klaviyo-backfill/{__version__}"}
        if self.endpoint != "legacy":
            headers.update(
                {
                    "Authorization": f"Klaviyo-API-Key {self.api_key}",
                    "revision": self.revision,
                    "Content-Type": "application/vnd.api+json",
                    "Accept": "application/vnd.api+json",
                }
            )
        return headers


@dataclass
class SendStats:
    requests: int = 0
    acknowledged: int = 0  # requests
    events_sent: Counter[str] = field(default_factory=Counter)
    events_rejected: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    retry_causes: Counter[str] = field(default_factory=Counter)
    throttled: int = 0
    orders_sent: int = 0
    orders_with_rejections: int = 0


class Tracker:
    """Which orders still wait for events: an order is recorded once all its events are settled.

    It also keeps the resume point: the position of the first order not yet settled (or,
    with none pending, the position after the last order handed to the encoder), committed
    with each acknowledgement so that a resumed run can seek straight to it.
    """

    def __init__(
        self,
        ledger: Ledger | None,
        failures: Failures,
        stats: SendStats,
        landmarks: Landmarks | None = None,  # recorded with each resume point
    ) -> None:
        self.ledger, self.failures, self.stats = ledger, failures, stats
        self.landmarks = landmarks
        self.lock = threading.Lock()
        # order id -> [events left, source, line, any rejected, position]
        self.pending: dict[str, list[Any]] = {}
        self.frontier: Position | None = None
        self.inputs_rejected: list[tuple[Rejection, Position | None]] = []
        # (order id, detail) of Klaviyo's rejections in the failures file already: a resumed
        # run's earlier ones, so an order resent after a kill is not listed twice
        self.reported: set[tuple[str | None, str]] = set()

    def register(self, mapped: MappedOrder) -> None:
        with self.lock:
            entry = self.pending.setdefault(
                mapped.key, [0, mapped.source, mapped.line, False, mapped.at]
            )
            entry[0] += len(mapped.events)
            self.frontier = mapped.after

    def input_rejected(self, rejection: Rejection, at: Position) -> None:
        """An order the export itself could not give: kept for a resumed run's failures file."""
        with self.lock:
            self.inputs_rejected.append((rejection, at))

    def _watermark(self) -> Position | None:
        for entry in self.pending.values():
            return cast(Position, entry[4])  # the first pending order is the earliest
        return self.frontier

    def settle(self, sent: list[Event], rejected: list[tuple[Event, str]]) -> None:
        done: list[tuple[str, bool]] = []
        bad: list[tuple[Rejection, Position | None]] = []
        with self.lock:
            for event, reason in rejected:
                bad.append((self._klaviyo_rejected(event, reason), None))
            for event in sent:
                self.stats.events_sent[event.metric] += 1
            for event in [*sent, *(e for e, _ in rejected)]:
                entry = self.pending.get(event.order_id)
                if entry is None:
                    continue
                entry[0] -= 1
                if entry[0] <= 0:
                    del self.pending[event.order_id]
                    done.append((event.order_id, entry[3]))
                    if entry[3]:
                        self.stats.orders_with_rejections += 1
                    else:
                        self.stats.orders_sent += 1
            bad.extend(self.inputs_rejected)
            self.inputs_rejected = []
            watermark = self._watermark()
        if self.ledger is not None and (done or bad):
            mark = self.landmarks.at(watermark) if self.landmarks and watermark else ""
            self.ledger.record(done, bad, watermark, mark)

    def flush(self) -> None:
        """Commit what is settled but not yet recorded (input rejections at the end of a run)."""
        self.settle([], [])

    def _klaviyo_rejected(self, event: Event, reason: str) -> Rejection:
        entry = self.pending.get(event.order_id)
        if entry:
            entry[3] = True
        source, line = (entry[1], entry[2]) if entry else ("", None)
        rejection = Rejection(source, line, event.order_id, "rejected by Klaviyo",
                              f"{event.metric} {event.unique_id}: {reason}")  # fmt: skip
        if (rejection.order_id, rejection.detail) not in self.reported:
            self.reported.add((rejection.order_id, rejection.detail))
            self.failures.write(rejection)
        self.stats.events_rejected += 1
        self.stats.rejected[reason[:80]] += 1
        return rejection


def _errors(response: httpx.Response) -> list[dict[str, Any]]:
    try:
        body = response.json()
    except ValueError:
        return []
    errors = body.get("errors") if isinstance(body, dict) else None
    return [e for e in errors or () if isinstance(e, dict)]


def _detail(error: dict[str, Any]) -> str:
    return str(error.get("detail") or error.get("title") or error.get("code") or "invalid")


def retry_after(response: httpx.Response) -> float | None:
    """Retry-After in seconds, else the 'Expected available in N seconds' of the body."""
    header = response.headers.get("Retry-After")
    if header is not None:
        try:
            return max(0.0, float(header))
        except ValueError:
            pass
    for error in _errors(response):
        match = _EXPECTED.search(_detail(error))
        if match:
            return float(match.group(1))
    return None


def halves(entries: list[list[Event]]) -> tuple[list[list[Event]], list[list[Event]]]:
    """Split a request's events in two, keeping each profile's events together where it can."""
    flat = [(i, e) for i, entry in enumerate(entries) for e in entry]
    middle = len(flat) // 2

    def group(part: list[tuple[int, Event]]) -> list[list[Event]]:
        out: list[list[Event]] = []
        last = -1
        for i, event in part:
            if i != last:
                out.append([])
                last = i
            out[-1].append(event)
        return out

    return group(flat[:middle]), group(flat[middle:])


class _Retry(Exception):
    def __init__(self, cause: str, wait: float | None = None, throttled: bool = False) -> None:
        self.cause, self.wait, self.throttled = cause, wait, throttled


class GaveUp(SendError):
    """Retries ran out; the checkpoint holds everything acknowledged so far."""

    exit_code = ExitCode.GAVE_UP


class Sender:
    def __init__(
        self, config: SendConfig, encoder: Encoder, tracker: Tracker, client: httpx.AsyncClient
    ) -> None:
        self.config, self.encoder, self.tracker, self.client = config, encoder, tracker, client
        self.stats = tracker.stats
        self.limiter = Limiter(config.windows)
        self.stop = asyncio.Event()
        self.fatal: SendError | None = None
        self.url = config.base_url.rstrip("/") + _PATHS[config.endpoint]
        self.headers = config.headers()
        self.on_progress: Callable[[], None] = lambda: None

    # ------------------------------------------------------------ the run

    async def run(self, requests: Iterator[Request]) -> None:
        # requests ready to go: enough to keep every worker busy, few enough to bound memory
        queue: asyncio.Queue[Request | None] = asyncio.Queue(maxsize=self.config.concurrency)
        workers = [asyncio.create_task(self._worker(queue)) for _ in range(self.config.concurrency)]
        try:
            await self._feed(requests, queue)
        finally:
            for _ in workers:
                await queue.put(None)
            await asyncio.gather(*workers)
        if self.fatal is not None:
            raise self.fatal

    async def _feed(
        self, requests: Iterator[Request], queue: asyncio.Queue[Request | None]
    ) -> None:
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(1, thread_name_prefix="read") as pool:
            while not self.stop.is_set():
                request = await loop.run_in_executor(pool, next, requests, None)
                if request is None:
                    return
                await queue.put(request)

    async def _worker(self, queue: asyncio.Queue[Request | None]) -> None:
        while (request := await queue.get()) is not None:
            if not self.stop.is_set():
                await self.deliver(request)

    def halt(self, error: SendError | None = None) -> None:
        if error is not None and self.fatal is None:
            self.fatal = error
        self.stop.set()

    # ------------------------------------------------------------ one request

    async def deliver(self, request: Request) -> None:
        started = time.monotonic()
        failed = tries = 0  # failed: tries that were not a 429
        while not self.stop.is_set():
            tries += 1
            await self.limiter.acquire()
            try:
                await self._attempt(request)
                return
            except _Retry as retry:
                failed += not retry.throttled
                if not await self._backoff(retry, failed, tries, started):
                    return

    async def _backoff(self, retry: _Retry, attempt: int, tries: int, started: float) -> bool:
        config = self.config
        self.stats.retries += 1
        self.stats.retry_causes[retry.cause] += 1
        elapsed = time.monotonic() - started
        if attempt >= config.max_attempts or elapsed >= config.max_retry_seconds:
            self.halt(GaveUp(f"gave up after {tries} tries over {elapsed:.0f} s (last: {retry.cause})",
                             "Progress is saved: rerun with --resume when Klaviyo answers again."))  # fmt: skip
            return False
        wait = retry.wait
        if wait is None:
            wait = random.uniform(0, min(config.backoff_cap, config.backoff_base * 2**attempt))
        self.on_progress()
        await asyncio.sleep(wait)
        return True

    async def _post(self, request: Request) -> httpx.Response:
        self.stats.requests += 1
        if self.config.endpoint != "legacy":
            return await self.client.post(self.url, content=request.body, headers=self.headers)
        data = base64.b64encode(request.body).decode()
        if len(data) < 6000:
            return await self.client.get(self.url, params={"data": data}, headers=self.headers)
        return await self.client.post(
            self.url, data={"data": request.body.decode()}, headers=self.headers
        )

    async def _attempt(self, request: Request) -> None:
        started = time.monotonic()
        try:
            response = await self._post(request)
            self.limiter.observe(time.monotonic() - started)
        except httpx.TimeoutException as exc:
            raise _Retry(f"timeout ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise _Retry(f"connection error ({type(exc).__name__})") from None
        await self._answer(request, response)

    async def _answer(self, request: Request, response: httpx.Response) -> None:
        status = response.status_code
        if 200 <= status < 300:
            self._acknowledged(request, response)
        elif status == 429:
            self.stats.throttled += 1
            wait = retry_after(response)
            self.limiter.pause(wait if wait is not None else self.config.backoff_base * 4)
            raise _Retry("429 throttled", wait, throttled=True)
        elif status >= 500:
            raise _Retry(f"HTTP {status}")
        elif status in (401, 403):
            self.halt(AuthError(
                f"Klaviyo refused the API key (HTTP {status}).",
                "Check KLAVIYO_API_KEY (or --api-key): a private key (pk_...) with the events:write scope.",
            ))  # fmt: skip
        elif status == 410:
            self.halt(RetiredApiError(
                "Klaviyo answered 410 Gone: the Track API was retired on 2024-06-30.",
                "Use --endpoint bulk (the default), which replaces it.",
            ))  # fmt: skip
        elif status in (400, 413, 422):
            await self._isolate(request, response)
        else:
            self.halt(SendError(f"Klaviyo answered HTTP {status} to {self.url}"))

    def _acknowledged(self, request: Request, response: httpx.Response) -> None:
        if self.config.endpoint == "legacy" and response.text.strip() != "1":
            self.tracker.settle([], [(e, "Track API answered 0") for e in request.events])
        else:
            self.stats.acknowledged += 1
            self.tracker.settle(request.events, [])
        self.on_progress()

    async def _isolate(self, request: Request, response: httpx.Response) -> None:
        """Reject the events Klaviyo named, and send the rest again."""
        errors = _errors(response)
        details = "; ".join(_detail(e) for e in errors) or f"HTTP {response.status_code}"
        if len(request.events) == 1:
            self.tracker.settle([], [(request.events[0], details)])
            return
        bad = self._pointed(request, errors) if response.status_code != 413 else {}
        if not bad:
            for part in halves(request.entries):
                await self.deliver(self.encoder.rebuild(part))
            return
        rejected = [(e, reason) for e, reason in bad.values()]
        self.tracker.settle([], rejected)
        keep = [[e for e in entry if id(e) not in bad] for entry in request.entries]
        keep = [entry for entry in keep if entry]
        if keep:
            await self.deliver(self.encoder.rebuild(keep))

    def _pointed(
        self, request: Request, errors: list[dict[str, Any]]
    ) -> dict[int, tuple[Event, str]]:
        bad: dict[int, tuple[Event, str]] = {}
        if self.config.endpoint != "bulk":
            return bad
        for error in errors:
            pointer = str((error.get("source") or {}).get("pointer") or "")
            match = _POINTER.match(pointer)
            if match is None:
                return {}  # an error we cannot place: fall back to splitting
            i = int(match.group(1))
            if i >= len(request.entries):
                return {}
            entry = request.entries[i]
            if match.group(2) is None:
                targets = entry
            elif int(match.group(2)) < len(entry):
                targets = [entry[int(match.group(2))]]
            else:
                return {}
            for event in targets:
                bad[id(event)] = (event, _detail(error))
        return bad


def loopback_only(url: str) -> None:
    """TLS always; plain http:// only to this machine (tests, a local stand-in)."""
    parsed = httpx.URL(url)
    if parsed.scheme == "https":
        return
    if parsed.scheme == "http" and parsed.host in ("127.0.0.1", "localhost", "::1"):
        return
    raise UsageError(
        f"refusing to send to {parsed.scheme}://{parsed.host}: only https:// (or http:// to "
        "127.0.0.1/localhost for tests) is allowed",
    )


def client_for(config: SendConfig) -> httpx.AsyncClient:
    limits = httpx.Limits(
        max_connections=config.concurrency, max_keepalive_connections=config.concurrency
    )
    timeout = httpx.Timeout(config.timeout, connect=10.0)
    return httpx.AsyncClient(timeout=timeout, limits=limits, verify=True, follow_redirects=False)
