"""`status` agrees with itself and with the send (issue #14, "the first hour", item 5): the
job's totals come from the checkpoint, not from its last run; a run's start and end are the
same run's; what is left is said, never "at least 0"; a killed run is "stopped abruptly"
wherever it is named, even when its process id is reused; rejected orders and events Klaviyo
refused are counted apart.

End to end, through the CLI, against the stand-in; the process-id check on the Ledger."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import cli_helpers
import pytest
import standin as st
from cli_helpers import SAMPLES, said, wait_until

from klaviyo_backfill.state.checkpoint import Ledger, process_start

PROBLEMS = SAMPLES / "problems" / "shopify_orders_with_problems.csv"  # 5 orders identify nobody
KEY = "pk_status_" + secrets.token_hex(12)
FAST = [*cli_helpers.FAST, "--failures", "failures.jsonl"]


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return cli_helpers.run(cwd, KEY, *args)


def flat(text: str) -> str:
    return " ".join(text.split())


def row(status: str, label: str) -> str:
    """The value of one row of `status`'s table (flattened)."""
    match = re.search(rf"│ {re.escape(label)}\s*│ ([^│]*)│", status)
    assert match, f"no row {label!r} in\n{status}"
    return " ".join(match.group(1).split())


@pytest.mark.slow
@pytest.mark.e2e
def test_status_after_a_no_op_resume_shows_the_jobs_rejections(tmp_path: Path) -> None:
    shutil.copy(PROBLEMS, tmp_path / "orders.csv")
    with st.StandIn(api_key=KEY) as s:
        first = run(tmp_path, "send", "orders.csv", "--base-url", s.url, *FAST, "--limit", "10")
        assert first.returncode == 1, said(first)
        limited = run(tmp_path, "status", "orders.csv").stdout
        assert row(limited, "State") == "limited"
        assert re.fullmatch(r"about \d+% of the export, from its resume point .*", row(
            limited, "Left")), limited  # fmt: skip
        done = run(tmp_path, "send", "orders.csv", "--base-url", s.url, *FAST, "--resume")
        assert done.returncode == 1, said(done)
        assert "5 rejected orders written to failures.jsonl" in flat(done.stdout), said(done)
        no_op = run(tmp_path, "send", "orders.csv", "--base-url", s.url, *FAST, "--resume")
        assert no_op.returncode == 1, said(no_op)  # a resume reports the job: its rejections
        nothing = run(tmp_path, "send", "orders.csv", "--base-url", s.url, *FAST)
        assert nothing.returncode == 0, said(nothing)
    assert "with 5 rejected orders (`status`" in flat(nothing.stdout), said(nothing)
    status = run(tmp_path, "status", "orders.csv").stdout
    assert row(status, "State") == "finished"
    assert row(status, "Orders rejected (not sent)") == "5"
    assert row(status, "Events rejected by Klaviyo") == "0"
    assert row(status, "Left") == "nothing"
    assert "at least" not in status


def placed_ids(bodies: Path) -> list[str]:
    """The unique ids of the Placed Order events in a dry run's bulk bodies (--output)."""
    ids = []
    for line in bodies.read_text().splitlines():
        for entry in json.loads(line)["data"]["attributes"]["events-bulk-create"]["data"]:
            for event in entry["attributes"]["events"]["data"]:
                attributes = event["attributes"]
                if attributes["metric"]["data"]["attributes"]["name"] == "Placed Order":
                    ids.append(attributes["unique_id"])
    return ids


@pytest.mark.e2e
def test_events_klaviyo_refused_are_counted_apart_from_rejected_orders(tmp_path: Path) -> None:
    shutil.copy(PROBLEMS, tmp_path / "orders.csv")
    dry = run(tmp_path, "send", "orders.csv", "--dry-run", "--output", "dry.jsonl")
    assert dry.returncode == 1, said(dry)
    refused = frozenset(placed_ids(tmp_path / "dry.jsonl")[:2])  # two orders' order events
    with st.StandIn(api_key=KEY, faults=st.Faults(refuse_uids=refused)) as s:
        sent = run(tmp_path, "send", "orders.csv", "--base-url", s.url, *FAST)
        assert sent.returncode == 1, said(sent)
        again = run(tmp_path, "send", "orders.csv", "--base-url", s.url, *FAST)
    lines = [json.loads(x) for x in (tmp_path / "failures.jsonl").read_text().splitlines()]
    events = sum(f["reason"] == "rejected by Klaviyo" for f in lines)
    assert events >= 2 and len(lines) == 5 + events
    told = f"5 rejected orders and {events} events Klaviyo refused"
    assert f"{told} written to failures.jsonl" in flat(sent.stdout), said(sent)
    assert f"with {told} (`status`" in flat(again.stdout), said(again)
    status = run(tmp_path, "status", "orders.csv").stdout
    assert row(status, "Orders rejected (not sent)") == "5"
    assert row(status, "Events rejected by Klaviyo") == str(events)
    assert row(status, "Orders with events Klaviyo rejected") == "2"
    listed = " ".join(run(tmp_path, "status").stdout.split())  # every job, in words
    assert f"5 orders rejected (not sent); {events} events rejected by Klaviyo (in 2 orders)" in (
        listed
    ), listed


@pytest.mark.slow
@pytest.mark.e2e
def test_a_killed_run_is_stopped_abruptly_wherever_it_is_named(tmp_path: Path) -> None:
    shutil.copy(SAMPLES / "shopify_orders_export.csv", tmp_path / "orders.csv")
    with st.StandIn(api_key=KEY, faults=st.Faults(latency=0.05)) as s:
        base = ["send", "orders.csv", "--base-url", s.url, "--endpoint", "single",
                "--rate-limit", "300/s,3000/m", "--concurrency", "2", *FAST]  # fmt: skip
        first = run(tmp_path, *base, "--limit", "3")  # an earlier run that ended
        assert first.returncode in (0, 1), said(first)
        proc = cli_helpers.start(tmp_path, KEY, "resumed", *base, "--resume")
        try:
            wait_until(lambda: len(s.requests) >= 20, proc)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
        status = run(tmp_path, "status", "orders.csv").stdout
        assert row(status, "State").startswith(f"stopped abruptly (process {proc.pid} is gone)")
        assert "Last run started" in status and "Last run ended" not in status, status
        assert "Last run read" not in status  # the earlier run's figures are not this one's
        again = run(tmp_path, *base)  # neither --resume nor --restart
        assert again.returncode == 2, said(again)
        told = flat(again.stderr)
        assert "(stopped abruptly" in told and "(running)" not in told, told


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="Linux /proc")
def test_a_reused_process_id_is_not_taken_for_the_run(tmp_path: Path) -> None:
    """The run's process id now belongs to another klaviyo-backfill process (ids are
    reused): its start time tells them apart."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                              "klaviyo-backfill"])  # fmt: skip
    ledger = Ledger(tmp_path / "run.sqlite")
    try:
        ledger.mark_running()
        assert ledger.runner_alive() is True
        assert ledger.get("pid_start") == process_start(os.getpid())
        ledger.put(pid=str(other.pid))  # the id, but not the start time, of a live process
        assert ledger.runner_alive() is False
        assert ledger.condition().startswith("stopped abruptly")
        ledger.put(pid_start=process_start(other.pid) or "")
        assert ledger.runner_alive() is True
    finally:
        ledger.close()
        other.kill()
        other.wait()
