"""`inspect`: what a backfill would send, as statistics."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..options import SendOptions
from ..pipeline.stages import orders, requests
from ..state.failures import Failures

if TYPE_CHECKING:  # the pipeline and the client are imported where they run: `status` and
    # `--help` need neither (start-up time)
    from ..pipeline.summary import Stats


def inspect(options: SendOptions) -> Stats:
    """Read, map and encode everything; keep only the statistics."""
    from ..pipeline.job import job_from
    from ..pipeline.summary import Stats

    job = job_from(options)
    stats = Stats()
    encoder = job.endpoint.encoder(job.backfill)
    for _ in requests(orders(job, encoder, stats, Failures(None)), encoder):
        pass
    return stats
