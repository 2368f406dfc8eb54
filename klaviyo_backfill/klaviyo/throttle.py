"""Client-side rate limiting: both of Klaviyo's windows, sliding, plus a shared pause.

Klaviyo counts requests per account in a burst window (per second) and a steady window
(per minute), on arrival. The limiter admits a request only when neither window is full,
counting from when requests left; since a request arrives some time after it leaves (a
bulk body is up to 5 MB), each window is widened by the longest recent request time. So a
run paced by it reaches the ceiling without tripping it; a 429 pauses every sender at once.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import Callable

from ..errors import UsageError
from .endpoints import Window

__all__ = ["Limiter", "Window", "ideal_seconds", "parse_rate_limit"]

log = logging.getLogger("klaviyo_backfill.throttle")


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_rate_limit(text: str) -> tuple[Window, ...]:
    """'10/s,150/m' -> two windows; '5/2s' is five per two seconds."""
    windows = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d*\.?\d*)\s*([smh])\s*", part)
        if not match or int(match.group(1)) < 1:
            raise UsageError(f"--rate-limit {text!r} is not understood", "Write e.g. 10/s,150/m.")
        count, scale, unit = match.groups()
        windows.append(Window(int(count), float(scale or 1) * _UNITS[unit]))
    return tuple(windows)


def ideal_seconds(requests: int, windows: tuple[Window, ...]) -> float:
    """The least time `requests` requests take under the windows, as Klaviyo counts them:
    the greedy schedule t_k = max(t_(k-1), t_(k-limit) + seconds) for every window, from the
    first request at 0 to the start of the last (answers not counted)."""
    starts: deque[float] = deque(maxlen=max((w.limit for w in windows), default=1))
    last = 0.0
    for _ in range(requests):
        t = last
        for window in windows:
            if len(starts) >= window.limit:
                t = max(t, starts[-window.limit] + window.seconds)
        starts.append(t)
        last = t
    return last


class Limiter:
    def __init__(
        self, windows: tuple[Window, ...], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.windows = windows
        self.clock = clock
        self.longest = max((w.seconds + w.margin for w in windows), default=0.0)
        self.stamps: deque[float] = deque()
        self.paused_until = 0.0
        self.throttled = 0
        self.transit = 0.0  # a slowly forgetting maximum of recent request times

    def observe(self, seconds: float) -> None:
        """A request took this long from leaving to its answer."""
        self.transit = max(seconds, self.transit * 0.95)

    def delay(self, now: float) -> float:
        """Seconds until one more request may start."""
        wait = self.paused_until - now
        stamps = self.stamps
        for window in self.windows:
            if len(stamps) >= window.limit:
                extra = window.margin + min(self.transit, window.seconds)
                wait = max(wait, stamps[-window.limit] + window.seconds + extra - now)
        return wait

    async def acquire(self, stop: asyncio.Event | None = None) -> bool:
        """Wait for a turn to start a request: True, or False when `stop` was set first."""
        while True:
            now = self.clock()
            while self.stamps and self.stamps[0] < now - 2 * self.longest:
                self.stamps.popleft()
            wait = self.delay(now)
            if wait <= 0:
                self.stamps.append(now)
                return True
            log.log(logging.INFO if wait >= 1 else logging.DEBUG,
                    "throttle: waiting %.2f s for %s", wait, self._why(now))  # fmt: skip
            if stop is None:
                await asyncio.sleep(wait)
                continue
            try:
                await asyncio.wait_for(stop.wait(), wait)
                return False
            except TimeoutError:
                pass

    def _why(self, now: float) -> str:
        if self.paused_until > now:
            return "Klaviyo's 429 (Retry-After)"
        full = [w for w in self.windows if len(self.stamps) >= w.limit]
        return ", ".join(f"the {w.limit}/{w.seconds:g}s window" for w in full) or "a window"

    def pause(self, seconds: float) -> None:
        """Klaviyo said 429: nobody starts a request for `seconds`."""
        self.throttled += 1
        self.paused_until = max(self.paused_until, self.clock() + seconds)
        log.info("429: every request pauses %.1f s", seconds)
