"""`verify`, `preflight` and the overlap check of `send`, end to end: the CLI against the
Klaviyo stand-in (tests/standin.py), which now answers GET /api/metrics and POST
/api/metric-aggregates at Klaviyo's read limits (3 aggregate queries a second). Sends run the
real console script; verify and preflight run in this process, their limiters on the
stand-in's clock, so the windows they keep are skipped together, not waited for.

What Klaviyo must hold is never taken from the tool: it is read from the stand-in (the events
it lost after their 202, the events it holds) and from a `--dry-run --endpoint single
--output` of the same export (each line one event, with its time, value and currency).

The exports hold the synthetic corpus's orders of 2023 and early 2024 only: every year costs
one aggregate query per metric, and a query a third of a second.
"""

from __future__ import annotations

import json
import secrets
import shutil
import sqlite3
import subprocess
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import cli_helpers
import corpus
import pytest
import standin as st
from cli_helpers import FAST, said

pytestmark = pytest.mark.e2e
KEY = "pk_verify_" + secrets.token_hex(12)
MINOR = {"JPY": Decimal(1)}
Cell = tuple[str, str, str]  # metric, UTC month, currency


def cli(cwd: Path, *args: str, key: str = KEY) -> subprocess.CompletedProcess[str]:
    return cli_helpers.run(cwd, key, *args, columns=220, timeout=180)


def read(cwd: Path, s: st.StandIn, *args: str, key: str = KEY) -> subprocess.CompletedProcess[str]:
    """verify or preflight in this process, on the stand-in's clock: the reads' rate windows
    (3 aggregate queries a second) are skipped, not waited for."""
    return cli_helpers.in_process(cwd, key, *args, clock=s.clock, columns=220)


def cents(value: Decimal | float, currency: str) -> Decimal:
    q = MINOR.get(currency, Decimal("0.01"))
    return Decimal(repr(value) if isinstance(value, float) else value).quantize(q, ROUND_HALF_UP)


def month(iso: str) -> str:
    return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m")


@dataclass
class Export:
    folder: Path
    events: list[dict[str, Any]]  # the dry run's events' attributes (single endpoint bodies)

    def copy_to(self, where: Path) -> Path:
        return Path(shutil.copy(self.folder / "orders.csv", where / "orders.csv"))

    def months(self, metric: str) -> Counter[str]:
        return Counter(month(e["time"]) for e in self.events if e["metric"] == metric)

    def cells(self) -> dict[Cell, tuple[int, Decimal]]:
        out: dict[Cell, tuple[int, Decimal]] = {}
        for e in self.events:
            key = (e["metric"], month(e["time"]), e["value_currency"])
            n, v = out.get(key, (0, Decimal(0)))
            out[key] = (n + 1, v + Decimal(repr(e["value"])))
        return out


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Export:
    """~350 Shopify orders of 2023 to March 2024 (identifiable ones only: every event sent is
    acknowledged), in five currencies, with every lifecycle event."""
    folder = tmp_path_factory.mktemp("export")
    start, end = datetime(2023, 1, 1, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC)
    orders = [o for o in corpus.make_orders(2400, 17, "shopify")
              if start <= o.created_at < end and o.identifiable]  # fmt: skip
    corpus.write_shopify_csv(orders, folder / "orders.csv")
    done = cli(folder, "send", "orders.csv", "--dry-run", "--endpoint", "single", "--output",
               "dry.jsonl", "--preview", "0", "--failures", "dry.failures.jsonl", key="")  # fmt: skip
    assert done.returncode in (0, 1), said(done)
    events = []
    for line in (folder / "dry.jsonl").read_text().splitlines():
        attrs = json.loads(line)["data"]["attributes"]
        attrs["metric"] = attrs["metric"]["data"]["attributes"]["name"]
        events.append(attrs)
    assert len(events) > 1000
    return Export(folder, events)


def sent_with(cwd: Path, s: st.StandIn, *extra: str) -> subprocess.CompletedProcess[str]:
    done = cli(cwd, "send", "orders.csv", "--base-url", s.url, *FAST, *extra)
    assert done.returncode == 0, said(done)
    return done


def checkpoint_in(cwd: Path) -> Path:
    """The one checkpoint a send from `cwd` kept: in the test's state folder (conftest)."""
    return cli_helpers.the_checkpoint()


def acknowledged_long_ago(path: Path) -> None:
    """As if the send had ended an hour ago (Klaviyo's processing delay long past)."""
    db = sqlite3.connect(path)
    db.execute("UPDATE sent_totals SET last_at = last_at - 3600")
    db.commit()
    db.close()


def rows_of(path: Path) -> dict[Cell, dict[str, Any]]:
    doc = json.loads(path.read_text())
    return {(r["metric"], r["month"], r["currency"]): r for r in doc["rows"]}


# ---------------------------------------------------------------- verify


@pytest.mark.slow
def test_verify_names_every_short_row_with_its_exact_shortfall_when_klaviyo_loses_1_percent(
    export: Export, tmp_path: Path
) -> None:
    export.copy_to(tmp_path)
    with st.StandIn(api_key=KEY, faults=st.Faults(lost_after_ack=0.01, seed=5)) as s:
        sent_with(tmp_path, s)
        acknowledged_long_ago(checkpoint_in(tmp_path))
        done = read(tmp_path, s, "verify", "orders.csv", "--base-url", s.url, "--json", "v.json")
        lost = list(s.lost)
    assert done.returncode == 5, said(done)  # ExitCode.SHORT
    assert 5 <= len(lost) <= 40, len(lost)  # 1% of ~1,500 events
    missing: dict[Cell, tuple[int, Decimal]] = {}
    for e in lost:
        assert e.time is not None and e.value_currency is not None
        key = (e.metric, e.time[:7], e.value_currency)
        n, v = missing.get(key, (0, Decimal(0)))
        missing[key] = (n + 1, v + Decimal(repr(e.value)))
    doc = json.loads((tmp_path / "v.json").read_text())
    assert doc["status"] == "short" and doc["final"] is True
    rows = rows_of(tmp_path / "v.json")
    assert set(rows) == set(export.cells())  # one row per metric x month x currency sent
    for key, row in rows.items():
        count, value = export.cells()[key]
        gone, gone_value = missing.get(key, (0, Decimal(0)))
        currency = key[2]
        assert row["sent_count"] == count, key
        assert cents(row["sent_value"], currency) == cents(value, currency), key
        assert row["klaviyo_count"] == count - gone, key  # the exact shortfall, nowhere else
        assert cents(row["klaviyo_value"], currency) == cents(value - gone_value, currency), key
    short = {key for key, r in rows.items()
             if r["klaviyo_count"] < r["sent_count"] or r["klaviyo_value"] < r["sent_value"]}  # fmt: skip
    assert short == set(missing)  # no false alarm
    for metric, when, currency in missing:  # the terminal names every short row
        assert any(metric in line and when in line and currency in line
                   for line in done.stdout.splitlines()), (metric, when, currency)  # fmt: skip
    assert "Final" in done.stdout and "Not final" not in done.stdout


def test_verify_exits_0_with_every_row_equal_when_nothing_is_lost(
    export: Export, tmp_path: Path
) -> None:
    export.copy_to(tmp_path)
    with st.StandIn(api_key=KEY) as s:
        sent_with(tmp_path, s)
        done = read(tmp_path, s, "verify", "orders.csv", "--base-url", s.url, "--json", "v.json")
        # answered ones: a 429 (the stand-in counts arrivals, which a loaded machine bunches)
        # is the same query again
        aggregate_queries = sum(r.path == st.AGGREGATES_PATH and r.status != 429 for r in s.reads)
    assert done.returncode == 0, said(done)
    doc = json.loads((tmp_path / "v.json").read_text())
    assert doc["status"] == "ok"
    for key, row in rows_of(tmp_path / "v.json").items():
        assert set(row) == {"metric", "month", "currency", "sent_count", "klaviyo_count",
                            "sent_value", "klaviyo_value"}  # fmt: skip
        assert row["klaviyo_count"] == row["sent_count"], key
        assert row["klaviyo_value"] == row["sent_value"], key
        if key[2] == "JPY":
            assert isinstance(row["sent_value"], int)  # rounded to the yen
    assert "OK" in done.stdout
    metrics = {e["metric"] for e in export.events}
    years = {e["time"][:4] for e in export.events}
    assert aggregate_queries <= len(metrics) * len(years)  # one query per metric and year


@pytest.mark.slow
def test_verify_with_an_ingestion_delay_does_not_call_the_result_final(
    export: Export, tmp_path: Path
) -> None:
    export.copy_to(tmp_path)
    clock = st.Clock()  # the delay passes when the test says, however slow the machine
    with st.StandIn(api_key=KEY, faults=st.Faults(ingestion_delay=600.0), clock=clock) as s:
        sent_with(tmp_path, s)
        early = read(tmp_path, s, "verify", "orders.csv", "--base-url", s.url, "--json", "v.json")
        doc = json.loads((tmp_path / "v.json").read_text())
        clock.advance(600.0)
        late = read(tmp_path, s, "verify", "orders.csv", "--base-url", s.url)
    assert early.returncode == 5, said(early)  # short, not final
    assert doc["status"] == "short" and doc["final"] is False
    assert (
        "Not final" in early.stdout
        and "Verify again in a few minutes:\n  klaviyo-backfill verify /" in early.stdout
    )
    assert late.returncode == 0, said(late)


def test_verify_shows_more_in_klaviyo_than_sent_without_failing(
    export: Export, tmp_path: Path
) -> None:
    """Another API source (an earlier import) in a month the job sent: shown, exit 0."""
    export.copy_to(tmp_path)
    busiest = export.months("Placed Order").most_common(1)[0][0]
    with st.StandIn(api_key=KEY) as s:
        s.preload([st.other_event("Placed Order", f"{busiest}-15T12:00:00+00:00", 5.0, "USD",
                                  integration=st.API)])  # fmt: skip
        sent_with(tmp_path, s)
        done = read(tmp_path, s, "verify", "orders.csv", "--base-url", s.url, "--json", "v.json")
    assert done.returncode == 0, said(done)
    row = rows_of(tmp_path / "v.json")[("Placed Order", busiest, "USD")]
    assert row["klaviyo_count"] == row["sent_count"] + 1
    assert "hold more" in done.stdout and busiest in done.stdout


@pytest.mark.slow
def test_verify_needs_no_export_with_its_checkpoint(export: Export, tmp_path: Path) -> None:
    """What was sent is in the checkpoint: the export may have moved."""
    export.copy_to(tmp_path)
    with st.StandIn(api_key=KEY) as s:
        sent_with(tmp_path, s)
        checkpoint = checkpoint_in(tmp_path)
        (tmp_path / "orders.csv").unlink()
        done = read(tmp_path, s, "verify", "--checkpoint", str(checkpoint), "--base-url", s.url)
        again = read(tmp_path, s, "verify", "orders.csv", "--base-url", s.url)  # found by its path
    assert done.returncode == 0, said(done)
    assert again.returncode == 0, said(again)


def test_verify_of_a_checkpoint_from_before_totals_is_refused_in_words(
    export: Export, tmp_path: Path
) -> None:
    """A pre-release checkpoint kept no totals: refused, saying how to get one that can be
    verified (the export is not read again)."""
    export.copy_to(tmp_path)
    with st.StandIn(api_key=KEY) as s:
        sent = cli(tmp_path, "send", "orders.csv", "--base-url", s.url, *FAST)
        assert sent.returncode in (0, 1), said(sent)
        checkpoint = checkpoint_in(tmp_path)
        db = sqlite3.connect(checkpoint)  # as a pre-release version left it
        db.execute("DROP TABLE sent_totals")
        db.execute("DELETE FROM meta WHERE key = 'totals'")
        db.commit()
        db.close()
        refused = read(tmp_path, s, "verify", "orders.csv", "--base-url", s.url)
    told = " ".join(refused.stderr.split())
    assert refused.returncode == 2, said(refused)
    assert "pre-release version" in told and "--restart" in told, told


def test_verify_without_a_checkpoint_exits_2(export: Export, tmp_path: Path) -> None:
    export.copy_to(tmp_path)
    with st.StandIn(api_key=KEY) as s:
        done = read(tmp_path, s, "verify", "orders.csv", "--base-url", s.url)
        assert not s.reads
    assert done.returncode == 2, said(done)
    assert "no checkpoint" in done.stderr


def test_verify_refuses_a_key_without_metrics_read_naming_the_scope(
    export: Export, tmp_path: Path
) -> None:
    export.copy_to(tmp_path)
    with st.StandIn(api_key=KEY) as s:
        sent_with(tmp_path, s)
        s.faults = st.Faults(missing_scopes=frozenset({"metrics:read"}))
        done = read(tmp_path, s, "verify", "orders.csv", "--base-url", s.url)
    assert done.returncode == 3, said(done)
    assert "metrics:read" in done.stderr and "403" in done.stderr
    assert KEY not in done.stdout + done.stderr


def test_verify_with_a_key_klaviyo_refuses_exits_3(export: Export, tmp_path: Path) -> None:
    """The send's key, revoked since (Klaviyo answers 401)."""
    export.copy_to(tmp_path)
    with st.StandIn(api_key=KEY) as s:
        sent_with(tmp_path, s)
        s.api_key = "pk_another_" + secrets.token_hex(8)
        s.faults = st.Faults(wrong_key_status=401)
        done = read(tmp_path, s, "verify", "orders.csv", "--base-url", s.url)
    assert done.returncode == 3, said(done)
    assert "401" in done.stderr and KEY not in done.stdout + done.stderr


# ---------------------------------------------------------------- preflight and the send's check


def three_shopify_months(export: Export, s: st.StandIn) -> dict[str, int]:
    """Shopify's own Placed Order in three months of the export's range (2, 5 and 7 events),
    and in a month outside it, which is no overlap."""
    months = sorted(export.months("Placed Order"))
    chosen = {months[1]: 2, months[len(months) // 2]: 5, months[-2]: 7}
    events = [st.other_event("Placed Order", f"{m}-0{i + 1}T10:00:00+00:00", uid=f"s{m}{i}")
              for m, n in chosen.items() for i in range(n)]  # fmt: skip
    events.append(st.other_event("Placed Order", "2019-06-01T00:00:00+00:00", uid="outside"))
    events.append(st.other_event("Ordered Product", "2021-06-01T00:00:00+00:00", uid="p"))
    s.preload(events)
    return chosen


def test_preflight_lists_exactly_the_months_another_integration_holds(
    export: Export, tmp_path: Path
) -> None:
    export.copy_to(tmp_path)
    with st.StandIn(api_key=KEY) as s:
        chosen = three_shopify_months(export, s)
        # the API's own Placed Order (a resend, a --resume) is never an overlap
        s.preload([st.other_event("Placed Order", f"{m}-20T00:00:00+00:00", integration=st.API)
                   for m in chosen])  # fmt: skip
        done = read(tmp_path, s, "preflight", "orders.csv", "--base-url", s.url, "--json", "p.json")
    assert done.returncode == 6, said(done)  # ExitCode.OVERLAP
    doc = json.loads((tmp_path / "p.json").read_text())
    placed = export.months("Placed Order")
    assert doc["overlaps"] == [
        {"metric": "Placed Order", "integration": "Shopify", "month": m, "count": n,
         "export_count": placed[m]} for m, n in sorted(chosen.items())
    ]  # fmt: skip
    assert doc["scopes"]["metrics:read"] is True
    assert doc["send_seconds_at_ceiling"] >= 0 and doc["requests"] >= 1
    for m in chosen:
        assert m in done.stdout


def test_preflight_without_an_overlap_exits_0_and_lists_flows(
    export: Export, tmp_path: Path
) -> None:
    export.copy_to(tmp_path)
    with st.StandIn(api_key=KEY) as s:
        s.preload([st.other_event("Placed Order", "2023-05-01T00:00:00+00:00", integration=st.API)])
        s.flows["Placed Order"] = [{"id": "F1", "name": "Thank you for your order"}]
        done = read(tmp_path, s, "preflight", "orders.csv", "--base-url", s.url, "--json", "p.json",
                   "--trigger-flows")  # fmt: skip
    assert done.returncode == 0, said(done)
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["overlaps"] == []
    assert doc["flows_triggered"]["Placed Order"][0]["name"] == "Thank you for your order"
    assert "Thank you for your order" in done.stdout


@pytest.mark.parametrize(("faults", "expect"), [
    (st.Faults(wrong_key_status=401), "401"),
    (st.Faults(missing_scopes=frozenset({"metrics:read"})), "metrics:read"),
])  # fmt: skip
def test_preflight_refuses_a_key_it_cannot_read_with(
    export: Export, tmp_path: Path, faults: st.Faults, expect: str
) -> None:
    export.copy_to(tmp_path)
    key = KEY if faults.wrong_key_status == 403 else "pk_wrong_" + secrets.token_hex(8)
    with st.StandIn(api_key=KEY, faults=faults) as s:
        done = read(tmp_path, s, "preflight", "orders.csv", "--base-url", s.url, key=key)
    assert done.returncode == 3, said(done)
    assert expect in done.stderr


def test_send_refuses_an_overlap_with_nothing_sent_and_sends_with_allow_overlap(
    export: Export, tmp_path: Path
) -> None:
    export.copy_to(tmp_path)
    with st.StandIn(api_key=KEY) as s:
        chosen = three_shopify_months(export, s)
        refused = cli(tmp_path, "send", "orders.csv", "--base-url", s.url, *FAST)
        assert not s.requests and not s.events  # nothing sent
        allowed = cli(tmp_path, "send", "orders.csv", "--base-url", s.url, *FAST,
                      "--allow-overlap")  # fmt: skip
        sent = {(e.metric, e.key_uid) for e in s.events}
        status = cli(tmp_path, "status", "orders.csv")
    assert refused.returncode == 2, said(refused)
    error = refused.stderr
    assert "Placed Order of Shopify" in error
    placed = export.months("Placed Order")
    for m, n in chosen.items():
        assert f"{m} ({n} there, {placed[m]} in the export)" in error
    assert "--since/--until" in error and "--allow-overlap" in error
    assert allowed.returncode == 0, said(allowed)
    assert len(sent) == len(export.events)
    assert "allowed" in status.stdout


def test_a_resumed_send_remembers_allow_overlap(export: Export, tmp_path: Path) -> None:
    export.copy_to(tmp_path)
    with st.StandIn(api_key=KEY) as s:
        three_shopify_months(export, s)
        first = cli(tmp_path, "send", "orders.csv", "--base-url", s.url, *FAST, "--allow-overlap",
                    "--limit", "20")  # fmt: skip
        assert first.returncode == 0, said(first)
        reads = len(s.reads)
        resumed = cli(tmp_path, "send", "orders.csv", "--base-url", s.url, *FAST, "--resume")
        assert len(s.reads) == reads  # not checked again
        assert len({(e.metric, e.key_uid) for e in s.events}) == len(export.events)
    assert resumed.returncode == 0, said(resumed)


def test_a_key_without_metrics_read_warns_in_one_line_and_sends(
    export: Export, tmp_path: Path
) -> None:
    export.copy_to(tmp_path)
    with st.StandIn(api_key=KEY, faults=st.Faults(missing_scopes=frozenset({"metrics:read"}))) as s:
        three_shopify_months(export, s)
        done = cli(tmp_path, "send", "orders.csv", "--base-url", s.url, *FAST)
        assert len(s.events) == len(export.events)
    assert done.returncode == 0, said(done)
    warnings = [line for line in done.stderr.splitlines() if "metrics:read" in line]
    assert len(warnings) == 1 and "not checked" in warnings[0], done.stderr


def test_a_dry_run_stays_offline(export: Export, tmp_path: Path) -> None:
    export.copy_to(tmp_path)
    with st.StandIn(api_key=KEY) as s:
        three_shopify_months(export, s)
        done = cli(tmp_path, "send", "orders.csv", "--base-url", s.url, "--dry-run",
                   "--preview", "0")  # fmt: skip
        assert not s.reads and not s.requests
    assert done.returncode == 0, said(done)
