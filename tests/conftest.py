"""Every test gets its own state folder (the account ledgers and the checkpoints live there:
account_ledger.py, checkpoint.py), so no test sees what another sent, nor the state of the
user running the tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


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
