"""Klaviyo's APIs as data: one `Endpoint` per API this tool speaks, and the revision it sends.

    bulk     POST /api/event-bulk-create-jobs   10/s, 150/min   5 in flight   (the default)
    single   POST /api/events                   350/s, 3500/min 50 in flight
    legacy   GET  /api/track?data=<base64>      the retired v1 Track API (no revision header)

Everything that differs between them lives here, so no other module branches on a name:
its path and rate windows, how many requests go at once, how its body is encoded, how an
acknowledgement and an error's JSON pointer are read, and the first revision that takes
its backfill flag. Light to import (no HTTP, no JSON): the command line reads its names.

The endpoints that read back (klaviyo/reading.py), with the scopes a key needs for them:

    metrics            GET  /api/metrics                      10/s, 150/min   metrics:read
    metric-aggregates  POST /api/metric-aggregates            3/s, 60/min     metrics:read
    flow-triggers      GET  /api/metrics/{id}/flow-triggers   10/s, 150/min   flows:read, metrics:read
    accounts           GET  /api/accounts                     1/s, 15/min     accounts:read
    events             GET  /api/events                       350/s, 3500/min events:read
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..mapping.encode import Encoder

__all__ = [
    "ACCOUNTS",
    "API_INTEGRATION",
    "BACKFILL_REVISION",
    "BULK",
    "DEFAULT_REVISION",
    "ENDPOINTS",
    "EVENTS",
    "FLOW_TRIGGERS",
    "LEGACY",
    "METRICS",
    "METRIC_AGGREGATES",
    "SINGLE",
    "Endpoint",
    "ReadApi",
    "Window",
]

DEFAULT_REVISION = "2026-07-15"  # the API revision this version is written against
BACKFILL_REVISION = "2026-04-15"  # the first revision with the backfill flag


@dataclass(frozen=True, slots=True)
class Window:
    """A rate window: at most `limit` requests in any `seconds`."""

    limit: int
    seconds: float

    @property
    def margin(self) -> float:
        # a request counts until its answer (throttle.Limiter), which covers when it arrived:
        # this only keeps a count from falling on a window's very edge
        return max(0.01, self.seconds * 0.001)


def _bulk_encoder(backfill: bool, public_key: str | None) -> Encoder:
    from ..mapping.encode import BulkEncoder

    return BulkEncoder(backfill, public_key)


def _single_encoder(backfill: bool, public_key: str | None) -> Encoder:
    from ..mapping.encode import SingleEncoder

    return SingleEncoder(backfill, public_key)


def _legacy_encoder(backfill: bool, public_key: str | None) -> Encoder:
    from ..mapping.encode import LegacyEncoder

    return LegacyEncoder(backfill, public_key)


@dataclass(frozen=True)
class Endpoint:
    name: str
    path: str
    windows: tuple[Window, ...]  # Klaviyo's published limits, per account
    concurrency: int  # requests in flight by default
    make_encoder: Callable[[bool, str | None], Encoder]
    versioned: bool = True  # the v3 API: private key, revision header, JSON:API bodies
    pointer: re.Pattern[str] | None = None  # an error's source.pointer -> (entry, event)
    ack_type: str | None = None  # the JSON:API type of an acknowledgement's body, if it has one

    def encoder(self, backfill: bool = True, public_key: str | None = None) -> Encoder:
        return self.make_encoder(backfill, public_key)

    def acknowledged(self, status: int, content_type: str, body: bytes) -> bool:
        """Whether an answer is Klaviyo's acknowledgement that the events were taken: the
        v3 API's `202`, its body empty or a JSON:API document (of `ack_type`, where set); the
        Track API's `200` with body `1`. Anything else is not, whatever its status: a login
        page, a proxy's `200`, a `204`, a `202` with a body of another kind."""
        if not self.versioned:
            return status == 200 and body.strip() == b"1"
        if status != 202:
            return False
        if not body.strip():
            return True
        if "json" not in content_type:
            return False
        import json

        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            return False
        if not isinstance(doc, dict) or "errors" in doc:
            return False
        data = doc.get("data")
        if self.ack_type is None:
            return data is None or isinstance(data, dict)
        return isinstance(data, dict) and data.get("type") == self.ack_type

    def dropped(self, status: int, body: bytes) -> bool:
        """The Track API's own refusal of one payload: `200` with body `0`."""
        return not self.versioned and status == 200 and body.strip() == b"0"


BULK = Endpoint(
    "bulk",
    "/api/event-bulk-create-jobs",
    (Window(10, 1.0), Window(150, 60.0)),
    5,
    _bulk_encoder,
    ack_type="event-bulk-create-job",
    pointer=re.compile(
        r"^/data/attributes/events-bulk-create/data/(\d+)(?:/attributes/events/data/(\d+))?"
    ),
)
SINGLE = Endpoint(
    "single", "/api/events", (Window(350, 1.0), Window(3500, 60.0)), 50, _single_encoder
)
LEGACY = Endpoint(
    "legacy",
    "/api/track",
    (Window(350, 1.0), Window(3500, 60.0)),
    50,
    _legacy_encoder,
    versioned=False,
)
ENDPOINTS = {endpoint.name: endpoint for endpoint in (BULK, SINGLE, LEGACY)}


# ---------------------------------------------------------------- reading back

# The integration of the metric that events sent through the API land in: `{"name": "API",
# "category": "API"}` (from Klaviyo's documentation; not yet confirmed against a live account).
API_INTEGRATION = "API"


@dataclass(frozen=True)
class ReadApi:
    """An endpoint that reads: method, path (`{id}` filled in per call), rate windows (per
    account, as Klaviyo publishes them), the scopes a key needs for it, and the pages of one
    listing and the bytes they may take together (its answer budget), far over what Klaviyo
    sends."""

    name: str
    method: str
    path: str
    windows: tuple[Window, ...]
    scopes: tuple[str, ...]
    budget: int = 64 << 20  # a few hundred metrics or flows are a few hundred kB
    pages: int = 1000  # of one listing (200 metrics a page)

    def url(self, base_url: str, **ids: str) -> str:
        return base_url.rstrip("/") + self.path.format(**ids)


METRICS = ReadApi(
    "metrics", "GET", "/api/metrics", (Window(10, 1.0), Window(150, 60.0)), ("metrics:read",)
)
METRIC_AGGREGATES = ReadApi(
    "metric-aggregates",
    "POST",
    "/api/metric-aggregates",
    (Window(3, 1.0), Window(60, 60.0)),
    ("metrics:read",),
)
FLOW_TRIGGERS = ReadApi(
    "flow-triggers",
    "GET",
    "/api/metrics/{id}/flow-triggers",
    (Window(10, 1.0), Window(150, 60.0)),
    ("flows:read", "metrics:read"),
)
ACCOUNTS = ReadApi(
    "accounts", "GET", "/api/accounts", (Window(1, 1.0), Window(15, 60.0)), ("accounts:read",)
)
# a window of events: a month of a shop's orders, each event a few kB, read page by page
EVENTS = ReadApi(
    "events",
    "GET",
    "/api/events",
    (Window(350, 1.0), Window(3500, 60.0)),
    ("events:read",),
    budget=2 << 30,
    pages=10_000,  # 1,000 events a page
)
