"""`verify --html` and `inspect --html`: one self-contained file each (no script, no font, no
fetch), that renders on a phone's width and on a desktop's, and prints. Rendered in headless
Chromium where /usr/bin/chromium exists (Debian's `chromium` package); skipped, saying so,
where it does not (CI)."""

from __future__ import annotations

import re
import secrets
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import cli_helpers
import pytest
import standin as st
from cli_helpers import EXPORT

pytestmark = pytest.mark.e2e
KEY = "pk_html_" + secrets.token_hex(12)
CHROMIUM = Path("/usr/bin/chromium")
# what headless Chromium asks for by itself, whatever the page (component updates, its clock)
BROWSER_OWN = re.compile(
    rb"^\S+ (http://)?(accounts\.google\.com|update\.googleapis\.com|"
    rb"clients2\.google\.com)[:/]"
)
FETCHES = re.compile(r"<script|<link|<iframe|<img|@import|url\(|src=|https?://", re.IGNORECASE)


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return cli_helpers.run(cwd, KEY, *args)


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """verify.html (a send of the sample's orders since 2024, Klaviyo losing some) and
    inspect.html (the whole sample, its rejections included)."""
    cwd = tmp_path_factory.mktemp("html")
    shutil.copy(EXPORT, cwd / "orders.csv")
    problems = EXPORT.parent / "problems"
    with st.StandIn(api_key=KEY, faults=st.Faults(lost_after_ack=0.2, seed=2)) as s:
        sent = cli(cwd, "send", "orders.csv", "--since", "2022", "--base-url", s.url, "-q")
        assert sent.returncode == 0, sent.stderr
        done = cli_helpers.in_process(cwd, KEY, "verify", "orders.csv", "--base-url", s.url,
                                      "--html", "verify.html", clock=s.clock)  # fmt: skip
        assert done.returncode == 5, done.stdout + done.stderr  # some rows short
    done = cli(cwd, "inspect", str(problems), "--html", "inspect.html")
    assert done.returncode == 1, done.stderr  # orders would be rejected, as a dry run says
    return {"verify": cwd / "verify.html", "inspect": cwd / "inspect.html"}


@pytest.mark.parametrize("name", ["verify", "inspect"])
def test_the_report_is_one_file_that_fetches_nothing(reports: dict[str, Path], name: str) -> None:
    page = reports[name].read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>")
    assert FETCHES.findall(page) == []  # no script, stylesheet, font, image or link to fetch
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert "@media print" in page and "<svg" in page
    assert KEY not in page


def test_the_verify_report_holds_bars_rows_totals_summary_and_rejections(
    reports: dict[str, Path],
) -> None:
    page = reports["verify"].read_text(encoding="utf-8")
    for part in ("Sent vs in Klaviyo, per month", "Rows that differ", "Totals per currency",
                 "The export", "Rejections", "SHORT"):  # fmt: skip
        assert part in page
    assert page.count("<svg") >= 3  # one chart per metric sent
    assert '<tr class="short">' in page


def test_the_inspect_report_holds_the_summary_and_the_rejections(
    reports: dict[str, Path],
) -> None:
    page = reports["inspect"].read_text(encoding="utf-8")
    assert "Events per month" in page and "Revenue per month" in page
    assert "Rejected orders" in page and "no usable" in page


class Recorder:
    """A proxy that answers nothing and records every connection made to it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.seen: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.settimeout(2)
            try:
                self.seen.append(conn.recv(200))
            except OSError:
                self.seen.append(b"")
            conn.close()


@pytest.fixture
def proxy() -> Iterator[Recorder]:
    recorder = Recorder()
    yield recorder
    recorder.sock.close()


def chromium(tmp: Path, proxy: Recorder, *args: str) -> subprocess.CompletedProcess[str]:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run",
             f"--user-data-dir={tmp / 'profile'}", "--hide-scrollbars",
             # every request Chromium makes, loopback included, goes to the recorder
             f"--proxy-server=http://127.0.0.1:{proxy.port}", "--proxy-bypass-list=<-loopback>"]  # fmt: skip
    return subprocess.run([str(CHROMIUM), *flags, *args], capture_output=True, text=True,
                          timeout=120)  # fmt: skip


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs headless Chromium at /usr/bin/chromium "
                    "(Debian: apt-get install chromium), which CI does not have")  # fmt: skip
@pytest.mark.parametrize("name", ["verify", "inspect"])
def test_the_report_renders_in_headless_chromium_on_a_phone_and_a_desktop_and_prints(
    reports: dict[str, Path], tmp_path: Path, proxy: Recorder, name: str
) -> None:
    url = reports[name].as_uri()
    for width, height in ((390, 844), (1200, 900)):
        shot = tmp_path / f"{name}-{width}.png"
        done = chromium(
            tmp_path, proxy, f"--screenshot={shot}", f"--window-size={width},{height}", url
        )
        assert shot.exists() and shot.stat().st_size > 5_000, done.stderr[-2000:]
    pdf = tmp_path / f"{name}.pdf"
    done = chromium(tmp_path, proxy, f"--print-to-pdf={pdf}", "--no-pdf-header-footer", url)
    assert pdf.exists() and pdf.read_bytes().startswith(b"%PDF"), done.stderr[-2000:]
    dom = chromium(tmp_path, proxy, "--dump-dom", url)
    assert "<svg" in dom.stdout and "<table>" in dom.stdout
    page_asked = [line for line in proxy.seen if not BROWSER_OWN.search(line.split(b"\r\n")[0])]
    assert page_asked == []  # the page asked for nothing (Chromium's own services aside)
