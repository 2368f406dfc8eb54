"""`inspect`: what a backfill would send, as statistics."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..options import SendOptions
from ..pipeline.job import job_from
from ..pipeline.stages import assembled
from ..pipeline.summary import Stats
from ..state.failures import Failures

if TYPE_CHECKING:  # annotations only
    from ..pipeline.summary import Stats


def inspect(options: SendOptions) -> Stats:
    """Read, map and encode everything as a send would (its profile rule included); keep
    only the statistics."""
    job = job_from(options)
    stats = Stats()
    with assembled(job, stats, Failures(None)) as bodies:
        for _ in bodies:
            pass
    return stats
