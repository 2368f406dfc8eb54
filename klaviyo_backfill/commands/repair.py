"""`send --repair FILE`: send again exactly the events `verify` found missing.

`verify` writes FILE (private, beside the checkpoint): the events Klaviyo acknowledged and
does not hold, by metric and unique id, whichever job of the export sent them (both windows,
a job before --restart, an earlier export saved over the file), and prints one command that
resends them (the window left out: only the listed events go, whichever window held them):

    klaviyo-backfill send /abs/orders.csv [the send's options] --repair /abs/<ck>.repair.json

The exports are read again and mapped as the send mapped them; only the listed events go,
with the same unique ids (one that arrived late after all is dropped by Klaviyo as a
repeat). The repair keeps its own checkpoint beside FILE, so it can be resumed and never
touches the send's; the account's ledger holds those events already and is not asked.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ..options import DEFAULT_BASE_URL, Mode, SendOptions
from ..state.files import open_private

if TYPE_CHECKING:
    from ..klaviyo.sender import SendConfig
    from ..model import Event
    from ..pipeline.job import Job
    from ..results import SendOutcome, Watcher
    from ..state.checkpoint import Ledger

__all__ = ["Only", "command", "load", "repair", "replay_args", "without_window", "write"]

FORMAT = "klaviyo-backfill repair 1"


def replay_args(options: SendOptions) -> list[str]:
    """The send's exports (absolute) and the options that change what it sends: what a
    repair needs to map the same events again, from any folder."""
    i = options.inputs
    args = [str(Path(p).resolve()) for p in i.paths]
    for flag, value in (("--format", i.fmt), ("--layout", _abs(i.layout)),
                        ("--products", _abs(i.products)), ("--encoding", i.encoding),
                        ("--delimiter", i.delimiter),
                        ("--currency", i.currency), ("--since", i.since), ("--until", i.until),
                        ("--date-order", i.date_order if i.since or i.until else None),
                        ("--store", i.store)):  # fmt: skip
        if value:
            args += [flag, value]
    if i.timezone != "UTC":
        args += ["--timezone", i.timezone]
    if options.endpoint != "bulk":
        args += ["--endpoint", options.endpoint]
    if options.trigger_flows:
        args.append("--trigger-flows")
    args += ["--revision", options.revision, "--profile-attributes", options.profile_attributes]
    return args


def without_window(args: list[str]) -> list[str]:
    """A send's arguments without --since/--until (nor the --date-order they were read
    with): a repair sends the events it lists, whichever of the export's windows (jobs) they
    were sent in."""
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in ("--since", "--until", "--date-order"):
            skip = True
        else:
            out.append(arg)
    return out


def _abs(path: str | None) -> str | None:
    return str(Path(path).resolve()) if path else None


@dataclass(frozen=True)
class Only:
    """The events a repair sends: (metric, unique id), and the orders they belong to."""

    events: frozenset[tuple[str, str]]
    orders: frozenset[str]

    def skip_order(self, order_id: str) -> bool:
        return order_id not in self.orders

    def keeps(self, event: Event) -> bool:
        return (event.metric, event.unique_id) in self.events


def write(path: Path, checkpoint: Path, missing: list[tuple[str, str, str]]) -> None:
    """The repair file: (metric, unique id, order id) of each missing event."""
    doc = {"format": FORMAT, "checkpoint": str(checkpoint),
           "events": [list(m) for m in missing]}  # fmt: skip
    with open_private(str(path), "the repair file", text=True) as fh:
        fh.write(json.dumps(doc))


def command(path: Path, args: list[str], base_url: str) -> str:
    """The one command that resends the missing events, from any folder."""
    extra = [] if base_url == DEFAULT_BASE_URL else ["--base-url", base_url]
    return shlex.join(["klaviyo-backfill", "send", *args, *extra, "--repair", str(path)])


def load(path: str) -> Only:
    try:
        doc: Any = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"--repair {path}: cannot be read ({exc})",
                         "Run `klaviyo-backfill verify` again: it writes the file.") from None  # fmt: skip
    events = doc.get("events") if isinstance(doc, dict) else None
    if (
        doc.get("format") != FORMAT
        or not isinstance(events, list)
        or not all(
            isinstance(e, list) and len(e) == 3 and all(isinstance(x, str) for x in e)
            for e in events
        )
    ):
        raise UsageError(f"--repair {path}: not a repair file that `verify` wrote")
    return Only(frozenset((m, u) for m, u, _ in events), frozenset(o for _, _, o in events))


def repair(
    job: Job, config: SendConfig, options: SendOptions, progress: Watcher | None
) -> SendOutcome:
    """Send the listed events of the job's exports, with a checkpoint of the repair's own."""
    from ..pipeline.session import SendSession
    from ..results import Finished
    from ..state.lock import JobLock
    from .send import send_job

    assert options.repair is not None
    only = load(options.repair)
    path = Path(options.repair).with_suffix(".sqlite")
    mode: Mode = "resume" if options.mode == "resume" and path.exists() else "restart"
    with JobLock(path):  # the account's ledger holds these events already: not asked
        session = SendSession.open(job, path, mode, config.account, shared=False)
        assert not isinstance(session, Finished)  # restart or resume: never "finished"
        with session:
            outcome = send_job(job, config, session, progress, mode == "resume", False,
                               only=only)  # fmt: skip
            complete = not (outcome.interrupted or outcome.error or outcome.limited)
            absent = _not_found(session.ledger, only.orders) if complete else 0
    skipped = outcome.stats.skipped  # the orders the repair does not list: held as sent, or
    # never sent (the send rejected them): not mapped, so not told apart
    skipped["not listed in the repair file"] = skipped.pop("already sent (checkpoint)", 0)
    if absent:
        outcome.stats.warnings[NOT_FOUND] += absent
    return outcome


NOT_FOUND = ("order listed in the repair file, not in the exports as it was sent (an earlier "
             "export saved over the file? put it back, repair again): not resent")  # fmt: skip


def _not_found(ledger: Ledger, orders: frozenset[str]) -> int:
    """Listed orders the exports did not give (neither settled nor refused): an order of an
    earlier export at the same path that the file no longer holds, or holds changed."""
    refused = {str(o) for (o,) in ledger.db.execute("SELECT DISTINCT order_id FROM rejected")}
    return sum(ledger.order_state(o) is None and o not in refused for o in orders)
