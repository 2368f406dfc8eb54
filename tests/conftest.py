"""Every test gets its own state folder (the account ledgers and the checkpoints live there:
account_ledger.py, checkpoint.py), so no test sees what another sent, nor the state of the
user running the tests. The package is compiled once, before any test starts the CLI."""

from __future__ import annotations

import compileall
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "klaviyo_backfill"


def pytest_configure(config: pytest.Config) -> None:
    """Where PYTHONDONTWRITEBYTECODE is set (CI images often set it), no CLI the tests start
    would keep its compiled modules, and each of several hundred would compile the package
    from source again (0.16 s of CPU a start); compiled here, each reads them."""
    compileall.compile_dir(PACKAGE, quiet=1)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto` (pyproject.toml): two workers a core, twelve at most. Half of an end-to-end
    test's time is waiting (on the CLI it started, a socket, a rate window), which the other
    worker of its core fills (2 cores: 4 workers ~100 s, 2 workers ~130 s)."""
    return min(12, 2 * len(os.sched_getaffinity(0)))


@pytest.fixture(autouse=True, scope="session")
def session_state_folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Module-scoped fixtures run before a test's own folder is set: they get this one."""
    folder = tmp_path_factory.mktemp("session-state")
    patch = pytest.MonkeyPatch()
    patch.setenv("XDG_STATE_HOME", str(folder))
    yield folder
    patch.undo()


@pytest.fixture(autouse=True)
def own_state_folder(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    folder = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("XDG_STATE_HOME", str(folder))
    return folder
