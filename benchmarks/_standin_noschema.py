"""tests/standin.py as a process, minus its jsonschema pass over each body.

The stand-in checks every request against Klaviyo's OpenAPI request schema with jsonschema,
which costs ~0.3 s of CPU per 1,000-event bulk body (measured on the benchmark machine) and
holds the GIL while it does. At the scaled limits send.py uses (5 bulk requests a second,
10 in a burst) that alone would need 1.5-3 cores, so the benchmark would measure the
stand-in, not the client: its arrival stamps (taken before validation) drift under GIL
contention and its answers queue behind validation. Everything else stays: auth, revision,
media type, body size, semantic checks per event (identifiers, times, string/array limits,
repeated ids), dedupe, the sliding-window rate limits, 429s with Retry-After, latency.

Used by send.py unless --full-validation; same command line and output as tests/standin.py.
With KB_STANDIN_TRACE=PATH in its environment it writes, when stopped, one JSON line per
request to PATH: when its headers were read, when the rate limiter counted it and when its
answer began (time.monotonic(), which another process on this machine can compare with its
own), its status, events and body bytes; then one line per full garbage collection of its
own, with when it began and how long it took (send.py --trace).
"""

import gc
import json
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import standin

standin.schema_errors = lambda *args, **kwargs: []

# The stand-in keeps every event it stored (and every request's body) as Python objects, ~1M
# by the end of a long run: each full garbage collection rescans them all, stalling every
# request for up to ~1 s (24 collections, 11 s in all, measured over 442k events). Klaviyo
# does not pause for an account's stored events, so what it has stored is frozen out of the
# collector's sight as it goes (gc.freeze moves it to the permanent generation in O(1)).
_store = standin.StandIn.store


def _store_frozen(self, events):  # type: ignore[no-untyped-def]
    stored = _store(self, events)
    gc.freeze()
    return stored


standin.StandIn.store = _store_frozen

TRACE = os.environ.get("KB_STANDIN_TRACE")
if TRACE:
    _current = threading.local()  # the request this handler thread is routing
    _counted: dict[int, float] = {}  # id(RequestLog) -> when the rate limiter counted it
    _answered: dict[int, float] = {}  # id(RequestLog) -> when its answer began
    _admit, _route = standin.SlidingWindow.admit, standin._Handler._route
    _respond, _stop = standin._Handler.send_response, standin.StandIn.stop
    _gc: list[list[float]] = []  # [start, end] of each full garbage collection

    def _on_gc(phase, info):  # type: ignore[no-untyped-def]
        if info["generation"] == 2:
            if phase == "start":
                _gc.append([time.monotonic(), 0.0])
            elif _gc:
                _gc[-1][1] = time.monotonic()

    def _traced_admit(self, now=None):  # type: ignore[no-untyped-def]
        now = time.monotonic() if now is None else now
        _counted[id(_current.log)] = now
        return _admit(self, now)

    def _traced_route(self, path, body, log):  # type: ignore[no-untyped-def]
        _current.log = log
        return _route(self, path, body, log)

    def _traced_respond(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        log = getattr(_current, "log", None)
        if log is not None:
            _answered[id(log)] = time.monotonic()
        return _respond(self, *args, **kwargs)

    def _traced_stop(self):  # type: ignore[no-untyped-def]
        _stop(self)
        with open(TRACE, "w") as fh:
            for log in sorted(self.requests, key=lambda r: r.time_received):
                fh.write(json.dumps({"received": log.time_received,
                                     "counted": _counted.get(id(log)),
                                     "answered": _answered.get(id(log)), "status": log.status,
                                     "events": log.n_events, "bytes": len(log.body)}) + "\n")  # fmt: skip
            for start, end in _gc:
                fh.write(json.dumps({"gc": start, "seconds": end - start}) + "\n")

    gc.callbacks.append(_on_gc)
    standin.SlidingWindow.admit = _traced_admit
    standin._Handler._route = _traced_route
    standin._Handler.send_response = _traced_respond
    standin.StandIn.stop = _traced_stop

if __name__ == "__main__":
    standin.main(sys.argv[1:])
