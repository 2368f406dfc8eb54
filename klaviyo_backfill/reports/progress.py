"""What a send shows while it runs, on stderr (results.Watcher, rendered).

    a terminal      a live line at any width from 60 columns: events done / total, events/s,
                    the ETA, and the counters that are not zero (on a second line when they
                    do not fit); below it, any wait over 2 s ("waiting 41 s for Klaviyo's
                    per-minute limit", "Klaviyo asked to wait 30 s (429)")
    not a terminal  a plain line every 30 s, and one at each wait over 10 s (nohup, cron, CI,
                    `2> log.txt`): a run of hours shows signs of life in its log
    --quiet         nothing, but what a Ctrl-C asks for

The ETA is the events left at the pace the sender can keep: the slower of the rate measured
over the last minute and the ceiling the rate windows allow (requests per second x events
per request), so the burst that opens a minute's window does not promise what the window
takes back, and a wait is counted in, not frozen over.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from ..klaviyo.sender import SendStats
from ..klaviyo.throttle import Wait, Window
from ..pipeline.summary import Stats

__all__ = ["Progress", "Reading", "clock_text", "plain", "render", "wait_text"]

SHOW_WAIT = 2.0  # a wait longer than this is a status line on a terminal
LOG_WAIT = 10.0  # and a line of its own in a log
LOG_EVERY = 30.0  # seconds between two lines in a log
RATE_SPAN = 60.0  # the rate is measured over this much of the recent past
_BAR_MIN = 10  # a bar narrower than this is left out
_BAR_KEEP = 20  # counters go on a line of their own rather than narrow the bar below this
DRIFT = 0.02  # an estimated total is shown anew only when it moves by more than this share


def clock_text(seconds: float) -> str:
    """H:MM:SS."""
    whole = max(0, round(seconds))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def window_name(window: Window) -> str:
    named = {1.0: "per-second", 60.0: "per-minute", 3600.0: "per-hour"}
    return named.get(window.seconds) or f"{window.limit}-per-{window.seconds:g}-s"


def wait_text(wait: Wait, left: float, whose: str) -> str:
    """A wait, as a person reads it, with `left` seconds of it to go."""
    n = max(1, round(left))
    if wait.cause == "429":
        return f"Klaviyo asked to wait {n} s (429)"
    if wait.cause == "retry":
        return f"retrying a request in {n} s ({wait.detail})"
    name = window_name(wait.window) if wait.window else "rate"
    return f"waiting {n} s for {whose} {name} limit"


@dataclass(frozen=True)
class Reading:
    """What the progress says at one moment: plain data, drawn by `render` and `plain`."""

    done: int  # events settled (taken or refused)
    total: int  # events the run will hold (estimated from the bytes read)
    rate: float | None  # events/s, measured (None: too early to tell)
    eta: float | None  # seconds (None: nothing to base it on yet)
    counters: list[str] = field(default_factory=list)  # the ones that are not zero
    status: str | None = None  # a wait, while it lasts
    estimated: bool = False  # the total is an estimate (the export is still being read)

    def essentials(self) -> str:
        rate = "-" if self.rate is None else f"{self.rate:,.0f}"
        eta = "-:--:--" if self.eta is None else clock_text(self.eta)
        about = "~" if self.estimated else ""
        return f"{self.done:,}/{about}{self.total:,} events · {rate} events/s · ETA {eta}"


def _bar(share: float, width: int) -> Text:
    filled = int(width * min(1.0, max(0.0, share)))
    bar = Text("━" * filled, style="green")
    bar.append("━" * (width - filled), style="grey35")
    return bar


def render(reading: Reading, width: int) -> Group:
    """The terminal's lines at `width` columns: the counts, the rate and the ETA never cut
    (from 60 columns up); the bar takes what room is left, the counters a line of their own
    when they do not fit beside them."""
    head, counters = reading.essentials(), " · ".join(reading.counters)
    rest: list[str] = []
    if counters and len(head) + 3 + len(counters) + 1 + _BAR_KEEP <= width:
        head = f"{head} · {counters}"
    elif counters:
        rest = _packed(reading.counters, width)
    first = Text()
    room = width - len(head) - 1
    if room >= _BAR_MIN:
        first.append_text(_bar(reading.done / reading.total if reading.total else 0.0, room))
        first.append(" ")
    first.append(head)
    lines = [first, *map(Text, rest)]
    if reading.status:
        lines.append(Text(reading.status, style="yellow"))
    return Group(*lines)


def _packed(items: list[str], width: int) -> list[str]:
    """Items joined by " · " into lines of at most `width`, none split."""
    lines: list[str] = []
    for item in items:
        if lines and len(lines[-1]) + 3 + len(item) <= width:
            lines[-1] += f" · {item}"
        else:
            lines.append(item)
    return lines


def plain(reading: Reading, elapsed: float) -> str:
    """A log's line: no bar, no colour, the time since the send began."""
    share = f" ({100 * reading.done / reading.total:.0f}%)" if reading.total else ""
    head = reading.essentials().replace(" events ·", f" events{share} ·", 1)
    counters = "".join(f" · {c}" for c in reading.counters)
    return f"[{clock_text(elapsed)}] {head}{counters}"


class Progress:
    """A results.Watcher that draws on stderr (a terminal), writes lines (a log), or keeps quiet."""

    def __init__(
        self,
        enabled: bool = True,
        err: Console | None = None,
        every: float = LOG_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.err = err or Console(stderr=True, highlight=False)
        self.mode = "off" if not enabled else "live" if self.err.is_terminal else "log"
        self.every, self.clock = every, clock
        self.stats: Stats | None = None
        self.send: SendStats | None = None
        self.samples: deque[tuple[float, int]] = deque()  # (when, events done)
        self.windows: tuple[Window, ...] = ()
        self.per_request, self.whose = 1, "Klaviyo's"
        self.wait: Wait | None = None
        self.total: int | None = None  # the total shown: it moves only by more than DRIFT
        self.started: float | None = None
        self.live: Live | None = None
        self.ticking: threading.Thread | None = None
        self.done = threading.Event()
        self.lock = threading.Lock()

    def __enter__(self) -> Progress:
        return self  # drawing starts with the first update: after any prompt for the key

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.done.set()
        if self.live is not None:
            self.live.stop()
        if self.ticking is not None:
            self.ticking.join()

    # ------------------------------------------------------------ results.Watcher

    def pacing(self, windows: tuple[Window, ...], per_request: int, whose: str) -> None:
        self.windows, self.per_request, self.whose = windows, per_request, whose

    def update(self, stats: Stats, send: SendStats) -> None:
        self.stats, self.send = stats, send
        now = self.clock()
        if self.started is None:
            self.started = now
            self._start()
        if not self.samples or now - self.samples[-1][0] >= 0.5:
            self.samples.append((now, self._done()))
            while len(self.samples) > 2 and now - self.samples[1][0] >= RATE_SPAN:
                self.samples.popleft()

    def waiting(self, wait: Wait) -> None:
        self.wait = wait
        if self.mode == "log" and wait.seconds > LOG_WAIT:
            self._write(
                f"[{clock_text(self._elapsed())}] {wait_text(wait, wait.seconds, self.whose)}"
            )

    def stopping(self, in_flight: int) -> None:
        if in_flight:
            told = f"finishing {in_flight} request{'s' if in_flight != 1 else ''} in flight"
        else:
            told = "no request in flight"
        self._write(f"stopping: {told}; Ctrl-C again to abandon them" if in_flight
                    else f"stopping: {told}; saving the checkpoint")  # fmt: skip

    def preparing(self, what: str) -> None:
        if self.mode != "off":
            self._write(f"{what}...")

    # ------------------------------------------------------------ reading

    def reading(self) -> Reading:
        """What to show now."""
        stats, send = self.stats, self.send
        if stats is None or send is None:
            return Reading(0, 0, None, None)
        now, done = self.clock(), self._done()
        total = self._total(stats, done)
        rate = self._rate(now, done)
        eta = self._eta(now, total - done, rate)
        counters = [
            f"{n:,} {what}"
            for n, what in (
                (send.retries, "retries" if send.retries != 1 else "retry"),
                (send.throttled, "throttled (429)"),
                (stats.orders_rejected, "rejected orders" if stats.orders_rejected != 1
                 else "rejected order"),
                (send.events_rejected, "events Klaviyo refused" if send.events_rejected != 1
                 else "event Klaviyo refused"),
            )
            if n
        ]  # fmt: skip
        status = None
        wait = self.wait
        if wait is not None and wait.seconds > SHOW_WAIT and wait.until > now:
            status = wait_text(wait, wait.until - now, self.whose)
        return Reading(done, total, rate, eta, counters, status, not stats.read_all)

    def _total(self, stats: Stats, done: int) -> int:
        """The total to show: exact once the export is read; until then the estimate, held
        steady unless it moves by more than DRIFT (120,474 -> 120,954 -> 120,611 was noise)."""
        estimate = max(stats.estimated_events(), done)
        shown = self.total
        if stats.read_all or shown is None or abs(estimate - shown) > DRIFT * shown:
            shown = estimate
        self.total = max(shown, done)
        return self.total

    def _done(self) -> int:
        send = self.send
        return 0 if send is None else sum(send.events_sent.values()) + send.events_rejected

    def _elapsed(self) -> float:
        return 0.0 if self.started is None else self.clock() - self.started

    def _rate(self, now: float, done: int) -> float | None:
        """Events per second over the recent past, up to now (a wait lowers it as it lasts)."""
        if not self.samples or now - self.samples[0][0] < 2.0:
            return None
        since, then = self.samples[0]
        return (done - then) / (now - since)

    def _ceiling(self) -> float | None:
        """Events per second the rate windows allow, at this run's events per request."""
        if not self.windows:
            return None
        send = self.send
        per_request = (
            self._done() / send.acknowledged if send is not None and send.acknowledged else None
        )
        requests = min(w.limit / w.seconds for w in self.windows)
        return requests * (per_request or self.per_request)

    def _eta(self, now: float, left: int, rate: float | None) -> float | None:
        if left <= 0:
            return 0.0
        paces = [p for p in (rate, self._ceiling()) if p]
        if not paces:
            return None
        eta = left / min(paces)
        wait = self.wait
        if wait is not None and wait.cause == "429" and wait.until > now:
            eta += wait.until - now  # the whole sender is paused
        return eta

    # ------------------------------------------------------------ drawing

    def _start(self) -> None:
        if self.mode == "live":
            self.live = Live(console=self.err, refresh_per_second=4, transient=False,
                             get_renderable=lambda: render(self.reading(), self.err.width))  # fmt: skip
            self.live.start()
        elif self.mode == "log":
            self.ticking = threading.Thread(target=self._tick, name="progress", daemon=True)
            self.ticking.start()

    def _tick(self) -> None:
        while not self.done.wait(self.every):
            self._write(plain(self.reading(), self._elapsed()))

    def _write(self, line: str) -> None:
        """A line on stderr, above the live display if there is one."""
        with self.lock:
            if self.live is not None:
                self.live.console.print(line, markup=False, highlight=False)
            else:
                self.err.print(line, markup=False, highlight=False, soft_wrap=True)
