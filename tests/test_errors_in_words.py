"""Errors a merchant meets before anything is sent, in words (issue #22, item 4): a host that
does not resolve or refuses is named, with what to check, after a short bounded retry (not
39 s of spinner and an exception class name); a base URL without a scheme, or ending in /api,
says what to give instead. Each runs the real CLI; no request leaves this machine."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

try:
    import rogue
    import standin
    from cli_helpers import free_port, in_process
except ImportError:  # tests/ made a package
    from tests import rogue, standin
    from tests.cli_helpers import free_port, in_process

cli, export_in, said = rogue.cli, rogue.export_in, rogue.said


def send(cwd: Path, url: str, *extra: str) -> rogue.subprocess.CompletedProcess[str]:
    return cli(cwd, "send", "orders.csv", "--base-url", url, "-q", *extra)


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.e2e
def test_a_host_that_does_not_resolve_is_named_as_such(tmp_path: Path) -> None:
    """`.invalid` never resolves (RFC 6761): the lookup fails, no request is made."""
    export_in(tmp_path)
    started = time.monotonic()
    result = send(tmp_path, "https://klaviyo.invalid", "--tuning", "unreachable_seconds=2")
    took = time.monotonic() - started
    assert result.returncode == 4, said(result)
    told = flat(result.stderr)
    assert "the host name klaviyo.invalid does not resolve (DNS)" in told, said(result)
    assert "Check the base URL (--base-url or KLAVIYO_BASE_URL" in told, said(result)
    assert "Error" in told and "ConnectError" not in told and "gaierror" not in told
    assert took < 20, took


@pytest.mark.e2e
def test_a_host_that_refuses_is_named_after_a_short_retry(tmp_path: Path) -> None:
    """Nothing listens on the port: refused at once, retried for at most
    `unreachable_seconds` (15 s by default, the whole of the wait), never the 15 minutes a
    request that reached Klaviyo may take. The CLI runs in this process, its reads' waits
    (the retries' too) on a clock that skips them: the 15 s are counted, not slept."""
    export_in(tmp_path)
    port = free_port()
    clock = standin.Clock()
    result = in_process(tmp_path, rogue.KEY, "preflight", "orders.csv", "--base-url",
                        f"http://127.0.0.1:{port}", clock=clock)  # fmt: skip
    assert result.returncode == 4, said(result)
    told = flat(result.stderr)
    assert f"127.0.0.1:{port} refused the connection: gave up after" in told, said(result)
    assert "ConnectError" not in told and "connection error (" not in told
    assert 0 < clock.skipped <= 15, clock.skipped  # the retries' waits, within the bound


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("given", "hint"),
    [
        ("a.klaviyo.com", "https://a.klaviyo.com"),
        ("a.klaviyo.com/api", "https://a.klaviyo.com"),
        ("https://a.klaviyo.com/api", "give https://a.klaviyo.com"),
        ("https://a.klaviyo.com/api/", "give https://a.klaviyo.com"),
    ],
)
def test_a_base_url_without_its_scheme_or_with_api_says_what_to_give(
    tmp_path: Path, given: str, hint: str
) -> None:
    export_in(tmp_path)
    result = send(tmp_path, given)
    assert result.returncode == 2, said(result)
    told = flat(result.stderr)
    assert hint in told, said(result)
    assert "://a" not in told.replace("https://a", ""), said(result)  # never `refusing ://`
    assert ("/api" in given) == ("ends in /api" in told or "drop" in told.lower()), said(result)


@pytest.mark.e2e
def test_a_local_base_url_ending_in_api_is_not_blamed_on_klaviyo(tmp_path: Path) -> None:
    """`http://127.0.0.1:PORT/api` gave `HTTP 404: /api/api/metrics`, blamed on Klaviyo."""
    export_in(tmp_path)
    port = free_port()
    result = send(tmp_path, f"http://127.0.0.1:{port}/api")
    assert result.returncode == 2, said(result)
    assert f"Drop it: give http://127.0.0.1:{port}" in flat(result.stderr), said(result)
    assert "404" not in result.stderr
