"""Reading Klaviyo's answers: JSON:API `errors`, their detail, and how long to wait."""

from __future__ import annotations

import re
from typing import Any

import httpx

__all__ = ["detail", "json_api_errors", "retry_after"]

_EXPECTED = re.compile(r"available in (\d+(?:\.\d+)?) second", re.IGNORECASE)


def json_api_errors(response: httpx.Response) -> list[dict[str, Any]]:
    """The `errors` of a JSON:API error body; empty when the body is not one."""
    try:
        body = response.json()
    except ValueError:
        return []
    errors = body.get("errors") if isinstance(body, dict) else None
    return [e for e in errors or () if isinstance(e, dict)]


def detail(error: dict[str, Any]) -> str:
    return str(error.get("detail") or error.get("title") or error.get("code") or "invalid")


def retry_after(response: httpx.Response) -> float | None:
    """Retry-After in seconds, else the 'Expected available in N seconds' of the body."""
    header = response.headers.get("Retry-After")
    if header is not None:
        try:
            return max(0.0, float(header))
        except ValueError:
            pass
    for error in json_api_errors(response):
        match = _EXPECTED.search(detail(error))
        if match:
            return float(match.group(1))
    return None
