"""Checkpoints are found from any folder (issue #14, "the first hour", item 3): they live in
the user's state folder, keyed by the exports' absolute paths and the account; a checkpoint
of a pre-release version is refused in words, never migrated.

End to end, through the CLI, against the stand-in."""

from __future__ import annotations

import secrets
import shutil
import sqlite3
import subprocess
from pathlib import Path

import cli_helpers
import pytest
import standin as st
from cli_helpers import EXPORT, checkpoints_in, said

pytestmark = pytest.mark.e2e
KEY = "pk_where_" + secrets.token_hex(12)
FAST = [*cli_helpers.FAST, "--failures", "failures.jsonl"]


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return cli_helpers.run(cwd, KEY, *args)


def test_resume_and_status_from_another_folder_find_the_checkpoint(
    tmp_path: Path, own_state_folder: Path
) -> None:
    shop, elsewhere = tmp_path / "shop", tmp_path / "elsewhere"
    shop.mkdir()
    elsewhere.mkdir()
    shutil.copy(EXPORT, shop / "orders.csv")
    with st.StandIn(api_key=KEY) as s:
        first = run(shop, "send", "orders.csv", "--base-url", s.url, *FAST, "--limit", "5")
        assert first.returncode in (0, 1), said(first)
        assert not (shop / ".klaviyo-backfill").exists()
        assert len(checkpoints_in(own_state_folder)) == 1
        sent = s.keys()

        status = run(elsewhere, "status", "../shop/orders.csv")
        assert status.returncode == 0, said(status)
        assert "limited" in status.stdout and "no checkpoint" not in status.stderr

        resumed = run(elsewhere, "send", str(shop / "orders.csv"), "--base-url", s.url, *FAST,
                      "--resume")  # fmt: skip
        assert resumed.returncode in (0, 1), said(resumed)
        assert "Run without --resume" not in resumed.stderr
        assert s.keys() > sent
        every = run(tmp_path, "send", "shop/orders.csv", "--base-url", s.url, *FAST)
        assert "Nothing to do" in every.stdout, said(every)  # from a third folder, too
    assert len(checkpoints_in(own_state_folder)) == 1


def test_a_checkpoint_of_a_pre_release_version_is_refused_in_words(
    tmp_path: Path, own_state_folder: Path
) -> None:
    shutil.copy(EXPORT, tmp_path / "orders.csv")
    with st.StandIn(api_key=KEY) as s:
        first = run(tmp_path, "send", "orders.csv", "--base-url", s.url, *FAST, "--limit", "5")
        assert first.returncode in (0, 1), said(first)
        (kept,) = checkpoints_in(own_state_folder)
        with sqlite3.connect(kept) as db:  # what 0.1's pre-releases wrote: format 1
            db.execute("UPDATE meta SET value = '1' WHERE key = 'version'")
        resumed = run(tmp_path, "send", "orders.csv", "--base-url", s.url, *FAST, "--resume")
    told = " ".join(resumed.stderr.split())
    assert resumed.returncode == 2, said(resumed)
    assert "written by a pre-release version" in told and "--restart" in told, told
    assert "Traceback" not in told


def test_status_without_a_checkpoint_says_where_it_looked(tmp_path: Path) -> None:
    shutil.copy(EXPORT, tmp_path / "orders.csv")
    status = run(tmp_path, "status", "orders.csv")
    assert status.returncode == 2
    told = " ".join(status.stderr.split())
    assert "klaviyo-backfill/checkpoints" in told and "full paths" in told, told
