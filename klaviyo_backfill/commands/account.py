"""The account a key's history is kept under, the same for `send`, `preflight`, `verify` and
`status` (klaviyo/account.py says what the id is; state/identity.py what is remembered).

    remembered   the state folder knows this key's account (accounts/keys/<hash>): that id,
                 without a request (a key never moves to another account)
    200          GET /api/accounts names it: Klaviyo's id, remembered; a history kept under
                 the key's hash is adopted (state/identity.adopt), so an upgrade resends nothing
    401          a wrong key: AuthError (exit 3), as every other request would say
    403          the key may not read its account (no accounts:read): the keyed hash, and a
                 one-line warning that a new key will start a new history
    any other    (5xx, a page that is no answer, a timeout, after the reader's retries) the
                 keyed hash where a history is kept under it already; for a key with none,
                 the run stops (GaveUp, exit 4) rather than start a new history beside the
                 account's own: try again when Klaviyo answers
"""

from __future__ import annotations

import asyncio
import warnings
from typing import TYPE_CHECKING

from ..errors import AuthError, BackfillWarning, GaveUp, QueryError, ScopeError
from ..klaviyo.account import account_id, klaviyo_id
from ..klaviyo.reading import ReadConfig, Reader
from ..state.account_ledger import account_ledger_path
from ..state.identity import adopt, hashed_histories, keeps_history, known, remember

if TYPE_CHECKING:  # annotations only
    import httpx

__all__ = ["history_of", "settled", "unread"]


def history_of(config: ReadConfig, client: httpx.AsyncClient | None = None) -> str:
    """The account id this key's jobs and ledger are kept under (see the module's table);
    `client`: the reader's (tests)."""
    hashed = account_id(config.base_url, config.api_key)
    remembered = known(hashed, klaviyo_id)
    if remembered is not None:
        return remembered
    try:
        found = asyncio.run(_read_id(config, client))
    except ScopeError:
        return unread(hashed)
    except AuthError:
        raise
    except (GaveUp, QueryError) as exc:
        if keeps_history(hashed):
            warnings.warn(f"Klaviyo did not say which account this key belongs to ({exc.message})"
                          f": the history kept under its hash {hashed} goes on", BackfillWarning,
                          stacklevel=2)  # fmt: skip
            return hashed
        hint = f"{exc.hint} " if exc.hint else ""
        raise GaveUp(
            f"which Klaviyo account this key belongs to could not be read: {exc.message}; "
            "nothing was sent",
            f"{hint}A history is kept under the account's id (read once for a key, then "
            "remembered), so a run that cannot read it does not start one: run again when "
            "Klaviyo answers.",
        ) from None
    return settled(hashed, found)


def settled(hashed: str, found: str) -> str:
    """Klaviyo's id of the key's account, just read: remembered, and what was kept under the
    key's hash adopted."""
    remember(hashed, found)
    adopt(hashed, found)
    others = [h for h in hashed_histories() if h != hashed]
    if others and not account_ledger_path(found).exists():  # the account's first run here
        warnings.warn(
            f"account {found} has no history here yet, and {len(others)} "
            f"histor{'y is' if len(others) == 1 else 'ies are'} kept under the hash of another "
            f"key ({', '.join(others[:3])}{', ...' if len(others) > 3 else ''}: an earlier "
            "version's, or a key without accounts:read); if one is this account's, run once "
            "with that key first (it is then kept under the account's id), or what it sent is "
            "sent again",
            BackfillWarning,
            stacklevel=2,
        )
    return found


def unread(hashed: str, warn: bool = True) -> str:
    """A key that may not read its account: the history of its hash, with a warning."""
    if warn:
        warnings.warn(
            f"this key may not read its Klaviyo account (scope accounts:read): its history is "
            f"kept as account {hashed}, a hash of the key, and a new key will start a new "
            "history (everything sent again); add accounts:read to the key to keep one",
            BackfillWarning,
            stacklevel=2,
        )
    return hashed


async def _read_id(config: ReadConfig, client: httpx.AsyncClient | None) -> str:
    async with Reader(config, client) as reader:
        found = (await reader.account()).id
    if not klaviyo_id(found):
        raise QueryError(f"GET /api/accounts named no account id ({found[:40]!r})")
    return found
