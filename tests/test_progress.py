"""Progress that tells the truth (issue #14, "the first hour", item 2), on a terminal and off it.

- At any width from 60 columns: events done / total, events/s, the ETA, and the counters
  that are not zero (the bar cut the count and the ETA at 80 and showed zero counters).
- The ETA follows the pace the rate windows allow, not the first burst; a wait over 2 s is a
  status line ("waiting 5 s for ... limit", "Klaviyo asked to wait 30 s (429)").
- The first Ctrl-C says at once what happens ("stopping: ..."), even during a wait.
- With stderr no terminal, a plain line every 30 s and at each wait over 10 s.

The rendering is tested with rich at fixed widths; the rest end to end, through the CLI: in
a pseudo-terminal of 80 columns, and with stderr a file.
"""

from __future__ import annotations

import fcntl
import io
import os
import re
import select
import shutil
import signal
import struct
import subprocess
import termios
import time
from collections import Counter
from pathlib import Path

import cli_helpers
import pytest
import standin as st
from cli_helpers import CLI, EXPORT, in_process, popen, wait_until
from rich.console import Console

from klaviyo_backfill.klaviyo.sender import SendStats
from klaviyo_backfill.klaviyo.throttle import Wait, Window
from klaviyo_backfill.pipeline import parallel
from klaviyo_backfill.pipeline.summary import Stats
from klaviyo_backfill.reports.progress import Progress, Reading, plain, render

KEY = "pk_progress_0123456789abcdef"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][0-9A-B]")


def drawn(reading: Reading, width: int) -> list[str]:
    console = Console(width=width, force_terminal=True, color_system=None, file=io.StringIO())
    with console.capture() as captured:
        console.print(render(reading, width))
    return captured.get().splitlines()


# ---------------------------------------------------------------- drawing, at fixed widths


@pytest.mark.parametrize("width", [60, 80, 120])
def test_counts_rate_and_eta_are_kept_whole_at_any_width_from_60(width: int) -> None:
    counters = ["12 retries", "3 throttled (429)", "45 rejected orders", "2 events Klaviyo refused"]
    reading = Reading(1_234_567, 12_345_678, 2_480.4, 45_296, counters)
    lines = drawn(reading, width)
    text = "\n".join(lines)
    assert all(len(line) <= width for line in lines), lines
    assert "1,234,567/12,345,678 events" in text and "2,480 events/s" in text
    assert "ETA 12:34:56" in text
    for counter in counters:
        assert counter in text, (counter, lines)


def test_counters_that_are_zero_are_not_shown_and_a_bar_fills_the_room() -> None:
    (line,) = drawn(Reading(500, 1000, 25.0, 20.0), 80)
    assert len(line) == 80 and line.startswith("━") and "retries" not in line
    assert line.endswith("500/1,000 events · 25 events/s · ETA 0:00:20")


def test_a_wait_is_a_status_line_below() -> None:
    lines = drawn(Reading(1, 2, None, None, status="waiting 41 s for Klaviyo's per-minute limit"),
                  80)  # fmt: skip
    assert lines[-1] == "waiting 41 s for Klaviyo's per-minute limit"


def test_a_log_line_is_plain() -> None:
    line = plain(Reading(250, 1000, 12.0, 62.5, ["1 retry"]), 3725)
    assert line == "[1:02:05] 250/1,000 events (25%) · 12 events/s · ETA 0:01:02 · 1 retry"


# ---------------------------------------------------------------- the ETA and the waits


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def quiet_progress(clock: Clock, every: float = 30.0) -> tuple[Progress, io.StringIO]:
    out = io.StringIO()
    err = Console(file=out, force_terminal=False, width=200)
    return Progress(err=err, every=every, clock=clock), out


def sent(stats: Stats, send: SendStats, events: int, requests: int) -> None:
    send.events_sent = Counter({"Placed Order": events})
    send.acknowledged = requests
    stats.events = Counter({"Placed Order": 450_000})


def test_the_eta_follows_the_ceiling_of_the_rate_windows_not_the_first_burst() -> None:
    """Bulk at Klaviyo's limits: 150 requests of 1,000 events go in 15 s, then the
    per-minute window holds the rest of the minute. The ETA said 0:00:03 before that freeze;
    it must say what 150 requests a minute (2,500 events/s) take."""
    clock = Clock()
    progress, _ = quiet_progress(clock)
    progress.pacing((Window(10, 1.0), Window(150, 60.0)), 1000, "Klaviyo's")
    stats, send = Stats(), SendStats()
    progress.update(stats, send)
    clock.now += 15
    sent(stats, send, 150_000, 150)
    progress.update(stats, send)
    reading = progress.reading()
    assert reading.rate == pytest.approx(10_000)  # what the burst measured
    assert reading.eta == pytest.approx(300_000 / 2_500)  # what the windows allow: 2 min
    clock.now += 45  # the freeze: the measured rate falls, the ETA does not jump
    assert progress.reading().eta == pytest.approx(120)


def test_waits_are_told_as_they_are() -> None:
    clock = Clock()
    progress, _ = quiet_progress(clock)
    progress.pacing((Window(10, 1.0), Window(150, 60.0)), 1000, "Klaviyo's")
    progress.update(Stats(), SendStats())
    progress.waiting(Wait(41.0, clock.now + 41, "window", Window(150, 60.0)))
    assert progress.reading().status == "waiting 41 s for Klaviyo's per-minute limit"
    clock.now += 30
    assert progress.reading().status == "waiting 11 s for Klaviyo's per-minute limit"
    progress.waiting(Wait(30.0, clock.now + 30, "429"))
    assert progress.reading().status == "Klaviyo asked to wait 30 s (429)"
    clock.now += 31
    assert progress.reading().status is None
    progress.waiting(Wait(1.5, clock.now + 1.5, "window", Window(10, 1.0)))
    assert progress.reading().status is None  # 2 s or less: not worth a line


def test_off_a_terminal_a_line_every_interval_and_at_each_long_wait() -> None:
    clock = Clock()
    progress, out = quiet_progress(clock, every=0.05)
    assert progress.mode == "log"
    with progress:
        progress.pacing((Window(10, 1.0),), 1, "Klaviyo's")
        progress.update(Stats(), SendStats())
        time.sleep(0.3)
        progress.waiting(Wait(41.0, clock.now + 41, "window", Window(150, 60.0)))
        progress.waiting(Wait(5.0, clock.now + 5, "window", Window(10, 1.0)))  # not logged
    lines = out.getvalue().splitlines()
    assert sum("events/s" in line for line in lines) >= 2, lines
    assert [line for line in lines if "waiting" in line] == [
        "[0:00:00] waiting 41 s for Klaviyo's per-minute limit"
    ]


# ---------------------------------------------------------------- end to end, through the CLI


def env(**extra: str) -> dict[str, str]:
    return cli_helpers.env(KEY, TERM="xterm-256color", **extra)


def in_a_terminal(cwd: Path, args: list[str], columns: int = 80) -> tuple[int, str]:
    """The CLI with its output a pseudo-terminal of `columns` columns: (exit, what it drew)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    proc = subprocess.Popen([CLI, *args], cwd=cwd, stdin=slave, stdout=slave, stderr=slave,
                            env=env(COLUMNS=str(columns)))  # fmt: skip
    os.close(slave)
    drawn = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the terminal closed with the process
                break
            if not chunk:
                break
            drawn += chunk
        elif proc.poll() is not None:
            break
    os.close(master)
    proc.wait(10)
    return proc.returncode, drawn.decode("utf-8", "replace")


def frames(drawn: str) -> list[str]:
    """Every line the terminal showed, cursor movements and colours taken out."""
    text = ANSI.sub("", drawn).replace("\r\n", "\n").replace("\r", "\n")
    return [line.rstrip() for line in text.split("\n") if line.strip()]


@pytest.mark.slow
@pytest.mark.e2e
def test_a_terminal_of_80_columns_shows_count_rate_eta_and_each_wait(tmp_path: Path) -> None:
    shutil.copy(EXPORT, tmp_path / "orders.csv")
    with st.StandIn(api_key=KEY, faults=st.Faults(latency=0.02)) as s:
        code, drawn = in_a_terminal(tmp_path, ["send", "orders.csv", "--base-url", s.url,
                                               "--endpoint", "single", "--rate-limit",
                                               "100/s,20/4s", "--limit", "8"])  # fmt: skip
    assert code in (0, 1), drawn
    lines = frames(drawn)
    bars = [line for line in lines if re.search(r"\d+/\d+ events · [\d,-]+ events/s · ETA ", line)]
    assert bars, lines
    wide = [line for line in lines if len(line) > 80 and not line.startswith("  klaviyo-backfill ")]
    assert not wide, wide  # but the command that continues it, whole (to be copied)
    assert any(re.search(r"ETA \d:\d\d:\d\d$", line) for line in bars), bars
    assert any(re.search(r"\d+ events/s", line) for line in bars), bars
    assert any(re.fullmatch(r"waiting [1-4] s for --rate-limit's 20-per-4-s limit", line)
               for line in lines), lines  # fmt: skip
    assert not any("retries" in line or "throttled" in line for line in bars)  # all zero


@pytest.mark.e2e
def test_off_a_terminal_a_long_wait_is_written_to_the_log(tmp_path: Path) -> None:
    """The CLI in this process, its limiter on the stand-in's clock: the 11 s are skipped."""
    shutil.copy(EXPORT, tmp_path / "orders.csv")
    with st.StandIn(api_key=KEY) as s:
        done = in_process(tmp_path, KEY, "send", "orders.csv", "--base-url", s.url, "--endpoint",
                          "single", "--rate-limit", "100/s,10/11s", "--limit", "4",
                          clock=s.clock)  # fmt: skip
    told = done.stderr
    assert done.returncode in (0, 1), told
    assert s.clock.skipped >= 10, s.clock.skipped  # the wait was the limiter's, skipped
    assert re.search(r"^\[0:00:0\d\] waiting 1[01] s for --rate-limit's 10-per-11-s limit$", told,
                     re.MULTILINE), told  # fmt: skip
    assert "\x1b[" not in told and "━" not in told  # no bar, no colour in a log


@pytest.mark.e2e
def test_the_first_ctrl_c_during_a_wait_says_at_once_what_happens(tmp_path: Path) -> None:
    """It printed nothing for up to a minute, the tool waiting out its own window."""
    shutil.copy(EXPORT, tmp_path / "orders.csv")
    with st.StandIn(api_key=KEY) as s:
        proc = popen(tmp_path, KEY, "send", "orders.csv", "--base-url", s.url, "--endpoint",
                     "single", "--rate-limit", "100/s,10/60s", "-q")  # fmt: skip
        try:
            wait_until(lambda: len(s.requests) >= 10, proc)
            time.sleep(0.5)  # the tenth answered; the eleventh waits a minute for its turn
            interrupted = time.monotonic()
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=20)
            took = time.monotonic() - interrupted
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 130, err
    assert "stopping: no request in flight; saving the checkpoint" in err
    assert took < 10, f"took {took:.1f} s to stop"  # not the minute's wait
    assert len(s.requests) == 10  # nothing sent after the Ctrl-C


@pytest.mark.slow
@pytest.mark.e2e
def test_the_first_ctrl_c_names_the_requests_in_flight(tmp_path: Path) -> None:
    shutil.copy(EXPORT, tmp_path / "orders.csv")
    with st.StandIn(api_key=KEY, faults=st.Faults(latency=2.0)) as s:
        proc = popen(tmp_path, KEY, "send", "orders.csv", "--base-url", s.url, "--endpoint",
                     "single", "--concurrency", "3", "--rate-limit", "100/s", "-q")  # fmt: skip
        try:
            # the overlap check's read of the metrics, answered in 2 s (after the account's,
            # in 2 s before it)
            wait_until(lambda: any(r.path == "/api/metrics" for r in s.reads), proc)
            time.sleep(1.0)  # three requests out, their answers a second away
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 130, err
    assert "stopping: finishing 3 requests in flight; Ctrl-C again to abandon them" in err, err
    assert len(s.requests) == 3


@pytest.mark.e2e
def test_a_reading_before_the_first_request_is_said(tmp_path: Path) -> None:
    """The profile pass (and, to an account that holds orders, the survey) reads the whole
    export before the first request: a long silence on a large one unless it is said."""
    with st.StandIn(api_key=KEY) as s:
        base = ["send", str(EXPORT), "--base-url", s.url, "--rate-limit", "100/s,1000/m"]

        def said(*extra: str) -> str:
            done = cli_helpers.run(tmp_path, KEY, *base, *extra, columns=80)
            assert done.returncode in (0, 1), done.stderr
            return done.stderr

        first = said("--restart", "--profile-attributes", "all")
        assert "Reading the export" not in first  # nothing to read first
        later = said("--restart")  # the account holds every order now: its API metric too,
        # so the survey counts the months whose API events the overlap check reads
        assert "Reading the export against what this account holds, and its months..." in later
        assert "Reading the export" not in said("--restart", "-q")
        assert "Reading the export for each customer's latest order" in said(
            "--restart", "--resend"
        )


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.parametrize(("stop", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_while_reading_before_the_first_request(
    tmp_path: Path, stop: signal.Signals, code: int
) -> None:
    """Ctrl-C (or SIGTERM: it killed the run without a word) during the profile pass: nothing
    was sent, it says how to continue (not a bare "Interrupted."), shows no summary of
    nothing, leaves no temporary file, and the command it gives continues the job."""
    header, _, body = EXPORT.read_bytes().partition(b"\n")
    # the sample's orders again and again, past parallel.SPLIT_FROM_BYTES: the pass runs on
    # worker processes (Ctrl-C may come while they fork), for a second or two
    big = tmp_path / "orders.csv"
    big.write_bytes(header + b"\n" + body * ((parallel.SPLIT_FROM_BYTES + (2 << 20)) // len(body)))
    assert big.stat().st_size >= parallel.SPLIT_FROM_BYTES
    state = Path(os.environ["XDG_STATE_HOME"])
    with st.StandIn(api_key=KEY) as s:
        proc = popen(tmp_path, KEY, "send", str(big), "--base-url", s.url, "--rate-limit",
                     "100/s,1000/m", COLUMNS="80")  # fmt: skip
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert line.startswith("Reading the export for each customer's latest order"), line
        proc.send_signal(stop)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == code, err
        assert not s.requests  # stopped before the first request
        assert "Stopped. Nothing is lost; continue with:" in err and "--resume" in err, err
        assert "Traceback" not in err and out == ""  # no summary of nothing
        assert not list((state / "klaviyo-backfill" / "tmp").glob("*"))  # no profile table left
        resumed = err.strip().splitlines()[-1].split()
        assert resumed[0] == "klaviyo-backfill" and resumed[-1] == "--resume"
        if stop == signal.SIGTERM:
            return  # the same command as after Ctrl-C, which the next lines run
        done = cli_helpers.run(tmp_path, KEY, *resumed[1:], "-q", columns=80, timeout=300)
        assert done.returncode in (0, 1), done.stderr
        assert s.requests  # the job went on


# ---------------------------------------------------------------- totals that add up (#22)


def test_a_limited_run_estimates_its_own_total_and_knows_it_once_read() -> None:
    """`--limit 5` ended at `22/10,194 events`: the whole export's extrapolation."""
    stats = Stats(bytes_total=1_000_000, bytes_done=1_000, limit=5)
    stats.orders_mapped = 2
    stats.events = Counter({"Placed Order": 2, "Ordered Product": 7})
    assert stats.estimated_events() == 22  # 9 events for 2 orders, 5 orders: not 9,000
    stats.orders_mapped, stats.read_all = 5, True
    stats.events = Counter({"Placed Order": 5, "Ordered Product": 17})
    assert stats.estimated_events() == 22


def test_the_total_shown_holds_steady_and_is_exact_once_the_export_is_read() -> None:
    """120,474 -> 120,954 -> 120,611: the estimate's noise was shown as it came."""
    clock = Clock()
    progress, _ = quiet_progress(clock)
    stats, send = Stats(bytes_total=10_000_000), SendStats()
    totals = []
    for done_bytes, events in ((2_000_000, 24_095), (4_000_000, 48_381), (6_000_000, 72_366)):
        stats.bytes_done, stats.events = done_bytes, Counter({"Placed Order": events})
        progress.update(stats, send)
        reading = progress.reading()
        assert reading.estimated and "/~" in reading.essentials()
        totals.append(reading.total)
    assert totals == [120_475] * 3, totals  # within 2%: the first estimate, unmoved
    stats.read_all, stats.events = True, Counter({"Placed Order": 120_611})
    final = progress.reading()
    assert final.total == 120_611 and not final.estimated and "/~" not in final.essentials()


def test_at_80_columns_six_digit_counts_keep_a_usable_bar() -> None:
    """The bar vanished at six digits in 80 columns (the counters took its room)."""
    reading = Reading(123_456, 654_321, 2_480.4, 185.0, ["12 retries", "45 rejected orders"],
                      estimated=True)  # fmt: skip
    lines = drawn(reading, 80)
    assert all(len(line) <= 80 for line in lines), lines
    assert lines[0].count("━") >= 20, lines
    assert "123,456/~654,321 events" in lines[0] and "12 retries" in "\n".join(lines[1:])


@pytest.mark.e2e
def test_a_limited_send_ends_at_its_own_total_on_a_terminal(tmp_path: Path) -> None:
    shutil.copy(EXPORT, tmp_path / "orders.csv")
    with st.StandIn(api_key=KEY) as s:
        code, drawn = in_a_terminal(tmp_path, ["send", "orders.csv", "--base-url", s.url,
                                               "--limit", "5"])  # fmt: skip
        held = len(s.events)
    assert code in (0, 1), drawn
    bars = [line for line in frames(drawn) if " events/s · ETA " in line]
    assert bars, frames(drawn)
    last = re.search(r"([\d,]+)/(~?)([\d,]+) events", bars[-1])
    assert last, bars[-1]
    assert last.group(1) == last.group(3) == f"{held:,}" and not last.group(2), bars
