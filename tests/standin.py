"""A small stand-in for Klaviyo's event intake, for end-to-end tests and benchmarks.

It enforces the contract of shared/klaviyo-api.md (auth, revision, media type, the official
request schemas, semantic limits, per-endpoint sliding-window rate limits, dedupe on
(profile, metric, unique_id)) and injects faults from a seeded random sequence.

    with StandIn(faults=Faults(server_error=0.1, seed=1)) as s:
        ...run the CLI against s.url...
        assert len(s.events) == expected

Run as a process: python tests/standin.py --port 0 --bulk-limits 10/1,150/60 --latency 0.05
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import math
import os
import random
import re
import secrets
import select
import signal
import socket
import struct
import sys
import threading
import time
import uuid
from bisect import bisect_left
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import takewhile
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jsonschema

JSONAPI = "application/vnd.api+json"
BULK_PATH, SINGLE_PATH, LEGACY_PATH = "/api/event-bulk-create-jobs", "/api/events", "/api/track"
MAX_BODY = 5_000_000  # "5 MB"; the stricter reading, so a client that passes here passes there
# "100 KB" read as 100,000 bytes, the stricter reading, as for MAX_BODY
MAX_STRING, MAX_PROPS, MAX_ARRAY, MAX_DEPTH, MAX_BULK_EVENTS = 100_000, 400, 4000, 10, 1000
E164 = re.compile(r"^\+[1-9]\d{6,14}$")
REVISION = re.compile(r"^(\d{4}-\d{2}-\d{2})(\.[A-Za-z0-9_-]+)?$")
IDENTIFIERS = ("email", "phone_number", "external_id")


@dataclass
class Faults:
    server_error: float = 0.0  # 5xx (500/502/503/504), half JSON:API bodies, half HTML
    reset: float = 0.0  # close the connection (RST) without answer, nothing stored
    lost_ack: float = 0.0  # process and STORE, then close without answering
    html_502: float = 0.0  # CDN-style HTML 502, nothing stored
    throttle_no_retry_after: float = 0.0  # 429 without Retry-After, nothing stored
    latency: float = 0.0  # seconds added to every answer
    seed: int = 0
    # events with these unique ids are refused with a 400 naming them: a rule of Klaviyo's
    # that no client can check beforehand (bulk and single endpoints)
    refuse_uids: frozenset[str] = frozenset()
    # reading back (GET /api/metrics, POST /api/metric-aggregates, ...):
    lost_after_ack: float = 0.0  # share of accepted events never processed (drawn per event key)
    ingestion_delay: float = 0.0  # seconds before an accepted event shows in aggregates
    missing_scopes: frozenset[str] = frozenset()  # scopes the key lacks: 403 naming them
    read_server_error: float = 0.0  # reads: 5xx, half with a JSON:API body, half HTML
    read_html_200: float = 0.0  # reads: a 200 HTML page (a proxy's), not Klaviyo's answer
    wrong_key_status: int = 403  # the answer to a wrong key (Klaviyo documents 401 too)
    # the aggregates refuse dates more than this many years back (0: any date), as Klaviyo
    # documented until 2024 ("at most 5 years")
    aggregate_reach_years: float = 0.0


@dataclass(frozen=True)
class Limits:
    burst: int
    burst_window: float
    steady: int
    steady_window: float

    def scaled(self, factor: float) -> Limits:
        """Same counts, windows multiplied by factor (0.1 -> 10 per 0.1 s, 150 per 6 s)."""
        return replace(
            self, burst_window=self.burst_window * factor, steady_window=self.steady_window * factor
        )


BULK_LIMITS = Limits(10, 1.0, 150, 60.0)
SINGLE_LIMITS = Limits(350, 1.0, 3500, 60.0)
# the read endpoints' published limits, per account
READ_LIMITS = {
    "metrics": Limits(10, 1.0, 150, 60.0),
    "aggregates": Limits(3, 1.0, 60, 60.0),
    "flows": Limits(10, 1.0, 150, 60.0),
    "accounts": Limits(1, 1.0, 15, 60.0),
    "events": Limits(350, 1.0, 3500, 60.0),
}
METRICS_PATH, AGGREGATES_PATH, ACCOUNTS_PATH = (
    "/api/metrics", "/api/metric-aggregates", "/api/accounts"
)  # fmt: skip
FLOW_TRIGGERS = re.compile(r"^/api/metrics/([^/]+)/flow-triggers$")
METRICS_PAGE = 200
SCOPES = {
    "bulk": ("events:write",),
    "single": ("events:write",),
    "metrics": ("metrics:read",),
    "aggregates": ("metrics:read",),
    "flows": ("flows:read", "metrics:read"),
    "accounts": ("accounts:read",),
    "events": ("events:read",),
}
EVENTS_PAGE_MAX, EVENTS_PAGE_DEFAULT = 1000, 200
API = ("API", "API")  # (integration name, category) of events sent through the API


@dataclass(frozen=True)
class StoredEvent:
    metric: str
    unique_id: str | None  # as sent (None if absent; the dedupe key then uses the time)
    time: str | None  # normalised to UTC, truncated to the second; None if the event had none
    value: float | None
    value_currency: str | None
    backfill: bool | None
    properties: dict[str, Any]
    profile: dict[str, Any]  # profile attributes as sent
    endpoint: str  # "bulk" | "single" | "legacy"
    identity: str = ""  # email (lower-cased) else phone_number else external_id else "id:<id>"
    key_uid: str = ""  # unique_id, or the time to the second when absent
    integration: tuple[str, str] = API  # (name, category): where the event's metric lives
    # time.monotonic() when accepted (the ingestion delay counts from it); not part of the event
    stored_at: float = field(default=0.0, compare=False)


@dataclass
class RequestLog:
    method: str
    path: str
    status: int | None  # None when no answer was written (reset, lost ack)
    outcome: str  # "answered" | "reset" | "lost_ack"
    n_events: int  # events found in the body, whatever became of them
    n_stored: int
    time_received: float  # on the stand-in's clock (time.monotonic)
    headers: dict[str, str]  # Authorization redacted
    body: bytes


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        title: str,
        errors: list[tuple[str, str | None]],
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(title)
        self.status, self.code, self.title, self.errors = status, code, title, errors
        self.headers = headers or {}

    def body(self) -> bytes:
        items = []
        for detail, pointer in self.errors:
            items.append(
                {
                    "id": str(uuid.uuid4()),
                    "status": self.status,
                    "code": self.code,
                    "title": self.title,
                    "detail": detail,
                    "source": {"pointer": "/data/" if pointer is None else pointer},
                }
            )
        return json.dumps({"errors": items}).encode()


def _invalid(errors: list[tuple[str, str | None]]) -> ApiError:
    return ApiError(400, "invalid", "Invalid input.", errors[:50])


# ---------------------------------------------------------------- schemas
OPENAPI_FILES = ("bulk_create_events.json", "create_event.json")


def _openapi_dir() -> Path:
    """Klaviyo's OpenAPI operations: $KLAVIYO_OPENAPI_DIR when set, else the copies vendored
    beside this file (tests/klaviyo-openapi/)."""
    env = os.environ.get("KLAVIYO_OPENAPI_DIR")
    folder = Path(env) if env else Path(__file__).resolve().parent / "klaviyo-openapi"
    missing = [name for name in OPENAPI_FILES if not (folder / name).is_file()]
    if missing:
        where = "$KLAVIYO_OPENAPI_DIR" if env else "the vendored copy"
        raise FileNotFoundError(f"{where} {folder} lacks {', '.join(missing)}")
    return folder


def _to_json_schema(node: Any, schemas: dict[str, Any]) -> Any:
    """Inline the file's `$ref`s (none is recursive; inlining is ~30% faster than resolving)
    and turn OpenAPI 3.0 `nullable: true`, which jsonschema ignores, into a "null" type."""
    if isinstance(node, list):
        return [_to_json_schema(n, schemas) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        node = {**schemas[node["$ref"].removeprefix("#/components/schemas/")], **siblings}
    node = {k: _to_json_schema(v, schemas) for k, v in node.items()}
    if node.pop("nullable", False):
        if isinstance(node.get("type"), str):
            node["type"] = [node["type"], "null"]
        elif "oneOf" in node:
            node["oneOf"] = [*node["oneOf"], {"type": "null"}]
    return node


@cache
def validator(filename: str, component: str) -> jsonschema.Draft7Validator:
    """The request schema `component` of an OpenAPI file in klaviyo-openapi/."""
    schemas = json.loads((_openapi_dir() / filename).read_text())["components"]["schemas"]
    return jsonschema.Draft7Validator(_to_json_schema(schemas[component], schemas))


def _pointer(path: Any) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def schema_errors(body: Any, filename: str, component: str) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    for e in validator(filename, component).iter_errors(body):
        path = list(e.absolute_path)
        if e.validator == "required" and isinstance(e.instance, dict):
            path += [next(p for p in e.validator_value if p not in e.instance)]
        out.append((e.message, _pointer(path)))
    return out


# ---------------------------------------------------------------- semantic checks
def _parse_time(raw: Any, min_year: int) -> tuple[str | None, str | None]:
    """-> (normalised UTC time or None, error or None)."""
    if raw is None:
        return None, None
    try:
        t = datetime.fromisoformat(raw)
    except (TypeError, ValueError):
        return None, f"'{raw}' is not an ISO 8601 datetime"
    if t.tzinfo is None:
        return None, f"'{raw}' has no UTC offset"
    t = t.astimezone(UTC).replace(microsecond=0)
    if t < datetime(min_year, 1, 1, tzinfo=UTC):
        return None, f"time must be after {min_year}-01-01"
    if t > datetime.now(UTC) + timedelta(days=365):
        return None, "time must be at most one year in the future"
    return t.isoformat(), None


def _walk_limits(node: Any, ptr: str, depth: int, errors: list[tuple[str, str | None]]) -> None:
    if isinstance(node, str) and len(node.encode()) > MAX_STRING:
        errors.append(("string longer than 100 KB", ptr))
    elif isinstance(node, (dict, list)):
        if depth > MAX_DEPTH:
            errors.append((f"nested deeper than {MAX_DEPTH} levels", ptr))
            return
        if isinstance(node, list) and len(node) > MAX_ARRAY:
            errors.append((f"array longer than {MAX_ARRAY} items", ptr))
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for k, v in items:
            _walk_limits(v, f"{ptr}/{_pointer([k])[1:]}", depth + 1, errors)


def check_profile(
    data: dict[str, Any], ptr: str, errors: list[tuple[str, str | None]]
) -> tuple[str, bool]:
    """-> (identity, phone ignored?). `ptr` points at profile/data."""
    attrs = data.get("attributes") or {}
    present = {k: v for k in IDENTIFIERS if isinstance(v := attrs.get(k), str) and v.strip()}
    if data.get("id"):
        present["id"] = data["id"]
    phone_ignored = False
    if "phone_number" in present and not E164.match(present["phone_number"]):
        if "email" in present:
            phone_ignored = True
            del present["phone_number"]
        else:
            errors.append(
                ("phone_number is not a valid E.164 phone number", f"{ptr}/attributes/phone_number")
            )
            return "", False
    if not present:
        errors.append(
            (
                "profile needs an identifier: email, phone_number, external_id or id",
                f"{ptr}/attributes",
            )
        )
        return "", False
    _walk_limits(attrs, f"{ptr}/attributes", 1, errors)
    if "email" in present:
        return present["email"].strip().lower(), phone_ignored
    for k in ("phone_number", "external_id"):
        if k in present:
            return present[k], phone_ignored
    return f"id:{present['id']}", phone_ignored


def check_event(
    attrs: dict[str, Any],
    ptr: str,
    revision: date,
    received: str,
    errors: list[tuple[str, str | None]],
    refuse: frozenset[str] = frozenset(),
) -> tuple[str, str, str | None]:
    """-> (metric, dedupe uid, normalised time). `ptr` points at the event's attributes."""
    name = attrs["metric"]["data"]["attributes"]["name"]
    if not name or len(name) >= 128:
        errors.append(
            ("metric name must be 1 to 127 characters", f"{ptr}/metric/data/attributes/name")
        )
    if "backfill" in attrs and revision < date(2026, 4, 15):
        errors.append(("'backfill' needs revision 2026-04-15 or later", f"{ptr}/backfill"))
    t, err = _parse_time(attrs.get("time"), 1990 if revision >= date(2026, 7, 15) else 2000)
    if err:
        errors.append((err, f"{ptr}/time"))
    props = attrs["properties"]
    if len(props) > MAX_PROPS:
        errors.append((f"more than {MAX_PROPS} properties", f"{ptr}/properties"))
    _walk_limits(props, f"{ptr}/properties", 1, errors)
    for k in ("unique_id", "value_currency"):
        _walk_limits(attrs.get(k), f"{ptr}/{k}", 1, errors)
    uid = attrs.get("unique_id")
    if uid in refuse:
        errors.append((f"unique_id '{uid}' is refused (injected fault)", f"{ptr}/unique_id"))
    return name, uid if uid is not None else (t or received), t


def _event(
    attrs: dict[str, Any],
    profile: dict[str, Any],
    endpoint: str,
    identity: str,
    uid: str,
    t: str | None,
    backfill: bool | None,
) -> StoredEvent:
    return StoredEvent(
        metric=attrs["metric"]["data"]["attributes"]["name"],
        unique_id=attrs.get("unique_id"),
        time=t,
        value=attrs.get("value"),
        value_currency=attrs.get("value_currency"),
        backfill=attrs.get("backfill", backfill),
        properties=attrs["properties"],
        profile=profile,
        endpoint=endpoint,
        identity=identity,
        key_uid=uid,
    )


def parse_bulk(
    body: Any, revision: date, received: str, refuse: frozenset[str] = frozenset()
) -> tuple[list[StoredEvent], bool]:
    if errors := schema_errors(body, "bulk_create_events.json", "EventsBulkCreateJob"):
        raise _invalid(errors)
    base = "/data/attributes/events-bulk-create/data"
    groups = body["data"]["attributes"]["events-bulk-create"]["data"]
    if sum(len(g["attributes"]["events"]["data"]) for g in groups) > MAX_BULK_EVENTS:
        raise _invalid([(f"more than {MAX_BULK_EVENTS} events in one request", base)])
    errors, events, seen, partial = [], [], set(), False
    for i, g in enumerate(groups):
        gattrs = g["attributes"]
        if "backfill" in gattrs and revision < date(2026, 4, 15):
            errors.append(
                ("'backfill' needs revision 2026-04-15 or later", f"{base}/{i}/attributes/backfill")
            )
        identity, ignored = check_profile(
            gattrs["profile"]["data"], f"{base}/{i}/attributes/profile/data", errors
        )
        partial |= ignored
        for j, ev in enumerate(gattrs["events"]["data"]):
            ptr = f"{base}/{i}/attributes/events/data/{j}/attributes"
            metric, uid, t = check_event(ev["attributes"], ptr, revision, received, errors, refuse)
            if identity and (identity, metric, uid) in seen:
                errors.append(
                    (
                        f"unique_id '{uid}' repeated for the same profile and metric "
                        "in this request",
                        f"{ptr}/unique_id",
                    )
                )
            seen.add((identity, metric, uid))
            profile = gattrs["profile"]["data"].get("attributes") or {}
            events.append(
                _event(ev["attributes"], profile, "bulk", identity, uid, t, gattrs.get("backfill"))
            )
    if errors:
        raise _invalid(errors)
    return events, partial


def parse_single(
    body: Any, revision: date, received: str, refuse: frozenset[str] = frozenset()
) -> tuple[list[StoredEvent], bool]:
    if errors := schema_errors(body, "create_event.json", "EventCreateQueryV2"):
        raise _invalid(errors)
    errors = []
    attrs = body["data"]["attributes"]
    identity, partial = check_profile(
        attrs["profile"]["data"], "/data/attributes/profile/data", errors
    )
    _, uid, t = check_event(attrs, "/data/attributes", revision, received, errors, refuse)
    if errors:
        raise _invalid(errors)
    profile = attrs["profile"]["data"].get("attributes") or {}
    return [_event(attrs, profile, "single", identity, uid, t, None)], partial


def parse_legacy(payload: Any, public_key: str) -> StoredEvent | None:
    """The v1/v2 Track payload -> StoredEvent, or None when the old API would answer `0`."""
    try:
        cp, props, t = payload["customer_properties"], payload["properties"], payload["time"]
        ok = (
            hmac.compare_digest(str(payload["token"]), public_key)
            and isinstance(payload["event"], str)
            and payload["event"]
            and isinstance(cp, dict)
            and (cp.get("$email") or cp.get("$phone_number"))
            and isinstance(props, dict)
            and props.get("$event_id") not in (None, "")
            and type(props.get("$value")) in (int, float)
            and type(t) is int
            and t >= 631152000
        )  # 1990-01-01
        if not ok:
            return None
    except (KeyError, TypeError):
        return None
    profile = {k.lstrip("$"): v for k, v in cp.items()}
    identity = str(cp["$email"]).strip().lower() if cp.get("$email") else cp["$phone_number"]
    uid = str(props["$event_id"])
    return StoredEvent(
        metric=payload["event"],
        unique_id=uid,
        time=datetime.fromtimestamp(t, UTC).isoformat(),
        value=props["$value"],
        value_currency=None,
        backfill=None,
        properties={k: v for k, v in props.items() if k not in ("$event_id", "$value")},
        profile=profile,
        endpoint="legacy",
        identity=identity,
        key_uid=uid,
    )


def _decode_legacy(raw: str) -> Any:
    raw = raw.strip()
    if raw.startswith("{"):
        return json.loads(raw)
    raw = raw.replace(" ", "+")  # a '+' left unescaped in a query string
    return json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))


# ---------------------------------------------------------------- time
class Clock:
    """time.monotonic, moved on at will: what a test would wait for (an ingestion delay, a
    rate window) is skipped, not slept. Give it to the stand-in (`StandIn(clock=...)`) and,
    in-process, to the client's limiter (`Limiter(windows, clock, clock.sleep)`): both then
    see the same skipped time, and neither waits."""

    def __init__(self) -> None:
        self.skipped = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.skipped

    def advance(self, seconds: float) -> None:
        self.skipped += seconds

    async def sleep(self, seconds: float) -> None:
        """A sleep of `seconds` that takes none: the clock moves on instead."""
        self.advance(seconds)
        await asyncio.sleep(0)


# ---------------------------------------------------------------- rate limiting
class SlidingWindow:
    """Two sliding windows counted on arrival; a request at t sees those in (t - w, t]."""

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits, self.clock = limits, clock
        self.arrivals: deque[float] = deque()

    def admit(self, now: float | None = None) -> tuple[bool, int, int, int]:
        """-> (admitted, Retry-After or RateLimit-Reset seconds, steady limit, steady left).

        Call under a lock: `now` is read inside it so the arrivals stay in order."""
        lim, now = self.limits, self.clock() if now is None else now
        while self.arrivals and self.arrivals[0] <= now - lim.steady_window:
            self.arrivals.popleft()
        steady = len(self.arrivals)
        burst = sum(
            1 for _ in takewhile(lambda a: a > now - lim.burst_window, reversed(self.arrivals))
        )
        if burst >= lim.burst or steady >= lim.steady:
            waits = []
            if burst >= lim.burst:
                waits.append(self.arrivals[-lim.burst] + lim.burst_window - now)
            if steady >= lim.steady:
                waits.append(self.arrivals[-lim.steady] + lim.steady_window - now)
            return False, max(1, math.ceil(max(waits))), lim.steady, 0
        self.arrivals.append(now)
        reset = math.ceil(self.arrivals[0] + lim.steady_window - now)
        return True, reset, lim.steady, lim.steady - steady - 1


# ---------------------------------------------------------------- server
HTML_PAGE = (
    "<html><head><title>{0} {1}</title></head><body><center><h1>{0} {1}</h1></center>"
    "<hr><center>cloudflare</center></body></html>"
)
REASONS = {
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class _Server(ThreadingHTTPServer):
    """Counts the connections it has accepted and not yet closed (`StandIn.idle`)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        self.count_lock = threading.Lock()
        self.open_connections = 0
        super().__init__(address, handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        with self.count_lock:  # accepted and counted at once: `idle` never sees one between
            request = super().get_request()
            self.open_connections += 1
        return request

    def shutdown_request(self, request: Any) -> None:
        super().shutdown_request(request)
        with self.count_lock:
            self.open_connections -= 1

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (reset, closed mid-answer) is no error of the stand-in's;
        anything else is printed, as ThreadingHTTPServer does."""
        if not isinstance(sys.exception(), ConnectionError):
            super().handle_error(request, client_address)


class StandIn:
    def __init__(
        self,
        api_key: str = "pk_test_0123456789abcdef",
        public_key: str = "AbC123",
        faults: Faults | None = None,
        bulk_limits: Limits = BULK_LIMITS,
        single_limits: Limits = SINGLE_LIMITS,
        legacy: str = "gone",
        port: int = 0,
        read_limits: dict[str, Limits] | None = None,
        clock: Clock | None = None,
    ) -> None:
        """`clock`: the time the rate windows, the ingestion delay and the request log read;
        its own `Clock` by default (monotonic time), which a test may move on."""
        if legacy not in ("gone", "accept"):
            raise ValueError("legacy must be 'gone' or 'accept'")
        self.api_key, self.public_key, self.legacy, self.port = api_key, public_key, legacy, port
        self.faults = faults or Faults()
        self.clock = clock = clock or Clock()
        self.windows = {"bulk": SlidingWindow(bulk_limits, clock),
                        "single": SlidingWindow(single_limits, clock)}  # fmt: skip
        for name, limits in (READ_LIMITS | (read_limits or {})).items():
            self.windows[name] = SlidingWindow(limits, clock)
        self.events: list[StoredEvent] = []
        self.requests: list[RequestLog] = []  # the event intake's (sends)
        self.reads: list[RequestLog] = []  # the read endpoints': apart, so sends count alone
        self.lost: list[StoredEvent] = []  # accepted (202), never processed (lost_after_ack)
        self.preloaded: list[StoredEvent] = []  # other integrations' events (preload)
        # (metric name, integration) -> its processed events, for the aggregates
        self.by_metric: dict[tuple[str, tuple[str, str]], list[StoredEvent]] = {}
        # the same, per UTC month 'YYYY-MM' (GET /api/events reads a window's months only)
        self.by_month: dict[tuple[str, tuple[str, str]], dict[str, list[StoredEvent]]] = {}
        self._listings: dict[tuple[str, str, str], tuple[int, list[StoredEvent]]] = {}
        self._encoded: dict[tuple[str, str, str, str | None], bytes] = {}
        # (metric, month) -> (its events counted, their times, the events) in time order
        self._ordered: dict[tuple[tuple[str, tuple[str, str]], str],
                            tuple[int, list[str], list[StoredEvent]]] = {}  # fmt: skip
        # (metric, month) -> (its events counted, their rollup: StandIn._rollup)
        self._rollups: dict[tuple[tuple[str, tuple[str, str]], str],
                            tuple[int, tuple[str, str, float, dict[str, list[Any]], list[Any]]]] = {}  # fmt: skip
        self.flows: dict[str, list[dict[str, Any]]] = {}  # API metric name -> flows it triggers
        # one stand-in is one Klaviyo account: two are two (as two base URLs were two)
        self.account = {"id": "Ac" + secrets.token_hex(3).upper(), "timezone": "UTC",
                        "preferred_currency": "USD"}  # fmt: skip
        self._read_rng = random.Random(self.faults.seed + 1)
        self.stats: Counter[str] = Counter()
        self.lock = threading.Lock()
        self._rng = random.Random(self.faults.seed)
        self._stored: set[tuple[str, str, str]] = set()
        self._lost_keys: set[tuple[str, str, str]] = set()  # lost once (lost_after_ack)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    def start(self) -> StandIn:
        standin = self

        class Handler(_Handler):
            owner = standin

        self._server = _Server(("127.0.0.1", self.port), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> StandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def idle(self) -> bool:
        """No connection open, none waiting to be accepted: every request that reached the
        stand-in has been logged (a request is logged before its connection can close).
        Once a client is dead, this turns true for good when the stand-in has dealt with
        what it left behind, however long validating its last bodies takes."""
        server = self._server
        if server is None:
            return True
        with server.count_lock:
            waiting, _, _ = select.select([server.socket], [], [], 0)
            return server.open_connections == 0 and not waiting

    def keys(self) -> set[tuple[str, str, str]]:
        """(profile identity, metric, unique_id) of every stored event."""
        with self.lock:
            return self._stored | self._lost_keys  # lost ones were accepted too

    def summary(self) -> dict[str, Any]:
        with self.lock:
            return {
                "requests": len(self.requests),
                "events_stored": len(self.events),
                "throttled": self.stats["429"],
                **dict(sorted(self.stats.items())),
            }

    def draw_fault(self) -> tuple[str | None, float]:
        """One fault (or None) and one variant number, from the seeded sequence."""
        f = self.faults
        with self.lock:
            u, variant = self._rng.random(), self._rng.random()
        for name, p in (
            ("reset", f.reset),
            ("lost_ack", f.lost_ack),
            ("html_502", f.html_502),
            ("server_error", f.server_error),
            ("throttle", f.throttle_no_retry_after),
        ):
            if u < p:
                return name, variant
            u -= p
        return None, variant

    def store(self, events: list[StoredEvent]) -> int:
        n = 0
        now = self.clock()
        with self.lock:
            for e in events:
                key = (e.identity, e.metric, e.key_uid)
                if key in self._stored:
                    self.stats["duplicates_skipped"] += 1
                    continue
                e = replace(e, stored_at=now)
                self.events.append(e)
                self.stats["events_without_time"] += e.time is None
                if key not in self._lost_keys and self.is_lost(key):
                    # lost once, after its 202: never processed, so not kept by its key
                    # either; the same event sent again (a repair) is processed
                    self._lost_keys.add(key)
                    self.lost.append(e)
                else:
                    self._stored.add(key)
                    self._index(e)
                n += 1
        return n

    # ------------------------------------------------------------ reading back

    def is_lost(self, key: tuple[str, str, str]) -> bool:
        """Whether the accepted event of this key is never processed (lost_after_ack): drawn
        from the key and the seed, so the same events are lost in any order of arrival."""
        share = self.faults.lost_after_ack
        if not share:
            return False
        digest = hashlib.blake2b(f"{self.faults.seed}|{'|'.join(key)}".encode(), digest_size=8)
        return int.from_bytes(digest.digest(), "big") / 2**64 < share

    def preload(self, events: list[StoredEvent]) -> None:
        """Events the account holds already, of any integration (`other_event` makes them)."""
        with self.lock:
            for e in events:
                self.preloaded.append(e)
                self._index(e)

    def _index(self, e: StoredEvent) -> None:
        """A processed event, where the aggregates and GET /api/events find it (locked)."""
        metric = (e.metric, e.integration)
        self.by_metric.setdefault(metric, []).append(e)
        months = self.by_month.setdefault(metric, {})
        months.setdefault((e.time or "")[:7], []).append(e)

    def encode_all(self) -> None:
        """Encode every processed event as GET /api/events lists it, put each month's in time
        order and count its aggregate, now (a benchmark does this before its clock starts: the
        stand-in's own JSON, its index by time and its rollups, which Klaviyo keeps, are not
        the client's time)."""
        with self.lock:
            metrics = {metric: list(events) for metric, events in self.by_metric.items()}
            months = [(metric, month, len(events), events)
                      for metric, held in self.by_month.items() for month, events in held.items()]  # fmt: skip
        for (name, integration), events in metrics.items():
            mid = metric_id(name, integration)
            for e in events:
                self.encoded(e, mid)
        for metric, month, n, events in months:
            self._in_order(metric, month, n, events)
            self._rollup(metric, month, n, events)

    def encoded(self, e: StoredEvent, mid: str) -> bytes:
        """An event as GET /api/events lists it, encoded once (the benchmarks list a million)."""
        key = (e.identity, e.metric, e.key_uid, e.time)
        found = self._encoded.get(key)
        if found is None:
            found = self._encoded[key] = json.dumps(_event_item(e, mid, self.url)).encode()
        return found

    def listing(
        self, metric: tuple[str, tuple[str, str]], start: str, end: str, now: float
    ) -> list[StoredEvent]:
        """GET /api/events: the metric's processed events with start <= time < end, past the
        ingestion delay, sorted by time (then id): the same list for every page of a query
        while nothing new arrives (cursor paging over a snapshot). Cut out of each month's
        events in that order (`_in_order`), not found by reading the whole month."""
        delay = self.faults.ingestion_delay
        with self.lock:
            total = len(self.by_metric.get(metric, ()))
            cached = self._listings.get((metric[0] + "|" + metric[1][0], start, end))
            if cached is not None and cached[0] == total and not delay:
                return cached[1]
            spans = [(month, len(events), events)
                     for month, events in self.by_month.get(metric, {}).items()
                     if start[:7] <= month <= end[:7]]  # fmt: skip
        found: list[StoredEvent] = []
        for month, n, events in sorted(spans, key=lambda span: span[0]):  # months in time order
            times, ordered = self._in_order(metric, month, n, events)
            cut = ordered[bisect_left(times, start) : bisect_left(times, end)]
            found += [e for e in cut if e.time is not None and e.stored_at + delay <= now]
        with self.lock:
            self._listings[(metric[0] + "|" + metric[1][0], start, end)] = (total, found)
        return found

    def _in_order(
        self, metric: tuple[str, tuple[str, str]], month: str, n: int, events: list[StoredEvent]
    ) -> tuple[list[str], list[StoredEvent]]:
        """The first `n` events of a month (of `events`, its list) sorted by time (then id),
        and their times: sorted once, again when the month has more."""
        with self.lock:
            known = self._ordered.get((metric, month))
        if known is not None and known[0] == n:
            return known[1], known[2]
        ordered = sorted(events[:n], key=_listing_order)
        times = [e.time or "" for e in ordered]
        with self.lock:
            self._ordered[(metric, month)] = (n, times, ordered)
        return times, ordered

    def metric_list(self) -> list[tuple[str, str, tuple[str, str]]]:
        """(id, name, integration) of every metric of the account, oldest first."""
        with self.lock:
            names = list(self.by_metric) + [(e.metric, e.integration) for e in self.lost]
        return [(metric_id(n, i), n, i) for n, i in dict.fromkeys(names)]

    def aggregate(
        self, metric: tuple[str, tuple[str, str]], start: str, end: str, now: float, grouped: bool
    ) -> list[tuple[str, dict[str, list[Any]]]]:
        """The metric's processed events with start <= time < end (UTC ISO strings, which
        order as times do), past the ingestion delay, per UTC month: counted, summed and their
        profiles (`_month_cells`), per currency if `grouped`. A month whose every event is
        in the range and past the delay is answered from its cells counted once (a rollup, as
        Klaviyo keeps; `encode_all` counts them before a benchmark's clock), any other read."""
        delay = self.faults.ingestion_delay
        with self.lock:
            spans = [(month, len(held), held) for month, held in self.by_month.get(metric, {}).items()
                     if start[:7] <= month <= end[:7]]  # fmt: skip
        out = []
        for month, n, held in spans:
            rollup = self._rollup(metric, month, n, held)
            first, last, stored, by, whole = rollup
            if n and start <= first and last < end and stored + delay <= now:
                out.append((month, by if grouped else {"": whole}))
                continue
            events = [e for e in held[:n]
                      if e.time is not None and start <= e.time < end and e.stored_at + delay <= now]  # fmt: skip
            by, whole = _month_cells(events, grouped)
            out.append((month, by if grouped else {"": whole}))
        return out

    def _rollup(
        self, metric: tuple[str, tuple[str, str]], month: str, n: int, events: list[StoredEvent]
    ) -> tuple[str, str, float, dict[str, list[Any]], list[Any]]:
        """The first `n` events of a month: (their first and last times, the latest stored_at,
        their cells per currency and all together); counted once, again when the month has
        more."""
        with self.lock:
            known = self._rollups.get((metric, month))
        if known is not None and known[0] == n:
            return known[1]
        held = events[:n]
        times = [e.time or "" for e in held]
        by, whole = _month_cells(held, True)
        rollup = (min(times, default=""), max(times, default=""),
                  max((e.stored_at for e in held), default=0.0), by, whole)  # fmt: skip
        with self.lock:
            self._rollups[(metric, month)] = (n, rollup)
        return rollup

    def draw_read_fault(self) -> str | None:
        f = self.faults
        with self.lock:
            u = self._read_rng.random()
        if u < f.read_server_error:
            return "server_error"
        if u < f.read_server_error + f.read_html_200:
            return "html_200"
        return None


def metric_id(name: str, integration: tuple[str, str]) -> str:
    """A stable six-character id per metric name and integration, like Klaviyo's."""
    digest = hashlib.blake2b(f"{integration[0]}|{name}".encode(), digest_size=6).digest()
    return base64.b32encode(digest).decode()[:6].replace("=", "")


def other_event(
    metric: str,
    time: str,
    value: float = 10.0,
    currency: str = "USD",
    integration: tuple[str, str] = ("Shopify", "eCommerce"),
    uid: str = "",
    properties: dict[str, Any] | None = None,
    identity: str = "",
) -> StoredEvent:
    """An event of another integration (Shopify's own Placed Order, say), for `preload`; with
    `integration=API` and properties holding an `OrderId`, one another API sender (the
    merchant's own live integration) sent."""
    t = datetime.fromisoformat(time).astimezone(UTC).replace(microsecond=0).isoformat()
    return StoredEvent(metric, uid or None, t, value, currency, None, properties or {}, {},
                       integration[0], integration=integration, key_uid=uid,
                       identity=identity)  # fmt: skip


def event_uuid(e: StoredEvent) -> str:
    """The uuid Klaviyo gives a stored event: stable per event here."""
    digest = hashlib.blake2b(f"{e.identity}|{e.metric}|{e.key_uid}|{e.time}".encode(),
                             digest_size=16).digest()  # fmt: skip
    return str(uuid.UUID(bytes=digest))


class _Handler(BaseHTTPRequestHandler):
    owner: StandIn
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        s = self.owner
        t0 = s.clock()
        path = urlsplit(self.path).path
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self.send_error(411, "Length Required")  # also closes the connection
            return
        body = self.rfile.read(length) if length else b""
        log = RequestLog(
            self.command,
            path,
            None,
            "answered",
            0,
            0,
            t0,
            {
                k: ("[REDACTED]" if k.lower() == "authorization" else v)
                for k, v in self.headers.items()
            },
            body,
        )
        try:
            status, payload, headers = self._route(path, body, log)
        except ApiError as e:
            status, payload = e.status, e.body()
            headers = {"Content-Type": JSONAPI, **e.headers}
        if s.faults.latency:
            time.sleep(s.faults.latency)
        if log.outcome != "answered":
            bucket = log.outcome + "s"
        else:
            log.status = status
            bucket = "5xx" if status >= 500 else "2xx" if status < 300 else str(status)
        read = _is_read(path) or (path == SINGLE_PATH and self.command == "GET")
        with s.lock:  # recorded before answering, so a client that got its answer sees it
            (s.reads if read else s.requests).append(log)
            s.stats["reads" if read else "requests"] += 1
            s.stats[f"read_{bucket}" if read else bucket] += 1
        if log.outcome != "answered":
            self._drop(rst=log.outcome == "reset")
            return
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _drop(self, rst: bool) -> None:
        self.close_connection = True
        if rst:  # linger 0: the close sends RST instead of FIN
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            self.connection.shutdown(socket.SHUT_RDWR)

    def _route(self, path: str, body: bytes, log: RequestLog) -> tuple[int, bytes, dict[str, str]]:
        s = self.owner
        if path == LEGACY_PATH:
            return self._legacy(body, log)
        if _is_read(path) or (path == SINGLE_PATH and self.command == "GET"):
            return self._read(path, body)
        endpoint = {BULK_PATH: "bulk", SINGLE_PATH: "single"}.get(path)
        if endpoint is None:
            raise ApiError(404, "not_found", "Not found.", [(f"no route for {path}", None)])
        if self.command != "POST":
            raise ApiError(
                405,
                "method_not_allowed",
                "Method not allowed.",
                [(f"{self.command} is not allowed here", None)],
            )
        self._authorize(endpoint)
        fault, variant = s.draw_fault()
        if fault == "throttle":
            raise ApiError(
                429,
                "throttled",
                "Request was throttled.",
                [("Request was throttled. Expected available in 1 second.", None)],
            )
        with s.lock:
            ok, secs, limit, left = s.windows[endpoint].admit()
        if not ok:
            unit = "second" if secs == 1 else "seconds"
            raise ApiError(
                429,
                "throttled",
                "Request was throttled.",
                [(f"Request was throttled. Expected available in {secs} {unit}.", None)],
                {"Retry-After": str(secs)},
            )
        if fault == "reset":
            log.outcome = "reset"
            return 0, b"", {}
        if fault in ("html_502", "server_error"):
            status = 502 if fault == "html_502" else (500, 502, 503, 504)[int(variant * 8) % 4]
            if fault == "html_502" or variant >= 0.5:
                page = HTML_PAGE.format(status, REASONS[status]).encode()
                return status, page, {"Content-Type": "text/html"}
            raise ApiError(
                status,
                "error",
                "A server error occurred.",
                [("Something went wrong. Please retry.", None)],
            )
        if fault == "lost_ack":
            log.outcome = "lost_ack"
        events, partial = self._validate(endpoint, body, log)
        log.n_stored = s.store(events)
        headers = {
            "RateLimit-Limit": str(limit),
            "RateLimit-Remaining": str(left),
            "RateLimit-Reset": str(secs),
        }
        if partial:
            headers["X-Klaviyo-Partial-Failure"] = "phone_number"
            with s.lock:
                s.stats["partial_failures"] += 1
        return 202, b"", headers

    def _authorize(self, endpoint: str) -> None:
        """401 without a key, 403 with a wrong one or one that lacks the endpoint's scopes."""
        s = self.owner
        auth = self.headers.get("Authorization") or ""
        if not auth.startswith("Klaviyo-API-Key "):
            raise ApiError(
                401,
                "not_authenticated",
                "Authentication credentials were not provided.",
                [("Missing or invalid Authorization header.", None)],
            )
        if not hmac.compare_digest(
            auth.removeprefix("Klaviyo-API-Key ").strip().encode(), s.api_key.encode()
        ):
            status = s.faults.wrong_key_status
            raise ApiError(
                status,
                "permission_denied" if status == 403 else "not_authenticated",
                "Incorrect authentication credentials.",
                [("The API key is not valid.", None)],
            )
        missing = [scope for scope in SCOPES[endpoint] if scope in s.faults.missing_scopes]
        if missing:
            raise ApiError(
                403,
                "permission_denied",
                "You do not have permission to perform this action.",
                [(f"This API key is missing required scopes: {', '.join(missing)}.", None)],
            )

    # ------------------------------------------------------------ reading back

    def _read(self, path: str, body: bytes) -> tuple[int, bytes, dict[str, str]]:
        s = self.owner
        name = {METRICS_PATH: "metrics", AGGREGATES_PATH: "aggregates", SINGLE_PATH: "events",
                ACCOUNTS_PATH: "accounts"}.get(path, "flows")  # fmt: skip
        method = "POST" if name == "aggregates" else "GET"
        if self.command != method:
            raise ApiError(405, "method_not_allowed", "Method not allowed.",
                           [(f"{self.command} is not allowed here", None)])  # fmt: skip
        self._authorize(name)
        if not REVISION.match(self.headers.get("revision") or ""):
            raise _invalid([("A 'revision' header (YYYY-MM-DD) is required.", None)])
        fault = s.draw_read_fault()
        with s.lock:
            ok, secs, limit, left = s.windows[name].admit()
        if not ok:
            unit = "second" if secs == 1 else "seconds"
            raise ApiError(429, "throttled", "Request was throttled.",
                           [(f"Request was throttled. Expected available in {secs} {unit}.", None)],
                           {"Retry-After": str(secs)})  # fmt: skip
        if fault == "server_error":
            return 502, HTML_PAGE.format(502, REASONS[502]).encode(), {"Content-Type": "text/html"}
        if fault == "html_200":
            page = b"<html><body><h1>Checking your browser...</h1></body></html>"
            return 200, page, {"Content-Type": "text/html"}
        if name == "metrics":
            answer = self._metrics()
        elif name == "aggregates":
            answer = self._aggregates(body)
        elif name == "accounts":
            answer = self._account()
        elif name == "events":
            answer = self._events()  # encoded already (a million events are 1,000 pages)
        else:
            answer = self._flow_triggers(path)
        headers = {"Content-Type": JSONAPI, "RateLimit-Limit": str(limit),
                   "RateLimit-Remaining": str(left), "RateLimit-Reset": str(secs)}  # fmt: skip
        body = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
        return 200, body, headers

    def _metrics(self) -> dict[str, Any]:
        """GET /api/metrics: 200 a page, `links.next` to follow, the integration filter."""
        s = self.owner
        query = parse_qs(urlsplit(self.path).query)
        items = s.metric_list()
        wanted = query.get("filter", [None])[0]
        if wanted is not None:
            match = re.fullmatch(r"equals\(integration\.(name|category),(['\"])(.*)\2\)", wanted)
            if match is None:
                raise ApiError(400, "invalid", "Invalid input.", [(
                    f"Invalid filter {wanted!r}: equals on integration.name or "
                    "integration.category only", None)])  # fmt: skip
            which = 0 if match.group(1) == "name" else 1
            items = [item for item in items if item[2][which] == match.group(3)]
        try:
            cursor = query.get("page[cursor]", [""])[0]
            offset = int(base64.urlsafe_b64decode(cursor).decode()) if cursor else 0
        except ValueError:
            raise _invalid([("Invalid page cursor.", None)]) from None
        links = {"self": s.url + self.path}
        if offset + METRICS_PAGE < len(items):
            more = {"page[cursor]": base64.urlsafe_b64encode(str(offset + METRICS_PAGE).encode())}
            if wanted is not None:
                more["filter"] = wanted.encode()
            links["next"] = f"{s.url}{METRICS_PATH}?{urlencode(more)}"
        data = [
            {
                "type": "metric",
                "id": mid,
                "attributes": {
                    "name": name,
                    "created": "2020-01-01T00:00:00+00:00",
                    "updated": "2020-01-01T00:00:00+00:00",
                    "integration": {
                        "object": "integration",
                        "id": metric_id("", integration),
                        "name": integration[0],
                        "category": integration[1],
                    },
                },
                "links": {"self": f"{s.url}{METRICS_PATH}/{mid}/"},
            }
            for mid, name, integration in items[offset : offset + METRICS_PAGE]
        ]
        return {"data": data, "links": links}

    def _aggregates(self, body: bytes) -> dict[str, Any]:
        """POST /api/metric-aggregates: count, sum_value and unique per UTC month, grouped by
        $value_currency or not, over at most one year (the stand-in's subset of the API)."""
        s = self.owner
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != JSONAPI:
            raise ApiError(415, "unsupported_media_type", "Unsupported media type.",
                           [(f"Content-Type must be {JSONAPI}.", None)])  # fmt: skip
        try:
            doc = json.loads(body, parse_constant=_reject_constant)
        except (ValueError, UnicodeDecodeError) as e:
            raise _invalid([(f"Malformed JSON: {e}", "")]) from None
        if errors := schema_errors(doc, "query_metric_aggregates.json", "MetricAggregateQuery"):
            raise _invalid(errors)
        attrs = doc["data"]["attributes"]
        metrics = {mid: (name, integration) for mid, name, integration in s.metric_list()}
        metric = metrics.get(attrs["metric_id"])
        if metric is None:
            raise ApiError(404, "not_found", "Not found.",
                           [(f"No metric with id {attrs['metric_id']}.", "/data/attributes/metric_id")])  # fmt: skip
        start, end = _aggregate_query(attrs)
        reach = s.faults.aggregate_reach_years
        if reach and start < datetime.now(UTC) - timedelta(days=365.25 * reach):
            raise _invalid(
                [(f"Dates may go back at most {reach:g} years.", "/data/attributes/filter")]
            )
        cells = s.aggregate(
            metric, start.isoformat(), end.isoformat(), s.clock(), bool(attrs.get("by"))
        )
        return _aggregate_answer(cells, start, end, attrs, s.url)

    def _events(self) -> bytes:
        """GET /api/events: `filter` with equals(metric_id,...) and greater-or-equal/less-than
        on datetime (comma-separated or in and(...)), `page[size]` 1-1000 (default 200),
        `page[cursor]`, `links.next`; each event with its properties as sent plus `$value`."""
        s = self.owner
        query = parse_qs(urlsplit(self.path).query)
        mid, start, end = _events_filter(query.get("filter", [""])[0])
        try:
            size = int(query.get("page[size]", [str(EVENTS_PAGE_DEFAULT)])[0])
        except ValueError:
            size = 0
        if not 1 <= size <= EVENTS_PAGE_MAX:
            raise _invalid([(f"page[size] must be 1 to {EVENTS_PAGE_MAX}.", None)])
        metrics = {m: (name, integration) for m, name, integration in s.metric_list()}
        metric = metrics.get(mid)
        if metric is None:
            raise _invalid([(f"No metric with id {mid}.", None)])
        try:
            cursor = query.get("page[cursor]", [""])[0]
            offset = int(base64.urlsafe_b64decode(cursor).decode()) if cursor else 0
        except ValueError:
            raise _invalid([("Invalid page cursor.", None)]) from None
        found = s.listing(metric, start, end, s.clock())
        links: dict[str, str | None] = {"self": s.url + self.path, "next": None}
        if offset + size < len(found):
            more = {"filter": query["filter"][0], "page[size]": str(size),
                    "page[cursor]": base64.urlsafe_b64encode(str(offset + size).encode()).decode()}  # fmt: skip
            links["next"] = f"{s.url}{SINGLE_PATH}?{urlencode(more)}"
        items = b",".join(s.encoded(e, mid) for e in found[offset : offset + size])
        return b'{"data":[' + items + b'],"links":' + json.dumps(links).encode() + b"}"

    def _flow_triggers(self, path: str) -> dict[str, Any]:
        s = self.owner
        match = FLOW_TRIGGERS.match(path)
        assert match is not None
        metrics = {mid: (name, integration) for mid, name, integration in s.metric_list()}
        metric = metrics.get(match.group(1))
        if metric is None:
            raise ApiError(404, "not_found", "Not found.", [(f"No metric {match.group(1)}.", None)])
        flows = s.flows.get(metric[0], []) if metric[1] == API else []
        data = [{"type": "flow", "id": f["id"], "attributes": {
                    "name": f["name"], "status": f.get("status", "live"),
                    "archived": f.get("archived", False), "trigger_type": "Metric",
                    "created": "2020-01-01T00:00:00+00:00", "updated": "2020-01-01T00:00:00+00:00"},
                 "links": {"self": f"{s.url}/api/flows/{f['id']}/"}} for f in flows]  # fmt: skip
        return {"data": data, "links": {"self": s.url + path}}

    def _account(self) -> dict[str, Any]:
        s = self.owner
        a = s.account
        attributes = {
            "test_account": False,
            "contact_information": {
                "default_sender_name": "Shop",
                "default_sender_email": "shop@example.com",
                "organization_name": "Shop",
                "street_address": {},
            },
            "industry": None,
            "timezone": a["timezone"],
            "preferred_currency": a["preferred_currency"],
            "public_api_key": s.public_key,
            "locale": "en-US",
        }
        item = {"type": "account", "id": a["id"], "attributes": attributes,
                "links": {"self": f"{s.url}{ACCOUNTS_PATH}/{a['id']}/"}}  # fmt: skip
        return {"data": [item], "links": {"self": s.url + ACCOUNTS_PATH}}

    def _validate(
        self, endpoint: str, body: bytes, log: RequestLog
    ) -> tuple[list[StoredEvent], bool]:
        rev = REVISION.match(self.headers.get("revision") or "")
        try:
            revision = date.fromisoformat(rev.group(1)) if rev else None
        except ValueError:
            revision = None
        if revision is None:
            raise _invalid([("A 'revision' header (YYYY-MM-DD) is required.", None)])
        if endpoint == "bulk" and revision < date(2024, 5, 15):
            raise _invalid([("This endpoint needs revision 2024-05-15 or later.", None)])
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != JSONAPI:
            raise ApiError(
                415,
                "unsupported_media_type",
                "Unsupported media type.",
                [(f"Content-Type must be {JSONAPI}.", None)],
            )
        if len(body) > MAX_BODY:
            raise ApiError(
                413,
                "payload_too_large",
                "Payload too large.",
                [("The request body exceeds 5 MB.", None)],
            )
        try:
            doc = json.loads(body, parse_constant=_reject_constant)
        except (ValueError, UnicodeDecodeError) as e:
            raise _invalid([(f"Malformed JSON: {e}", "")]) from None
        try:
            groups = doc["data"]["attributes"]["events-bulk-create"]["data"]
            log.n_events = sum(len(g["attributes"]["events"]["data"]) for g in groups)
        except (KeyError, TypeError):
            log.n_events = 1 if endpoint == "single" else 0
        received = datetime.fromtimestamp(time.time(), UTC).replace(microsecond=0).isoformat()
        parse = parse_bulk if endpoint == "bulk" else parse_single
        return parse(doc, revision, received, self.owner.faults.refuse_uids)

    def _legacy(self, body: bytes, log: RequestLog) -> tuple[int, bytes, dict[str, str]]:
        s = self.owner
        if s.legacy == "gone":
            raise ApiError(
                410,
                "gone",
                "Gone.",
                [("The v1/v2 Track API was retired on 2024-06-30; use POST /api/events.", None)],
            )
        fault, _ = s.draw_fault()
        if fault in ("reset", "lost_ack"):
            log.outcome = fault
            if fault == "reset":
                return 0, b"", {}
        elif fault in ("html_502", "server_error"):
            return 502, HTML_PAGE.format(502, REASONS[502]).encode(), {"Content-Type": "text/html"}
        elif fault == "throttle":
            raise ApiError(
                429,
                "throttled",
                "Request was throttled.",
                [("Request was throttled. Expected available in 1 second.", None)],
            )
        query = urlsplit(self.path).query if self.command == "GET" else body.decode("latin-1")
        raw = parse_qs(query).get("data", [""])[0]
        try:
            event = parse_legacy(_decode_legacy(raw), s.public_key)
        except ValueError:
            event = None
        log.n_events = 1
        if event is None:
            return 200, b"0", {"Content-Type": "text/plain"}
        log.n_stored = s.store([event])
        return 200, b"1", {"Content-Type": "text/plain"}


def _is_read(path: str) -> bool:
    return path in (METRICS_PATH, AGGREGATES_PATH, ACCOUNTS_PATH) or bool(FLOW_TRIGGERS.match(path))


_CONDITION = re.compile(
    r"(equals|greater-or-equal|less-than)\((metric_id|datetime),(?:\"([^\"]*)\"|'([^']*)'|([^,)]*))\)"
)


def _events_filter(text: str) -> tuple[str, str, str]:
    """(metric id, start, end) of an events filter; UTC ISO times (any range when absent)."""
    inner = text[4:-1] if text.startswith("and(") and text.endswith(")") else text
    found: dict[tuple[str, str], str] = {}
    rest = _CONDITION.sub(lambda m: found.setdefault((m[1], m[2]), m[3] or m[4] or m[5]) and "",
                          inner)  # fmt: skip
    mid = found.get(("equals", "metric_id"))
    if rest.strip(", ") or mid is None:
        raise _invalid([(f"Invalid filter {text[:200]!r}: the stand-in takes equals(metric_id,"
                         "...) with greater-or-equal/less-than on datetime", None)])  # fmt: skip
    bounds = []
    for op, default in (("greater-or-equal", "0001-01-01T00:00:00+00:00"),
                        ("less-than", "9999-12-31T00:00:00+00:00")):  # fmt: skip
        raw = found.get((op, "datetime"))
        try:
            when = datetime.fromisoformat(raw) if raw else datetime.fromisoformat(default)
        except ValueError:
            raise _invalid([(f"Invalid datetime {raw!r}.", None)]) from None
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
        bounds.append(when.astimezone(UTC).isoformat())
    return mid, bounds[0], bounds[1]


def _listing_order(e: StoredEvent) -> tuple[str, str, str]:
    return (e.time or "", e.identity, e.key_uid)


def _event_item(e: StoredEvent, mid: str, url: str) -> dict[str, Any]:
    props = dict(e.properties)
    if e.value is not None:
        props["$value"] = e.value
    when = datetime.fromisoformat(e.time) if e.time else datetime.now(UTC)
    eid = event_uuid(e)
    return {"type": "event", "id": eid.replace("-", "")[:26], "attributes": {
                "timestamp": int(when.timestamp()), "event_properties": props,
                "datetime": when.isoformat(), "uuid": eid},
            "relationships": {"metric": {"data": {"type": "metric", "id": mid}},
                              "profile": {"data": {"type": "profile", "id": e.identity[:26]}}},
            "links": {"self": f"{url}{SINGLE_PATH}/{eid}/"}}  # fmt: skip


_RANGE = re.compile(r"^(greater-or-equal|less-than)\(datetime,([^)]+)\)$")


def _aggregate_query(attrs: dict[str, Any]) -> tuple[datetime, datetime]:
    """The checks of a metric-aggregates query (Klaviyo's, and the stand-in's limits: month
    intervals, UTC, $value_currency only): -> its time range, at most one year long."""
    ptr = "/data/attributes"
    if not attrs["measurements"] or set(attrs["measurements"]) - {"count", "sum_value", "unique"}:
        raise _invalid([("measurements: count, sum_value or unique", f"{ptr}/measurements")])
    if (attrs.get("interval") or "day") != "month":
        raise _invalid([("the stand-in answers interval 'month' only", f"{ptr}/interval")])
    if (attrs.get("by") or []) not in ([], ["$value_currency"]):
        raise _invalid([("the stand-in groups by $value_currency only", f"{ptr}/by")])
    if (attrs.get("timezone") or "UTC") != "UTC":
        raise _invalid([("the stand-in answers timezone UTC only", f"{ptr}/timezone")])
    bounds: dict[str, datetime] = {}
    for i, text in enumerate(attrs["filter"]):
        match = _RANGE.match(text)
        try:
            when = datetime.fromisoformat(match.group(2)) if match else None
        except ValueError:
            when = None
        if match is None or when is None:
            raise _invalid([(f"unsupported filter {text!r}", f"{ptr}/filter/{i}")])
        bounds[match.group(1)] = (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC)
    start, end = bounds.get("greater-or-equal"), bounds.get("less-than")
    if start is None or end is None or end <= start:
        raise _invalid([("filter must give a time range: greater-or-equal(datetime,...) and "
                         "less-than(datetime,...), in that order of time", f"{ptr}/filter")])  # fmt: skip
    try:
        year_on = start.replace(year=start.year + 1)
    except ValueError:  # 29 February
        year_on = start.replace(year=start.year + 1, day=28)
    if end > year_on:
        raise _invalid([("The time range of a query may span at most one year.", f"{ptr}/filter")])
    return start, end


def _month_cells(
    events: list[StoredEvent], grouped: bool
) -> tuple[dict[str, list[Any]], list[Any]]:
    """A month's events: per currency (if `grouped`) and all together, [count, sum of values
    (in their order), their profiles]."""
    by: dict[str, list[Any]] = {}
    whole: list[Any] = [0.0, 0.0, set()]
    for e in events:
        value = float(e.value or 0)
        if grouped:
            cell = by.get(e.value_currency or "")
            if cell is None:
                cell = by[e.value_currency or ""] = [0.0, 0.0, set()]
            cell[0] += 1.0
            cell[1] += value
            cell[2].add(e.identity)
        whole[0] += 1.0
        whole[1] += value
        whole[2].add(e.identity)
    return by, whole


def _aggregate_answer(
    cells: list[tuple[str, dict[str, list[Any]]]], start: datetime, end: datetime,
    attrs: dict[str, Any], url: str,
) -> dict[str, Any]:  # fmt: skip
    months = []
    month = start.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    while month < end:
        months.append(month)
        month = month.replace(year=month.year + month.month // 12, month=month.month % 12 + 1)
    index = {m.strftime("%Y-%m"): i for i, m in enumerate(months)}
    grouped = bool(attrs.get("by"))
    groups: dict[str, list[list[Any]]] = {}  # currency -> [counts, sums, profiles]
    for month, held in cells:
        for currency, (count, total, profiles) in held.items():
            if not count:
                continue
            i = index[month]
            series = groups.get(currency)
            if series is None:
                series = groups[currency] = [[0.0] * len(months), [0.0] * len(months),
                                             [set() for _ in months]]  # fmt: skip
            series[0][i] += count
            series[1][i] += total
            series[2][i] |= profiles
    if not grouped and not groups:
        groups[""] = [[0.0] * len(months), [0.0] * len(months), [set() for _ in months]]
    rows = []
    for currency, (counts, sums, profiles) in sorted(groups.items()):
        series = {"count": counts, "sum_value": [round(v, 6) for v in sums],
                  "unique": [float(len(p)) for p in profiles]}  # fmt: skip
        rows.append({"dimensions": [currency] if grouped else [],
                     "measurements": {m: series[m] for m in attrs["measurements"]}})  # fmt: skip
    return {
        "data": {
            "type": "metric-aggregate",
            "id": str(uuid.uuid4()),
            "attributes": {"dates": [m.isoformat() for m in months], "data": rows},
            "links": {"self": url + AGGREGATES_PATH},
        },
        "links": {"self": url + AGGREGATES_PATH},
    }


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# ---------------------------------------------------------------- process entry point
def _limits(text: str) -> Limits:
    (b, bw), (st, sw) = (part.split("/") for part in text.split(","))
    return Limits(int(b), float(bw), int(st), float(sw))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--api-key", default="pk_test_0123456789abcdef")
    ap.add_argument("--public-key", default="AbC123")
    ap.add_argument("--legacy", choices=["gone", "accept"], default="gone")
    ap.add_argument("--bulk-limits", type=_limits, default=BULK_LIMITS, help="10/1,150/60")
    ap.add_argument("--single-limits", type=_limits, default=SINGLE_LIMITS, help="350/1,3500/60")
    for name in (
        "server-error",
        "reset",
        "lost-ack",
        "html-502",
        "throttle-no-retry-after",
        "latency",
    ):
        ap.add_argument(f"--{name}", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    faults = Faults(
        a.server_error,
        a.reset,
        a.lost_ack,
        a.html_502,
        a.throttle_no_retry_after,
        a.latency,
        a.seed,
    )
    standin = StandIn(
        a.api_key, a.public_key, faults, a.bulk_limits, a.single_limits, a.legacy, a.port
    ).start()
    print(f"listening {standin.url}", flush=True)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    while not done.wait(0.2):
        pass
    standin.stop()
    print(json.dumps(standin.summary()), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
