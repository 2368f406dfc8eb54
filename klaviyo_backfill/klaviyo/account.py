"""Which Klaviyo account a run sends to, as an id safe to keep in a file name or a checkpoint.

A checkpoint, and the account's ledger, record what one account acknowledged: the same export
sent to a staging account and then to the real one is two jobs, never one.

Where the key may read the account (scope accounts:read), the id is Klaviyo's own
(`GET /api/accounts`, checked by `klaviyo_id`): a rotated key of the same account finds the
same history, and `preflight`, `send`, `status` and `verify` all show the id Klaviyo's own
pages show (commands/account.py decides, state/identity.py remembers). Without that scope
(and for the Track API's public key) it is `account_id`: a keyed hash (HMAC-SHA256) of the
base URL and the key, so neither the key nor anything that could be turned back into it is
ever written down; a new key then starts a new history, and the run says so.
"""

from __future__ import annotations

import hashlib
import hmac
import re

__all__ = ["account_id", "is_hashed", "klaviyo_id"]

_PURPOSE = b"klaviyo-backfill: the account a checkpoint belongs to (v1)"
_KLAVIYO_ID = re.compile(r"[A-Za-z0-9]{1,40}")  # Klaviyo's are 6 letters and digits
_HASHED = re.compile(r"[0-9a-f]{12}")


def account_id(base_url: str, key: str) -> str:
    """12 hex digits naming the account that `key` at `base_url` sends to."""
    message = f"{base_url.rstrip('/')}\n{key}".encode()
    return hmac.new(_PURPOSE, message, hashlib.sha256).hexdigest()[:12]


def is_hashed(account: str) -> bool:
    """Whether an account id is the keyed hash (not Klaviyo's own id)."""
    return _HASHED.fullmatch(account) is not None


def klaviyo_id(text: str) -> bool:
    """Whether `text` may be Klaviyo's id of an account: letters and digits only (it names
    files), and never mistaken for a keyed hash."""
    return _KLAVIYO_ID.fullmatch(text) is not None and not is_hashed(text)
