"""The one reading of the exports before a send, and what it leaves for the send:

    the survey    a later export read against what the account holds (survey.py)
    the table     each customer's latest order, for --profile-attributes latest (latest.py)
    the months    the events per metric and UTC month the overlap check counts (overlap.py)
    the stores    each order looked up under the account's other stores (stores.py)

The overlap check asks for the months only where another integration's metric exists, the
stores check only where the account knows another store; the reading that serves them is the
one the send would make anyway (the survey, else the profile table's pass), so no send reads
its export more than twice: once before, once while sending. Only a job without a profile
table and with nothing to survey reads an export just for them (a pass of stamps, or
`months_pass`: --profile-attributes all or none).
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
    from .stores import StoresCheck

__all__ = ["Tables"]


class Tables:
    """What the reading before a send made, owned until the send ends (a context manager:
    the temporary files go with it)."""

    def __init__(
        self,
        job: Job,
        preparing: Callable[[str], None] = lambda what: None,
        stores: StoresCheck | None = None,
    ) -> None:
        self.job = job
        self.preparing = preparing  # told of each reading (the progress display)
        self.stores = stores  # shown each order of the reading, where the send needs it (owned)
        self.survey: Survey | None = None
        self.latest: Latest | None = None
        self.counted: Counter[tuple[str, str]] | None = None  # the months, once counted
        self.read = False  # whether the reading before the send was made

    def months(self, account: Path | None) -> Counter[tuple[str, str]]:
        """The events per metric and UTC month of the orders the job would map, past any
        --limit (the overlap check's count), in the reading the send makes anyway: the
        survey against the account's ledger at `account` (None: --resend, the send does not
        ask it), where it holds orders and the exports are CSV; else the pass that builds
        the profile table; a pass of their own where the send needs neither."""
        if self.counted is None:
            self._read(account, months=True)
        assert self.counted is not None
        return self.counted

    def check_stores(self, account: Path | None, months: bool) -> None:
        """The stores check (stores.py), in the reading before the send (`months`: counting
        them too, for the overlap check to come): refused (UsageError) before anything is
        sent."""
        if self.stores is None:
            return
        try:
            if not self.read:
                self._read(account, months)
            self.stores.end()
        finally:
            self.stores.close()
            self.stores = None

    def _read(self, account: Path | None, months: bool) -> None:
        # every order's months, past a --limit: a rerun continues a limited job, unchecked
        # (the limit counts nowhere else in these readings: the survey and table are the same)
        job = replace(self.job, filters=replace(self.job.filters, limit=None))
        latest = job.profile_attributes == "latest"
        counted: Counter[tuple[str, str]] | None = Counter() if months else None
        stores, self.read = (None if self.read else self.stores), True  # the first reading's
        its_months = " and its months" if months else ""
        if self.survey is None and account is not None and account.exists() and Survey.suits(job):
            ledger = AccountLedger(account, read_only=True)
            try:
                delta = Delta(ledger, job.payload_salt())
                if not delta.empty:
                    self.preparing("Reading the export against what this account holds"
                                   + (", and its months" if months else ""))  # fmt: skip
                    self.survey = Survey.take(job, delta, latest, counted, stores)
                    self.counted = counted
                    return
            finally:
                ledger.close()
        if latest and self.latest is None:
            self.preparing(f"Reading the export for each customer's latest order{its_months}")
            self.latest = Latest.build(job, None, counted, stores)
        elif stores is not None:  # --profile-attributes all or none: the stamps alone
            self.preparing(f"Reading the export for the stores it names{its_months}")
            stores.read(job, counted)
        elif months:
            counted = months_pass(job).metric_months
        self.counted = counted

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
        if self.stores is not None:
            self.stores.close()
            self.stores = None
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
