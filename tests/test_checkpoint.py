"""checkpoint.py's Ledger, directly: what it records, counts, binds to, and keeps on disk."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from klaviyo_backfill.errors import CheckpointError
from klaviyo_backfill.klaviyo.sender import SendStats
from klaviyo_backfill.model import Event, Rejection
from klaviyo_backfill.pipeline.orders import MappedOrder
from klaviyo_backfill.pipeline.tracker import Tracker
from klaviyo_backfill.state.account_ledger import AccountLedger, event_key, replay
from klaviyo_backfill.state.checkpoint import FORMAT_VERSION, Landmarks, Ledger, Total
from klaviyo_backfill.state.failures import Failures


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    book = Ledger(tmp_path / "cp" / "run.sqlite")
    yield book
    book.close()


def klaviyo_rejection(order_id: str, uid: str) -> Rejection:
    detail = f"Placed Order {uid}: bad time"
    return Rejection("orders.csv", 4, order_id, "rejected by Klaviyo", detail)


def input_rejection(order_id: str | None, line: int) -> Rejection:
    return Rejection("orders.csv", line, order_id, "no usable email", "profile: no usable email")


# ---------------------------------------------------------------- orders


def test_recorded_orders_are_done_and_others_are_not(ledger: Ledger) -> None:
    ledger.record([("1001", False), ("1002", True)])
    assert ledger.is_done("1001") and ledger.is_done("1002")
    assert not ledger.is_done("1003")


def test_counts_split_sent_orders_from_orders_with_rejected_events(ledger: Ledger) -> None:
    ledger.record([("1", False), ("2", False), ("3", True)], [(klaviyo_rejection("3", "3"), None)])
    assert ledger.counts() == {"sent": 2, "rejected": 1, "events_rejected": 1}


def test_an_order_recorded_again_is_counted_once(ledger: Ledger) -> None:
    ledger.record([("1", False)])
    ledger.record([("1", False)])  # resent after a kill: acknowledged a second time
    assert ledger.counts() == {"sent": 1, "events_rejected": 0}


def test_an_empty_ledger_counts_nothing(ledger: Ledger) -> None:
    assert ledger.counts() == {"events_rejected": 0}
    assert ledger.rejected_total() == 0
    assert ledger.watermark() is None


# ---------------------------------------------------------------- rejections


def test_each_rejection_counts_once_in_the_total(ledger: Ledger) -> None:
    ledger.record(
        [("7", True)],
        [(klaviyo_rejection("7", "7"), None), (klaviyo_rejection("7", "7_A"), None),
         (input_rejection("8", 10), (0, 500)), (input_rejection("9", 12), (0, 600))],
    )  # fmt: skip
    assert ledger.rejected_total() == 4


def test_a_repeated_klaviyo_rejection_is_not_duplicated(ledger: Ledger) -> None:
    """An order resent after a kill and refused again is one rejection, not two."""
    ledger.record([], [(klaviyo_rejection("7", "7"), None)])
    ledger.record([("7", True)], [(klaviyo_rejection("7", "7"), None)])
    assert ledger.counts()["events_rejected"] == 1
    assert ledger.rejected_total() == 1
    assert [r.detail for r in ledger.rejections(None)] == ["Placed Order 7: bad time"]


@pytest.mark.parametrize("point", [(0, 400), None])  # None: read from the start
def test_an_input_rejection_met_again_on_resume_counts_once(
    ledger: Ledger, point: tuple[int, int] | None
) -> None:
    ledger.record([], [(input_rejection("8", 10), (0, 500))])
    ledger.forget_from(point)  # a resumed run reads from the point, so it meets it again
    ledger.record([], [(input_rejection("8", 10), (0, 500))])
    assert ledger.rejected_total() == 1
    assert list(ledger.rejections(point)) == []  # the resumed run reports it itself


def test_two_orders_without_an_id_rejected_alike_count_twice(ledger: Ledger) -> None:
    """rejected_total() deduplicated on (kind, order_id, detail): two stray values in a JSON
    array counted once, and a rerun over the finished job said '1 rejected' for 2."""
    ledger.record([], [(input_rejection(None, 3), (0, 40)), (input_rejection(None, 9), (0, 90))])
    assert ledger.rejected_total() == 2


def test_stray_values_on_one_line_of_a_json_file_are_two_rejections(ledger: Ledger) -> None:
    """A JSON order's place is its file's start (0) and a file written on one line gives each
    order line 1: two alike are still two, in the total and in a resumed run's report."""
    stray = Rejection("orders.json", 1, None, "a JSON int where an order should be", "")
    ledger.record([], [(stray, (0, 0)), (stray, (0, 0))])
    assert ledger.rejected_total() == 2
    assert list(ledger.rejections((1, 0))) == [stray, stray]  # resumed in a later input


def test_a_resumed_run_forgets_only_the_rejections_it_will_meet_again(ledger: Ledger) -> None:
    ledger.record(
        [("7", True)],
        [(input_rejection("8", 10), (0, 500)), (input_rejection("9", 30), (0, 900)),
         (input_rejection("10", 2), (1, 20)), (klaviyo_rejection("7", "7"), None)],
    )  # fmt: skip
    ledger.forget_from((0, 900))
    assert [r.order_id for r in ledger.rejections((9, 0))] == ["8", "7"]
    assert ledger.rejected_total() == 2
    ledger.forget_from(None)  # the export changed before the point: read from the start
    assert [r.order_id for r in ledger.rejections((9, 0))] == ["7"]
    assert ledger.rejected_total() == 1
    assert ledger.counts() == {"rejected": 1, "events_rejected": 1}


def test_rejections_returns_klaviyos_and_the_exports_before_the_resume_point(
    ledger: Ledger,
) -> None:
    ledger.record(
        [("7", True)],
        [(input_rejection("8", 10), (0, 500)), (input_rejection("9", 30), (0, 900)),
         (input_rejection("10", 2), (1, 20)), (klaviyo_rejection("7", "7"), None)],
    )  # fmt: skip
    assert [r.order_id for r in ledger.rejections((0, 900))] == ["8", "7"]
    assert [r.order_id for r in ledger.rejections((1, 0))] == ["8", "9", "7"]
    assert [r.order_id for r in ledger.rejections(None)] == ["7"]


# ---------------------------------------------------------------- the resume point


def test_the_watermark_is_the_last_recorded_resume_point(ledger: Ledger) -> None:
    ledger.record([("1", False)], watermark=(0, 120))
    ledger.record([("2", False)], watermark=(1, 64))
    ledger.record([("3", False)])  # no new point: the last one stands
    assert ledger.watermark() == (1, 64)


def test_the_landmark_holds_while_the_bytes_before_the_point_are_unchanged(
    ledger: Ledger, tmp_path: Path
) -> None:
    export = tmp_path / "orders.csv"
    export.write_bytes(b"header\n" + b"".join(b"row %03d,x@example.com\n" % i for i in range(20)))
    landmarks, point = Landmarks([str(export)]), (0, 300)
    ledger.record([("1", False)], watermark=point, landmark=landmarks.at(point))
    assert ledger.still_there(point, landmarks)

    data = bytearray(export.read_bytes())
    data[400] ^= 0x01  # after the point: still there
    export.write_bytes(bytes(data))
    assert ledger.still_there(point, landmarks)

    data[290] ^= 0x01  # just before the point, same size: not there any more
    export.write_bytes(bytes(data))
    assert not ledger.still_there(point, landmarks)


def test_the_landmark_is_gone_when_the_export_is_cut_before_the_point(
    ledger: Ledger, tmp_path: Path
) -> None:
    export = tmp_path / "orders.csv"
    export.write_bytes(b"x" * 1000)
    landmarks, point = Landmarks([str(export)]), (0, 800)
    ledger.record([], watermark=point, landmark=landmarks.at(point))
    export.write_bytes(b"x" * 790)
    assert not ledger.still_there(point, landmarks)


def test_the_start_of_a_file_needs_no_landmark(ledger: Ledger, tmp_path: Path) -> None:
    export = tmp_path / "orders.csv"
    export.write_bytes(b"anything")
    assert ledger.still_there((0, 0), Landmarks([str(export)]))


# ---------------------------------------------------------------- claim


def test_a_new_ledger_is_claimed_by_its_first_run(ledger: Ledger) -> None:
    ledger.claim("fp-1", "files and options")
    assert ledger.get("fingerprint") == "fp-1"
    assert ledger.get("version") == FORMAT_VERSION
    ledger.claim("fp-1", "files and options")  # the same run again: accepted


def test_another_runs_fingerprint_is_refused(ledger: Ledger) -> None:
    ledger.claim("fp-1", "files and options")
    with pytest.raises(CheckpointError) as caught:
        ledger.claim("fp-2", "endpoint bulk, --timezone UTC")
    assert "belongs to another run" in caught.value.message
    assert "endpoint bulk, --timezone UTC" in caught.value.message
    assert caught.value.hint is not None and "--restart" in caught.value.hint
    assert ledger.get("fingerprint") == "fp-1"


def test_a_ledger_of_another_format_version_is_refused(ledger: Ledger) -> None:
    ledger.claim("fp-1", "files and options")
    ledger.put(version="1")  # as an older release would have written it
    with pytest.raises(CheckpointError) as caught:
        ledger.claim("fp-1", "files and options")
    assert "written by a pre-release version (format 1" in caught.value.message
    assert f"this version reads {FORMAT_VERSION}" in caught.value.message
    assert caught.value.hint is not None and "--restart" in caught.value.hint


# ---------------------------------------------------------------- on disk


def test_the_ledger_and_its_side_files_are_private(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = tmp_path / "run.sqlite"
        book = Ledger(path)
        book.record([("1", False)])
        files = [Path(f"{path}{suffix}") for suffix in ("", "-wal", "-shm")]
        modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in files}  # all exist while open
        book.close()
    finally:
        os.umask(old)
    assert modes == {f.name: 0o600 for f in files}


def test_an_existing_world_readable_ledger_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    Ledger(path).close()
    os.chmod(path, 0o644)
    Ledger(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_reopened_ledger_keeps_what_was_committed(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    first = Ledger(path)
    first.claim("fp-1", "files and options")
    first.record(
        [("1", False), ("2", True)], [(klaviyo_rejection("2", "2"), None)], watermark=(0, 77)
    )
    first.close()
    again = Ledger(path)
    try:
        assert again.is_done("1") and again.is_done("2") and not again.is_done("3")
        assert again.counts() == {"sent": 1, "rejected": 1, "events_rejected": 1}
        assert again.rejected_total() == 1
        assert again.watermark() == (0, 77)
        again.claim("fp-1", "files and options")
        with pytest.raises(CheckpointError):
            again.claim("fp-2", "files and options")
    finally:
        again.close()


def test_a_second_connection_sees_what_the_first_committed(ledger: Ledger) -> None:
    reader = ledger.reader()
    try:
        ledger.record([("1", False)])
        assert reader.is_done("1")
    finally:
        reader.close()


# ---------------------------------------------------------------- runner_alive


def running_as(ledger: Ledger, pid: int, host: str | None = None) -> None:
    ledger.put(state="running", pid=str(pid), host=host or socket.gethostname())


def test_a_dead_runner_is_not_alive(ledger: Ledger) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass", "klaviyo-backfill"])
    child.wait()
    running_as(ledger, child.pid)
    assert ledger.runner_alive() is False


def _started(child: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
    """The child once its arguments show in /proc: Popen returns when exec has begun, and
    the kernel sets them up a moment later (under load the parent can read the empty
    cmdline between: this test failed so once, in a CI run beside two benchmarks)."""
    cmdline = Path(f"/proc/{child.pid}/cmdline")
    deadline = time.monotonic() + 10
    while not cmdline.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cmdline.read_bytes(), "the child process never showed its arguments"
    return child


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="Linux /proc")
def test_a_live_runner_is_alive_only_when_it_is_klaviyo_backfill(ledger: Ledger) -> None:
    sleep = "import time; time.sleep(60)"
    ours = _started(subprocess.Popen([sys.executable, "-c", sleep, "klaviyo-backfill"]))
    other = _started(subprocess.Popen([sys.executable, "-c", sleep]))  # a pid reused so
    try:
        running_as(ledger, ours.pid)
        assert ledger.runner_alive() is True
        running_as(ledger, other.pid)
        assert ledger.runner_alive() is False
    finally:
        for child in (ours, other):
            child.kill()
            child.wait()


def test_a_runner_that_cannot_be_told_is_none(ledger: Ledger) -> None:
    assert ledger.runner_alive() is None  # nothing recorded
    running_as(ledger, os.getpid(), host="another-host.invalid")
    assert ledger.runner_alive() is None
    ledger.put(state="finished", host=socket.gethostname())
    assert ledger.runner_alive() is None


def test_mark_running_records_this_process(ledger: Ledger) -> None:
    ledger.mark_running()
    assert ledger.state == "running"
    assert ledger.get("pid") == str(os.getpid())
    assert ledger.get("host") == socket.gethostname()


def test_a_new_run_drops_the_end_and_summary_of_the_run_before(ledger: Ledger) -> None:
    """`status` showed "Last run ended" (the earlier run's) before "Last run started"."""
    ledger.put(state="stopped", ended="100.0", last_run={"orders_read": 3})
    ledger.mark_running(["orders.csv"])
    assert ledger.get("ended") is None and ledger.get("last_run") is None
    assert ledger.get("inputs") == f'["{os.path.abspath("orders.csv")}"]'


# ---------------------------------------------------------------- sent totals (verify)


def totals_of(*events: tuple[str, str, str, str]) -> dict[tuple[str, str, str], Total]:
    out: dict[tuple[str, str, str], Total] = {}
    for metric, month, currency, value in events:
        out.setdefault((metric, month, currency), Total()).add(Decimal(value), 100.0)
    return out


def test_sent_totals_add_up_per_metric_month_and_currency_exactly(ledger: Ledger) -> None:
    ledger.record([("1", False)], totals={"1": totals_of(
        ("Placed Order", "2021-03", "USD", "0.10"), ("Ordered Product", "2021-03", "USD", "0.10"))})  # fmt: skip
    ledger.record([("2", False), ("3", False)], totals={
        "2": totals_of(("Placed Order", "2021-03", "USD", "0.20")),
        "3": totals_of(("Placed Order", "2021-04", "JPY", "1250"))})  # fmt: skip
    got = {key: (t.events, t.value) for key, t in ledger.totals().items()}
    assert got == {
        ("Ordered Product", "2021-03", "USD"): (1, Decimal("0.10")),
        ("Placed Order", "2021-03", "USD"): (2, Decimal("0.30")),  # exact, not 0.30000000000000004
        ("Placed Order", "2021-04", "JPY"): (1, Decimal("1250")),
    }


def test_an_order_acknowledged_again_after_a_kill_adds_to_the_totals_once(ledger: Ledger) -> None:
    for _ in range(2):
        ledger.record(
            [("1", False)], totals={"1": totals_of(("Placed Order", "2021-03", "USD", "5"))}
        )
    (total,) = ledger.totals().values()
    assert (total.events, total.value) == (1, Decimal("5"))


def test_a_new_ledger_keeps_totals_and_an_older_one_is_refused(tmp_path: Path) -> None:
    new = Ledger(tmp_path / "new.sqlite")
    new.claim("fp", "files")
    assert new.has_totals()
    new.close()
    older = Ledger(tmp_path / "older.sqlite")
    older.put(version=FORMAT_VERSION, fingerprint="fp")  # claimed before totals were kept
    with pytest.raises(CheckpointError) as caught:
        older.claim("fp", "files")
    assert "pre-release version" in caught.value.message
    assert not older.has_totals()
    older.close()


def test_the_tracker_records_only_acknowledged_events_of_settled_orders(ledger: Ledger) -> None:
    when = datetime(2021, 12, 31, 23, 30, tzinfo=timezone(timedelta(hours=-5)))  # 2022-01 in UTC
    placed = Event("Placed Order", when, "9", {}, {"email": "a@b.c"}, Decimal("10.00"), "EUR", "9")
    item = Event(
        "Ordered Product", when, "9_a", {}, {"email": "a@b.c"}, Decimal("4.00"), "EUR", "9"
    )
    refund = Event("Refunded Order", when, "9", {}, {"email": "a@b.c"}, Decimal("2.50"), "EUR", "9")
    tracker = Tracker(ledger, Failures(None), SendStats())
    tracker.register(MappedOrder("9", [placed, item, refund], "o.csv", 2))
    tracker.settle([placed], [])
    assert ledger.totals() == {}  # the order is not settled yet
    tracker.settle([item], [(refund, "refused")])
    got = {key: (t.events, t.value) for key, t in ledger.totals().items()}
    assert got == {("Placed Order", "2022-01", "EUR"): (1, Decimal("10.00")),
                   ("Ordered Product", "2022-01", "EUR"): (1, Decimal("4.00"))}  # fmt: skip


def test_an_acknowledgement_the_account_ledger_missed_is_replayed_from_the_checkpoint(
    tmp_path: Path,
) -> None:
    """The checkpoint commits first, with what the account's ledger records next: a disk that
    fails between the two commits loses neither (issue #20 item 8)."""
    ledger = Ledger(tmp_path / "cp.sqlite")
    ledger.claim("fp", "files")
    account = AccountLedger(tmp_path / "account.sqlite")
    when = datetime(2024, 3, 5, 12, tzinfo=UTC)
    placed = Event("Placed Order", when, "9", {}, {"email": "a@b.c"}, Decimal("10"), "EUR", "9")
    tracker = Tracker(ledger, Failures(None), SendStats(), account=account)
    tracker.register(MappedOrder("9", [placed], "o.csv", 2))
    account.db.close()  # the account ledger's commit fails (a full disk, say)
    with pytest.raises(CheckpointError):
        tracker.settle([placed], [])
    assert ledger.is_done("9") and ledger.totals()  # the checkpoint holds it
    key = event_key("a@b.c", "Placed Order", "9")
    reopened = AccountLedger(tmp_path / "account.sqlite")
    assert reopened.held([key]) == set() and reopened.held_order("9") is None
    replay(reopened, ledger.get("journal") or "")
    assert reopened.held([key]) == {key}
    held = reopened.held_order("9")
    assert held is not None and held.events == 1
    replay(reopened, ledger.get("journal") or "")  # twice is harmless
    again = reopened.held_order("9")
    assert again is not None and again.events == 1
    reopened.close()
    ledger.close()
