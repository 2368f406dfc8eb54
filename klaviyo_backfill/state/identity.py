"""Which Klaviyo account each key belongs to, as the state folder remembers it, and the
histories kept under a key's hash adopted by the account's own id (klaviyo/account.py).

    accounts/keys/<hash>   Klaviyo's id of the account the key of that keyed hash belongs
                           to (the hash names the key, never holds it)

A key belongs to one account for its whole life: once its account was read, the next run of
that key reads it from here, without a request, and a read that fails (a 5xx, a timeout)
cannot send the history elsewhere. A history kept under the key's hash (a version before
Klaviyo's ids, or a key that could not read its account then) is adopted the first time the
account's id is known: its account ledger and its jobs' checkpoints are renamed to the id,
where the id holds none yet, so an upgrade resends nothing.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable
from pathlib import Path

from ..errors import CheckpointError
from .account_ledger import account_ledger_path
from .files import replace_private, state_dir, state_folder
from .locate import checkpoints_dir, failures_beside, move
from .lock import locked

__all__ = ["adopt", "hashed_histories", "keeps_history", "known", "remember"]

_HASHED = re.compile(r"[0-9a-f]{12}")  # klaviyo/account.py's keyed hash


def _keys() -> Path:
    return state_folder(state_dir() / "accounts" / "keys")


def known(hashed: str, valid: Callable[[str], bool]) -> str | None:
    """The account id remembered for the key of this hash (None: never read). `valid`
    checks an id (klaviyo.account.klaviyo_id); a file that fails it is an error naming it."""
    path = _keys() / hashed
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise CheckpointError(f"{path} is a symbolic link: refusing to follow it",
                                  f"Remove it: rm {path}") from None  # fmt: skip
        raise CheckpointError(f"{path} cannot be read: {exc.strerror or exc}") from None
    with open(fd, "rb") as fh:
        text = fh.read(100).decode("ascii", "replace").strip()
    if not valid(text):
        raise CheckpointError(
            f"{path} names no Klaviyo account: it was edited or damaged",
            f"Remove it (rm {path}): the next run reads the key's account again.",
        )
    return text


def remember(hashed: str, account: str) -> None:
    """Keep the account id this key's hash belongs to (written whole, 0600, never through a
    link)."""
    replace_private(_keys() / hashed, account + "\n", "the account of a key")


def keeps_history(hashed: str) -> bool:
    """Whether anything is kept under this keyed hash: an account ledger or a job."""
    folder = checkpoints_dir()
    return account_ledger_path(hashed).exists() or (
        folder.is_dir() and any(folder.glob(f"*-{hashed}.sqlite"))
    )


def hashed_histories() -> list[str]:
    """The keyed hashes an account ledger is kept under (keys that could not read their
    account, or an earlier version's)."""
    folder = account_ledger_path("x").parent
    found = folder.glob("*.sqlite") if folder.is_dir() else []
    return sorted(p.stem for p in found if _HASHED.fullmatch(p.stem))


def adopt(hashed: str, account: str) -> list[Path]:
    """Rename what is kept under the keyed hash to the account's id where the id holds
    nothing of the kind yet: the account's ledger, and each job's checkpoint (with its
    archived jobs and failures file; a job another run holds is left). Returns what it
    renamed to."""
    moved: list[Path] = []
    old, new = account_ledger_path(hashed), account_ledger_path(account)
    if old.exists() and not os.path.lexists(new):
        move(old, new)
        moved.append(new)
    folder = checkpoints_dir()
    if not folder.is_dir():
        return moved
    found = list(folder.glob(f"*-{hashed}.sqlite")) + list(
        (folder / "archive").glob(f"*-{hashed}~*.sqlite")
    )
    for path in sorted(found):
        target = path.with_name(path.name.replace(f"-{hashed}", f"-{account}", 1))
        if os.path.lexists(target) or locked(path):
            continue
        move(path, target)
        _readdress(path, target, hashed, account)
        moved.append(target)
    return moved


def _readdress(path: Path, checkpoint: Path, hashed: str, account: str) -> None:
    """A checkpoint renamed from `path` to the account's id: its account, and its failures
    file beside it (<name>.failures.jsonl), follow."""
    from .checkpoint import Ledger

    before, after = (os.path.abspath(failures_beside(p)) for p in (path, checkpoint))
    ledger = Ledger(checkpoint)
    try:
        if ledger.get("account") == hashed:
            ledger.put(account=account)
        if os.path.isfile(before) and not os.path.lexists(after):
            os.replace(before, after)
        if ledger.get("failures") == before:
            ledger.put(failures=after)
    finally:
        ledger.close()
