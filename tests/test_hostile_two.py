"""A hostile world, round two (issue #23): the defects a red team found after issue #15.

Like tests/test_hostile.py, each test drives the real console script (or the piece below it)
against a server on 127.0.0.1 that misbehaves on purpose (tests/rogue.py) or against hostile
local files; the patient limits of a real run are cut through the hidden `--tuning` option.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import rogue
import standin as st
from cli_helpers import in_process, said, the_checkpoint
from test_hostile import fill, filling, tmpfs

from klaviyo_backfill.errors import ExitCode

__all__ = ["tmpfs"]  # a fixture, used by name

Reply, Rogue, Seen = rogue.Reply, rogue.Rogue, rogue.Seen
cli, export_in = rogue.cli, rogue.export_in
EVENTS, KEY, ORDERS = rogue.EVENTS, rogue.KEY, rogue.ORDERS

QUICK = "max_attempts=3,backoff_base=0.01,backoff_cap=0.02"
JSONAPI = {"Content-Type": "application/vnd.api+json"}


def send(cwd: Path, url: str, *extra: str, export: str = "orders.csv", tuning: str = QUICK,
         **kw: str):  # fmt: skip
    return cli(cwd, "send", export, "--base-url", url, "--rate-limit", "100/s",
               "--failures", "failures.jsonl", "--tuning", tuning, "-q", *extra, **kw)  # fmt: skip


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


@pytest.mark.e2e
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
    assert recorded(the_checkpoint()) == (0, 0)
    assert not (tmp_path / "failures.jsonl").exists()
    port = int(cdn.url.rsplit(":", 1)[1])
    with st.StandIn(api_key=KEY, port=port) as klaviyo:
        again = send(tmp_path, klaviyo.url, "--resume")
        assert again.returncode == 0, said(again)
        assert len(klaviyo.events) == EVENTS
    assert recorded(the_checkpoint()) == (ORDERS, 0)


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


# ---------------------------------------------------------------- 2. numbers too big


SAMPLES = Path(__file__).resolve().parent.parent / "sample_data"


def csv_with(where: Path, field: str, value: str) -> tuple[Path, str, int, int]:
    """The sample export with `field` of the second order's first row set to `value`: the
    file, that order's id, its line, and how many orders the file holds."""
    import csv

    with open(rogue.EXPORT, newline="") as fh:
        rows = list(csv.DictReader(fh))
    names = list(dict.fromkeys(row["Name"] for row in rows))
    next(row for row in rows if row["Name"] == names[1])[field] = value
    path = where / "orders.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = path.read_text().splitlines()  # a quoted field may hold a line break: count them
    line = next(n for n, text in enumerate(lines, 1) if f",{value}," in text)
    return path, names[1], line, len(names)


def held_orders(klaviyo: st.StandIn) -> set[str]:
    return {str(e.properties.get("OrderId")) for e in klaviyo.events if e.metric == "Placed Order"}


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("Lineitem price", "1" + "0" * 29),
        ("Total", "1e999999"),
        ("Lineitem quantity", "1" + "0" * 30),
    ],
)
def test_a_number_too_big_for_decimal_is_one_rejected_order_with_its_line(
    field: str, value: str, tmp_path: Path
) -> None:
    """A 30-digit price, 1e999999, a quantity of 10^30: one rejected order named with its file
    and line, every other order sent; it ended in a decimal.InvalidOperation traceback on
    every run, --resume and --restart alike, and 0 events were delivered."""
    _, _, line, orders = csv_with(tmp_path, field, value)
    with st.StandIn(api_key=KEY) as klaviyo:
        result = send(tmp_path, klaviyo.url)
        assert result.returncode == 1, said(result)  # finished, one order rejected
        assert "Traceback" not in result.stderr
        assert len(held_orders(klaviyo)) == orders - 1
    (failure,) = [json.loads(x) for x in (tmp_path / "failures.jsonl").read_text().splitlines()]
    assert failure["source"] == "orders.csv" and failure["line"] == line, failure
    assert field.split()[-1].lower() in failure["detail"], failure


@pytest.mark.e2e
def test_a_json_integer_of_5001_digits_is_one_rejected_order(tmp_path: Path) -> None:
    """Python's int() refuses over 4,300 digits, and json raised that ValueError for the whole
    run: the order holding one is rejected (file and line), in a document and in JSON Lines."""
    doc = json.loads((SAMPLES / "shopify_orders.json").read_text())
    orders = doc["orders"]
    huge = "9" * 5001
    text = json.dumps(doc, indent=2).replace(f'"{orders[1]["total_price"]}"', huge, 1)
    assert huge in text
    (tmp_path / "orders.json").write_text(text)
    lines = [json.dumps(o) for o in orders]
    lines[2] = lines[2].replace(f'"{orders[2]["total_price"]}"', huge, 1)
    (tmp_path / "orders.jsonl").write_text("\n".join(lines) + "\n")
    opening = text[: text.index(f'"id": {orders[1]["id"]}')].count("\n")  # the order's "{"
    for export, line in (("orders.json", opening), ("orders.jsonl", 3)):
        with st.StandIn(api_key=KEY) as klaviyo:
            result = send(tmp_path, klaviyo.url, "--restart", export=export)
            assert result.returncode == 1 and "Traceback" not in result.stderr, said(result)
            assert len(held_orders(klaviyo)) == len(orders) - 1
        (failure,) = [json.loads(x) for x in (tmp_path / "failures.jsonl").read_text().splitlines()]
        assert failure["source"] == export, failure
        assert "total" in failure["detail"] and "not a price" in failure["detail"], failure
        assert failure["line"] == line, failure


# ---------------------------------------------------------------- 3. an output naming the export


@pytest.mark.e2e
@pytest.mark.parametrize("option", ["--failures", "--output", "--log", "--summary-json"])
@pytest.mark.parametrize("spelling", ["same", "dotted", "absolute", "hard link", "symlink"])
def test_an_output_naming_the_export_is_refused_and_the_export_unchanged(
    option: str, spelling: str, tmp_path: Path
) -> None:
    """`--failures EXPORT` deleted it, `--output`/`--log` truncated it, `--summary-json`
    overwrote it: now exit 2 before anything is opened or sent, however the path is spelt."""
    export = export_in(tmp_path)
    before = export.read_bytes()
    (tmp_path / "sub").mkdir()
    named = {"same": "orders.csv", "dotted": "sub/../orders.csv", "absolute": str(export),
             "hard link": "linked.csv", "symlink": "pointer.csv"}[spelling]  # fmt: skip
    if spelling == "hard link":
        os.link(export, tmp_path / named)
    if spelling == "symlink":
        (tmp_path / named).symlink_to(export)
    with Rogue(lambda seen: Reply(202)) as server:
        result = cli(tmp_path, "send", "orders.csv", "--base-url", server.url, "-q",
                     *(["--failures", "f.jsonl"] if option != "--failures" else []),
                     option, named)  # fmt: skip
        assert not server.seen and not server.reads
    assert result.returncode == 2, said(result)
    assert f"{option} {named} is the export orders.csv" in " ".join(result.stderr.split())
    assert export.read_bytes() == before


@pytest.mark.e2e
def test_inspect_and_verify_refuse_a_report_over_the_export(tmp_path: Path) -> None:
    export = export_in(tmp_path)
    before = export.read_bytes()
    inspected = cli(tmp_path, "inspect", "orders.csv", "--html", "./orders.csv")
    verified = cli(tmp_path, "verify", "orders.csv", "--html", "orders.csv", "--base-url",
                   "http://127.0.0.1:9")  # fmt: skip
    checked = cli(tmp_path, "preflight", "orders.csv", "--json", str(export), "--base-url",
                  "http://127.0.0.1:9")  # fmt: skip
    for result in (inspected, verified, checked):
        assert result.returncode == 2 and "is the export orders.csv" in result.stderr, said(result)
    assert export.read_bytes() == before


# ---------------------------------------------------------------- 4. reports private


@pytest.fixture
def umask_022() -> object:
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.mark.slow
@pytest.mark.e2e
def test_verify_and_inspect_html_reports_are_0600(umask_022: object, tmp_path: Path) -> None:
    """They hold order ids and were written 0644 under umask 022, as Path.write_text does."""
    export_in(tmp_path)
    with st.StandIn(api_key=KEY) as klaviyo:
        sent = send(tmp_path, klaviyo.url)
        assert sent.returncode == 0, said(sent)
        verified = in_process(tmp_path, KEY, "verify", "orders.csv", "--base-url", klaviyo.url,
                              "--html", "verify.html", "--json", "verify.json",
                              clock=klaviyo.clock)  # fmt: skip
    inspected = cli(tmp_path, "inspect", "orders.csv", "--html", "inspect.html")
    assert verified.returncode == ExitCode.OK and inspected.returncode == ExitCode.OK, said(
        verified
    )
    for name in ("verify.html", "verify.json", "inspect.html"):
        mode = (tmp_path / name).stat().st_mode & 0o777
        assert mode == 0o600, (name, oct(mode))
    assert "<html" in (tmp_path / "verify.html").read_text().lower()
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_link_planted_at_a_report_is_replaced_never_followed(tmp_path: Path) -> None:
    """A link planted after the start-up check (verify waits on Klaviyo for minutes) was
    followed and its target overwritten: the report is written beside it and renamed over
    the link, so the target keeps its bytes and the report is a private regular file."""
    from klaviyo_backfill.state.files import replace_private

    victim = tmp_path / "victim"
    victim.write_text("precious")
    report = tmp_path / "report.html"
    report.symlink_to(victim)
    replace_private(report, "<html>report</html>", "--html")
    assert victim.read_text() == "precious"
    assert not report.is_symlink() and report.read_text() == "<html>report</html>"
    assert report.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "victim"]


@pytest.mark.e2e
def test_a_summary_on_a_full_disk_names_its_file_and_says_the_send_is_over(
    tmpfs: Path, tmp_path: Path
) -> None:
    """The disk fills while the one request is in flight: everything is sent, then the summary
    cannot be written. The error names the file and says the send itself is over."""
    export_in(tmp_path)
    answer, filled = filling(tmpfs)
    summary = tmpfs / "summary.json"
    with Rogue(answer) as server:
        result = send(tmp_path, server.url, "--summary-json", str(summary))
    filled[0].unlink()
    assert result.returncode == 2, said(result)
    err = " ".join(result.stderr.split())
    assert f"--summary-json {summary} could not be written: No space left on device" in err
    assert "The send itself ended as reported above" in err
    assert recorded(the_checkpoint()) == (ORDERS, 0)
    assert sorted(p.name for p in tmpfs.iterdir()) == []  # no half summary, no temporary


# ---------------------------------------------------------------- 8. the key in any form


def forms_of(key: str) -> list[bytes]:
    """What an echo of the key may look like: its distinctive part in either case, and the
    base64 of the header that carried it (whose middle holds the key's own base64)."""
    import base64

    header = base64.b64encode(f"Klaviyo-API-Key {key}".encode())
    core = base64.b64encode(key.encode()[1:])[4:-4]  # inside a longer text at any alignment
    return [key[3:].encode(), key[3:].upper().encode(), key[3:].lower().encode(), header[8:],
            core, key.encode().hex().encode(), key.encode().hex().upper().encode()]  # fmt: skip


@pytest.mark.e2e
def test_a_key_echoed_upper_cased_or_base64_is_in_no_output_or_file(tmp_path: Path) -> None:
    """A server that echoes the key upper-cased, base64-encoded or in hex (and a terminal
    escape with it): none of it reaches stdout, stderr, the log, the failures file, the
    summary or the checkpoint; nor is the escape printed."""
    import base64

    export_in(tmp_path)
    answered: list[Seen] = []

    def answer(seen: Seen) -> Reply:
        answered.append(seen)
        if len(answered) > 1:
            return Reply(202)
        auth = seen.headers.get("Authorization", "")
        said_back = (f"AUTH {auth.upper()} b64 {base64.b64encode(auth.encode()).decode()} "
                     f"hex {KEY.encode().hex()} \x1b]0;owned\x07\x1b[2J done")  # fmt: skip
        error = {"id": "e", "status": 400, "code": "invalid", "title": "Invalid input.",
                 "detail": said_back,
                 "source": {"pointer": "/data/attributes/events-bulk-create/data/0"}}  # fmt: skip
        return Reply(400, JSONAPI, json.dumps({"errors": [error]}).encode())

    with Rogue(answer) as server:
        result = send(tmp_path, server.url, "--summary-json", "summary.json", "--log",
                      "run.log", "-v", "--checkpoint", "cp.sqlite")  # fmt: skip
    assert result.returncode == 1, said(result)
    failures = (tmp_path / "failures.jsonl").read_text()
    assert "AUTH KLAVIYO-API-KEY [redacted]" in failures and "done" in failures, failures
    kept = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "orders.csv"]
    assert {"failures.jsonl", "summary.json", "run.log", "cp.sqlite"} <= {p.name for p in kept}
    printed = (result.stdout + result.stderr).encode()
    for form in forms_of(KEY):
        for path in kept:
            assert form not in path.read_bytes(), (path, form)
        assert form not in printed, form
    for path in kept:
        assert b"\x1b]0;owned" not in path.read_bytes() and b"\x1b[2J" not in path.read_bytes()
    assert b"\x1b" not in printed


def test_the_redactor_takes_every_form_out() -> None:
    import base64

    from klaviyo_backfill.klaviyo.http import Redactor

    redact = Redactor(KEY)
    for prefix in ("", "a", "ab"):  # every alignment inside a longer base64 text
        text = base64.b64encode(f"{prefix}Klaviyo-API-Key {KEY} and more".encode()).decode()
        assert base64.b64encode(KEY[3:].encode())[4:-4].decode() not in redact(text)
        urlsafe = base64.urlsafe_b64encode(f"{prefix}{KEY}".encode()).decode()
        assert all(form.decode() not in redact(urlsafe) for form in forms_of(KEY)[4:5])
    assert redact(f"x {KEY.upper()} y {KEY[3:].swapcase()} z") == "x [redacted] y [redacted] z"
    assert redact("name \x1b[31mred\x1b[0m\x07 \u202eevil") == "name red evil"


# ---------------------------------------------------------------- 10. server text printed inert


@pytest.mark.e2e
def test_terminal_escapes_in_an_integration_name_are_not_printed(tmp_path: Path) -> None:
    """The overlap error named another integration as Klaviyo wrote it: an escape sequence
    (clear the screen, retitle the window) reached the terminal raw."""
    export_in(tmp_path)
    name = "Shop\x1b[2J\x1b]0;pwned\x07ify [/] [bold]x"
    with st.StandIn(api_key=KEY) as klaviyo:
        klaviyo.preload([st.other_event("Placed Order", "2024-12-29T00:49:29+00:00",
                                        integration=(name, "eCommerce"))])  # fmt: skip
        result = send(tmp_path, klaviyo.url)
        checked = in_process(tmp_path, KEY, "preflight", "orders.csv", "--base-url",
                             klaviyo.url, clock=klaviyo.clock, columns=80)  # fmt: skip
    assert result.returncode == 2 and "another integration" in result.stderr, said(result)
    assert checked.returncode == ExitCode.OVERLAP, said(checked)
    for run in (result, checked):
        assert "\x1b" not in run.stdout + run.stderr and "\x07" not in run.stdout + run.stderr
        assert "Traceback" not in run.stderr
    assert "Shopify [/] [bold]x" in " ".join(checked.stdout.split()), said(checked)


# ---------------------------------------------------------------- 7. messages, not tracebacks


@pytest.mark.e2e
@pytest.mark.parametrize("command", ["send", "verify", "preflight"])
def test_a_base_url_ending_in_a_newline_is_a_message(command: str, tmp_path: Path) -> None:
    export_in(tmp_path)
    result = cli(tmp_path, command, "orders.csv", "--base-url", "https://a.klaviyo.com\n")
    assert result.returncode == ExitCode.USAGE, said(result)
    assert "Traceback" not in result.stderr
    assert "the base URL 'https://a.klaviyo.com\\n' is not a URL" in result.stderr, said(result)


@pytest.mark.e2e
def test_a_layout_naming_an_unknown_hook_is_a_message(tmp_path: Path) -> None:
    (tmp_path / "layout.toml").write_text(
        '[layout]\nkind = "json"\nhook = "nope"\n'
        '[order]\nid = "id"\ncreated_at = "created_at"\ntotal = "total_price"\n'
    )
    (tmp_path / "orders.json").write_bytes((SAMPLES / "shopify_orders.json").read_bytes())
    result = cli(tmp_path, "send", "--dry-run", "orders.json", "--layout", "layout.toml")
    assert result.returncode == ExitCode.USAGE, said(result)
    assert "layout.toml: [layout] hook 'nope' is not a hook this tool has" in result.stderr
    assert "shopify_json" in result.stderr


@pytest.fixture
def full_scratch() -> Iterator[Path]:
    """The state folder's `tmp` on a 1 MB tmpfs of its own (0700, as the state tree's rule
    asks), for a test to fill (root only: skipped where mounting is not allowed)."""
    import subprocess

    where = Path(os.environ["XDG_STATE_HOME"]) / "klaviyo-backfill" / "tmp"
    where.mkdir(parents=True, mode=0o700)
    os.chmod(where.parent, 0o700)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs",
                              str(where)], capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip() or 'not root'}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.mark.e2e
def test_a_full_disk_in_the_profile_pass_names_the_file_and_the_fix(
    full_scratch: Path, tmp_path: Path
) -> None:
    """The table of each customer's latest order (the pass before the first request) on a
    full disk: `sqlite3.OperationalError` from latest._flush was a traceback. Now a message
    naming the file and the fix, exit 2; after room is made the job goes on and everything
    lands once."""
    export_in(tmp_path)
    fill(full_scratch)
    with st.StandIn(api_key=KEY) as klaviyo:
        result = send(tmp_path, klaviyo.url)
        assert result.returncode == ExitCode.USAGE, said(result)
        err = " ".join(result.stderr.split())
        assert "Traceback" not in err and "OperationalError" not in err, err
        assert f"the temporary file of each customer's latest order, {full_scratch}/latest-" in err
        assert ": the disk is full" in err
        assert f"Free some space in {full_scratch}" in err and "XDG_STATE_HOME" in err, err
        assert not klaviyo.events
        assert [p.name for p in full_scratch.iterdir()] == ["filler"]  # its file removed
        (full_scratch / "filler").unlink()
        again = send(tmp_path, klaviyo.url, "--resume")
        assert again.returncode == ExitCode.OK, said(again)
        assert len(klaviyo.events) == EVENTS


def test_a_log_that_cannot_be_written_stops_with_its_path_once(tmp_path: Path) -> None:
    """Python's logging printed "--- Logging error ---" and a traceback for each line it could
    not write (a full disk), and the run went on. /dev/full: every write fails with ENOSPC."""
    import logging

    from klaviyo_backfill.commands.outputs import LogFile
    from klaviyo_backfill.errors import LogError

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    log = logging.getLogger("klaviyo_backfill.test_log_file")
    handler = LogFile("/dev/full")
    log.addHandler(handler)
    try:
        with pytest.raises(LogError) as caught:
            log.warning("a line")
        log.warning("the run's later lines, and its exit, say nothing more")
        handler.flush()
    finally:
        log.removeHandler(handler)
    assert str(caught.value).startswith(
        "--log /dev/full could not be written: No space left on device; the run stopped there"
    )


FAST_SINGLE = ("--endpoint", "single", "--rate-limit", "2000/s", "--concurrency", "8")


@pytest.mark.e2e
def test_a_send_whose_log_fills_the_disk_stops_resumable_naming_it(tmp_path: Path) -> None:
    """--log on a full disk (/dev/full): the run stops, naming the log, with the command
    that continues it; that command sends the rest, nothing twice."""
    if not os.access("/dev", os.W_OK):
        pytest.skip("--log /dev/full: /dev is not writable here")
    export_in(tmp_path)
    with st.StandIn(api_key=KEY) as klaviyo:
        result = send(tmp_path, klaviyo.url, "--log", "/dev/full", *FAST_SINGLE)
        err = " ".join(result.stderr.split())
        assert result.returncode == ExitCode.USAGE, said(result)
        assert "--log /dev/full could not be written: No space left on device" in err, err
        assert "Logging error" not in err and "Traceback" not in err, err
        assert "Continue with:" in err and "--log" not in result.stderr.splitlines()[-1], err
        assert len(klaviyo.events) < EVENTS, err  # stopped part-way (111 requests)
        again = send(tmp_path, klaviyo.url, "--resume", *FAST_SINGLE)
        assert again.returncode == ExitCode.OK, said(again)
        assert len(klaviyo.events) == EVENTS  # nothing lost, nothing twice


DAMAGE = [
    "UPDATE meta SET value = 'x' WHERE key = 'ended'",
    "UPDATE meta SET value = 'x' WHERE key = 'started'",
    "UPDATE meta SET value = '{bad' WHERE key = 'last_run'",
    """UPDATE meta SET value = '{"orders_read": "x"}' WHERE key = 'last_run'""",
    "UPDATE sent_totals SET value = 'abc'",
    "UPDATE sent_totals SET value = 'NaN'",
    "UPDATE sent_totals SET events = 'x'",
]


@pytest.fixture(scope="module")
def sent_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str]:
    """A finished job's checkpoint, and the port and account id of the stand-in it was sent
    to (a stand-in there with that id is the same account)."""
    where = tmp_path_factory.mktemp("sent")
    export_in(where)
    with st.StandIn(api_key=KEY) as klaviyo:
        result = send(where, klaviyo.url, "--checkpoint", "good.sqlite")
        assert result.returncode == 0, said(result)
        port = int(klaviyo.url.rsplit(":", 1)[1])
    return where / "good.sqlite", port, klaviyo.account["id"]


@pytest.mark.e2e
@pytest.mark.parametrize("damage", DAMAGE)
def test_a_checkpoint_with_bad_stored_values_is_named_by_status_and_verify(
    damage: str, sent_checkpoint: tuple[Path, int, str], tmp_path: Path
) -> None:
    """Valid SQLite whose stored values are not what a checkpoint holds: status and verify
    name the file as corrupt (exit 2) instead of a ValueError or InvalidOperation traceback."""
    import shutil

    bad = tmp_path / "bad.sqlite"
    good, port, account = sent_checkpoint
    shutil.copy(good, bad)
    db = sqlite3.connect(bad)
    db.execute(damage)
    db.commit()
    db.close()
    status = cli(tmp_path, "status", "--checkpoint", str(bad))
    with st.StandIn(api_key=KEY, port=port) as klaviyo:
        klaviyo.account["id"] = account
        verified = cli(tmp_path, "verify", "--checkpoint", str(bad), "--base-url", klaviyo.url)
    for result in (status, verified):  # the stand-in holds nothing: verify may say SHORT
        assert "Traceback" not in result.stderr, said(result)
        if result.returncode not in (ExitCode.OK, ExitCode.SHORT):
            assert result.returncode == ExitCode.USAGE, said(result)
            assert f"checkpoint {bad}: it is corrupt" in " ".join(result.stderr.split())
    assert ExitCode.USAGE in (status.returncode, verified.returncode), (
        said(status),
        said(verified),
    )


# ---------------------------------------------------------------- 9. one rule for the state tree


def state_root() -> Path:
    return Path(os.environ["XDG_STATE_HOME"]) / "klaviyo-backfill"


@pytest.mark.e2e
@pytest.mark.parametrize("where", ["", "checkpoints", "accounts", "tmp"])
@pytest.mark.parametrize("wrong", ["writable by others", "a link", "another user's"])
def test_every_folder_of_the_state_tree_must_be_the_users_own(
    where: str, wrong: str, tmp_path: Path
) -> None:
    """Only checkpoints/ was warned about when others could write in it (not the state
    folder, accounts/ or tmp/, nor a folder of another user), and a linked checkpoints/ was
    followed: anyone who can write there can plant a ledger that makes later exports skip
    orders. Now each is refused, named with its fix, before anything is sent."""
    export_in(tmp_path)
    root = state_root()
    root.mkdir(mode=0o700, parents=True)
    folder = root / where if where else root
    if wrong == "a link":
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir(mode=0o700)
        if not where:  # the state folder itself a link
            root.rmdir()
        folder.symlink_to(elsewhere, target_is_directory=True)
    else:
        folder.mkdir(mode=0o700, exist_ok=True)
        if wrong == "writable by others":
            folder.chmod(0o777)
        elif os.getuid() == 0:
            os.chown(folder, 65534, 65534)
        else:
            pytest.skip("making a folder another user's needs root")
    with st.StandIn(api_key=KEY) as klaviyo:
        result = send(tmp_path, klaviyo.url, "--tuning", "max_attempts=1")
        sent = len(klaviyo.events)
    err = " ".join(result.stderr.split())
    assert result.returncode == ExitCode.USAGE, said(result)
    assert sent == 0
    assert f"the state folder {folder} " in err, said(result)
    fix = {"writable by others": f"chmod 700 {folder}", "a link": "mkdir -m 700",
           "another user's": f"mv {folder} {folder}.old"}[wrong]  # fmt: skip
    assert fix in err, said(result)


@pytest.mark.e2e
def test_a_linked_account_ledger_is_named_with_a_fix_that_works(tmp_path: Path) -> None:
    """It was told to continue with --resume or start over with --restart: neither removes
    the link, so both failed the same way."""
    export_in(tmp_path)
    with st.StandIn(api_key=KEY) as klaviyo:
        first = send(tmp_path, klaviyo.url)
        assert first.returncode == 0, said(first)
        (ledger,) = (state_root() / "accounts").glob("*.sqlite")
        victim = tmp_path / "victim"
        victim.write_text("precious")
        ledger.unlink()
        ledger.symlink_to(victim)
        (tmp_path / "sub").mkdir()
        export_in(tmp_path / "sub")  # another export to the same account: its ledger is read
        again = send(tmp_path / "sub", klaviyo.url)
    assert again.returncode == ExitCode.USAGE, said(again)
    err = " ".join(again.stderr.split())
    assert f"account ledger {ledger} is a symbolic link: refusing to follow it" in err, err
    assert f"rm {ledger}" in err and "--resume" not in err and "--restart" not in err
    assert victim.read_text() == "precious"


# ---------------------------------------------------------------- 11, 12. what is said


def test_a_failures_file_on_a_full_disk_is_named(tmp_path: Path) -> None:
    """ "No space left on device" without the file's name (#23 item 11): the failures file
    (/dev/full: every write fails with ENOSPC) stops the run naming it, once."""
    from klaviyo_backfill.errors import WriteError
    from klaviyo_backfill.model import Rejection
    from klaviyo_backfill.state.failures import Failures

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    failures = Failures("/dev/full")
    rejection = Rejection("orders.csv", 3, "1001", "a reason")
    for _ in range(2):  # the second write is refused as the first, never reopened
        with pytest.raises(WriteError) as caught:
            failures.write(rejection)
        assert str(caught.value).startswith(
            "failures file /dev/full could not be written: No space left on device"
        )
    failures.close()


@pytest.mark.slow  # a send, status and verify: ~2 s idle
@pytest.mark.e2e
def test_status_and_verify_read_a_checkpoint_on_a_read_only_disk(
    tmpfs: Path, tmp_path: Path
) -> None:
    """status and verify only read: a checkpoint they cannot write (a read-only mount: no
    -shm can be made beside it) is opened read-only (#23 item 11), not refused as
    "it cannot be written (read-only)"."""
    import subprocess

    export_in(tmp_path)
    cp = tmpfs / "cp.sqlite"
    with st.StandIn(api_key=KEY) as klaviyo:
        first = send(tmp_path, klaviyo.url, "--checkpoint", str(cp))
        assert first.returncode == ExitCode.OK, said(first)
        remount = subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], capture_output=True)
        if remount.returncode != 0:
            pytest.skip(f"cannot remount the tmpfs read-only: {remount.stderr!r}")
        status = cli(tmp_path, "status", "--checkpoint", str(cp))
        verified = in_process(tmp_path, KEY, "verify", "--checkpoint", str(cp), "--base-url",
                              klaviyo.url, clock=klaviyo.clock)  # fmt: skip
    for result in (status, verified):
        assert result.returncode == ExitCode.OK, said(result)
        assert "read-only" not in result.stderr and "Traceback" not in result.stderr
    assert f"{ORDERS} orders" in " ".join(status.stdout.split()), status.stdout
    assert sorted(p.name for p in tmpfs.iterdir()) == ["cp.sqlite", "cp.sqlite.lock"]


def test_a_checkpoint_opened_to_read_is_never_written(tmp_path: Path) -> None:
    """Ledger(read_only=True): SQLite's mode=ro, so even a user who may write the file (root,
    here) cannot change it through status or verify."""
    from klaviyo_backfill.errors import CheckpointError
    from klaviyo_backfill.state.checkpoint import Ledger

    path = tmp_path / "odd [#?] name.sqlite"  # a URI's special characters in the name
    Ledger(path).close()
    os.chmod(path, 0o400)
    before = path.read_bytes()
    ledger = Ledger(path, read_only=True)
    try:
        assert ledger.state is None
        with pytest.raises(CheckpointError) as caught:
            ledger.put(state="running")
        assert "read-only" in str(caught.value)
    finally:
        ledger.close()
    assert path.read_bytes() == before


@pytest.mark.e2e
def test_a_checkpoints_lock_on_a_full_disk_is_named(tmpfs: Path, tmp_path: Path) -> None:
    export_in(tmp_path)
    fill(tmpfs)
    with st.StandIn(api_key=KEY) as klaviyo:  # the key's account is read first
        result = send(tmp_path, klaviyo.url, "--checkpoint", str(tmpfs / "cp.sqlite"))
        assert not klaviyo.requests
    assert result.returncode == ExitCode.USAGE, said(result)
    err = " ".join(result.stderr.split())
    assert f"lock file {tmpfs}/cp.sqlite.lock: the disk is full" in err, err
    assert "Traceback" not in err


@pytest.mark.e2e
def test_a_survey_of_a_later_export_on_a_full_disk_is_named(
    full_scratch: Path, tmp_path: Path
) -> None:
    """A later export to an account that holds orders is read against it first, into a
    temporary record in the state folder: on a full disk, named with the fix."""
    export_in(tmp_path)
    with st.StandIn(api_key=KEY) as klaviyo:
        assert send(tmp_path, klaviyo.url).returncode == ExitCode.OK
        (tmp_path / "later.csv").write_bytes((tmp_path / "orders.csv").read_bytes())
        fill(full_scratch)
        result = send(tmp_path, klaviyo.url, "--profile-attributes", "all", export="later.csv")
    assert result.returncode == ExitCode.USAGE, said(result)
    err = " ".join(result.stderr.split())
    assert f"the temporary file of the export against the account, {full_scratch}/survey-" in err
    assert ": the disk is full" in err and f"Free some space in {full_scratch}" in err, err
    assert "Traceback" not in err


@pytest.mark.e2e
def test_a_failures_path_with_brackets_is_printed_as_it_is(tmp_path: Path) -> None:
    """rich read `out[x/y]z.jsonl` as markup and printed `outz.jsonl`."""
    csv_with(tmp_path, "Total", "1e999999")
    (tmp_path / "out[x").mkdir()
    with st.StandIn(api_key=KEY) as klaviyo:
        result = cli(tmp_path, "send", "orders.csv", "--base-url", klaviyo.url,
                     "--failures", "out[x/y]z.jsonl")  # fmt: skip
    assert result.returncode == ExitCode.REJECTED, said(result)
    assert "written to out[x/y]z.jsonl" in " ".join(result.stdout.split()), said(result)
    assert (tmp_path / "out[x" / "y]z.jsonl").exists()


def test_the_security_notes_say_what_an_empty_202_proves() -> None:
    """#23 item 12: an empty 202 counts (Klaviyo documents it so); the notes say what that
    means behind a proxy that answers 202 itself, and what corroborates an acknowledgement."""
    notes = " ".join((Path(__file__).parent.parent / "docs" / "security.md").read_text().split())
    assert "**What an empty `202` proves.**" in notes
    assert "proxy" in notes and "rate-limit headers" in notes


@pytest.mark.e2e
def test_acknowledgements_without_klaviyos_rate_limit_headers_are_counted(
    tmp_path: Path,
) -> None:
    """An empty 202 is all Klaviyo's description promises, so it counts; one without the
    RateLimit-* headers Klaviyo's real answers carry is said in the summary, not refused."""
    export_in(tmp_path)
    with Rogue(lambda seen: Reply(202)) as proxy:
        bare = cli(tmp_path, "send", "orders.csv", "--base-url", proxy.url, "--rate-limit",
                   "100/s")  # fmt: skip
    assert bare.returncode == ExitCode.OK, said(bare)
    said_bare = " ".join(bare.stdout.split())
    assert "Acknowledged without Klaviyo's rate-limit headers │ 1 (`verify`" in said_bare, said_bare
    (tmp_path / "again").mkdir()
    export_in(tmp_path / "again")
    with st.StandIn(api_key=KEY) as klaviyo:
        real = cli(tmp_path / "again", "send", "orders.csv", "--base-url", klaviyo.url)
    assert real.returncode == ExitCode.OK, said(real)
    assert "rate-limit headers" not in real.stdout


@pytest.mark.e2e
def test_two_exports_of_one_name_keep_a_failures_file_each(tmp_path: Path) -> None:
    """Two exports named alike (a/orders.csv, b/orders.csv) sent from one folder: each job's
    rejections go to its own failures file, beside its checkpoint (they overwrote each
    other's in the current folder)."""
    from cli_helpers import SAMPLES, checkpoints_in

    problems = (SAMPLES / "problems" / "shopify_orders_with_problems.csv").read_bytes()
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "orders.csv").write_bytes(problems)
    with st.StandIn(api_key=KEY) as klaviyo:
        for name in ("a", "b"):
            done = cli(tmp_path, "send", f"{name}/orders.csv", "--base-url", klaviyo.url,
                       "--allow-overlap", "-q")  # fmt: skip
            assert done.returncode == ExitCode.REJECTED, said(done)
    files = [cp.with_name(cp.stem + ".failures.jsonl") for cp in checkpoints_in()]
    assert len(files) == 2 and files[0] != files[1]
    sources = [{json.loads(x)["source"] for x in f.read_text().splitlines()} for f in files]
    assert sorted(map(sorted, sources)) == [["a/orders.csv"], ["b/orders.csv"]]
    assert not list(tmp_path.glob("*.jsonl"))


# ---------------------------------------------------------------- 5. streams copied aside


def test_a_stream_longer_than_the_cap_stops_and_its_copy_is_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Standard input or a FIFO was copied to $TMPDIR without a limit (5 GB in 12 s)."""
    import threading

    from klaviyo_backfill.errors import InputError
    from klaviyo_backfill.inputs.sources import spool

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
    fifo = tmp_path / "orders.csv"
    os.mkfifo(fifo)
    line = b"a,b,c\n" * 10_000

    def feed() -> None:
        with open(fifo, "wb") as out:
            try:
                for _ in range(1000):  # 60 MB, far past the cap
                    out.write(line)
            except BrokenPipeError:
                pass

    feeder = threading.Thread(target=feed)
    feeder.start()
    with pytest.raises(InputError) as caught:
        spool(str(fifo), cap=1 << 20)
    feeder.join(10)
    assert "is a stream longer than 1 MB" in str(caught.value)
    assert "save it to a file" in str(caught.value)
    assert [p.name for p in tmp_path.iterdir()] == ["orders.csv"]  # the copy is gone


@pytest.mark.e2e
def test_a_copy_a_killed_run_left_is_removed_by_the_next(tmp_path: Path) -> None:
    """kill -9 leaves the copy of standard input (customer data) behind: nothing runs then.
    The next run that copies a stream removes those of processes that are gone."""
    import subprocess

    spools = tmp_path / "tmp"
    spools.mkdir()
    gone = subprocess.Popen(["true"])
    gone.wait()
    left = spools / f"klaviyo-backfill-{gone.pid}-abcd"
    left.mkdir(mode=0o700)
    (left / "stdin").write_text("customer data")
    alive = spools / f"klaviyo-backfill-{os.getpid()}-efgh"  # a run still going: kept
    alive.mkdir(mode=0o700)
    (tmp_path / "run").mkdir()
    result = subprocess.run(
        [rogue.CLI, "send", "--dry-run", "-", "-q"], cwd=tmp_path / "run",
        input=rogue.EXPORT.read_bytes(), capture_output=True, timeout=60,
        env=rogue.env(TMPDIR=str(spools)),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert not left.exists()
    assert alive.exists()
    assert [p.name for p in spools.iterdir()] == [alive.name]  # its own copy removed at exit


# ---------------------------------------------------------------- 5. listings bounded


def read_from(url: str, call: Any, **config: Any) -> Any:
    """`call(reader)` against `url`, the retries quick."""
    import asyncio

    from klaviyo_backfill.klaviyo.reading import ReadConfig, Reader
    from klaviyo_backfill.klaviyo.retry import RetryPolicy

    read = ReadConfig(url, KEY, retry=RetryPolicy(backoff_base=0.001, max_attempts=2), **config)

    async def go() -> Any:
        async with Reader(read) as reader:
            return await call(reader)

    return asyncio.run(go())


def metric(n: int, name: str = "Placed Order") -> dict[str, Any]:
    return {"type": "metric", "id": f"M{n}", "attributes": {"name": name, "integration": {
        "key": "shopify", "name": "Shopify", "category": "eCommerce"}}}  # fmt: skip


def test_huge_metric_pages_stop_at_the_listings_budget_naming_the_endpoint() -> None:
    """7.5 MB pages of metrics, each with a next page, were all kept: 1.8 GB in 60 s. Now the
    pages of one listing take at most its budget (64 MB; 1 MB here): an error naming the
    endpoint at the page that passes it."""
    from klaviyo_backfill.errors import QueryError

    padding = "x" * 100_000

    def answer(seen: Seen) -> Reply:
        n = len(server.seen)
        doc = {"data": [metric(n, f"Metric {n} {padding}") for _ in range(3)],
               "links": {"next": f"{server.url}/api/metrics?page%5Bcursor%5D={n}"}}  # fmt: skip
        return Reply(200, JSONAPI, json.dumps(doc).encode())

    with Rogue(answer, metrics=False) as server:
        with pytest.raises(QueryError) as caught:
            read_from(server.url, lambda r: r.metrics(), budgets={"metrics": 1 << 20})
        pages = len(server.seen)
    assert pages == 4, pages  # 300 kB a page: the fourth passes 1 MB
    assert str(caught.value).startswith("GET /api/metrics: answers over 1,048,576 bytes in 4 pages")


@pytest.mark.parametrize("next_link", ["itself", "first", "back", "respelt"])
def test_a_next_link_to_a_page_read_before_is_a_fault_at_once(next_link: str) -> None:
    """A next link to itself was followed 1,000 times over 371 s: now a page read before (the
    same address, an earlier one, the first one spelt otherwise) ends the listing at once."""
    from klaviyo_backfill.errors import QueryError

    def answer(seen: Seen) -> Reply:
        n = len(server.seen)
        link = {"itself": f"{server.url}{seen.path}", "first": f"{server.url}/api/metrics/",
                "back": f"{server.url}/api/metrics?page[cursor]={n % 2}",  # 1, 0, 1
                "respelt": f"{server.url}/api/metrics/?page%5Bcursor%5D=1" if n == 1
                else f"{server.url}/api/metrics?page[cursor]=1"}[next_link]  # fmt: skip
        doc = {"data": [metric(n)], "links": {"next": link}}
        return Reply(200, JSONAPI, json.dumps(doc).encode())

    with Rogue(answer, metrics=False) as server:
        with pytest.raises(QueryError) as caught:
            read_from(server.url, lambda r: r.metrics())
        pages = len(server.seen)
    assert pages == {"itself": 1, "first": 1, "back": 3, "respelt": 2}[next_link]
    assert str(caught.value).startswith("GET /api/metrics: a next link to a page read before")


def test_flow_pages_are_followed_and_bounded_too() -> None:
    from klaviyo_backfill.errors import QueryError

    def answer(seen: Seen) -> Reply:
        n = len(server.seen)
        flow = {"type": "flow", "id": f"F{n}", "attributes": {"name": "x" * 50_000}}
        more = f"{server.url}/api/metrics/M1/flow-triggers?page[cursor]={n}"
        doc = {"data": [flow], "links": {"next": more if n < limit else None}}
        return Reply(200, JSONAPI, json.dumps(doc).encode())

    with Rogue(answer, metrics=False) as server:
        limit = 3
        flows = read_from(server.url, lambda r: r.flow_triggers("M1"))
        assert [f.id for f in flows] == ["F1", "F2", "F3"]
        limit = 100
        with pytest.raises(QueryError) as caught:
            read_from(server.url, lambda r: r.flow_triggers("M1"),
                      budgets={"flow-triggers": 200_000})  # fmt: skip
    assert str(caught.value).startswith("GET /api/metrics/{id}/flow-triggers: answers over")


def test_a_months_events_are_handed_on_page_by_page_not_kept() -> None:
    """preflight looks for the export's orders among a month of the API's Placed Order
    events (a busy shop's month is gigabytes): each page is handed on as it comes."""
    from klaviyo_backfill.klaviyo.shapes import HeldEvent

    start = 1672531200

    def answer(seen: Seen) -> Reply:
        n = len(server.seen)
        event = {"type": "event", "id": f"e{n}", "attributes": {
            "uuid": f"e{n}", "timestamp": start + n, "event_properties": {"OrderId": str(n)}}}  # fmt: skip
        more = f"{server.url}/api/events?page[cursor]={n}" if n < 5 else None
        return Reply(200, JSONAPI, json.dumps({"data": [event], "links": {"next": more}}).encode())

    pages: list[list[HeldEvent]] = []
    with Rogue(answer, metrics=False) as server:
        read_from(server.url, lambda r: r.scan_events("M1", start, start + 86400, pages.append))
    assert [[e.order_id for e in p] for p in pages] == [["1"], ["2"], ["3"], ["4"], ["5"]]


def test_a_read_answer_nested_100k_deep_is_a_fault_not_a_recursion_error() -> None:
    """NaN, Infinity, huge counts (tests/test_proof_orders.py) and JSON nested 100,000 deep
    in a read answer (verify, preflight, the send's overlap check): not an answer, retried,
    then an error naming the endpoint; never a RecursionError."""
    from klaviyo_backfill.errors import GaveUp

    deep = b'{"data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with Rogue(lambda seen: Reply(200, JSONAPI, deep), metrics=False) as server:
        with pytest.raises(GaveUp) as caught:
            read_from(server.url, lambda r: r.metrics())
        tries = len(server.seen)
    assert str(caught.value).startswith("GET /api/metrics: ")
    assert tries == 2  # max_attempts


@pytest.mark.e2e
def test_a_send_whose_metrics_listing_loops_stops_at_once_naming_it(tmp_path: Path) -> None:
    """The overlap check before a send: a next link to the same page ends it at once, an
    error naming the endpoint, nothing sent."""
    export_in(tmp_path)

    def answer(seen: Seen) -> Reply:
        if seen.path.startswith("/api/metrics"):
            doc = {"data": [], "links": {"next": f"{server.url}/api/metrics"}}
            return Reply(200, JSONAPI, json.dumps(doc).encode())
        return Reply(202)

    with Rogue(answer, metrics=False) as server:
        result = send(tmp_path, server.url)
        seen = [s.path for s in server.seen]
    assert result.returncode == ExitCode.REFUSED, said(result)
    assert seen == ["/api/metrics"], seen  # read once, nothing sent
    assert "GET /api/metrics: a next link to a page read before" in result.stderr, said(result)
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------- 6. the reads' waits told


@pytest.mark.e2e
def test_a_429_on_the_read_before_a_send_is_told_and_sigterm_says_how_to_continue(
    tmp_path: Path,
) -> None:
    """GET /api/metrics (the overlap check, before the first request) answered 429 with a
    Retry-After of 10 minutes: the wait was silent, on a terminal or off it, and SIGTERM
    during it ended the run without a word. Now the wait is told as the sender's are, and
    SIGTERM says nothing was lost and which command continues (exit 143)."""
    import signal
    import time

    export_in(tmp_path)
    throttled = {**JSONAPI, "Retry-After": "600"}

    def answer(seen: Seen) -> Reply:
        if seen.path.startswith("/api/metrics"):
            return Reply(429, throttled, b'{"errors": []}')
        return Reply(202)

    with Rogue(answer, metrics=False) as server:
        proc = rogue.popen(tmp_path, "send", "orders.csv", "--base-url", server.url)
        assert proc.stderr is not None
        started = time.monotonic()
        line = proc.stderr.readline()
        told = time.monotonic() - started
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert not [s for s in server.seen if s.path.startswith("/api/event")]
    assert "Klaviyo asked to wait 600 s (429)" in line, line + err
    assert told < 20, told  # at once, not after the wait
    assert proc.returncode == ExitCode.TERMINATED, err
    assert "Stopped. Nothing is lost; continue with:" in err, err
    again = err.strip().splitlines()[-1].split()
    assert again[:2] == ["klaviyo-backfill", "send"] and "--resume" not in again, err
    assert "Traceback" not in err and out == ""


def test_markup_and_escapes_in_the_accounts_own_fields_are_printed_literally(
    tmp_path: Path,
) -> None:
    """Item 7's `[/]` (rich's MarkupError) and item 10's escapes, in what preflight prints of
    the account itself: its time zone and currency, as Klaviyo wrote them."""
    export_in(tmp_path)
    with st.StandIn(api_key=KEY) as klaviyo:
        klaviyo.account["timezone"] = "Europe/[/]\x1b[2JParis [bold]"
        klaviyo.account["preferred_currency"] = "E[/]R"
        account_id = klaviyo.account["id"]
        checked = in_process(tmp_path, KEY, "preflight", "orders.csv", "--base-url",
                             klaviyo.url, clock=klaviyo.clock, columns=80)  # fmt: skip
    out = checked.stdout + checked.stderr
    assert "Traceback" not in out and "MarkupError" not in out, said(checked)
    assert "\x1b" not in out, said(checked)
    assert checked.stdout.count("│ Account ") == 1, said(checked)  # a merge had left two rows
    account = checked.stdout[checked.stdout.index("│ Account ") :].split("│ Orders")[0]
    shown = " ".join(account.replace("│", " ").split())
    want = f"Account {account_id} (time zone Europe/[/]Paris [bold], currency E[/]R)"
    assert shown == want, shown
