"""Read back what Klaviyo holds: metrics, their monthly aggregates, the flows a metric
triggers, the account a key belongs to.

One client for every read endpoint (endpoints.py lists them, with their windows and scopes):
each is paced to its own rate windows (throttle.Limiter) and retried as sends are
(retry.RetryPolicy: a 429 waits as told and uses no attempt; 5xx, dropped connections and
timeouts back off). An answer counts only in Klaviyo's own JSON:API shape: a 200 HTML page
from a proxy, or JSON of another shape, is retried like a 502, never read as "no metrics".
A body is read up to `ReadConfig.max_body` bytes, no further.

    401            AuthError: the key is wrong (the run stops, exit 3)
    403            ScopeError naming the scopes the endpoint needs (exit 3)
    other 4xx      QueryError, with Klaviyo's detail (exit 3)

Knows nothing of exports or checkpoints: it is handed ids and years, and returns plain rows.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

import httpx

from .. import __version__
from ..errors import AuthError, GaveUp, QueryError, ScopeError
from .answers import Answer, Listing, detail, read_capped, retry_after
from .endpoints import (
    ACCOUNTS,
    API_INTEGRATION,
    DEFAULT_REVISION,
    EVENTS,
    FLOW_TRIGGERS,
    METRIC_AGGREGATES,
    METRICS,
    ReadApi,
    Window,
)
from .http import Redactor, Spares, http_client, within
from .retry import Attempts, Retry, RetryPolicy
from .shapes import (
    EventsCheck,
    HeldEvent,
    HeldKeys,
    NotAnAnswer,
    aggregate_answer,
    document,
    listing,
    metrics_page,
    month_rows,
)
from .throttle import Limiter, Wait

__all__ = [
    "Account",
    "Flow",
    "HeldEvent",
    "HeldKeys",
    "Metric",
    "MonthTotal",
    "ReadConfig",
    "ReadStats",
    "Reader",
    "gather_limited",
]

log = logging.getLogger("klaviyo_backfill.reading")

T = TypeVar("T")


@dataclass(frozen=True)
class ReadConfig:
    base_url: str
    api_key: str = field(repr=False)
    revision: str = DEFAULT_REVISION
    timeout: float = 60.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_body: int = 8 << 20  # bytes of one answer (decompressed)
    deadline: float = 300.0  # one try's whole exchange, however its bytes trickle in
    # endpoint name -> the bytes one listing's pages may take, instead of the endpoint's
    budgets: dict[str, int] = field(default_factory=dict)
    concurrency: int = 3  # queries in flight (the aggregates' burst is 3/s)
    event_windows: int = 16  # windows of GET /api/events read at once (its burst is 350/s;
    # a window is a few pages, read one after the other: many at once keep the pace)
    page_size: int = 1000  # events a page (Klaviyo's most)
    # endpoint name -> windows, instead of Klaviyo's published ones (benchmarks, tests)
    windows: dict[str, tuple[Window, ...]] = field(default_factory=dict)
    # told of each wait (a 429's, a window's, a retry's), as a send's watcher is
    observer: Callable[[Wait], None] | None = field(default=None, compare=False, repr=False)

    def headers(self) -> dict[str, str]:
        return {
            "User-Agent": f"klaviyo-backfill/{__version__}",
            "Authorization": f"Klaviyo-API-Key {self.api_key}",
            "revision": self.revision,
            "Accept": "application/vnd.api+json",
            "Content-Type": "application/vnd.api+json",
        }


@dataclass(frozen=True)
class Metric:
    id: str
    name: str
    integration: str  # its integration's name ('' when Klaviyo gives none)
    category: str
    key: str = ""  # its integration's key ('api' for the API's metrics)

    @property
    def via_api(self) -> bool:
        """Whether events sent through the API (this tool's, and every other private-key
        sender's) land in this metric: its integration's key is "api", or (no key given)
        its name is "API"."""
        if self.key:
            return self.key == "api"
        return self.integration == API_INTEGRATION


@dataclass(frozen=True)
class MonthTotal:
    """One month (and currency, when grouped by it) of a metric's aggregate."""

    month: str  # 'YYYY-MM'
    currency: str | None  # None when not grouped by currency
    count: int
    value: Decimal | None  # sum_value, when asked for


@dataclass(frozen=True)
class Flow:
    id: str
    name: str
    status: str
    archived: bool


@dataclass(frozen=True)
class Account:
    id: str
    timezone: str
    currency: str
    test: bool


@dataclass
class ReadStats:
    requests: int = 0
    retries: int = 0
    throttled: int = 0


class Reader:
    """`async with Reader(config) as reader:` then `await reader.metrics()` and so on."""

    def __init__(self, config: ReadConfig, client: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self.client = client or http_client(
            config.base_url, config.timeout, max(config.concurrency, config.event_windows)
        )
        self.spares = Spares(config.base_url, config.timeout) if client is None else None
        self.redact = Redactor(config.api_key)
        self.limiters: dict[str, Limiter] = {}
        self.stats = ReadStats()
        self.headers = config.headers()

    async def __aenter__(self) -> Reader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()
        if self.spares is not None:
            await self.spares.aclose()

    # ------------------------------------------------------------ the endpoints

    async def each_metric(self, integration: str | None = None) -> AsyncIterator[Metric]:
        """Every metric of the account, or those of one integration, page by page (a page is
        let go of before the next is read: a caller that keeps a few keeps only those)."""
        params = {"filter": f'equals(integration.name,"{integration}")'} if integration else None
        url = METRICS.url(self.config.base_url)
        async for doc in self._pages(METRICS, url, params, metrics_page):
            for item in doc["data"]:
                if _named(item):
                    yield _metric(item)

    async def metrics(self, integration: str | None = None) -> list[Metric]:
        """Every metric of the account (every page), or those of one integration."""
        return [metric async for metric in self.each_metric(integration)]

    async def aggregate(
        self, metric_id: str, year: int, by_currency: bool = True, values: bool = True
    ) -> list[MonthTotal]:
        """A metric's events per UTC month of one calendar year (a query spans at most one),
        counted, summed and grouped by currency as asked; months without events left out."""
        measurements = ["count", "sum_value"] if values else ["count"]
        attributes: dict[str, Any] = {
            "metric_id": metric_id,
            "measurements": measurements,
            "interval": "month",
            "timezone": "UTC",
            "filter": [
                f"greater-or-equal(datetime,{year:04d}-01-01T00:00:00)",
                f"less-than(datetime,{year + 1:04d}-01-01T00:00:00)",
            ],
        }
        if by_currency:
            attributes["by"] = ["$value_currency"]
        body = {"data": {"type": "metric-aggregate", "attributes": attributes}}
        start, end = datetime(year, 1, 1), datetime(year + 1, 1, 1)
        doc = await self.fetch(
            METRIC_AGGREGATES,
            METRIC_AGGREGATES.url(self.config.base_url),
            body=body,
            check=lambda d: aggregate_answer(d, measurements, start, end),
        )
        return _month_totals(doc, by_currency, values)

    async def flow_triggers(self, metric_id: str) -> list[Flow]:
        url = FLOW_TRIGGERS.url(self.config.base_url, id=metric_id)
        flows = []
        async for doc in self._pages(FLOW_TRIGGERS, url, None, lambda d: listing(d, "flow")):
            for item in doc["data"]:
                attrs = item.get("attributes") or {}
                flows.append(Flow(str(item["id"]), str(attrs.get("name") or ""),
                                  str(attrs.get("status") or ""), bool(attrs.get("archived"))))  # fmt: skip
        return flows

    async def account(self) -> Account:
        url = ACCOUNTS.url(self.config.base_url)
        doc = await self.fetch(ACCOUNTS, url, check=lambda d: listing(d, "account", 1))
        item = doc["data"][0]
        attrs = item.get("attributes") or {}
        return Account(str(item["id"]), str(attrs.get("timezone") or ""),
                       str(attrs.get("preferred_currency") or ""), bool(attrs.get("test_account")))  # fmt: skip

    async def events(self, metric_id: str, start: int, end: int) -> list[HeldEvent]:
        """Every event of a metric with start <= time < end (UNIX seconds): `scan_events`
        kept in a list."""
        return (await self.held(metric_id, start, end)).events()

    async def held(self, metric_id: str, start: int, end: int) -> HeldKeys:
        """`events` as the per-order proof compares them (shapes.HeldKeys: a key per event,
        no HeldEvent)."""
        found = HeldKeys()
        await self.scan_keys(metric_id, start, end, found.extend, found.clear)
        return found

    async def scan_events(
        self,
        metric_id: str,
        start: int,
        end: int,
        take: Callable[[list[HeldEvent]], None],
        again: Callable[[], None] = lambda: None,
    ) -> None:
        """`scan_keys`, each page handed to `take` as a list of HeldEvent."""
        await self.scan_keys(metric_id, start, end, lambda page: take(page.events()), again)

    async def scan_keys(
        self,
        metric_id: str,
        start: int,
        end: int,
        take: Callable[[HeldKeys], None],
        again: Callable[[], None] = lambda: None,
    ) -> None:
        """Each page of a metric's events with start <= time < end (UNIX seconds) handed to
        `take` as it comes, each page checked (of this metric and window only); across pages
        no event twice. A listing with an event twice is read again from its start (three
        times; `again` is told first), then an error naming the endpoint. A next link off the
        base URL or to a page read before, or pages over the listing's budget, are an error
        at once (`_pages`)."""
        what = f"{EVENTS.method} {EVENTS.path}"
        for attempt in range(3):  # through a client of its own (`Spares`), if there are
            if attempt:
                again()
            try:
                async with self.spares.lend() if self.spares else nullcontext():
                    return await self._events_once(metric_id, start, end, take)
            except Retry as exc:
                self.stats.retries += 1
                why = exc
                log.warning("%s: %s; reading the window again (%d)", what, exc, attempt + 1)
        raise GaveUp(f"{what}: {why}", "Is KLAVIYO_BASE_URL right, or a proxy in the way?")

    async def _events_once(
        self, metric_id: str, start: int, end: int, take: Callable[[HeldKeys], None]
    ) -> None:
        def iso(t: int) -> str:
            return datetime.fromtimestamp(t, UTC).isoformat()

        params = {
            "filter": f'equals(metric_id,"{metric_id}"),greater-or-equal(datetime,{iso(start)}),'
            f"less-than(datetime,{iso(end)})",
            "page[size]": str(self.config.page_size),
            "sort": "datetime",
        }
        seen: set[str] = set()
        page = HeldKeys()
        check = EventsCheck(metric_id, start, end, page)  # a retried page is read afresh
        async for _ in self._pages(EVENTS, EVENTS.url(self.config.base_url), params, check):
            ids = page.uuids
            fresh = set(ids)
            if len(fresh) != len(ids) or not seen.isdisjoint(fresh):  # twice, or seen before
                twice = next(u for u, n in Counter(ids).items() if n > 1 or u in seen)
                raise Retry(f"event {twice[:40]} on two pages")
            seen |= fresh
            take(page.handed())  # its lists: the next page is read into new ones

    # ------------------------------------------------------------ a listing's pages

    async def _pages(
        self,
        api: ReadApi,
        url: str,
        params: dict[str, str] | None,
        check: Callable[[Any], str | None],
    ) -> AsyncIterator[dict[str, Any]]:
        """Each page of a listing, one after the other (none kept here). The pages' answers
        take at most the listing's budget in bytes together (the endpoint's, or
        ReadConfig.budgets'), in at most its pages; a next link stays on the base URL and
        never names a page read before (a loop): each of these an error naming the endpoint,
        at once (reading again would meet the same)."""
        pages = Listing(api, self.config.budgets.get(api.name, api.budget))
        link: str | None = url
        while link is not None:
            at = pages.visit(link, params)  # params merged in
            doc = await self.fetch(api, at, check=check, listing=pages)
            yield doc
            link, params = self._next(doc, api), None

    def _next(self, doc: dict[str, Any], api: ReadApi) -> str | None:
        """The next page's address: only ever on the base URL the key was given for."""
        link = (doc.get("links") or {}).get("next")
        if not link:
            return None
        if not isinstance(link, str) or not link.startswith(self.config.base_url.rstrip("/") + "/"):
            raise QueryError(
                f"{api.method} {api.path}: a next page outside {self.config.base_url}",
                "Is KLAVIYO_BASE_URL right, or a proxy in the way?",
            )
        return link

    # ------------------------------------------------------------ one read, retried

    async def fetch(
        self,
        api: ReadApi,
        url: str | httpx.URL,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        check: Callable[[Any], str | None] = lambda doc: None,
        listing: Listing | None = None,
    ) -> dict[str, Any]:
        """One JSON:API document from `api`, paced and retried; `check` names what is wrong
        with a document of the wrong shape (None: it is an answer); a page of a `listing`
        read within what is left of its budget."""
        limiter = self._limiter(api)  # its clock and sleep time the retries' waits too
        attempts = Attempts(self.config.retry, f"{api.method} {api.path}", limiter.clock)
        while True:
            attempts.tries += 1
            await limiter.acquire()
            gone = _Once(limiter.done)  # a read counts from when it left: see `_once`
            try:
                try:
                    return await self._once(
                        api, url, params, body, check, limiter, attempts.left(), listing, gone
                    )
                finally:
                    gone()  # it never left, or its transport does not say when (a test's)
            except Retry as retry:
                self.stats.retries += 1
                try:
                    wait = attempts.wait_after(retry)
                except GaveUp as exc:
                    if retry.unreachable:  # the host, what happened and what to check
                        raise
                    hint = "Klaviyo did not answer: try again later."
                    if isinstance(retry, NotAnAnswer):
                        hint = "Is KLAVIYO_BASE_URL right, or a proxy in the way?"
                    raise GaveUp(f"{api.method} {api.path}: {exc.message}", hint) from None
                if wait > 0 and not retry.throttled:  # a 429's pause is told by the limiter
                    now = limiter.clock()
                    limiter.tell(Wait(wait, now + wait, "retry", detail=retry.cause))
                await limiter.sleep(wait)

    def _limiter(self, api: ReadApi) -> Limiter:
        limiter = self.limiters.get(api.name)
        if limiter is None:
            windows = self.config.windows.get(api.name, api.windows)
            limiter = self.limiters[api.name] = Limiter(windows)
            if self.config.observer is not None:  # its waits told as the sender's are
                limiter.observer = self.config.observer
        return limiter

    async def _once(
        self,
        api: ReadApi,
        url: str | httpx.URL,
        params: dict[str, str] | None,
        body: dict[str, Any] | None,
        check: Callable[[Any], str | None],
        limiter: Limiter,
        left: float = float("inf"),
        listing: Listing | None = None,
        gone: Callable[[], None] = lambda: None,
    ) -> dict[str, Any]:
        self.stats.requests += 1
        content = None if body is None else json.dumps(body).encode()
        # a read's body is a few hundred bytes, so it arrives as it leaves: it counts in the
        # windows from when its last byte was written (`gone`, told by the connection), not
        # from its answer (Klaviyo's work: counting it would halve the pace of slow aggregate
        # queries for nothing), nor from its turn (a loop busy with pages of events may
        # write it later: two would reach Klaviyo closer than the windows allow)
        budget = max(0.001, min(self.config.deadline, left))
        response = await within(
            budget, url, self._bounded(api, url, params, content, listing, gone)
        )
        return self._answer(api, response, check, limiter)

    async def _bounded(
        self,
        api: ReadApi,
        url: str | httpx.URL,
        params: dict[str, str] | None,
        content: bytes | None,
        listing: Listing | None = None,
        gone: Callable[[], None] = lambda: None,
    ) -> httpx.Response:
        """The answer, its body read up to max_body bytes, or what is left of its listing's
        budget (QueryError beyond)."""
        limit = self.config.max_body
        if listing is not None:
            limit = min(limit, listing.left)

        async def trace(event: str, info: dict[str, Any]) -> None:
            if event.endswith(".send_request_body.complete"):  # httpcore's: it has left
                gone()

        client = self.spares.client(self.client) if self.spares else self.client
        request = client.build_request(api.method, url, params=params, content=content,
                                       headers=self.headers, extensions={"trace": trace})  # fmt: skip
        response = await client.send(request, stream=True)
        try:
            content, whole = await read_capped(response, limit)  # decompressed in bounded bites
        finally:
            await response.aclose()
        if listing is not None:
            listing.spend(len(content), whole)
        if not whole:
            raise QueryError(f"{api.method} {api.path}: an answer over {limit:,} bytes")
        return httpx.Response(response.status_code, headers=response.headers,
                              content=content, request=request)  # fmt: skip

    def _answer(
        self,
        api: ReadApi,
        response: httpx.Response,
        check: Callable[[Any], str | None],
        limiter: Limiter,
    ) -> dict[str, Any]:
        status, what = response.status_code, f"{api.method} {api.path}"
        if status == 200:
            return document(response, check)
        if status == 429:
            self.stats.throttled += 1
            wait = self.config.retry.capped(retry_after(Answer.of(response)))
            limiter.pause(wait if wait is not None else self.config.retry.backoff_base * 4)
            raise Retry("429 throttled", wait, throttled=True)
        if status >= 500:
            raise Retry(f"HTTP {status}")
        answer = Answer.of(response)
        errors = answer.errors()
        if errors is None:  # a proxy's or a CDN's page: not Klaviyo's verdict, a fault
            raise NotAnAnswer(self.redact(answer.describe()))
        said = self.redact("; ".join(detail(e) for e in errors)) or "no detail"
        if status == 401 or (status == 403 and _not_valid(errors)):
            raise AuthError(
                f"Klaviyo refused the API key (HTTP {status} to {what}: {said}).",
                "Check KLAVIYO_API_KEY (or --api-key): a private key (pk_...).",
            )
        if status == 403:
            raise ScopeError(what, api.scopes, said)
        raise QueryError(f"Klaviyo refused {what} (HTTP {status}: {said})")


def _not_valid(errors: list[dict[str, Any]]) -> bool:
    """A 403 that says the key itself is wrong (Klaviyo: "Incorrect authentication
    credentials.", "The API key is not valid."), not that it lacks a scope: that one names
    the scopes, and is the only 403 a ScopeError (a key that may not read its account, say)."""
    said = " ".join(str(e.get(k) or "") for e in errors for k in ("title", "detail")).lower()
    return "scope" not in said and ("credentials" in said or "not valid" in said)


class _Once:
    """A callable that calls `then` the first time only."""

    __slots__ = ("then",)

    def __init__(self, then: Callable[[], None]) -> None:
        self.then: Callable[[], None] | None = then

    def __call__(self) -> None:
        then, self.then = self.then, None
        if then is not None:
            then()


async def gather_limited(jobs: Sequence[Callable[[], Awaitable[T]]], at_once: int) -> list[T]:
    """Run the jobs with at most `at_once` in flight; results in the jobs' order. The first
    error cancels the others and is raised."""
    slots = asyncio.Semaphore(at_once)

    async def one(job: Callable[[], Awaitable[T]]) -> T:
        async with slots:
            return await job()

    tasks = [asyncio.ensure_future(one(job)) for job in jobs]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


# ---------------------------------------------------------------- plain rows


def _named(item: dict[str, Any]) -> bool:
    return isinstance((item.get("attributes") or {}).get("name"), str)


def _metric(item: dict[str, Any]) -> Metric:
    """A metric; its integration may be null, and a partner app's category an object."""
    attrs = item.get("attributes") or {}
    integration = attrs.get("integration") or {}
    category = integration.get("category")
    if isinstance(category, dict):
        category = category.get("name") or category.get("category") or ""
    return Metric(str(item["id"]), attrs["name"], str(integration.get("name") or ""),
                  str(category or ""), str(integration.get("key") or ""))  # fmt: skip


def _month_totals(doc: dict[str, Any], by_currency: bool, values: bool) -> list[MonthTotal]:
    out = []
    for months, dims, counts, sums in month_rows(doc, values):
        currency = (str(dims[0]) if dims and dims[0] is not None else "") if by_currency else None
        for i, month in enumerate(months.split("|") if months else []):
            value = sums[i] if sums is not None else None
            if counts[i] or value:
                out.append(MonthTotal(month, currency, counts[i], value))
    return out
