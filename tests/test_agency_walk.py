"""What an agency engineer met moving several shops into Klaviyo accounts (a second outside
tester's walk): each test is a defect found that way, through the CLI against the stand-in,
in this process on the stand-in's clock where it can be (no rate window waited for)."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import gc
import json
import logging
import os
import secrets
import shlex
import signal
import socket
import sqlite3
import subprocess
from pathlib import Path

import cli_helpers
import corpus
import pytest
import standin as st
from cli_helpers import said

from klaviyo_backfill.errors import ExitCode

pytestmark = pytest.mark.e2e
KEY = "pk_agency_" + secrets.token_hex(12)


def cli(cwd: Path, s: st.StandIn, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in this process at 80 columns, on the stand-in's clock."""
    return cli_helpers.in_process(cwd, KEY, *args, clock=s.clock, columns=80)


def _stopped_abruptly(checkpoint: Path) -> None:
    """The checkpoint as a send killed mid-run leaves it: "running", by a process gone."""
    with sqlite3.connect(checkpoint) as db:
        db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                       [("state", "running"), ("pid", str(_dead_pid())),
                        ("host", socket.gethostname()), ("pid_start", "")])  # fmt: skip


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_status_of_a_job_whose_export_was_saved_over_prints_the_restart(tmp_path: Path) -> None:
    """A job stopped at --limit, then next month's export saved over the file: the send
    refuses --resume and prints the same send with --restart, but `status` (with the path,
    without, and --json) and `verify` still said to continue with --resume, which that
    refusal stops (and status's State, for a send killed mid-run, '--resume continues')."""
    orders = corpus.make_orders(24, seed=5, platform="shopify")
    export = tmp_path / "orders_export.csv"
    corpus.write_shopify_csv(orders[:12], export)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with st.StandIn(api_key=KEY) as s:
        first = cli(tmp_path, s, "send", export.name, "--limit", "5", "--base-url", s.url)
        assert first.returncode == ExitCode.OK, said(first)
        unchanged = cli(elsewhere, s, "status", str(export))
        assert unchanged.stdout.rstrip().endswith("--resume"), said(unchanged)  # as it was
        corpus.write_shopify_csv(orders, export)  # next month's, saved over it
        refused = cli(tmp_path, s, "send", export.name, "--resume", "--base-url", s.url)
        assert refused.returncode == ExitCode.USAGE, said(refused)
        restart = refused.stderr.split("Send it with:\n")[1].split("\n")[0].strip()
        assert restart.endswith("--restart"), said(refused)
        for args in (["status", str(export)], ["status"]):
            shown = cli(elsewhere, s, *args)
            assert shown.returncode == ExitCode.OK, said(shown)
            assert "--resume" not in shown.stdout, shown.stdout
            assert shown.stdout.rstrip().splitlines()[-1].strip() == restart, shown.stdout
            assert "export changed" in " ".join(shown.stdout.split()), shown.stdout
            assert "resume point" not in shown.stdout, shown.stdout  # in the old export
        as_json = cli(elsewhere, s, "status", str(export), "--json", "-")
        assert json.loads(as_json.stdout)["jobs"][0]["continue_with"] == restart, said(as_json)
        s.clock.advance(3600)
        checked = cli(elsewhere, s, "verify", str(export), "--base-url", s.url)
        assert checked.returncode == ExitCode.UNFINISHED, said(checked)
        assert "--resume" not in checked.stdout and restart in checked.stdout.splitlines()[-1]
        _stopped_abruptly(cli_helpers.the_checkpoint())
        shown = cli(elsewhere, s, "status", str(export))
        assert "--resume" not in shown.stdout and "its export changed" in shown.stdout
        sent = cli(elsewhere, s, *shlex.split(restart)[1:])  # pasted from another folder
        assert sent.returncode in (ExitCode.OK, ExitCode.REJECTED), said(sent)
        assert "24 " in sent.stdout.split("Orders read")[1].split("\n")[0], sent.stdout
        assert len(s.keys()) == len(s.events)  # each event once


@pytest.mark.parametrize(("content", "shown"), [("null\n", "null"), ("42", "42"), ('"x"', '"x"')])
def test_a_json_file_of_one_plain_value_is_called_json(
    tmp_path: Path, content: str, shown: str
) -> None:
    """A .json export that holds `null` (an API call that returned nothing, saved) was
    called 'a CSV or text file without the columns of one'."""
    (tmp_path / "orders.json").write_text(content)
    with contextlib.chdir(tmp_path):
        done = cli_helpers.invoke(None, "inspect", "orders.json")
    assert done.exit_code == ExitCode.USAGE, done.output
    said = " ".join(done.output.split())
    assert f"orders.json: is a JSON file that holds {shown}, not orders" in said, said
    assert "CSV" not in said


@pytest.mark.parametrize("content", ["[]", '{"orders": []}', '{"data": {"orders": {"edges": []}}}'])
def test_a_json_export_without_orders_is_said_to_hold_none(tmp_path: Path, content: str) -> None:
    """A JSON export of a month without orders (Shopify's `{"orders": []}`, a GraphQL answer
    with no edges) was 'not an export this tool recognises (a JSON file without the columns
    of one)': its format is not the question; it holds no orders."""
    (tmp_path / "orders.json").write_text(content)
    with contextlib.chdir(tmp_path):
        done = cli_helpers.invoke(None, "inspect", "orders.json")
    assert done.exit_code == ExitCode.USAGE, done.output
    assert "orders.json: holds no orders" in " ".join(done.output.split()), done.output
    assert "recognises" not in done.output


def test_rows_wider_than_the_header_are_a_warning_once_per_file(tmp_path: Path) -> None:
    """A row with values past the header's last column (a delimiter too many): they were
    dropped without a word. Now one warning for the file, counting its orders, with the
    first one's line."""
    export = corpus.write_shopify_csv(corpus.make_orders(10, seed=5, platform="shopify"),
                                      tmp_path / "wide.csv")  # fmt: skip
    rows = export.read_bytes().split(b"\r\n")
    rows[3] += b",extra"  # an order's first row (line 4)
    rows[6] += b",more,"
    rows[8] += b",,"  # empty fields past the header: nothing lost, nothing said
    export.write_bytes(b"\r\n".join(rows))
    with contextlib.chdir(tmp_path):
        done = cli_helpers.invoke(None, "send", "wide.csv", "--dry-run", "--json", "-",
                                  "--preview", "0")  # fmt: skip
    assert done.exit_code in (ExitCode.OK, ExitCode.REJECTED), done.output
    summary = json.loads(done.stdout)
    wide = [w for w in summary["warnings"] if "past its header's" in w]
    assert wide == [w for w in wide if w.startswith("rows of wide.csv ")] and len(wide) == 1
    assert summary["warnings"][wide[0]] == 2, summary["warnings"]
    assert summary["warning_examples"][wide[0]][0].endswith("wide.csv:4"), summary


CART = Path(__file__).resolve().parent.parent / "sample_data" / "custom_cart"


def _two_shops(folder: Path) -> tuple[Path, Path]:
    """The custom cart's export as two shops' in one file, a `Shop` column naming each (the
    layout's `store`): `north`, its orders as they are; then `south`, the same order numbers
    for other customers at other times. With the layout that reads it."""
    rows = list(csv.reader((CART / "orders.csv").open(newline="")))
    out = [[*rows[0], "Shop"], *([*row, "north"] for row in rows[1:])]
    for row in rows[1:]:
        other = list(row)
        other[2], other[4] = str(int(row[2]) + 100), "(312) 555-0199"  # customer no, mobile
        other[1] = row[1].replace(" AM", " XM").replace(" PM", " AM").replace(" XM", " PM")
        out.append([*other, "south"])
    export = folder / "shops.csv"
    with export.open("w", newline="") as fh:
        csv.writer(fh).writerows(out)
    layout = folder / "shops.toml"
    text = (CART / "layout.toml").read_text()
    layout.write_text(text.replace('status = "Status"', 'status = "Status"\nstore = "Shop"'))
    return export, layout


def test_a_store_column_naming_orders_held_without_a_store_is_refused(tmp_path: Path) -> None:
    """The cart sent without a store, then an export of it with a second shop, a store column
    naming each: north's orders (the same ones) went again as north:70001..., Klaviyo holding
    each twice. The check looked each id up once per batch: south's row of the same number,
    last, hid north's. Now refused, nothing sent, saying the rows' store column named it."""
    export, layout = _two_shops(tmp_path)
    with st.StandIn(api_key=KEY) as s:
        first = cli(tmp_path, s, "send", str(CART / "orders.csv"), "--layout",
                    str(CART / "layout.toml"), "--base-url", s.url, "-q")  # fmt: skip
        assert first.returncode == ExitCode.OK, said(first)
        held = len(s.events)
        again = cli(tmp_path, s, "send", export.name, "--layout", layout.name, "--base-url",
                    s.url, "-q")  # fmt: skip
        assert again.returncode == ExitCode.USAGE, said(again)
        assert len(s.events) == held  # nothing sent
    err = " ".join(again.stderr.split())
    assert "holds 12 of these orders" in err and "as store north (their rows' store" in err, err
    assert "Leave blank the store column of this shop's rows" in err, err


def test_a_second_window_keeps_the_first_ones_failures_and_status_names_that_job(
    tmp_path: Path,
) -> None:
    """One export sent in two windows (--until, then --since): the second archived the
    first's job, and its run replaced the failures file, so the first window's rejected
    orders were listed nowhere; `status` showed the second window alone (its orders sent
    too), not a word of the first. Now the first job's failures file is archived with it,
    and `status` (with the path, without, --json) names the earlier job and that file."""
    orders = corpus.make_orders(60, seed=77, platform="shopify")
    export = corpus.write_shopify_csv(orders, tmp_path / "orders.csv")
    windows = (["--until", "2020-12-31"], ["--since", "2021-01-01"])
    with st.StandIn(api_key=KEY) as s:
        sent = [
            cli(tmp_path, s, "send", export.name, *w, "--base-url", s.url, "-q") for w in windows
        ]
        assert [d.returncode for d in sent] == [ExitCode.REJECTED] * 2, [said(d) for d in sent]
        shown = [cli(Path("/"), s, "status", *args) for args in ([str(export)], [])]
        as_json = cli(Path("/"), s, "status", str(export), "--json", "-")
    first = sent[0].stdout.split("rejected orders written to ")[0].rsplit("\n", 1)[-1].strip()
    earlier = json.loads(as_json.stdout)["jobs"][0]["earlier_jobs"]
    assert len(earlier) == 1 and earlier[0]["window"] == "--until 2020-12-31", earlier
    kept = Path(earlier[0]["failures"])
    assert len(kept.read_text().splitlines()) == int(first) == earlier[0]["orders_rejected"]
    assert kept.stat().st_mode & 0o777 == 0o600
    for done in shown:
        assert done.returncode == ExitCode.OK, said(done)
        lines = [line.strip() for line in done.stdout.splitlines()]
        assert "--until 2020-12-31 (last run" in done.stdout, done.stdout
        assert str(kept) in lines, done.stdout  # a path on a line of its own
        assert max(len(line) for line in done.stdout.splitlines() if "/" not in line) <= 80


def test_sigterm_inside_a_read_before_the_send_stops_it_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """SIGTERM while the send's overlap check read Klaviyo (several reads at once, under
    asyncio.run): 'Stopped. Nothing is lost', then asyncio's 'Task exception was never
    retrieved' and a traceback (KeyboardInterrupt raised inside one of the reads' tasks).
    Now the read is cancelled as Ctrl-C cancels it, and only KeyboardInterrupt comes out."""
    from klaviyo_backfill.commands.send import _stoppable

    async def reads() -> None:
        async def one(n: int) -> None:
            if n == 0:
                await asyncio.sleep(0.001)
                os.kill(os.getpid(), signal.SIGTERM)  # its handler runs inside this task
            for _ in range(100_000):
                await asyncio.sleep(0)

        await asyncio.gather(*(one(n) for n in range(3)))

    with caplog.at_level(logging.ERROR, logger="asyncio"), _stoppable() as got:
        with pytest.raises(KeyboardInterrupt):
            asyncio.run(reads())
        gc.collect()  # where an unretrieved task exception is reported
    assert got == [signal.SIGTERM]
    assert not [r.getMessage() for r in caplog.records], caplog.text
