"""Send encoded requests to Klaviyo: concurrent, throttled, retried; each answer settled.

    feeder (one thread: read -> map -> encode)  ->  queue  ->  N workers  ->  Klaviyo
                                                                  |
                                              settler (the checkpoint, after each answer)

Retried (klaviyo/retry.py): 429 (the whole sender pauses for Retry-After, or the wait the
body names), 5xx, connection errors and timeouts. Not retried: 400/413/422 (the offending
events are isolated and reported, the rest resent), 401/403 and 410 (the run stops).
This module knows requests and answers only: what an acknowledgement means for an order
is the `Settler`'s business.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import logging
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, fields, replace
from typing import Any, Protocol

import httpx

from .. import __version__
from ..errors import (
    AuthError,
    BackfillError,
    CertificateError,
    GaveUp,
    InternalError,
    RetiredApiError,
    SendError,
    UsageError,
)
from ..mapping.encode import Encoder, Request
from ..model import Event
from .account import account_id
from .answers import Answer, detail, read_capped, retry_after
from .endpoints import DEFAULT_REVISION, Endpoint, Window
from .http import Redactor, http_client, within
from .retry import Attempts, Retry, RetryPolicy
from .throttle import Limiter, Wait

log = logging.getLogger("klaviyo_backfill.client")


@dataclass(frozen=True)
class SendConfig:
    base_url: str
    endpoint: Endpoint
    windows: tuple[Window, ...]
    api_key: str | None = field(default=None, repr=False)
    public_key: str | None = field(default=None, repr=False)
    revision: str = DEFAULT_REVISION
    concurrency: int = 10
    timeout: float = 60.0  # seconds without a byte, connecting aside (10 s)
    deadline: float = 300.0  # one try's whole exchange, however its bytes trickle in
    grace: float = 10.0  # after Ctrl-C or SIGTERM, for the requests in flight
    body_cap: int = 1 << 20  # bytes of an answer's body read at most (decompressed)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    # the account its history is kept under (commands/account.py): Klaviyo's id where the
    # key may read it, else the keyed hash; None: the keyed hash, unread
    history: str | None = None

    @property
    def account(self) -> str:
        """The account this config sends to (klaviyo/account.py): Klaviyo's id where the key
        may read it, else a keyed hash; never the key itself."""
        if self.history:
            return self.history
        return account_id(self.base_url, self.api_key or self.public_key or "")

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + self.endpoint.path

    def headers(self) -> dict[str, str]:
        headers = {
            "User-Agent": f"klaviyo-backfill/{__version__}",
            "Accept-Encoding": "gzip, deflate",  # what read_capped decompresses
        }
        if self.endpoint.versioned:
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
    # of them, those with the RateLimit-* headers Klaviyo sends with a real acknowledgement:
    # corroboration where present, never required (a 202 with no body is all Klaviyo owes)
    corroborated: int = 0
    events_sent: Counter[str] = field(default_factory=Counter)
    events_rejected: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    retry_causes: Counter[str] = field(default_factory=Counter)
    throttled: int = 0
    orders_sent: int = 0
    orders_with_rejections: int = 0
    in_flight: int = 0  # requests sent and not yet answered


class Settler(Protocol):
    """Told of every event's fate, once: taken by Klaviyo, or refused with a reason."""

    stats: SendStats

    def settle(self, sent: list[Event], rejected: list[tuple[Event, str]]) -> None: ...


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


class Sender:
    def __init__(
        self, config: SendConfig, encoder: Encoder, settler: Settler, client: httpx.AsyncClient
    ) -> None:
        self.config, self.encoder, self.settler, self.client = config, encoder, settler, client
        self.stats = settler.stats
        self.limiter = Limiter(config.windows)
        self.stop = asyncio.Event()
        self.fatal: BackfillError | None = None
        self.url = config.url
        self.headers = config.headers()
        self.on_progress: Callable[[], None] = lambda: None
        self._workers: list[asyncio.Task[None]] = []
        self.redact = Redactor(config.api_key, config.public_key)

    # ------------------------------------------------------------ the run

    async def run(self, requests: Iterator[Request]) -> None:
        """Send every request; return when all are settled, or soon after the run stops
        (`halt`, `interrupt`): requests in flight then finish, or are abandoned after
        `config.grace` seconds, and those not sent stay unsent (the checkpoint resends them)."""
        # requests ready to go: enough to keep every worker busy, few enough to bound memory
        queue: asyncio.Queue[Request] = asyncio.Queue(maxsize=self.config.concurrency)
        self._workers = [
            asyncio.create_task(self._worker(queue)) for _ in range(self.config.concurrency)
        ]
        reading = _Reading(requests, queue, asyncio.get_running_loop(), self.stop)
        try:
            await self._unless_stopped(reading.done.wait())
            if not self.stop.is_set():  # everything is read: the workers empty the queue
                await self._unless_stopped(queue.join())
            while not queue.empty():  # stopped: what was not sent stays unsent
                queue.get_nowait()
                queue.task_done()
            await queue.join()  # requests in flight end (bounded: try deadline, grace)
        finally:
            for worker in self._workers:
                worker.cancel()  # idle now, each waiting for a request
            await asyncio.wait(self._workers)
            reading.finish(self.config.grace)
        if self.fatal is not None:
            raise self.fatal
        if reading.error is not None:
            raise reading.error

    async def _unless_stopped(self, waiting: Awaitable[Any]) -> None:
        """Wait for `waiting`, or until the run stops, whichever comes first."""
        task = asyncio.ensure_future(waiting)
        stopped = asyncio.ensure_future(self.stop.wait())
        try:
            await asyncio.wait((task, stopped), return_when=asyncio.FIRST_COMPLETED)
        finally:
            task.cancel()
            stopped.cancel()

    async def _worker(self, queue: asyncio.Queue[Request]) -> None:
        """Deliver requests until cancelled. Any error ends the run (never the worker alone,
        which would leave the queue full and the run waiting for ever)."""
        while True:
            request = await queue.get()
            try:
                if not self.stop.is_set():
                    await self.deliver(request)
            except BackfillError as exc:  # the settler's: a checkpoint that cannot be written
                self.halt(exc)
            except Exception as exc:
                self.halt(_unexpected(exc))
            finally:
                queue.task_done()

    def halt(self, error: BackfillError | None = None) -> None:
        if error is not None and self.fatal is None:
            self.fatal = error
        self.stop.set()

    def interrupt(self) -> None:
        """Ctrl-C, SIGTERM: take no new request; those in flight get `config.grace` seconds."""
        self.halt()
        asyncio.get_running_loop().call_later(self.config.grace, self.abandon)

    def abandon(self) -> None:
        """A second Ctrl-C, or the grace ran out: requests in flight are dropped unanswered."""
        self.halt()
        for worker in self._workers:
            worker.cancel()

    # ------------------------------------------------------------ one request

    async def deliver(self, request: Request) -> None:
        what = f"a request of {len(request.events)} events ({len(request.body):,} bytes)"
        limiter = self.limiter  # its clock and sleep time the retries' waits too
        attempts = Attempts(self.config.retry, what, limiter.clock)
        while not self.stop.is_set():
            attempts.tries += 1
            if not await self.limiter.acquire(self.stop):
                return  # stopped while waiting for its turn
            try:
                try:
                    answer = await self._attempt(request, attempts.left())
                finally:
                    # its answer is back (or it failed): it reached Klaviyo by now, if at all.
                    # Told before the answer is settled, which takes the checkpoint's time
                    self.limiter.done()
                if answer is not None:
                    await self._answer(request, answer)
                return
            except Retry as retry:
                self.stats.retries += 1
                self.stats.retry_causes[retry.cause] += 1
                try:
                    wait = attempts.wait_after(retry)
                except GaveUp as exc:
                    self.halt(exc)
                    return
                if not retry.throttled:  # a 429's wait is the limiter's pause, told there
                    now = limiter.clock()
                    self.limiter.tell(Wait(wait, now + wait, "retry", detail=retry.cause))
                self.on_progress()
                await limiter.nap(wait, self.stop)  # unless the run stops first

    def _build(self, request: Request) -> httpx.Request:
        if self.config.endpoint.versioned:
            return self.client.build_request(
                "POST", self.url, content=request.body, headers=self.headers
            )
        data = base64.b64encode(request.body).decode()
        if len(data) < 6000:
            return self.client.build_request(
                "GET", self.url, params={"data": data}, headers=self.headers
            )
        return self.client.build_request(
            "POST", self.url, data={"data": request.body.decode()}, headers=self.headers
        )

    async def _exchange(self, request: Request) -> Answer:
        """Send one request; its answer's body read up to `config.body_cap` bytes (after
        decompression, itself bounded): a server cannot make this process grow."""
        self.stats.requests += 1
        self.stats.in_flight += 1
        try:
            response = await self.client.send(self._build(request), stream=True)
            try:
                body, complete = await read_capped(response, self.config.body_cap)
            finally:
                await response.aclose()
        finally:
            self.stats.in_flight -= 1
        return Answer(response.status_code, response.headers, body, complete)

    async def _attempt(self, request: Request, left: float) -> Answer | None:
        """One try, its whole exchange bounded: `config.deadline`, or the request's time left
        (None: the run stops, as a certificate Klaviyo's name does not match)."""
        budget = max(0.001, min(self.config.deadline, left))
        try:
            return await within(budget, self.url, self._exchange(request))
        except CertificateError as exc:
            self.halt(exc)
            return None

    async def _answer(self, request: Request, answer: Answer) -> None:
        """Klaviyo's acknowledgement, its throttling, its verdict on the request; or an
        answer that is not Klaviyo's, retried as a fault and never recorded."""
        endpoint, status = self.config.endpoint, answer.status
        if endpoint.acknowledged(status, answer.content_type, answer.body):
            self.stats.acknowledged += 1
            if "RateLimit-Remaining" in answer.headers or "RateLimit-Limit" in answer.headers:
                self.stats.corroborated += 1
            self.settler.settle(request.events, [])
            self.on_progress()
            return
        if endpoint.dropped(status, answer.body):
            self.settler.settle([], [(e, "Track API answered 0") for e in request.events])
            self.on_progress()
            return
        if status == 429:
            self.stats.throttled += 1
            wait = self.config.retry.capped(retry_after(answer))
            self.limiter.pause(wait if wait is not None else self.config.retry.backoff_base * 4)
            raise Retry("429 throttled", wait, throttled=True)
        if status >= 500:
            raise Retry(f"HTTP {status}")
        errors = answer.errors()
        if status == 410 and not endpoint.versioned:  # the retired Track API, whatever it says
            self.halt(RetiredApiError(
                "Klaviyo answered 410 Gone: the Track API was retired on 2024-06-30.",
                "Use --endpoint bulk (the default), which replaces it.",
            ))  # fmt: skip
        elif errors is None or not 400 <= status < 500:
            raise self._not_klaviyo(answer)
        elif status in (401, 403):
            self.halt(AuthError(
                f"Klaviyo refused the API key (HTTP {status}).",
                "Check KLAVIYO_API_KEY (or --api-key): a private key (pk_...) with the events:write scope.",
            ))  # fmt: skip
        elif status in (400, 413, 422):
            await self._isolate(request, errors, pointed=status != 413)
        else:
            details = "; ".join(self._detail(e) for e in errors)
            self.halt(SendError(f"Klaviyo answered HTTP {status} to {self.url}: {details[:300]}"))

    def _detail(self, error: dict[str, Any]) -> str:
        """An error's detail as Klaviyo wrote it, the key taken out (an echo of the header)."""
        return self.redact(detail(error))

    def _not_klaviyo(self, answer: Answer) -> Retry:
        """An answer that is not Klaviyo's (a login page, a proxy, a wrong base URL): a fault."""
        what = self.redact(answer.describe())
        location = self.redact(answer.headers.get("Location") or "") or None
        moved = (
            f" (redirected to {location[:200]})" if location and 300 <= answer.status < 400 else ""
        )
        return Retry(
            f"{what}: not Klaviyo's answer",
            detail=f"{what} from {self.url}{moved}: is KLAVIYO_BASE_URL right, "
            "or a proxy in the way?",
            hint="Nothing was recorded as sent for it. Progress is saved: rerun with --resume "
            "once the base URL answers as Klaviyo.",
        )

    async def _isolate(
        self, request: Request, errors: list[dict[str, Any]], pointed: bool = True
    ) -> None:
        """Reject the events Klaviyo named, and send the rest again."""
        details = "; ".join(self._detail(e) for e in errors)
        if len(request.events) == 1:
            self.settler.settle([], [(request.events[0], details)])
            return
        bad = self._pointed(request, errors) if pointed else {}
        if not bad:
            log.info("isolating: Klaviyo refused a request of %d events (%s) without naming "
                     "them: sending it again in two halves", len(request.events), details[:200])  # fmt: skip
            for part in halves(request.entries):
                await self.deliver(self.encoder.rebuild(part))
            return
        rejected = [(e, reason) for e, reason in bad.values()]
        log.info("isolating: Klaviyo refused %d of %d events; resending the rest",
                 len(rejected), len(request.events))  # fmt: skip
        self.settler.settle([], rejected)
        keep = [[e for e in entry if id(e) not in bad] for entry in request.entries]
        keep = [entry for entry in keep if entry]
        if keep:
            await self.deliver(self.encoder.rebuild(keep))

    def _pointed(
        self, request: Request, errors: list[dict[str, Any]]
    ) -> dict[int, tuple[Event, str]]:
        bad: dict[int, tuple[Event, str]] = {}
        pattern = self.config.endpoint.pointer
        if pattern is None:
            return bad
        for error in errors:
            pointer = str((error.get("source") or {}).get("pointer") or "")
            match = pattern.match(pointer)
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
                bad[id(event)] = (event, self._detail(error))
        return bad


def tuned(config: SendConfig, text: str) -> SendConfig:
    """The config with some of its limits changed: 'max_attempts=2,backoff_base=0.01,...'
    names fields of SendConfig or of its RetryPolicy (the hidden --tuning option: tests, and
    networks that need more patience)."""
    ours = {f.name for f in fields(SendConfig)} & _TUNABLE
    theirs = {f.name for f in fields(RetryPolicy)}
    changes: dict[str, dict[str, Any]] = {"config": {}, "retry": {}}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        name = name.strip().replace("-", "_")
        where = "config" if name in ours else "retry" if name in theirs else None
        try:
            number = float(value)
        except ValueError:
            where = None
        if where is None or not number >= 0 or number == float("inf"):
            raise UsageError(f"--tuning {part!r} is not understood",
                             f"Names: {', '.join(sorted(ours | theirs))}; values: numbers.")  # fmt: skip
        changes[where][name] = int(number) if name in _WHOLE else number
    retry = replace(config.retry, **changes["retry"])
    return replace(config, retry=retry, **changes["config"])


_TUNABLE = {"timeout", "deadline", "grace", "body_cap"}


_WHOLE = {"max_attempts", "body_cap"}


def _unexpected(exc: Exception) -> BackfillError:
    """An error nobody foresaw while sending, in one line (the traceback goes to the log)."""
    log.error("the run stops on an unexpected error", exc_info=exc)
    if isinstance(exc, OSError) and exc.filename:
        return InternalError(f"{exc.filename}: {exc.strerror or exc}")
    return InternalError(f"unexpected error while sending: {type(exc).__name__}: {exc}")


class _Reading:
    """The export read, mapped and encoded in a thread of its own, each request handed to the
    queue. A daemon: a read that never returns (a FIFO without a writer) cannot hold the
    process at its exit. An error in it (a bad file, --output failing) ends the run once the
    requests it made are sent."""

    def __init__(
        self,
        requests: Iterator[Request],
        queue: asyncio.Queue[Request],
        loop: asyncio.AbstractEventLoop,
        stop: asyncio.Event,
    ) -> None:
        self.requests, self.queue, self.loop, self.stop = requests, queue, loop, stop
        self.done = asyncio.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._read, name="read", daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for request in self.requests:
                if self.stop.is_set():
                    break
                asyncio.run_coroutine_threadsafe(self.queue.put(request), self.loop).result()
        except concurrent.futures.CancelledError:
            pass  # the run ended while this request waited for room
        except Exception as exc:
            self.error = exc
        finally:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                self.loop.call_soon_threadsafe(self.done.set)

    def finish(self, seconds: float) -> None:
        """Let the reading thread see that the run stopped (it uses the checkpoint, the
        failures file and --output); one blocked for longer is left behind."""
        self.thread.join(seconds)


def client_for(config: SendConfig) -> httpx.AsyncClient:
    return http_client(config.base_url, config.timeout, config.concurrency)
