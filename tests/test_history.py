"""One Klaviyo account, one history (issue #20): what a merchant does over a year, end to end
against the stand-in: runs interrupted and continued from other folders, a job run twice at
once, verify of an unfinished job, the commands the tool prints, the failures file, `status`
without arguments, a rotated key.
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

try:
    import cli_helpers
    import corpus
    import standin as st
    from cli_helpers import CLI, free_port
except ImportError:  # tests/ made a package
    from tests import cli_helpers, corpus
    from tests import standin as st
    from tests.cli_helpers import CLI, free_port

KEY = "pk_history_" + secrets.token_hex(12)
SLOW = ["--endpoint", "single", "--rate-limit", "300/s,3000/m", "--concurrency", "8", "-q"]


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 Shopify orders (about 1,000 events)."""
    where = tmp_path_factory.mktemp("history") / "orders_export.csv"
    corpus.write_shopify_csv(corpus.make_orders(300, 20, "shopify"), where)
    return where


def env(key: str = KEY) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("KLAVIYO_")}
    out.update(KLAVIYO_API_KEY=key, COLUMNS="200")
    return out


def run(cwd: Path, *args: str, key: str = KEY) -> subprocess.CompletedProcess[str]:
    return cli_helpers.run(cwd, key, *args)


def start(cwd: Path, name: str, *args: str, key: str = KEY) -> subprocess.Popen[bytes]:
    with open(cwd / f"{name}.out", "wb") as out, open(cwd / f"{name}.err", "wb") as err:
        return subprocess.Popen([CLI, *args], cwd=cwd, env=env(key), stdout=out, stderr=err)


def said(cwd: Path, name: str) -> str:
    return (cwd / f"{name}.out").read_text() + (cwd / f"{name}.err").read_text()


def interrupted(cwd: Path, s: st.StandIn, *args: str, after: int = 30) -> str:
    """A send stopped with Ctrl-C once the stand-in answered `after` requests: its output."""
    proc = start(cwd, "first", *args)
    try:
        deadline = time.monotonic() + 60
        while len(s.requests) < after and proc.poll() is None:
            assert time.monotonic() < deadline, "no traffic"
            time.sleep(0.005)
        assert proc.poll() is None, "finished before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = said(cwd, "first")
    assert proc.returncode == 130, out
    return out


def continuation(output: str) -> list[str]:
    """The command a stopped run printed to continue it, as argv (the console script)."""
    start_at = output.index("klaviyo-backfill ")
    line = output[start_at:].splitlines()[0]
    argv = shlex.split(line)
    return [CLI, *argv[1:]]


def test_two_resumes_started_together_send_each_event_once(export: Path, tmp_path: Path) -> None:
    shutil.copy(export, tmp_path / "orders.csv")
    with st.StandIn(api_key=KEY, port=free_port(), faults=st.Faults(latency=0.02)) as s:
        base = ["send", "orders.csv", "--base-url", s.url, *SLOW]
        interrupted(tmp_path, s, *base)
        held = len(s.keys())
        one = start(tmp_path, "one", *base, "--resume")
        two = start(tmp_path, "two", *base, "--resume")
        one.wait(120)
        two.wait(120)
        codes = sorted([one.returncode, two.returncode])
        outputs = said(tmp_path, "one") + said(tmp_path, "two")
        assert codes[1] == 2 and codes[0] in (0, 1), outputs
        assert "is sending with checkpoint" in outputs
        assert s.stats["duplicates_skipped"] == 0, outputs
        assert len(s.keys()) > held
        status = run(tmp_path, "status", "orders.csv")
        assert "finished" in status.stdout, status.stdout + status.stderr
