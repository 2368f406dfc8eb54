"""A hostile world, round two (issue #23): the defects a red team found after issue #15.

Like tests/test_hostile.py, each test drives the real console script (or the piece below it)
against a server on 127.0.0.1 that misbehaves on purpose (tests/rogue.py) or against hostile
local files; the patient limits of a real run are cut through the hidden `--tuning` option.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

try:
    import rogue
    import standin as st
except ImportError:  # tests/ made a package
    from tests import rogue
    from tests import standin as st

Reply, Rogue, Seen = rogue.Reply, rogue.Rogue, rogue.Seen
cli, export_in, said = rogue.cli, rogue.export_in, rogue.said
EVENTS, KEY, ORDERS = rogue.EVENTS, rogue.KEY, rogue.ORDERS

QUICK = "max_attempts=3,backoff_base=0.01,backoff_cap=0.02"
JSONAPI = {"Content-Type": "application/vnd.api+json"}


def send(cwd: Path, url: str, *extra: str, export: str = "orders.csv", tuning: str = QUICK,
         **kw: str):  # fmt: skip
    return cli(cwd, "send", export, "--base-url", url, "--rate-limit", "100/s",
               "--failures", "failures.jsonl", "--tuning", tuning, "-q", *extra, **kw)  # fmt: skip


def checkpoint() -> Path:
    found = sorted((Path(os.environ["XDG_STATE_HOME"]) / "klaviyo-backfill" / "checkpoints")
                   .glob("*.sqlite"))  # fmt: skip
    assert len(found) == 1, found
    return found[0]


def recorded(path: Path) -> tuple[int, int]:
    """(orders, rejections) the checkpoint holds."""
    db = sqlite3.connect(path)
    try:
        orders = db.execute("SELECT count(*) FROM orders").fetchone()[0]
        rejected = db.execute("SELECT count(*) FROM rejected").fetchone()[0]
        return int(orders), int(rejected)
    finally:
        db.close()


# ---------------------------------------------------------------- 1. whose verdict


FOREIGN = {
    "bare": b'{"errors": [{}]}',
    "cdn": b'{"success": false, "errors": [{"code": 1000, "message": "Request blocked"}]}',
    "status differs": json.dumps({"errors": [{"id": "x", "status": 403, "code": "invalid",
                                              "title": "Invalid.", "detail": "no"}]}).encode(),
    "no title": b'{"errors": [{"status": 400, "code": "invalid", "detail": "no"}]}',
}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(FOREIGN))
def test_a_foreign_4xx_errors_body_rejects_nothing_and_everything_lands_afterwards(
    kind: str, tmp_path: Path
) -> None:
    """A 400 whose `errors` are not Klaviyo's JSON:API shape (a CDN's, or `[{}]`) is a fault:
    never split, nothing recorded as rejected; on the real server the run then sends all."""
    export_in(tmp_path)
    with Rogue(lambda seen: Reply(400, JSONAPI, FOREIGN[kind])) as cdn:
        result = send(tmp_path, cdn.url)
    assert result.returncode == 4, said(result)
    assert len(cdn.seen) == 3  # the one bulk body, tried three times, never split
    assert {len(seen.body) for seen in cdn.seen} == {len(cdn.seen[0].body)}
    assert recorded(checkpoint()) == (0, 0)
    assert not (tmp_path / "failures.jsonl").exists()
    port = int(cdn.url.rsplit(":", 1)[1])
    with st.StandIn(api_key=KEY, port=port) as klaviyo:
        again = send(tmp_path, klaviyo.url, "--resume")
        assert again.returncode == 0, said(again)
        assert len(klaviyo.events) == EVENTS
    assert recorded(checkpoint()) == (ORDERS, 0)


def test_klaviyos_own_error_document_is_its_verdict() -> None:
    from klaviyo_backfill.klaviyo.answers import klaviyo_errors

    error = {"id": "e1", "status": 400, "code": "invalid", "title": "Invalid input.",
             "detail": "bad", "source": {"pointer": "/data/0"}}  # fmt: skip
    assert klaviyo_errors({"errors": [error]}, 400) == [error]
    assert klaviyo_errors({"errors": [{**error, "status": "400"}]}, 400) is not None
    assert klaviyo_errors({"errors": [error]}, 413) is None  # status differs
    assert klaviyo_errors({"errors": [error, {}]}, 400) is None  # one foreign object
    assert klaviyo_errors({"errors": [{**error, "source": "x"}]}, 400) is None
    assert klaviyo_errors({"errors": [error], "success": False}, 400) is None
    for body in FOREIGN.values():
        assert klaviyo_errors(json.loads(body), 400) is None
