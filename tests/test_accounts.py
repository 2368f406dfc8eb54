"""A checkpoint belongs to one Klaviyo account: the same export sent to a staging account and
then to the real one sends every event to both (issue: "the same export to a second account
sends nothing"). End to end, through the CLI, against two stand-ins on one address."""

from __future__ import annotations

import secrets
import shutil
import subprocess
from pathlib import Path

import pytest
import standin as st
from cli_helpers import CLI, EXPORT, FAST, checkpoints_in, env, free_port, run

pytestmark = pytest.mark.e2e
STAGING = "pk_staging_" + secrets.token_hex(12)
REAL = "pk_real_" + secrets.token_hex(12)


def send_to(cwd: Path, key: str, port: int, *extra: str) -> tuple[set[object], str, int]:
    """Send the export to the account of `key`, a stand-in at `port`: (its events, output, exit)."""
    with st.StandIn(api_key=key, port=port) as s:
        done = run(cwd, key, "send", "orders.csv", "--base-url", s.url, *FAST, *extra)
        return s.keys(), done.stdout + done.stderr, done.returncode


def test_the_same_export_to_a_second_account_sends_every_event(
    tmp_path: Path, own_state_folder: Path
) -> None:
    shutil.copy(EXPORT, tmp_path / "orders.csv")
    port = free_port()
    staging, said, code = send_to(tmp_path, STAGING, port)
    assert code in (0, 1), said
    assert staging, "the first account received events"
    real, said, code = send_to(tmp_path, REAL, port)
    assert "Nothing to do" not in said
    assert code in (0, 1), said
    assert real == staging  # every event, to the second account too
    again, said, _ = send_to(tmp_path, REAL, port)
    assert "Nothing to do" in said and not again  # the same account: nothing twice
    checkpoints = checkpoints_in(own_state_folder)
    assert len(checkpoints) == 2, checkpoints
    for path in checkpoints:
        data = path.read_bytes()
        assert STAGING.encode() not in data and REAL.encode() not in data
        assert STAGING not in path.name and REAL not in path.name


def test_status_shows_each_accounts_checkpoint(tmp_path: Path) -> None:
    shutil.copy(EXPORT, tmp_path / "orders.csv")
    port = free_port()
    send_to(tmp_path, STAGING, port)
    send_to(tmp_path, REAL, port)
    status = run(tmp_path, REAL, "status", "orders.csv")
    assert status.returncode == 0, status.stderr
    assert status.stdout.count("Klaviyo account") == 2
    assert status.stdout.count("finished") == 2


def test_a_named_checkpoint_refuses_another_account(tmp_path: Path) -> None:
    shutil.copy(EXPORT, tmp_path / "orders.csv")
    port = free_port()
    _, said, code = send_to(tmp_path, STAGING, port, "--checkpoint", "cp.sqlite")
    assert code in (0, 1), said
    real, said, code = send_to(tmp_path, REAL, port, "--checkpoint", "cp.sqlite")
    assert code == 2, said
    assert "another Klaviyo account" in said and "Nothing to do" not in said
    assert not real
    assert REAL not in said and STAGING not in said


def test_a_wrong_key_leaves_nothing_that_blocks_the_right_one(
    tmp_path: Path, own_state_folder: Path
) -> None:
    """A 401 stops the run with the error alone (no summary: nothing was sent), and leaves no
    checkpoint (nothing was acknowledged); the corrected run sends everything, without
    --resume."""
    shutil.copy(EXPORT, tmp_path / "orders.csv")
    port = free_port()
    with st.StandIn(api_key=REAL, port=port) as s:
        wrong_key = env("pk_wrong_" + secrets.token_hex(8), COLUMNS="200")
        wrong = subprocess.run([CLI, "send", "orders.csv", "--base-url", s.url, *FAST],
                               cwd=tmp_path, env=wrong_key, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, timeout=120)  # fmt: skip
        assert wrong.returncode == 3, wrong.stdout
        # the first error, before any summary (the overlap check's warning, that the key could
        # not read metrics, may come before it)
        said = wrong.stdout
        assert said.index("Error: ") == said.index("Error: Klaviyo refused the API key"), said
        assert "Send summary" not in said, said  # the error alone: nothing was sent
        assert said.count("refused the API key") == 1, said
        assert not s.keys()
        assert not checkpoints_in(own_state_folder)
        right = run(tmp_path, REAL, "send", "orders.csv", "--base-url", s.url, *FAST)
        assert right.returncode in (0, 1), right.stdout + right.stderr
        assert "--resume" not in right.stderr
        assert s.keys()
