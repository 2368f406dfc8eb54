"""A send stopped with Ctrl-C part-way through an order, then resumed, verifies clean: the
events the first run had acknowledged count as sent (found by using the tool as a merchant
would: the resumed send's `verify` named three orders "held twice" and exited short)."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import cli_helpers
import pytest
import standin as st
from cli_helpers import EXPORT, popen, wait_until

KEY = "pk_interrupt_0123456789abcdef01"


@pytest.mark.slow
@pytest.mark.e2e
def test_a_send_interrupted_mid_order_then_resumed_verifies_clean(tmp_path: Path) -> None:
    shutil.copy(EXPORT, tmp_path / "orders.csv")
    with st.StandIn(api_key=KEY, faults=st.Faults(latency=0.05)) as s:
        proc = popen(tmp_path, KEY, "send", "orders.csv", "--base-url", s.url, "--endpoint",
                     "single", "--rate-limit", "5/s,300/m", "-q", COLUMNS="200")  # fmt: skip
        try:
            wait_until(lambda: len(s.requests) >= 11, proc, limit=60,
                       what="before it could be interrupted")  # fmt: skip
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 130
        partly = len(s.keys())
        resumed = cli_helpers.run(tmp_path, KEY, "send", "orders.csv", "--base-url", s.url,
                                  "--endpoint", "single", "--rate-limit", "100/s,1000/m", "-q",
                                  "--resume")  # fmt: skip
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        held = len(s.keys())
        verified = cli_helpers.in_process(tmp_path, KEY, "verify", "orders.csv", "--base-url",
                                          s.url, clock=s.clock)  # fmt: skip
    assert 0 < partly < held
    said = verified.stdout + verified.stderr
    assert verified.returncode == 0, said
    assert "0 missing" in said and "0 order(s) held twice" in said, said
