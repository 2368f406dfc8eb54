"""The account a key's history is kept under (issue #20 item 3): Klaviyo's id where the key
may read it, remembered per key; the keyed hash without accounts:read, with a warning; a
history kept under the hash adopted by the id; a read that fails never forks a history.
Unit tests: GET /api/accounts answered by httpx.MockTransport, the state folder the test's."""

from __future__ import annotations

import json
import os
import stat
import warnings
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from klaviyo_backfill.commands.account import history_of
from klaviyo_backfill.errors import AuthError, BackfillWarning, CheckpointError, GaveUp
from klaviyo_backfill.klaviyo.account import account_id, klaviyo_id
from klaviyo_backfill.klaviyo.reading import ReadConfig
from klaviyo_backfill.klaviyo.retry import RetryPolicy
from klaviyo_backfill.klaviyo.throttle import Window
from klaviyo_backfill.state.account_ledger import AccountLedger, account_ledger_path
from klaviyo_backfill.state.checkpoint import Ledger
from klaviyo_backfill.state.files import state_dir
from klaviyo_backfill.state.identity import adopt, known, remember
from klaviyo_backfill.state.locate import archive, default_path

URL, KEY = "https://klaviyo.test", "pk_identity_0123456789abcdef"
HASHED = account_id(URL, KEY)
# two tries a read, and GET /api/accounts 100 a second (Klaviyo's 1 would wait a second)
CONFIG = ReadConfig(URL, KEY, retry=RetryPolicy(max_attempts=2, backoff_base=0.001),
                    windows={"accounts": (Window(100, 1.0),)})  # fmt: skip
ACCOUNT = {"data": [{"type": "account", "id": "XyZ789", "attributes": {"timezone": "UTC"}}],
           "links": {"self": f"{URL}/api/accounts", "next": None}}  # fmt: skip
ERRORS = {"errors": [{"status": 403, "code": "permission_denied", "title": "Denied",
                      "detail": "This API key is missing required scopes: accounts:read."}]}  # fmt: skip


def server(status: int, doc: object) -> tuple[list[httpx.Request], Callable[[], httpx.AsyncClient]]:
    """The requests a client made, and a client answering every one `status` and `doc`."""
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = json.dumps(doc).encode()
        return httpx.Response(status, content=body,
                              headers={"Content-Type": "application/vnd.api+json"})  # fmt: skip

    return seen, lambda: httpx.AsyncClient(transport=httpx.MockTransport(answer))


def test_the_account_read_is_klaviyos_id_remembered_for_the_key() -> None:
    seen, client = server(200, ACCOUNT)
    assert history_of(CONFIG, client()) == "XyZ789"
    assert [r.url.path for r in seen] == ["/api/accounts"]
    assert history_of(CONFIG, client()) == "XyZ789" and len(seen) == 1  # remembered, not read
    kept = state_dir() / "accounts" / "keys" / HASHED
    assert kept.read_text() == "XyZ789\n" and stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert KEY not in kept.read_text()
    failing, broken = server(503, {"errors": []})
    assert history_of(CONFIG, broken()) == "XyZ789" and not failing  # a key's account is known


def test_a_key_without_accounts_read_keeps_its_hash_and_is_warned_once() -> None:
    seen, client = server(403, ERRORS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert history_of(CONFIG, client()) == HASHED
    (warning,) = [w for w in caught if issubclass(w.category, BackfillWarning)]
    assert "a new key will start a new history" in str(warning.message)
    assert len(seen) == 1 and known(HASHED, klaviyo_id) is None  # nothing remembered


def test_a_wrong_key_is_an_auth_error() -> None:
    _, client = server(
        401,
        {
            "errors": [
                {
                    **ERRORS["errors"][0],
                    "status": 401,
                    "code": "not_authenticated",
                    "detail": "Incorrect authentication credentials.",
                }
            ]
        },
    )
    with pytest.raises(AuthError) as raised:
        history_of(CONFIG, client())
    assert raised.type is AuthError and "401" in str(raised.value)


@pytest.mark.parametrize("detail", ["Incorrect authentication credentials.",
                                    "The API key is not valid."])  # fmt: skip
def test_a_403_saying_the_key_is_not_valid_is_a_wrong_key_not_a_missing_scope(detail: str) -> None:
    """A wrong key answered 403 (Klaviyo documents 401 and 403) was taken for a key without
    accounts:read: a history under its hash, a failures file, the export read, and only
    then "Klaviyo refused the API key". It stops at the first read, nothing kept."""
    error = {**ERRORS["errors"][0], "title": "Incorrect authentication credentials.",
             "detail": detail}  # fmt: skip
    seen, client = server(403, {"errors": [error]})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(AuthError) as raised:
            history_of(CONFIG, client())
    assert raised.type is AuthError and "HTTP 403" in str(raised.value), raised.value
    assert not [w for w in caught if issubclass(w.category, BackfillWarning)]
    assert len(seen) == 1 and known(HASHED, klaviyo_id) is None


def test_a_new_key_whose_account_cannot_be_read_stops_rather_than_start_a_history() -> None:
    seen, client = server(502, {"errors": []})
    with pytest.raises(GaveUp, match="which Klaviyo account this key belongs to"):
        history_of(CONFIG, client())
    assert len(seen) == 2  # the reader's retries, then the stop
    assert not account_ledger_path(HASHED).exists()


def test_a_key_with_a_history_under_its_hash_goes_on_with_it_when_the_read_fails() -> None:
    AccountLedger(account_ledger_path(HASHED)).close()
    _, client = server(502, {"errors": []})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert history_of(CONFIG, client()) == HASHED
    assert any("goes on" in str(w.message) for w in caught)


def test_an_account_id_that_could_name_a_file_elsewhere_is_no_answer() -> None:
    doc = {**ACCOUNT, "data": [{**ACCOUNT["data"][0], "id": "../../x"}]}  # type: ignore[index]
    _, client = server(200, doc)
    with pytest.raises(GaveUp, match="named no account id"):
        history_of(CONFIG, client())
    assert not klaviyo_id("0123456789ab") and klaviyo_id("AbC123")  # a hash is never an id


def job(name: str, account: str) -> Path:
    """A checkpoint of export `name` for `account`, with its failures file beside it."""
    path = default_path([f"/exports/{name}.csv"], account)
    failures = path.with_name(path.name.removesuffix(".sqlite") + ".failures.jsonl")
    ledger = Ledger(path)
    ledger.put(account=account, failures=os.path.abspath(failures), state="finished")
    ledger.close()
    failures.write_text("{}\n")
    return path


def test_a_history_under_the_keys_hash_is_adopted_by_the_accounts_id() -> None:
    held = AccountLedger(account_ledger_path(HASHED))
    held.record([b"k" * 12])
    held.close()
    first = job("orders", HASHED)
    archive(first)  # an earlier job of the export, put aside (another window)
    first = job("orders", HASHED)
    other = job("refunds", HASHED)
    _, client = server(200, ACCOUNT)
    assert history_of(CONFIG, client()) == "XyZ789"
    assert not account_ledger_path(HASHED).exists()
    adopted = AccountLedger(account_ledger_path("XyZ789"), read_only=True)
    assert adopted.held([b"k" * 12]) == {b"k" * 12}
    adopted.close()
    for path in (first, other):
        assert not path.exists()
        moved = path.with_name(path.name.replace(HASHED, "XyZ789"))
        ledger = Ledger(moved)
        assert ledger.get("account") == "XyZ789"
        assert ledger.get("failures") == str(moved).removesuffix(".sqlite") + ".failures.jsonl"
        assert Path(ledger.get("failures") or "").read_text() == "{}\n"
        ledger.close()
    archived = list((first.parent / "archive").glob("*.sqlite"))
    assert len(archived) == 1 and "XyZ789" in archived[0].name


def test_the_accounts_own_history_is_never_overwritten_by_a_hashs() -> None:
    mine = AccountLedger(account_ledger_path("XyZ789"))
    mine.record([b"m" * 12])
    mine.close()
    theirs = AccountLedger(account_ledger_path(HASHED))
    theirs.record([b"t" * 12])
    theirs.close()
    adopt(HASHED, "XyZ789")
    kept = AccountLedger(account_ledger_path("XyZ789"), read_only=True)
    assert kept.held([b"m" * 12, b"t" * 12]) == {b"m" * 12}
    kept.close()
    assert account_ledger_path(HASHED).exists()  # left where it was, not lost


def test_a_remembered_account_that_is_a_link_or_no_id_is_refused() -> None:
    remember(HASHED, "XyZ789")
    kept = state_dir() / "accounts" / "keys" / HASHED
    kept.write_text("../../elsewhere\n")
    with pytest.raises(CheckpointError, match="names no Klaviyo account"):
        known(HASHED, klaviyo_id)
    kept.unlink()
    os.symlink(state_dir() / "elsewhere", kept)
    with pytest.raises(CheckpointError, match="symbolic link"):
        known(HASHED, klaviyo_id)


def test_a_new_accounts_first_run_names_the_histories_kept_under_other_keys_hashes() -> None:
    """An upgrade with a rotated key: the old key's history is under its hash, which the new
    key cannot claim. The run says so, and how to keep it (a run with the old key)."""
    other = account_id(URL, "pk_the_old_key_0123456789")
    AccountLedger(account_ledger_path(other)).close()
    _, client = server(200, ACCOUNT)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert history_of(CONFIG, client()) == "XyZ789"
    (warning,) = [str(w.message) for w in caught if issubclass(w.category, BackfillWarning)]
    assert other in warning and "run once with that key first" in warning, warning
    AccountLedger(account_ledger_path("XyZ789")).close()  # the account's first send
    (state_dir() / "accounts" / "keys" / HASHED).unlink()  # read again: said no more
    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        assert history_of(CONFIG, client()) == "XyZ789"
    assert not again
