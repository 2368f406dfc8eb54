"""`send --dry-run`: the real pipeline minus the send."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ..mapping.encode import dumps, event_attributes
from ..model import METRICS
from ..options import SendOptions
from ..pipeline.job import job_from
from ..pipeline.stages import assembled, open_output, outputting
from ..pipeline.summary import Stats
from ..results import DryRun
from ..state.failures import Failures

if TYPE_CHECKING:  # annotations only
    from ..mapping.encode import Request
    from ..model import Event


def dry_run(options: SendOptions, preview: int | None = None) -> DryRun:
    """Read, map and encode everything, send nothing (the bodies a send would make). For a
    preview, keep the first `preview` events, or (None) the first event of each metric, each
    as its attributes go in a body, with its profile."""

    job = job_from(options)
    stats, failures = Stats(), Failures(job.failures)
    first: list[Request] = []  # (no longer kept: a preview counts events, not bodies)
    kept: list[dict[str, Any]] = []
    seen: dict[str, Event] = {}
    try:
        with assembled(job, stats, failures) as bodies, open_output(job.output) as out:
            for request in outputting(bodies, out):
                if preview is not None and len(kept) < preview:
                    kept.extend(events_in(request.body)[: preview - len(kept)])
                elif preview is None and len(seen) < len(METRICS):
                    seen.update((e.metric, e) for e in request.events if e.metric not in seen)
    finally:
        failures.close()
    kinds = dict(failures.kinds)
    samples = [_sample(seen[metric], job.backfill) for metric in METRICS if metric in seen]
    if preview is not None:
        samples = kept
    return DryRun(stats, first, failures.count, job.endpoint.name, job.failures, kinds, samples)


def _sample(event: Event, backfill: bool) -> dict[str, Any]:
    """An event as its attributes go in a request body, with its profile (plain JSON data)."""

    attributes = event_attributes(event, backfill) | {"profile": event.profile}
    sample: dict[str, Any] = json.loads(dumps(attributes))
    return sample


def events_in(body: bytes) -> list[dict[str, Any]]:
    """The events of a request body, each as it stands there (a bulk entry's events with
    their entry's profile): what `--preview N` shows, from the bytes alone (a dry run on
    several cores keeps no Event objects)."""
    doc: dict[str, Any] = json.loads(body)
    data = doc.get("data")
    if not isinstance(data, dict):  # the Track API's payload: one event
        return [doc]
    attributes = data.get("attributes", {})
    if "events-bulk-create" not in attributes:
        return [attributes]
    found = []
    for entry in attributes["events-bulk-create"]["data"]:
        profile = entry["attributes"]["profile"]
        for event in entry["attributes"]["events"]["data"]:
            found.append(event["attributes"] | {"profile": profile})
    return found
