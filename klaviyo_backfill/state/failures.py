"""The failures file: every rejected order or event, one JSON line each, with its reason."""

from __future__ import annotations

import contextlib
import json
import os
from collections import Counter
from typing import IO

from ..errors import WriteError
from ..model import Rejection
from .files import open_private

__all__ = ["KLAVIYO_REJECTED", "Failures", "kind_of"]

KLAVIYO_REJECTED = "rejected by Klaviyo"  # the reason of an event Klaviyo refused
CHANGED = "changed since it was sent"  # the reason of an order the account holds otherwise


def kind_of(rejection: Rejection) -> str:
    """'events' Klaviyo refused, 'changed' orders it holds otherwise (not sent), or 'orders'
    the export could not give: a failures file's lines count apart by these."""
    if rejection.reason == KLAVIYO_REJECTED:
        return "events"
    return "changed" if rejection.reason == CHANGED else "orders"


class Failures:
    """The failures file: one JSON line per rejected order or event, opened on first use.

    It lists this run's rejections (a resumed run writes the earlier ones again first): a file
    left by an earlier run goes at once, so a clean rerun leaves none behind."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.count = 0
        self.kinds: Counter[str] = Counter()  # lines by `kind_of`
        self._fh: IO[str] | None = None
        self._broken: OSError | None = None
        if path is not None and (os.path.isfile(path) or os.path.islink(path)):
            os.unlink(path)  # a link goes, never the file it points to

    def write(self, rejection: Rejection) -> None:
        self.count += 1
        self.kinds[kind_of(rejection)] += 1
        if self.path is None:
            return
        if self._broken is not None:  # told once already: the run is stopping
            raise WriteError("failures file", self.path, self._broken)
        try:
            if self._fh is None:
                self._fh = open_private(self.path, "failures file", text=True)
            self._fh.write(json.dumps(rejection.as_json(), ensure_ascii=False) + "\n")
            self._fh.flush()
        except OSError as exc:  # a full disk: named, and the run stops (it can go on after)
            self._broken = exc
            self._drop()
            raise WriteError("failures file", self.path, exc) from None

    def close(self) -> None:
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError as exc:
                self._fh = None
                raise WriteError("failures file", str(self.path), exc) from None
            self._fh = None

    def _drop(self) -> None:
        """Let go of a file that could not be written (what it buffers is lost with it)."""
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.close()
            self._fh = None
