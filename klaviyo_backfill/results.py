"""What each command returns to whoever called it (the CLI renders these): typed results,
and the `Watcher` a send reports its progress to."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .errors import (
    BackfillError,
)
from .model import Rejection

if TYPE_CHECKING:  # the pipeline and the client are imported where they run: `status` and
    # `--help` need neither (start-up time)
    from .klaviyo.reading import Account, Flow, Metric
    from .klaviyo.sender import SendStats
    from .klaviyo.throttle import Wait, Window
    from .mapping.encode import Request
    from .pipeline.summary import Stats
    from .proof.orders import HeldElsewhere, Proof
    from .proof.reconcile import MetricTotal, Overlap, Row


@dataclass(frozen=True)
class Finished:
    """A checkpoint that says its export was sent completely: a new run has nothing to do."""

    path: Path
    orders_rejected: int  # orders the export could not give (`Ledger.rejected_apart`)
    events_rejected: int  # events Klaviyo refused

    @property
    def rejected(self) -> int:
        """Rejections the job met (`Ledger.rejected_total`)."""
        return self.orders_rejected + self.events_rejected


@dataclass
class DryRun:
    stats: Stats
    first: list[Request]  # the first requests, for a preview (`preview` N)
    failures: int  # lines written to the failures file
    endpoint: str
    failures_path: str | None
    failure_kinds: dict[str, int] = field(default_factory=dict)  # lines by failures.kind_of
    samples: list[dict[str, Any]] = field(default_factory=list)  # `preview` None: see dry_run


@dataclass
class SendOutcome:
    stats: Stats
    send: SendStats
    elapsed: float
    interrupted: bool = False
    signal: int = 0  # the signal that interrupted it (SIGINT, SIGTERM), if one did
    error: BackfillError | None = None
    failures: int = 0  # lines in the failures file: this job's rejections, earlier runs' too
    failures_path: str | None = None
    failure_kinds: dict[str, int] = field(default_factory=dict)  # lines by failures.kind_of
    continuation: str | None = None  # the command that continues the job (any folder)
    limited: bool = False  # stopped at its --limit: the rest is not sent yet
    account: str | None = None  # the Klaviyo account its history is kept under (account.py)
    kept: bool = True  # its checkpoint kept (False: a job refused before any order settled)


class Watcher(Protocol):
    """Whoever watches a send (progress.py renders it): told of progress, of the pace the rate
    limits allow, of every wait, and of a stop. Called from the sending thread."""

    def update(self, stats: Stats, send: SendStats) -> None: ...

    def pacing(self, windows: tuple[Window, ...], per_request: int, whose: str) -> None:
        """The windows requests are paced to, at most `per_request` events each; `whose`
        names their source ("Klaviyo's", or "--rate-limit's")."""

    def waiting(self, wait: Wait) -> None: ...

    def stopping(self, in_flight: int) -> None:
        """The first Ctrl-C (or SIGTERM): requests in flight finish, nothing new starts."""

    def preparing(self, what: str) -> None:
        """A reading of the exports before the first request (latest.py, survey.py)."""


class Unwatched:
    """A send no one watches (a library caller's default)."""

    def update(self, stats: Stats, send: SendStats) -> None:
        pass

    def pacing(self, windows: tuple[Window, ...], per_request: int, whose: str) -> None:
        pass

    def waiting(self, wait: Wait) -> None:
        pass

    def stopping(self, in_flight: int) -> None:
        pass

    def preparing(self, what: str) -> None:
        pass


@dataclass
class Verification:
    """What Klaviyo holds of what a job sent, per metric, UTC month and currency."""

    checkpoint: Path
    state: str | None  # the checkpoint's
    rows: list[Row]
    totals: list[MetricTotal]
    missing: list[str]  # metrics the job sent that Klaviyo has no API metric of
    processing: bool  # a short row may still fill in (recent acknowledgements, a live send)
    reread: bool  # what was sent was learnt by reading the export again (an older checkpoint)
    summary: dict[str, Any] = field(default_factory=dict)  # the last run's
    rejections: list[Rejection] = field(default_factory=list)
    reads: int = 0  # requests made to Klaviyo
    account: str | None = None  # the Klaviyo account its history is kept under (account.py)
    elapsed: float = 0.0
    # why the job is not finished ("stopped (Ctrl-C or an error)", "running (process 12)"):
    # what it sent so far is compared, and the verdict is never final; None when finished
    unfinished: str | None = None
    continuation: str | None = None  # the command that continues an unfinished job
    proof: Proof | None = None  # order by order (None: not checked, `proof_note` says why)
    proof_note: str = ""
    beyond_reach: list[int] = field(default_factory=list)  # years the aggregates refused
    unverified: list[int] = field(default_factory=list)  # ... with no events to read either
    repair: str | None = None  # the command that resends the missing events
    repair_hint: str = ""  # where no command can be given (no export paths known)
    again: str | None = None  # the command that verifies again, from any folder

    @property
    def short(self) -> list[Row]:
        return [row for row in self.rows if row.short]

    @property
    def status(self) -> str:
        proof = self.proof.orders if self.proof is not None else {}
        if self.short or proof.get("missing"):
            return "short"
        if self.unverified:
            return "unverified"
        if proof.get("twice"):
            return "held twice"
        if proof.get("different"):
            return "different"
        return "unfinished" if self.unfinished else "ok"

    @property
    def final(self) -> bool:
        """False for an unfinished job, and while a shortfall may still be Klaviyo processing
        what it accepted."""
        return self.unfinished is None and not (self.short and self.processing)

    def as_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "final": self.final,
            "account": self.account,
            "rows": [row.as_json() for row in self.rows],
            "totals": [total.as_json() for total in self.totals],
            "missing_metrics": self.missing,
            "checkpoint": str(self.checkpoint),
            "sent_from": "the export, read again" if self.reread else "the checkpoint",
            "state": self.state,
            "unfinished": self.unfinished,
            "continue_with": self.continuation,
            "per_order": self.proof.as_json() if self.proof is not None else None,
            "per_order_note": self.proof_note or None,
            "aggregates_refused_years": self.beyond_reach,
            "unverified_years": self.unverified,
            "repair_command": self.repair,
        }


@dataclass
class Preflight:
    """Before a send: the key, the export, the overlap with other integrations, the time."""

    stats: Stats
    endpoint: str
    requests: int  # bodies the send would make
    seconds: float  # the send at the endpoint's ceiling (its rate windows)
    account: Account | None  # None: the key cannot read it (accounts:read)
    scopes: dict[str, bool]  # scope -> whether the key may use it (those tried)
    others: list[Metric]  # other integrations' metrics named as the export's
    overlaps: list[Overlap]
    flows: dict[str, list[Flow]] | None = None  # --trigger-flows: metric -> flows it starts
    api_held: HeldElsewhere | None = None  # orders another API sender holds already
    history: str = ""  # the account id send, status and verify keep this key's jobs under
    stores: str | None = None  # why the send would be refused: orders held under another store
    held_here: int = 0  # orders whose Placed Order this tool sent the account already

    @property
    def overlap(self) -> bool:
        return bool(self.overlaps) or self.api_held is not None or self.stores is not None

    def as_json(self) -> dict[str, Any]:
        from .pipeline.summary import describe

        flows = None
        if self.flows is not None:
            flows = {m: [{"id": f.id, "name": f.name, "status": f.status} for f in fs]
                     for m, fs in self.flows.items()}  # fmt: skip
        return {
            "overlaps": [o.as_json() for o in self.overlaps],
            "held_by_another_api_sender": None
            if self.api_held is None
            else self.api_held.as_json(),
            "held_under_another_store": self.stores,
            "held_by_this_account": self.held_here,
            "other_integrations": [
                {"metric": m.name, "integration": m.integration, "id": m.id} for m in self.others
            ],
            "scopes": self.scopes,
            "account_id": self.history,
            "account": None
            if self.account is None
            else {
                "id": self.account.id,
                "timezone": self.account.timezone,
                "currency": self.account.currency,
            },
            "endpoint": self.endpoint,
            "requests": self.requests,
            "send_seconds_at_ceiling": round(self.seconds, 1),
            "flows_triggered": flows,
            "export": describe(self.stats),
        }
