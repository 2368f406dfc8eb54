"""`status`: the checkpoints of these exports, open for reading."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import (
    CheckpointError,
    UsageError,
)
from ..state.checkpoint import Ledger
from ..state.locate import checkpoints_dir, found_for


@contextmanager
def open_status(
    paths: tuple[str, ...], checkpoint: str | None
) -> Iterator[list[tuple[Path, Ledger]]]:
    """The checkpoints of these exports (one per Klaviyo account they were sent to), or the
    one named, open for reading."""
    if not checkpoint and not paths:
        raise UsageError("give the export PATHS the run used, or --checkpoint PATH")
    found = [Path(checkpoint)] if checkpoint else found_for(list(paths))
    if not found or not found[0].exists():
        if checkpoint:
            raise CheckpointError(f"no checkpoint at {checkpoint}")
        raise CheckpointError(
            f"no checkpoint for {', '.join(paths)} in {checkpoints_dir()} (nor in "
            ".klaviyo-backfill/ here, where earlier versions kept them)",
            "A checkpoint is keyed by the exports' full paths: name them as the send did, "
            "or pass --checkpoint FILE.",
        )
    ledgers = [(path, Ledger(path)) for path in found]
    try:
        yield ledgers
    finally:
        for _, ledger in ledgers:
            ledger.close()
