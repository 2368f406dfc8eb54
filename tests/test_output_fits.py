"""Output a merchant can read (issue #22, items 2 and 5): every command fits 80 columns on a
terminal without losing a number (verify's month, metric and difference first), and writes
plain text, unpadded and unwrapped, to a file; --json FILE (or '-') everywhere; inspect
compact by default; --preview N counts events; money in its currency's own decimals.

Terminals are real: a pseudo-terminal 80 columns wide, the real console script in it."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import sqlite3
import struct
import subprocess
import termios
from datetime import UTC, datetime
from pathlib import Path

import cli_helpers
import corpus
import pytest
import standin as st
from cli_helpers import CLI
from click.testing import CliRunner

from klaviyo_backfill.cli import main

KEY = "pk_fits_0123456789abcdef"
SAMPLE = Path(__file__).parent.parent / "sample_data"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def environment(**extra: str) -> dict[str, str]:
    return cli_helpers.env(KEY, TERM="xterm", **extra)


def on_a_terminal(cwd: Path, *args: str, columns: int = 80) -> tuple[int, str]:
    """The CLI with its stdout and stderr on a pseudo-terminal `columns` wide: (exit, text)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    proc = subprocess.Popen([CLI, *args], cwd=cwd, env=environment(), stdin=subprocess.DEVNULL,
                            stdout=follower, stderr=follower)  # fmt: skip
    os.close(follower)
    chunks = []
    while True:
        ready, _, _ = select.select([leader], [], [], 120)
        if not ready:
            proc.kill()
            raise AssertionError("no output for 120 s")
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the process is done
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    code = proc.wait(timeout=60)
    text = ANSI.sub("", b"".join(chunks).decode("utf-8", "replace")).replace("\r\n", "\n")
    return code, "\n".join(line.split("\r")[-1] for line in text.split("\n"))  # a spinner's last


def widest(text: str) -> int:
    """The longest line but a path's or a command's own (never cut: the terminal folds
    it, whole, so that it can be copied)."""
    return max(len(line) for line in text.splitlines()
               if not line.startswith("  /") and "klaviyo-backfill " not in line)  # fmt: skip


def plain(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return cli_helpers.run(cwd, KEY, *args, columns=None, timeout=180, TERM="xterm", **env)


@pytest.fixture(scope="module")
def shortfall(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """An export of 2023 sent to a stand-in that lost 3% of the events after their 202, the
    checkpoint aged past Klaviyo's processing delay: (folder, the stand-in's URL)."""
    folder = tmp_path_factory.mktemp("fits")
    start, end = datetime(2023, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC)
    orders = [o for o in corpus.make_orders(1600, 23, "shopify")
              if start <= o.created_at < end and o.identifiable]  # fmt: skip
    corpus.write_shopify_csv(orders, folder / "orders.csv")
    return folder, ""


@pytest.mark.slow
@pytest.mark.e2e
def test_verify_at_80_columns_prints_every_short_month_whole(
    shortfall: tuple[Path, str], tmp_path: Path
) -> None:
    """`│ Placed │ 2019-… │ USD │ 13 │ 12 │ +1 │`: which month was short could not be read."""
    folder, _ = shortfall
    export = tmp_path / "orders.csv"
    export.write_bytes((folder / "orders.csv").read_bytes())
    with st.StandIn(api_key=KEY, faults=st.Faults(lost_after_ack=0.03, seed=9)) as s:
        sent = plain(tmp_path, "send", "orders.csv", "--base-url", s.url, "-q",
                     "--rate-limit", "100/s,1000/m")  # fmt: skip
        assert sent.returncode == 0, sent.stdout + sent.stderr
        state = Path(os.environ["XDG_STATE_HOME"]) / "klaviyo-backfill" / "checkpoints"
        (checkpoint,) = state.glob("*.sqlite")
        db = sqlite3.connect(checkpoint)
        db.execute("UPDATE sent_totals SET last_at = last_at - 3600")
        db.commit()
        db.close()
        code, text = on_a_terminal(tmp_path, "verify", "orders.csv", "--base-url", s.url,
                                   "--json", "v.json")  # fmt: skip
        assert s.lost, "the stand-in lost nothing: no short row to show"
    assert code == 5, text
    rows = json.loads((tmp_path / "v.json").read_text())["rows"]
    short = [r for r in rows if r["klaviyo_count"] < r["sent_count"]]
    assert short
    lines = text.splitlines()
    assert widest(text) <= 80, text
    for r in short:
        gone = r["klaviyo_count"] - r["sent_count"]
        assert any(r["month"] in line and r["metric"] in line and f"{gone:,}" in line
                   and r["currency"] in line for line in lines), (r, text)  # fmt: skip
    assert "…" not in text, text  # nothing cut


@pytest.mark.e2e
def test_inspect_at_80_columns_is_compact_and_fits(tmp_path: Path) -> None:
    """375 lines at 80 columns, 315 of them monthly bars: now a screen; --monthly for more."""
    code, text = on_a_terminal(tmp_path, "inspect", str(SAMPLE / "shopify_orders_export.csv"))
    assert code == 0, text
    lines = text.splitlines()
    assert widest(text) <= 80, text
    assert len(lines) <= 60, text
    assert "Revenue per month," not in text and "--monthly shows them" in text
    code, monthly = on_a_terminal(tmp_path, "inspect", str(SAMPLE / "shopify_orders_export.csv"),
                                  "--monthly")  # fmt: skip
    assert "Revenue per month, USD" in monthly and widest(monthly) <= 80


@pytest.mark.e2e
def test_a_report_to_a_file_is_plain_unpadded_and_unwrapped(tmp_path: Path) -> None:
    """Output to a file was padded with trailing spaces and wrapped at 80."""
    done = plain(tmp_path, "send", str(SAMPLE), "--dry-run", "--failures", "f.jsonl")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert not [line for line in lines if line != line.rstrip()], "trailing spaces"
    assert "\x1b[" not in done.stdout  # no colour codes in a file
    assert max(len(line) for line in lines) > 80  # a long row stays whole, unwrapped
    skipped = [line for line in lines if "Skipped folder: custom_cart" in line]
    assert skipped and "only the files of a folder given are)" in skipped[0]


def test_json_dash_and_file_for_inspect(tmp_path: Path) -> None:
    """inspect --json printed to stdout while verify and preflight took a file."""
    export = str(SAMPLE / "shopify_orders_export.csv")
    to_stdout = CliRunner().invoke(main, ["inspect", export, "--json", "-"])
    assert json.loads(to_stdout.stdout)["orders_read"] == 27
    bare = CliRunner().invoke(main, ["inspect", export, "--json"])  # as before: stdout
    assert json.loads(bare.stdout) == json.loads(to_stdout.stdout)
    written = tmp_path / "i.json"
    to_file = CliRunner().invoke(main, ["inspect", export, "--json", str(written)])
    assert json.loads(written.read_text()) == json.loads(to_stdout.stdout)
    assert "Inspect: nothing was sent" in to_file.stdout  # the table, as without --json
    assert oct(written.stat().st_mode & 0o777) == "0o600"


@pytest.mark.e2e
def test_preview_n_counts_events_and_yen_has_no_decimals(tmp_path: Path) -> None:
    """`--preview 1` printed 6,102 lines (a whole bulk body); JPY showed as 18137.0."""
    one = plain(tmp_path, "send", str(SAMPLE / "shopify_orders.json"), "--dry-run",
                "--failures", "f.jsonl", "--preview", "1")  # fmt: skip
    preview = one.stdout.split("Dry run: nothing was sent")[0]
    assert preview.count('"metric": {') == 1 and len(preview.splitlines()) < 200, preview
    glance = plain(tmp_path, "send", str(SAMPLE / "shopify_orders.json"), "--dry-run",
                   "--failures", "f.jsonl").stdout  # fmt: skip
    assert "18,137 JPY" in glance and "18137.0" not in glance


@pytest.mark.e2e
def test_every_currency_shows_its_net_and_warnings_name_file_and_option(tmp_path: Path) -> None:
    """A currency without cancellations showed gross only; `naive time read as UTC` named no
    file and no option."""
    done = plain(tmp_path, "send", str(SAMPLE), "--dry-run", "--failures", "f.jsonl")
    out = " ".join(done.stdout.split())
    currencies = set(re.findall(r"Revenue ([A-Z]{3}): gross", out))
    assert currencies >= {"JPY", "USD", "EUR"}
    for currency in currencies:
        assert f"net {currency}" in out, currency
    assert "naive time read as UTC (use --timezone ZONE)" in out
    assert "USD assumed (use --currency CODE)" in out
    assert "first at " + str(SAMPLE / "woocommerce_orders.csv") in out
    assert "read = mapped + rejected + skipped" not in out
    assert "Distinct customers" in out and "Distinct profiles" not in out


@pytest.mark.e2e
def test_preflight_says_why_orders_will_not_be_sent(tmp_path: Path) -> None:
    """`3,000 (2,935 would be sent)` said nothing of the other 65."""
    problems = SAMPLE / "problems" / "shopify_orders_with_problems.csv"
    with st.StandIn(api_key=KEY) as s:
        done = plain(tmp_path, "preflight", str(problems), "--base-url", s.url)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "30 (25 would be sent)" in out, out
    reasons = re.findall(r"not sent, rejected: (.+?)\s+│\s+([\d,]+)\s", out)
    assert reasons and sum(int(n) for _, n in reasons) == 5, out


@pytest.mark.e2e
def test_status_and_send_take_json_too_and_paths_stay_whole(tmp_path: Path) -> None:
    """--json FILE (or '-') for every command; a checkpoint's path folded mid-token."""
    export = tmp_path / "orders.csv"
    export.write_bytes((SAMPLE / "shopify_orders_export.csv").read_bytes())
    with st.StandIn(api_key=KEY) as s:
        sent = plain(tmp_path, "send", "orders.csv", "--base-url", s.url, "-q", "--json", "-")
        assert sent.returncode == 0, sent.stderr
        assert json.loads(sent.stdout)["orders_sent"] == 27  # the table went to stderr
        assert "Send summary" in sent.stderr
    told = plain(tmp_path, "status", "orders.csv", "--json", "-")
    (job,) = json.loads(told.stdout)["jobs"]
    assert job["state"] == "finished" and job["orders_sent"] == 27, job
    assert job["checkpoint"].endswith(".sqlite") and Path(job["checkpoint"]).exists()
    code, text = on_a_terminal(tmp_path, "status", "orders.csv", columns=60)
    assert code == 0, text
    lines = text.splitlines()
    assert any(line.strip() == job["checkpoint"] for line in lines), text  # whole, one line
    assert widest(text) <= 60, text


def test_a_long_path_in_the_summary_keeps_its_line_number_at_80_columns() -> None:
    """An export named by its absolute path (a resume's, from another folder) was cut at the
    end: `first at /tmp/walk/shop/Downloads…` and `Resumed at /tmp/…/orders_expo…`, the
    line number gone. A place is cut at its start, so its end (file and line) stays."""
    from collections import Counter
    from io import StringIO

    from rich.console import Console

    from klaviyo_backfill.pipeline.summary import Stats
    from klaviyo_backfill.reports.terminal import summary_table

    where = "/srv/merchants/acme-trading-company/exports/2026/Downloads/orders_export.csv"
    stats = Stats(bytes_total=1)
    stats.resumed_at = f"{where}:1234"
    stats.warnings = Counter({"malformed email ignored": 3})
    stats.examples = {"malformed email ignored": [f"{where}:17"]}
    out = StringIO()
    Console(file=out, width=80, color_system=None).print(summary_table(stats, "Send summary"))
    text = out.getvalue()
    assert widest(text) <= 80, text
    assert re.search(r"Resumed at .*…[^ ]*orders_export\.csv:1234", text), text
    assert re.search(r"first at …[^ ]*orders_export\.csv:17", text), text
