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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

import httpx

from .. import __version__
from ..errors import AuthError, GaveUp, QueryError, ScopeError
from .answers import Answer, detail, read_capped, retry_after
from .endpoints import (
    ACCOUNTS,
    API_INTEGRATION,
    DEFAULT_REVISION,
    FLOW_TRIGGERS,
    METRIC_AGGREGATES,
    METRICS,
    ReadApi,
    Window,
)
from .http import Redactor, http_client, within
from .retry import Attempts, Retry, RetryPolicy
from .throttle import Limiter

__all__ = [
    "Account",
    "Flow",
    "Metric",
    "MonthTotal",
    "ReadConfig",
    "ReadStats",
    "Reader",
    "gather_limited",
]

log = logging.getLogger("klaviyo_backfill.reading")

MAX_PAGES = 1000  # of one listing (200 metrics a page): a loop of `next` links ends here
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
    concurrency: int = 3  # queries in flight (the aggregates' burst is 3/s)
    # endpoint name -> windows, instead of Klaviyo's published ones (benchmarks, tests)
    windows: dict[str, tuple[Window, ...]] = field(default_factory=dict)

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

    @property
    def via_api(self) -> bool:
        """Whether events sent through the API (this tool's) land in this metric."""
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


class NotAnAnswer(Retry):
    """A 2xx whose body is not the JSON:API document asked for (a proxy's page): retried."""

    def __init__(self, why: str) -> None:
        super().__init__(f"not a JSON:API answer ({why})")


class Reader:
    """`async with Reader(config) as reader:` then `await reader.metrics()` and so on."""

    def __init__(self, config: ReadConfig, client: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self.client = client or http_client(config.base_url, config.timeout, config.concurrency)
        self.redact = Redactor(config.api_key)
        self.limiters: dict[str, Limiter] = {}
        self.stats = ReadStats()
        self.headers = config.headers()

    async def __aenter__(self) -> Reader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()

    # ------------------------------------------------------------ the endpoints

    async def metrics(self, integration: str | None = None) -> list[Metric]:
        """Every metric of the account (every page), or those of one integration."""
        params = {"filter": f'equals(integration.name,"{integration}")'} if integration else None
        url: str | None = METRICS.url(self.config.base_url)
        found: list[Metric] = []
        for _ in range(MAX_PAGES):
            if url is None:
                return found
            doc = await self.fetch(METRICS, url, params=params, check=_metrics_page)
            found.extend(_metric(item) for item in doc["data"] if _named(item))
            url, params = self._next(doc), None
        raise QueryError(f"GET {METRICS.path} gave more than {MAX_PAGES} pages")

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
        doc = await self.fetch(
            METRIC_AGGREGATES,
            METRIC_AGGREGATES.url(self.config.base_url),
            body=body,
            check=lambda d: _aggregate_answer(d, measurements),
        )
        return _month_totals(doc, by_currency, values)

    async def flow_triggers(self, metric_id: str) -> list[Flow]:
        url = FLOW_TRIGGERS.url(self.config.base_url, id=metric_id)
        doc = await self.fetch(FLOW_TRIGGERS, url, check=lambda d: _listing(d, "flow"))
        flows = []
        for item in doc["data"]:
            attrs = item.get("attributes") or {}
            flows.append(Flow(str(item["id"]), str(attrs.get("name") or ""),
                              str(attrs.get("status") or ""), bool(attrs.get("archived"))))  # fmt: skip
        return flows

    async def account(self) -> Account:
        url = ACCOUNTS.url(self.config.base_url)
        doc = await self.fetch(ACCOUNTS, url, check=lambda d: _listing(d, "account", 1))
        item = doc["data"][0]
        attrs = item.get("attributes") or {}
        return Account(str(item["id"]), str(attrs.get("timezone") or ""),
                       str(attrs.get("preferred_currency") or ""), bool(attrs.get("test_account")))  # fmt: skip

    def _next(self, doc: dict[str, Any]) -> str | None:
        """The next page's address: only ever on the base URL the key was given for."""
        link = (doc.get("links") or {}).get("next")
        if not link:
            return None
        if not isinstance(link, str) or not link.startswith(self.config.base_url.rstrip("/") + "/"):
            raise QueryError(f"GET {METRICS.path}: a next page outside {self.config.base_url}")
        return link

    # ------------------------------------------------------------ one read, retried

    async def fetch(
        self,
        api: ReadApi,
        url: str,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        check: Callable[[Any], str | None] = lambda doc: None,
    ) -> dict[str, Any]:
        """One JSON:API document from `api`, paced and retried; `check` names what is wrong
        with a document of the wrong shape (None: it is an answer)."""
        attempts = Attempts(self.config.retry, f"{api.method} {api.path}")
        limiter = self._limiter(api)
        while True:
            attempts.tries += 1
            await limiter.acquire()
            limiter.done()  # a read counts from when it leaves: see `_once`
            try:
                return await self._once(api, url, params, body, check, limiter, attempts.left())
            except Retry as retry:
                self.stats.retries += 1
                try:
                    wait = attempts.wait_after(retry)
                except GaveUp as exc:
                    hint = "Klaviyo did not answer: try again later."
                    if isinstance(retry, NotAnAnswer):
                        hint = "Is KLAVIYO_BASE_URL right, or a proxy in the way?"
                    raise GaveUp(f"{api.method} {api.path}: {exc.message}", hint) from None
                await asyncio.sleep(wait)

    def _limiter(self, api: ReadApi) -> Limiter:
        limiter = self.limiters.get(api.name)
        if limiter is None:
            windows = self.config.windows.get(api.name, api.windows)
            limiter = self.limiters[api.name] = Limiter(windows)
        return limiter

    async def _once(
        self,
        api: ReadApi,
        url: str,
        params: dict[str, str] | None,
        body: dict[str, Any] | None,
        check: Callable[[Any], str | None],
        limiter: Limiter,
        left: float = float("inf"),
    ) -> dict[str, Any]:
        self.stats.requests += 1
        content = None if body is None else json.dumps(body).encode()
        # a read's body is a few hundred bytes, so it arrives as it leaves: it counts in the
        # windows from then (`fetch` marks it done at once); its answer time is Klaviyo's
        # work, and counting it would halve the pace of slow aggregate queries for nothing
        budget = max(0.001, min(self.config.deadline, left))
        response = await within(budget, url, self._bounded(api, url, params, content))
        return self._answer(api, response, check, limiter)

    async def _bounded(
        self, api: ReadApi, url: str, params: dict[str, str] | None, content: bytes | None
    ) -> httpx.Response:
        """The answer, its body read up to max_body bytes (QueryError beyond)."""
        limit = self.config.max_body
        request = self.client.build_request(
            api.method, url, params=params, content=content, headers=self.headers
        )
        response = await self.client.send(request, stream=True)
        try:
            content, whole = await read_capped(response, limit)  # decompressed in bounded bites
        finally:
            await response.aclose()
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
            return _document(response, check)
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
        if status == 401:
            raise AuthError(
                f"Klaviyo refused the API key (HTTP 401 to {what}: {said}).",
                "Check KLAVIYO_API_KEY (or --api-key): a private key (pk_...).",
            )
        if status == 403:
            raise ScopeError(what, api.scopes, said)
        raise QueryError(f"Klaviyo refused {what} (HTTP {status}: {said})")


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


# ---------------------------------------------------------------- the answers' shapes


def _document(response: httpx.Response, check: Callable[[Any], str | None]) -> dict[str, Any]:
    kind = response.headers.get("Content-Type", "").split(";")[0].strip() or "no content type"
    try:
        doc = response.json()
    except ValueError:
        raise NotAnAnswer(f"{kind}, {len(response.content):,} bytes") from None
    if not isinstance(doc, dict) or "data" not in doc:
        raise NotAnAnswer("no data")
    wrong = check(doc)
    if wrong is not None:
        raise NotAnAnswer(wrong)
    return doc


def _listing(doc: dict[str, Any], kind: str, at_least: int = 0) -> str | None:
    data = doc["data"]
    if not isinstance(data, list) or len(data) < at_least:
        return f"data is not a list of {kind} objects"
    for item in data:
        if not isinstance(item, dict) or item.get("type") != kind or not item.get("id"):
            return f"an item of data is not a {kind}"
        if not isinstance(item.get("attributes", {}), dict):
            return f"a {kind}'s attributes are not an object"
    return None


def _metrics_page(doc: dict[str, Any]) -> str | None:
    wrong = _listing(doc, "metric")
    if wrong is None:
        for item in doc["data"]:
            integration = (item.get("attributes") or {}).get("integration")
            if integration is not None and not isinstance(integration, dict):
                return "a metric's integration is not an object"
    return wrong


def _named(item: dict[str, Any]) -> bool:
    return isinstance((item.get("attributes") or {}).get("name"), str)


def _metric(item: dict[str, Any]) -> Metric:
    attrs = item.get("attributes") or {}
    integration = attrs.get("integration") or {}
    return Metric(str(item["id"]), attrs["name"], str(integration.get("name") or ""),
                  str(integration.get("category") or ""))  # fmt: skip


def _aggregate_answer(doc: dict[str, Any], measurements: list[str]) -> str | None:
    data = doc["data"]
    if not isinstance(data, dict) or data.get("type") != "metric-aggregate":
        return "data is not a metric-aggregate"
    attrs = data.get("attributes")
    if not isinstance(attrs, dict):
        return "no attributes"
    dates, rows = attrs.get("dates"), attrs.get("data")
    if not isinstance(dates, list) or not isinstance(rows, list):
        return "attributes.dates or attributes.data is not a list"
    for text in dates:
        try:
            datetime.fromisoformat(text)
        except (TypeError, ValueError):
            return f"a date that is not ISO 8601 ({str(text)[:40]!r})"
    for row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("dimensions"), list):
            return "a row without dimensions"
        values = row.get("measurements")
        if not isinstance(values, dict):
            return "a row without measurements"
        for name in measurements:
            series = values.get(name)
            if not isinstance(series, list) or len(series) != len(dates):
                return f"{name} is not a list aligned with dates"
            if not all(type(v) in (int, float) for v in series):
                return f"{name} holds a value that is not a number"
    return None


def _month_totals(doc: dict[str, Any], by_currency: bool, values: bool) -> list[MonthTotal]:
    attrs = doc["data"]["attributes"]
    months = []
    for text in attrs["dates"]:
        when = datetime.fromisoformat(text)
        months.append(f"{when.year:04d}-{when.month:02d}")
    out = []
    for row in attrs["data"]:
        dims = row["dimensions"]
        currency = (str(dims[0]) if dims and dims[0] is not None else "") if by_currency else None
        counts = row["measurements"]["count"]
        sums = row["measurements"].get("sum_value") if values else None
        for i, month in enumerate(months):
            count = round(counts[i])
            value = Decimal(repr(float(sums[i]))) if sums is not None else None
            if count or value:
                out.append(MonthTotal(month, currency, count, value))
    return out
