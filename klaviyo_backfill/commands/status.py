"""`status`: the checkpoints of these exports, open for reading."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import CheckpointError
from ..state.checkpoint import Ledger
from ..state.locate import checkpoints_dir, found_for, is_job
from ..state.sqlite import BAD_VALUES, trouble


def jobs_folder() -> Path:
    """Where every job's checkpoint is kept."""
    return checkpoints_dir()


def every_job() -> list[Path]:
    """Every job's checkpoint in the state folder, the last run first."""
    folder = checkpoints_dir()
    found = list(filter(is_job, folder.glob("*.sqlite"))) if folder.is_dir() else []
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


@contextmanager
def open_status(
    paths: tuple[str, ...], checkpoint: str | None
) -> Iterator[list[tuple[Path, Ledger]]]:
    """The checkpoints of these exports (one per Klaviyo account they were sent to), the one
    named, or (neither given) every job in the state folder, open for reading."""
    if not checkpoint and not paths:
        found = every_job()
        if not found:
            raise CheckpointError(
                f"no job in {checkpoints_dir()}: nothing was sent from this user's account yet",
                "Send an export first; `status PATH` names one export's job.",
            )
    elif checkpoint:
        found = [Path(checkpoint)]
    else:
        found = found_for(list(paths))
    if not found or not found[0].exists():
        if checkpoint:
            raise CheckpointError(f"no checkpoint at {checkpoint}")
        raise CheckpointError(
            f"no checkpoint for {', '.join(paths)} in {checkpoints_dir()}",
            "A checkpoint is keyed by the exports' full paths: name them as the send did, "
            "or pass --checkpoint FILE.",
        )
    ledgers = [(path, Ledger(path, read_only=True)) for path in found]
    try:
        yield ledgers
    except BAD_VALUES as exc:  # a value no checkpoint holds: it was edited or damaged
        raise trouble(found[0] if len(found) == 1 else found[0].parent, exc) from None
    finally:
        for _, ledger in ledgers:
            ledger.close()
