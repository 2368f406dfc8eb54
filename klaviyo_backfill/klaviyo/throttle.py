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
import math
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError
from .endpoints import Window

__all__ = ["Limiter", "Wait", "Window", "ideal_seconds", "parse_rate_limit"]

log = logging.getLogger("klaviyo_backfill.throttle")


@dataclass(frozen=True, slots=True)
class Wait:
    """A wait the sender is in, told to whoever watches the run (the limiter's `observer`)."""

    seconds: float
    until: float  # on the limiter's clock (time.monotonic)
    cause: str  # "window": a rate window is full; "429": Klaviyo asked; "retry": a backoff
    window: Window | None = None  # the full window ("window")
    detail: str = ""  # why a request is retried ("retry")


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
    """`acquire` before a request leaves, `done` once its answer (or its failure) is back.

    A request counts in each window from when it leaves (it may arrive at once) until a window
    after its answer (it arrived by then): one more may leave only while every window holds
    fewer than its limit of those. A request in flight counts as arriving now, an answered one
    as having arrived when its answer came: the latest it can have arrived. So no window at
    Klaviyo ever holds more than its limit, however long requests take, and each request
    costs its own time, not the slowest recent one's. Requests also leave no closer together
    than the shortest window's even pace (0.1 s at 10/s): the same rate, without clumps that
    queue at the server and lengthen every request's time in the windows.
    """

    def __init__(
        self,
        windows: tuple[Window, ...],
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.windows = windows
        self.clock, self.sleep = clock, sleep  # a pair: `sleep(s)` lets `clock` move s on
        self.longest = max((w.seconds + w.margin for w in windows), default=0.0)
        shortest = min(windows, key=lambda w: w.seconds, default=None)
        self.spacing = shortest.seconds / shortest.limit if shortest else 0.0
        self.left = -math.inf  # when the last request left
        self.in_flight = 0  # left, not answered: each may arrive any time yet
        self.answers: deque[float] = deque()  # when answers came back, oldest first
        self.answered = asyncio.Event()  # an answer came: a full window may have room
        self.paused_until = 0.0
        self.throttled = 0
        self.observer: Callable[[Wait], None] = lambda wait: None
        self._told: dict[str, float] = {}  # cause -> when the last wait told of ends

    def done(self) -> None:
        """A request's answer (or its failure) is back: it arrived by now, if at all."""
        self.in_flight -= 1
        self.answers.append(self.clock())
        self.answered.set()

    def delay(self, now: float) -> float:
        """Seconds until one more request may leave (inf: not before an answer comes)."""
        return self._blocking(now)[0]

    def _blocking(self, now: float) -> tuple[float, Window | None]:
        """`delay`, and the window that sets it (None: a 429's pause, the pace, or no wait)."""
        wait, blocking = max(self.paused_until, self.left + self.spacing) - now, None
        answers = self.answers
        for window in self.windows:
            room = window.limit - 1 - self.in_flight  # answered ones the window may still hold
            if room < 0:
                return math.inf, window
            if len(answers) > room:  # the newest `room` may stay; the one before must be out
                until = answers[-room - 1] + window.seconds + window.margin - now
                if until > wait:
                    wait, blocking = until, window
        return wait, blocking

    async def acquire(self, stop: asyncio.Event | None = None) -> bool:
        """Wait for a turn to start a request: True, or False when `stop` was set first."""
        while True:
            now = self.clock()
            while self.answers and self.answers[0] <= now - self.longest:
                self.answers.popleft()
            wait, window = self._blocking(now)
            if wait <= 0:
                self.in_flight += 1
                self.left = now
                return True
            if wait != math.inf:
                log.log(logging.INFO if wait >= 1 else logging.DEBUG,
                        "throttle: waiting %.2f s for %s", wait, self._why(now))  # fmt: skip
                if window is not None:
                    self.tell(Wait(wait, now + wait, "window", window))
            if not await self._sleep(wait, stop):
                return False

    async def nap(self, seconds: float, stop: asyncio.Event) -> None:
        """Sleep `seconds` on this limiter's clock (a retry's wait), unless `stop` comes first."""
        await self._sleep(seconds, stop)

    async def _sleep(self, wait: float, stop: asyncio.Event | None) -> bool:
        """Sleep `wait` seconds (inf: until an answer comes); False when `stop` came first."""
        if wait == math.inf:
            self.answered.clear()
            woken: asyncio.Future[Any] = asyncio.ensure_future(self.answered.wait())
        elif stop is None:
            await self.sleep(wait)
            return True
        else:
            woken = asyncio.ensure_future(self.sleep(wait))
        waits = [woken] if stop is None else [woken, asyncio.ensure_future(stop.wait())]
        _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        return not (stop is not None and stop.is_set())

    def tell(self, wait: Wait) -> None:
        """Tell the observer of a wait, once (every worker meets the same one)."""
        if wait.until > self._told.get(wait.cause, 0.0) + 0.5:
            self._told[wait.cause] = wait.until
            self.observer(wait)

    def _why(self, now: float) -> str:
        if self.paused_until > now:
            return "Klaviyo's 429 (Retry-After)"
        window = self._blocking(now)[1]
        return f"the {window.limit}/{window.seconds:g}s window" if window else "the even pace"

    def pause(self, seconds: float) -> None:
        """Klaviyo said 429: nobody starts a request for `seconds`."""
        self.throttled += 1
        now = self.clock()
        self.paused_until = max(self.paused_until, now + seconds)
        log.info("429: every request pauses %.1f s", seconds)
        self.tell(Wait(seconds, now + seconds, "429"))
