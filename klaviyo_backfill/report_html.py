"""One-file HTML reports (placeholder)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .run import Verification
    from .summary import Stats


def verify_page(result: Verification) -> str:
    return "<!doctype html><title>verify</title>"


def inspect_page(stats: Stats) -> str:
    return "<!doctype html><title>inspect</title>"
