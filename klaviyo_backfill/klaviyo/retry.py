"""The retry policy: what a failed try costs, how long to wait, and when to give up.

Retried (by the client): 429, 5xx, connection errors and timeouts. A 429 is Klaviyo pacing
the account (which other apps share), not a failure: it waits as told and uses no attempt,
only time. Anything else waits a jittered exponential backoff. A request gives up after
`max_attempts` failed tries or `max_seconds` since its first, whichever comes first; a host
that never answered this process (a wrong base URL, a dead network) after `unreachable_seconds`.
Every retry is logged (logger `klaviyo_backfill.retry`) with its cause and wait.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import GaveUp

__all__ = ["Attempts", "Retry", "RetryPolicy"]

log = logging.getLogger("klaviyo_backfill.retry")


class Retry(Exception):
    """This try failed in a way worth another: why (`cause`, short, counted; `detail`, what
    to tell if it is the last), and the wait Klaviyo asked for."""

    def __init__(
        self,
        cause: str,
        wait: float | None = None,
        throttled: bool = False,
        detail: str | None = None,
        hint: str | None = None,
        unreachable: bool = False,
    ) -> None:
        super().__init__(cause)
        self.cause, self.wait, self.throttled = cause, wait, throttled
        self.detail, self.hint = detail or cause, hint
        self.unreachable = unreachable  # a host that never answered: retried briefly


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 10
    max_seconds: float = 900.0  # a request's every try and wait, from its first try
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    retry_after_cap: float = 600.0  # the longest wait Klaviyo may ask for at once
    unreachable_seconds: float = 15.0  # a host that never answered: tries and waits, at most

    def capped(self, wait: float | None) -> float | None:
        """A wait Klaviyo asked for (Retry-After), `retry_after_cap` at most, said in the log."""
        if wait is not None and not wait <= self.retry_after_cap:  # inf, nan and 999999 alike
            log.warning("Klaviyo asked for a wait of %s s; waiting %.0f s, the longest this "
                        "tool waits at once", wait, self.retry_after_cap)  # fmt: skip
            return self.retry_after_cap
        return wait

    def backoff(self, attempt: int) -> float:
        """Full jitter: a uniform wait up to base x 2^attempt, capped."""
        return random.uniform(0, min(self.backoff_cap, self.backoff_base * 2**attempt))


class Attempts:
    """One request's tries under a policy."""

    def __init__(
        self, policy: RetryPolicy, what: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.policy, self.what, self.clock = policy, what, clock
        self.started = clock()
        self.tries = 0
        self.failed = 0  # tries that were not a 429

    def left(self) -> float:
        """Seconds this request may still take, tries and waits included."""
        return self.policy.max_seconds - (self.clock() - self.started)

    def wait_after(self, retry: Retry) -> float:
        """The wait before the next try; GaveUp when the policy allows none (no try left, or
        the wait would end past the request's `max_seconds`)."""
        policy = self.policy
        self.failed += not retry.throttled
        elapsed = self.clock() - self.started
        wait = retry.wait if retry.wait is not None else policy.backoff(self.failed)
        cap = min(policy.max_seconds, policy.unreachable_seconds if retry.unreachable else 1e9)
        if self.failed >= policy.max_attempts or elapsed + wait >= cap:
            log.warning("giving up on %s after %d tries over %.0f s (last: %s)",
                        self.what, self.tries, elapsed, retry.cause)  # fmt: skip
            tries = f"gave up after {self.tries} tries over {elapsed:.0f} s"
            raise GaveUp(
                f"{retry.detail}: {tries}"
                if retry.unreachable
                else f"{tries} (last: {retry.detail})",
                retry.hint or "Progress is saved: rerun with --resume when Klaviyo answers again.",
            )
        log.info("retry %s after try %d (%s): waiting %.2f s",
                 self.what, self.tries, retry.cause, wait)  # fmt: skip
        return wait
