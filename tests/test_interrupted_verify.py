"""A send stopped with Ctrl-C part-way through an order, then resumed, verifies clean: the
events the first run had acknowledged count as sent (found by using the tool as a merchant
would: the resumed send's `verify` named three orders "held twice" and exited short)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

try:
    import cli_helpers
    import standin as st
except ImportError:  # tests/ made a package
    from tests import cli_helpers
    from tests import standin as st

KEY = "pk_interrupt_0123456789abcdef01"
EXPORT = Path(__file__).resolve().parent.parent / "sample_data" / "shopify_orders_export.csv"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLAVIYO_")}
    return env | {"KLAVIYO_API_KEY": KEY, "COLUMNS": "200"}


def test_a_send_interrupted_mid_order_then_resumed_verifies_clean(tmp_path: Path) -> None:
    shutil.copy(EXPORT, tmp_path / "orders.csv")
    with st.StandIn(api_key=KEY, faults=st.Faults(latency=0.05)) as s:
        proc = subprocess.Popen(
            [cli_helpers.CLI, "send", "orders.csv", "--base-url", s.url, "--endpoint", "single",
             "--rate-limit", "5/s,300/m", "-q"],
            cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while len(s.requests) < 11 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            assert proc.poll() is None, "finished before it could be interrupted"
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
        verified = cli_helpers.run(tmp_path, KEY, "verify", "orders.csv", "--base-url", s.url)
    assert 0 < partly < held
    said = verified.stdout + verified.stderr
    assert verified.returncode == 0, said
    assert "0 missing" in said and "0 order(s) held twice" in said, said
