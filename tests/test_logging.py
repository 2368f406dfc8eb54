"""-v and --log: one line per retry (with its cause and wait), 429 pause, isolation split and
(--log, -vv) checkpoint commit and throttle wait; never the key, never a customer's data."""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

import cli_helpers
import pytest
import standin as st
from cli_helpers import EXPORT, FAST, free_port

pytestmark = pytest.mark.e2e
KEY = "pk_log_" + secrets.token_hex(12)
# every wait a hundredth of a real one's (the 429's second, 5xx backoffs): said as they are
QUICK = "backoff_base=0.01,backoff_cap=0.05,retry_after_cap=0.01"


@pytest.mark.slow
def test_the_log_names_each_retry_and_commit_and_never_the_key(tmp_path: Path) -> None:
    shutil.copy(EXPORT, tmp_path / "orders.csv")
    faults = st.Faults(server_error=0.25, throttle_no_retry_after=0.1, seed=7)
    with st.StandIn(api_key=KEY, faults=faults, port=free_port()) as s:
        done = cli_helpers.run(tmp_path, KEY, "send", "orders.csv", "--base-url", s.url,
                               "--endpoint", "single", *FAST, "--log", "send.log", "-v",
                               "--tuning", QUICK)  # fmt: skip
        failed = sum(1 for r in s.requests if r.status is not None and r.status >= 500)
        throttled = sum(1 for r in s.requests if r.status == 429)
    assert done.returncode in (0, 1), done.stderr
    log = (tmp_path / "send.log").read_text()
    retries = [line for line in log.splitlines() if " retry " in line]
    assert failed and len(retries) >= failed + throttled  # one line per retry...
    assert any("(HTTP 5" in line and "waiting" in line for line in retries)  # ...cause, wait
    assert "429: every request pauses" in log
    assert "checkpoint:" in log  # each commit, in the file
    assert " retry " in done.stderr  # -v: retries on stderr too
    assert "checkpoint:" not in done.stderr  # but not the commits (-vv)
    for secret in (KEY, "@example", "Klaviyo-API-Key"):
        assert secret not in log and secret not in done.stderr


def test_without_v_or_log_nothing_is_logged(tmp_path: Path) -> None:
    """Log lines go where the user asks, never to stderr by Python's fallback handler."""
    shutil.copy(EXPORT, tmp_path / "orders.csv")
    with st.StandIn(api_key=KEY, faults=st.Faults(server_error=1.0), port=free_port()) as s:
        done = cli_helpers.run(tmp_path, KEY, "send", "orders.csv", "--base-url", s.url,
                               *FAST, "--tuning", f"max_attempts=2,{QUICK}")  # fmt: skip
    assert done.returncode == 4, done.stderr
    assert "gave up after 2 tries" in done.stderr + done.stdout
    assert "giving up on" not in done.stderr and "retry a request" not in done.stderr
