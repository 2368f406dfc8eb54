"""The survey of a later export (survey.py): one reading against the account, replayed by
stage one, gives exactly what reading the export twice gives (the profile pass, then stage
one), in one process and split over worker processes with small pieces.

The account's ledger is made by a real send of an early export through the CLI to the
stand-in; the later export has new orders, orders changed since (fulfilled, refunded), and
repeated order ids of a held order and of a new one.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections import Counter
from pathlib import Path
from typing import Any

import cli_helpers
import corpus
import pytest
import standin as st
from cli_helpers import free_port
from test_delta import as_of

from klaviyo_backfill.inputs.layouts import builtin_layouts
from klaviyo_backfill.inputs.sources import Input
from klaviyo_backfill.klaviyo.endpoints import ENDPOINTS
from klaviyo_backfill.mapping.convert import Settings
from klaviyo_backfill.options import InputOptions, SendOptions
from klaviyo_backfill.pipeline import parallel
from klaviyo_backfill.pipeline.job import Job, job_from
from klaviyo_backfill.pipeline.orders import Resume, mapped_orders
from klaviyo_backfill.pipeline.stages import months_pass, profiles_for
from klaviyo_backfill.pipeline.summary import Stats, describe
from klaviyo_backfill.presend.delta import Delta
from klaviyo_backfill.presend.survey import Survey
from klaviyo_backfill.state.account_ledger import AccountLedger, account_ledger_path
from klaviyo_backfill.state.failures import Failures

KEY = "pk_survey_" + secrets.token_hex(12)


def _exports(where: Path) -> None:
    orders = corpus.make_orders(300, 31, "shopify")
    first = min(o.created_at for o in orders)
    last = max(o.created_at for o in orders)
    cut = first + (last - first) * 0.6
    # older orders of customers with a later one, missing from the early export: new to the
    # account, yet not their profile's latest (a held order is)
    by_email: dict[str, list[corpus.TruthOrder]] = {}
    for order in sorted(orders, key=lambda o: o.created_at):
        if order.email and order.created_at <= cut:
            by_email.setdefault(order.email, []).append(order)
    missing = {o.id for held in by_email.values() if len(held) > 1 for o in held[:1]}
    assert len(missing) >= 3
    early = [as_of(o, cut) for o in orders if o.created_at <= cut and o.id not in missing]
    corpus.write_shopify_csv(early, where / "early.csv")
    corpus.write_shopify_csv(orders, where / "full.csv")
    lines = (where / "full.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    held_again, new_again = lines[1], lines[-1]  # a first order's row, the last order's row
    assert held_again.split(",")[0] != new_again.split(",")[0]
    with (where / "full.csv").open("a", encoding="utf-8", newline="") as fh:
        fh.write(held_again)  # repeated ids: not adjacent to their first rows
        fh.write(lines[len(lines) // 2])
        fh.write(new_again)


def _stage_one(
    paths: list[Path], klaviyo: str, jobs: int, surveyed: bool, **inputs: Any
) -> dict[str, Any]:
    """Stage one of a new job sending `paths` to the account: what it maps, encodes and
    counts, read twice (the profile pass, then stage one) or surveyed once; the survey also
    counts the overlap check's months (held orders' too), as a pass over mapped orders."""
    options = SendOptions(InputOptions(tuple(map(str, paths)), jobs=jobs, **inputs))
    job = job_from(options)
    account = AccountLedger(account_ledger_path(klaviyo))  # the account's id (Klaviyo's)
    delta = Delta(account, job.payload_salt())
    assert not delta.empty  # the early send is in the account's ledger
    months: Counter[tuple[str, str]] = Counter()
    survey = Survey.take(job, delta, latest=True, months=months) if surveyed else None
    if surveyed:
        assert months and months == months_pass(job).metric_months
    stats, failures = Stats(), Failures(None)
    encoder = ENDPOINTS["bulk"].encoder(job.backfill)
    try:
        with profiles_for(job, delta, account, survey) as ready:
            resume = Resume(None, None, None, delta, survey)
            mapped = [
                (m.key, m.source, m.line, m.at, m.after, [p.body for p in m.parts],
                 [(e.metric, e.unique_id, e.profile) for e in m.events], m.held, m.stamp)
                for m in mapped_orders(ready, encoder, stats, failures, resume)
            ]  # fmt: skip
        if survey is not None:
            assert stat.S_IMODE(os.stat(survey.path).st_mode) == 0o600  # it holds emails
    finally:
        if survey is not None:
            survey.close()
            assert not Path(survey.path).exists()
        account.close()
    return {"mapped": mapped, "summary": describe(stats), "failures": failures.count,
            "held_events": stats.already_in_klaviyo}  # fmt: skip


@pytest.mark.e2e
@pytest.mark.parametrize("split", [False, True], ids=["one-process", "split"])
@pytest.mark.parametrize("again", [False, True], ids=["one-export", "and-the-early-one-again"])
def test_a_survey_maps_exactly_what_two_readings_map(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, split: bool, again: bool
) -> None:
    _exports(tmp_path)
    with st.StandIn(api_key=KEY, port=free_port()) as s:
        # without attributes: the account's ledger keeps no profile's attribute order, so
        # only the held orders' own times say which order is a profile's latest
        first = cli_helpers.run(tmp_path, KEY, "send", "early.csv", "--base-url", s.url,
                                "--rate-limit", "100/s,1000/m", "-q",
                                "--profile-attributes", "none")  # fmt: skip
        assert first.returncode in (0, 1), first.stderr  # 1: the corpus has orders to reject
        klaviyo = s.account["id"]
    jobs = 1
    if split:  # pieces of a few orders each, read by two workers that ask the ledger
        monkeypatch.setattr(parallel, "SPLIT_FROM_BYTES", 0)
        monkeypatch.setattr(parallel, "PIECE_BYTES", 8192)
        jobs = 2
        assert parallel.splittable(job_from(SendOptions(InputOptions(
            (str(tmp_path / "full.csv"),)))).inputs[0], jobs)  # fmt: skip
    # a second input whose every order came in the first: repeated ids across inputs
    paths = [tmp_path / "full.csv", *([tmp_path / "early.csv"] if again else [])]
    twice = _stage_one(paths, klaviyo, jobs, surveyed=False)
    once = _stage_one(paths, klaviyo, jobs, surveyed=True)
    assert once == twice
    for window in ({"limit": 40}, {"since": "2019", "until": "2022-06"}):  # the months only
        _stage_one(paths, klaviyo, jobs, surveyed=True, **window)
    said = once["summary"]
    skipped = said["skipped"]
    if again:  # every order of the early export comes twice
        assert skipped["duplicate order id"] > 3 + 50
    else:
        assert skipped["duplicate order id"] == 3
    assert skipped["already in Klaviyo (this account)"] > 50  # the early orders, unchanged
    assert once["held_events"] > 0
    assert len(once["mapped"]) > 50  # new orders, and changed ones' new events
    assert any(m[8] is not None for m in once["mapped"])  # some carry their profile's attributes


def test_only_csv_jobs_are_surveyed() -> None:
    layouts = builtin_layouts()
    csv = Input("a.csv", layouts["shopify-csv"], "utf-8")
    json = Input("b.json", layouts["shopify-json"], "utf-8")
    assert Survey.suits(Job([csv, csv], Settings()))
    assert not Survey.suits(Job([csv, json], Settings()))  # JSON cannot be read from an offset
