"""One pass before a send (issue #19, "one pre-send pass"): where another integration's metric
makes the overlap check count the export's events per month, the same reading finds each
customer's latest order, so a send reads its export twice at most (once before, once while
sending), and the months it counts are those a separate pass over mapped orders counts.
"""

from __future__ import annotations

import shutil
import sys
from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from klaviyo_backfill.commands.send import send
from klaviyo_backfill.inputs import export as export_module
from klaviyo_backfill.klaviyo import reading, sender
from klaviyo_backfill.klaviyo.throttle import Limiter
from klaviyo_backfill.options import InputOptions, SendOptions
from klaviyo_backfill.pipeline import parallel
from klaviyo_backfill.pipeline.job import job_from
from klaviyo_backfill.pipeline.stages import months_pass
from klaviyo_backfill.presend.latest import Latest
from klaviyo_backfill.results import SendOutcome

try:
    import corpus
    import standin as st
except ImportError:  # tests/ made a package
    from tests import corpus
    from tests import standin as st

KEY = "pk_presend_0123456789abcdef01"


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~250 Shopify orders over several years, duplicates and rejects among them."""
    path = tmp_path_factory.mktemp("presend") / "orders.csv"
    corpus.write_shopify_csv(corpus.make_orders(250, 31, "shopify"), path)
    return path


def _options(path: Path, **inputs: object) -> SendOptions:
    return SendOptions(inputs=InputOptions(paths=(str(path),), **inputs))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "inputs",
    [{"jobs": 1}, {"jobs": 1, "limit": 40}, {"jobs": 1, "since": "2019", "until": "2022-06"}],
    ids=["whole", "limit", "window"],
)
def test_the_latest_pass_counts_the_months_a_pass_over_mapped_orders_counts(
    export: Path, inputs: dict[str, object]
) -> None:
    job = job_from(_options(export, **inputs))
    months: Counter[tuple[str, str]] = Counter()
    Latest.build(job, None, months).close()
    assert months, "the export has events"
    assert months == months_pass(job).metric_months


def test_split_on_every_core_the_pass_counts_the_same_months(
    export: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parallel, "PIECE_BYTES", 4000)
    monkeypatch.setattr(parallel, "SPLIT_FROM_BYTES", 0)
    job = job_from(_options(export, jobs=2))
    months: Counter[tuple[str, str]] = Counter()
    Latest.build(job, None, months).close()
    assert months == months_pass(job).metric_months


class _Readings:
    """Counts the readings of an export as orders: calls of `read_orders`, the one function
    that reads an export, wherever a module imported it (each call reads through). A reading
    from the start counts one; the replay of a survey's record reads the orders it maps from
    their offsets, each further on than the last (no part twice): one reading in all."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.starts: list[int | None] = []  # where each reading began (None: the start)
        original = export_module.read_orders

        def counting(*args: Any, **kwargs: Any) -> Any:
            start = args[2] if len(args) > 2 else kwargs.get("start")
            self.starts.append(None if start is None else start.offset)
            return original(*args, **kwargs)

        for name, module in list(sys.modules.items()):
            if (
                name.startswith("klaviyo_backfill")
                and getattr(module, "read_orders", None) is original
            ):
                monkeypatch.setattr(module, "read_orders", counting)

    @property
    def count(self) -> int:
        later = [offset for offset in self.starts if offset is not None]
        assert later == sorted(set(later)), f"a part of the export read twice: {later}"
        return self.starts.count(None) + (1 if later else 0)


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    yield tmp_path / "state"


def _reads_of_a_send(
    export: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    other_integration: bool,
    earlier: Path | None = None,
    stores: tuple[str | None, str | None] = (None, None),
    preflight: bool = False,
    **choices: Any,
) -> int:
    """The readings of one send of `export` (its `preflight`, instead); `earlier` sent first,
    not counted (to the same account: the send then surveys its export against what the
    account holds); `stores`: the --store of each."""
    path = Path(shutil.copy(export, tmp_path / "orders.csv"))
    with st.StandIn(api_key=KEY) as s:
        clocked = partial(Limiter, clock=s.clock, sleep=s.clock.sleep)  # windows skipped
        monkeypatch.setattr(sender, "Limiter", clocked)
        monkeypatch.setattr(reading, "Limiter", clocked)

        def options(path: Path, store: str | None) -> SendOptions:
            return SendOptions(
                inputs=InputOptions(paths=(str(path),), jobs=1, store=store), base_url=s.url,
                api_key=KEY, rate_limit="100/s,1000/m",
                failures=str(tmp_path / f"{path.stem}.jsonl"), **choices,
            )  # fmt: skip

        if earlier is not None:
            first = send(options(earlier, stores[0]))
            assert isinstance(first, SendOutcome) and first.error is None and s.events
        if other_integration:  # Shopify's own Placed Order, outside the export's months
            s.preload([st.other_event("Placed Order", "2001-06-01T00:00:00+00:00", uid="x")])
        sent = len(s.events)
        readings = _Readings(monkeypatch)
        if preflight:
            from klaviyo_backfill.commands.preflight import preflight as preflight_of

            report = preflight_of(options(path, stores[1]))
            assert report.stats.orders_mapped > 0 and report.stores is None
            return readings.count
        outcome = send(options(path, stores[1]))
        assert isinstance(outcome, SendOutcome) and outcome.error is None
        assert len(s.events) > sent, "the send delivered"
    return readings.count


@pytest.mark.slow
@pytest.mark.e2e
def test_a_send_checked_for_overlap_reads_its_export_twice(
    export: Path, tmp_path: Path, state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the overlap check reads the export (another integration's metric exists): in the same
    # pass as the profile table; then the send reads it once more
    assert _reads_of_a_send(export, tmp_path, monkeypatch, other_integration=True) == 2


@pytest.mark.e2e
def test_a_send_with_no_overlap_to_check_reads_its_export_twice_too(
    export: Path, tmp_path: Path, state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _reads_of_a_send(export, tmp_path, monkeypatch, other_integration=False) == 2


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.parametrize("profiles", ["latest", "all"])
def test_a_later_export_checked_for_overlap_reads_its_export_twice(
    tmp_path: Path, state: Path, monkeypatch: pytest.MonkeyPatch, profiles: str
) -> None:
    # the account holds the export's first 60 orders (an earlier export): the later one is
    # surveyed against it before the send, and the overlap check counts its months in that
    # same reading; the send replays the survey's record, reading the orders it maps from
    # their offsets, each part once
    orders = corpus.make_orders(100, 31, "shopify")
    earlier, later = tmp_path / "earlier.csv", tmp_path / "later.csv"
    corpus.write_shopify_csv(orders[:60], earlier)
    corpus.write_shopify_csv(orders, later)
    reads = _reads_of_a_send(later, tmp_path, monkeypatch, other_integration=True,
                             earlier=earlier, profile_attributes=profiles)  # fmt: skip
    assert reads == 2


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.parametrize(
    ("profiles", "other_integration"),
    [("latest", True), ("all", False)],  # the survey with its table, and without
)
def test_a_send_under_a_store_the_account_does_not_know_reads_its_export_twice(
    tmp_path: Path, state: Path, monkeypatch: pytest.MonkeyPatch, profiles: str,
    other_integration: bool,
) -> None:  # fmt: skip
    # the account holds shop a's orders (--store a): shop b's export, with the same order
    # numbers and other customers, is looked up under store a in the reading before the send
    # (its survey, its profile table's pass, or a pass of its own), not in a reading of its own
    shop_a, shop_b = tmp_path / "a.csv", tmp_path / "b.csv"
    corpus.write_shopify_csv(corpus.make_orders(60, 31, "shopify"), shop_a)
    corpus.write_shopify_csv(corpus.make_orders(100, 32, "shopify"), shop_b)
    reads = _reads_of_a_send(shop_b, tmp_path, monkeypatch, other_integration=other_integration,
                             earlier=shop_a, stores=("a", "b"), profile_attributes=profiles)  # fmt: skip
    assert reads == 2


@pytest.mark.slow  # ~1.5 s: a send first, then the preflight's reads
@pytest.mark.e2e
@pytest.mark.parametrize("profiles", ["latest", "all"])
def test_preflight_under_a_store_the_account_does_not_know_reads_its_export_twice(
    tmp_path: Path, state: Path, monkeypatch: pytest.MonkeyPatch, profiles: str
) -> None:
    # its stores check is shown each order in the profile table's pass (or a pass of its own
    # with `all`), then the pass that maps the orders
    shop_a, shop_b = tmp_path / "a.csv", tmp_path / "b.csv"
    corpus.write_shopify_csv(corpus.make_orders(30, 31, "shopify"), shop_a)
    corpus.write_shopify_csv(corpus.make_orders(40, 32, "shopify"), shop_b)
    reads = _reads_of_a_send(shop_b, tmp_path, monkeypatch, other_integration=False,
                             earlier=shop_a, stores=("a", "b"), preflight=True,
                             profile_attributes=profiles)  # fmt: skip
    assert reads == 2


def test_inspect_and_the_dry_run_assemble_the_send_s_pipeline(
    export: Path, state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both apply the send's profile rule: the `latest` pass, then the mapping pass."""
    from klaviyo_backfill.commands.dry_run import dry_run
    from klaviyo_backfill.commands.inspect import inspect

    readings = _Readings(monkeypatch)
    stats = inspect(_options(export, jobs=1))
    assert readings.count == 2 and stats.orders_mapped > 0
    done = dry_run(SendOptions(inputs=InputOptions(paths=(str(export),), jobs=1)), 0)
    assert readings.count == 4 and done.stats.orders_mapped == stats.orders_mapped
    everyone = SendOptions(InputOptions(paths=(str(export),), jobs=1), profile_attributes="all")
    inspect(everyone)
    assert readings.count == 5  # no profile table to build: one reading


def _prepared(order_id: str, *metrics: str) -> Any:
    from datetime import UTC, datetime

    from klaviyo_backfill.model import Event
    from klaviyo_backfill.pipeline.prepare import Prepared

    at = datetime(2024, 3, 1, tzinfo=UTC)
    events = [Event(m, at, f"{order_id}-{m}", {"OrderId": order_id}, {"email": "a@example.com"})
              for m in metrics]  # fmt: skip
    return Prepared("orders.csv", 2, (0, 0), (0, 0), order_id, key=order_id, events=events)


def test_another_api_senders_order_is_one_whose_placed_order_the_ledger_lacks(
    tmp_path: Path,
) -> None:
    """The one rule (presend/delta.py, `Elsewhere`): of the OrderIds the API's Placed Order
    holds, this tool's own are those whose Placed Order the account's ledger acknowledged,
    an order sent in part included; the rest are another sender's."""
    from klaviyo_backfill.model import PLACED, identity
    from klaviyo_backfill.pipeline.prepare import Held
    from klaviyo_backfill.presend.delta import Elsewhere, facts_of
    from klaviyo_backfill.state.account_ledger import AccountLedger, event_key

    ledger = AccountLedger(tmp_path / "account.sqlite")
    try:
        ours = _prepared("1", PLACED, "Ordered Product")
        placed = ours.events[0]
        ledger.record([event_key(identity(placed.profile), PLACED, placed.unique_id)])
        theirs, unheld = _prepared("2", PLACED), _prepared("3", PLACED)
        sifted = _prepared("4", "Ordered Product")  # its Placed Order held: sifted out
        sifted.held = Held(b"", facts_of(ours.events), 1, (placed,))
        elsewhere = Elsewhere(frozenset({"1", "2", "4"}), ledger)
        assert [elsewhere.holds(p) for p in (ours, theirs, unheld, sifted)] == [
            False, True, False, False,
        ]  # fmt: skip
        assert Elsewhere(frozenset({"1", "2"}), None).holds(ours)  # no ledger: none is ours
    finally:
        ledger.close()
