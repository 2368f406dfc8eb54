"""Which Klaviyo account a run sends to, as an id safe to keep in a file name or a checkpoint.

A checkpoint records what one account acknowledged: the same export sent to a staging
account and then to the real one is two jobs, never one. The id is a keyed hash (HMAC-SHA256)
of the base URL and the key (the private key; for the Track API, the public key), so neither
the key nor anything that could be turned back into it is ever written down.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["account_id"]

_PURPOSE = b"klaviyo-backfill: the account a checkpoint belongs to (v1)"


def account_id(base_url: str, key: str) -> str:
    """12 hex digits naming the account that `key` at `base_url` sends to."""
    message = f"{base_url.rstrip('/')}\n{key}".encode()
    return hmac.new(_PURPOSE, message, hashlib.sha256).hexdigest()[:12]
