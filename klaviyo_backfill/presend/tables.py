"""The one reading of the exports before a send, and what it leaves for the send:

    the survey    a later export read against what the account holds (survey.py)
    the table     each customer's latest order, for --profile-attributes latest (latest.py)
    the months    the events per metric and UTC month the overlap check counts (overlap.py)

The overlap check asks for the months only where another integration's metric exists; the
reading that counts them is the one the send would make anyway (the survey, else the profile
table's pass), so no send reads its export more than twice: once before, once while sending.
Only a new job without a profile table and with nothing to survey reads an export just to
count its months (`months_pass`: --profile-attributes all or none, a first send).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..pipeline.stages import months_pass, profiles_for
from ..state.account_ledger import AccountLedger
from .delta import Delta
from .latest import Latest
from .survey import Survey

if TYPE_CHECKING:  # annotations only
    from types import TracebackType

    from ..pipeline.job import Job

__all__ = ["Tables"]


class Tables:
    """What the reading before a send made, owned until the send ends (a context manager:
    the temporary files go with it)."""

    def __init__(self, job: Job, preparing: Callable[[str], None] = lambda what: None) -> None:
        self.job = job
        self.preparing = preparing  # told of each reading (the progress display)
        self.survey: Survey | None = None
        self.latest: Latest | None = None

    def months(self, account: Path | None) -> Counter[tuple[str, str]]:
        """The events per metric and UTC month of the orders the job would map, past any
        --limit (the overlap check's count), in the reading the send makes anyway: the
        survey against the account's ledger at `account` (None: --resend, the send does not
        ask it), where it holds orders and the exports are CSV; else the pass that builds
        the profile table; a pass of their own where the send needs neither."""
        # every order's months, past a --limit: a rerun continues a limited job, unchecked
        # (the limit counts nowhere else in these readings: the survey and table are the same)
        job = replace(self.job, filters=replace(self.job.filters, limit=None))
        latest = job.profile_attributes == "latest"
        counted: Counter[tuple[str, str]] = Counter()
        if account is not None and account.exists() and Survey.suits(job):
            ledger = AccountLedger(account, read_only=True)
            try:
                delta = Delta(ledger, job.payload_salt())
                if not delta.empty:
                    self.preparing("Reading the export against what this account holds, "
                                   "and its months")  # fmt: skip
                    self.survey = Survey.take(job, delta, latest, counted)
                    return counted
            finally:
                ledger.close()
        if latest:
            self.preparing("Reading the export for each customer's latest order and its months")
            self.latest = Latest.build(job, None, counted)
            return counted
        return months_pass(job).metric_months

    @contextmanager
    def ready(
        self, delta: Delta | None, account: AccountLedger | None, fresh: bool
    ) -> Iterator[tuple[Job, Survey | None]]:
        """The job with its profile rule, and the survey a `fresh` run (from the start,
        asking no checkpoint) replays. What the overlap check's reading left is taken as it
        is; otherwise, to an account that holds orders (`delta`), one survey serves both (a
        resumed run reads from its resume point: it surveys for its profile table only),
        else `latest` reads the exports for its table."""
        job = self.job
        table = self.latest is not None or (
            self.survey is not None and self.survey.latest is not None
        )
        needed = job.profile_attributes == "latest" and not table
        surveys = delta is not None and not delta.empty and Survey.suits(job)
        if self.survey is None and surveys and (fresh or needed):
            assert delta is not None
            self.preparing("Reading the export against what this account holds")
            self.survey = Survey.take(job, delta, needed)
        elif needed and self.survey is None:
            self.preparing("Reading the export for each customer's latest order")
        survey = self.survey
        with profiles_for(job, delta, account, survey, self.latest) as ready:
            yield ready, survey if fresh else None

    def close(self) -> None:
        """Remove what the reading made (each once)."""
        if self.survey is not None:
            self.survey.close()
        if self.latest is not None:
            self.latest.close()

    def __enter__(self) -> Tables:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()
