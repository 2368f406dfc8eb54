"""What a merchant met using the tool as they would (an outside tester's walk): each test is a
defect found that way, run through the real console script at 80 columns."""

from __future__ import annotations

import csv
import io
import json
import shlex
from pathlib import Path

import corpus
import pytest
import standin as st
from cli_helpers import free_port, in_process, run, said

from klaviyo_backfill.commands.continuation import continuation
from klaviyo_backfill.errors import ExitCode
from klaviyo_backfill.options import InputOptions, SendOptions


def _failures(folder: Path, name: str) -> list[dict[str, object]]:
    text = (folder / name).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("column", "value", "field"),
    [("Total", "-50.00", "total"), ("Lineitem price", "-19.99", "line item 1 price")],
)
def test_a_negative_total_or_price_is_rejected_not_sent_as_negative_revenue(
    tmp_path: Path, column: str, value: str, field: str
) -> None:
    """A Total of -50.00 went out as a Placed Order worth -50, a line item at -19.99 as an
    Ordered Product worth less than nothing: Klaviyo's revenue lowered, and not a word."""
    orders = corpus._clean_orders()
    corpus._patched_shopify_csv(orders, tmp_path / "orders.csv", {column: value})
    done = run(tmp_path, None, "send", "orders.csv", "--dry-run", "--output", "bodies.jsonl",
               columns=80)  # fmt: skip
    assert done.returncode == ExitCode.REJECTED, said(done)
    assert "Traceback" not in done.stdout + done.stderr
    rejected = _failures(tmp_path, "orders.failures.jsonl")
    assert len(rejected) == 1, rejected
    assert rejected[0]["line"] and str(rejected[0]["detail"]).startswith(f"{field}: "), rejected
    assert "negative" in str(rejected[0]["detail"]), rejected
    assert "-" not in " ".join(
        str(e["attributes"]["value"])
        for body in (tmp_path / "bodies.jsonl").read_text().splitlines()
        for e in _events(json.loads(body))
    )
    assert " 3 " in done.stdout.split("mapped")[1].split("\n")[0], done.stdout  # 4 read


def _events(body: dict[str, object]) -> list[dict[str, object]]:
    """The events of one bulk request body, each with its value among its attributes."""
    out: list[dict[str, object]] = []
    for job in body["data"]["attributes"]["events-bulk-create"]["data"]:  # type: ignore[index]
        out += job["attributes"]["events"]["data"]
    return out


FAST = ["--rate-limit", "100/s,1000/m", "-q"]
KEY, NEW_KEY = "pk_walk_" + "a" * 24, "pk_walk_" + "b" * 24


def _revoking(standin: st.StandIn, after: int) -> None:
    """The key revoked (a new one made) once the stand-in stored `after` requests' events."""
    store, stored = standin.store, [0]

    def revoke_after(events: list[st.StoredEvent]) -> int:
        held = store(events)
        stored[0] += 1
        if stored[0] == after:
            standin.api_key = NEW_KEY
        return held

    standin.store = revoke_after  # type: ignore[method-assign]


@pytest.mark.e2e
def test_the_log_ends_with_the_error_that_stopped_the_run(tmp_path: Path) -> None:
    """A key revoked after Klaviyo acknowledged part of a send: exit 3, and the --log file
    ended on a throttle wait, without the error that stopped the run."""
    corpus.write_shopify_csv(corpus.make_orders(40, seed=5, platform="shopify"),
                             tmp_path / "orders.csv")  # fmt: skip
    with st.StandIn(api_key=KEY, port=free_port()) as s:
        _revoking(s, after=1)
        done = run(tmp_path, KEY, "send", "orders.csv", "--base-url", s.url, "--endpoint",
                   "single", "--concurrency", "1", "--log", "run.log", *FAST, columns=80)  # fmt: skip
    assert done.returncode == ExitCode.REFUSED, said(done)
    assert "Traceback" not in done.stdout + done.stderr
    log = (tmp_path / "run.log").read_text()
    last = log.splitlines()[-1]
    assert " ERROR stopped: Klaviyo refused the API key (HTTP 403)" in last, log[-2000:]
    assert KEY not in log and NEW_KEY not in log


@pytest.mark.e2e
def test_a_key_revoked_mid_send_says_how_to_continue_with_the_new_key(tmp_path: Path) -> None:
    """Orders settled before the key was revoked: the checkpoint is kept, and the error is
    followed by the command that continues it (it said only that the key was refused); with
    the account's new key, pasted from another folder, it sends the rest and each event once."""
    corpus.write_shopify_csv(corpus.make_orders(40, seed=5, platform="shopify"),
                             tmp_path / "orders.csv")  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with st.StandIn(api_key=KEY, port=free_port()) as s:
        _revoking(s, after=12)  # a few whole orders settled (one event a request)
        done = in_process(tmp_path, KEY, "send", "orders.csv", "--base-url", s.url, "--endpoint",
                          "single", "--concurrency", "1", *FAST, clock=s.clock, columns=80)  # fmt: skip
        assert done.returncode == ExitCode.REFUSED, said(done)
        assert "When that is fixed, continue with:" in done.stderr, said(done)
        command = done.stderr.split("continue with:\n")[1].strip().splitlines()[0]
        assert command.endswith("--resume") and KEY not in done.stderr + done.stdout
        stored = len(s.events)
        assert stored > 0
        args = shlex.split(command)[1:]
        again = in_process(elsewhere, NEW_KEY, *args, clock=s.clock, columns=80)
        assert again.returncode in (ExitCode.OK, ExitCode.REJECTED), said(again)
        assert len(s.events) > stored and len(s.keys()) == len(s.events)  # each once


@pytest.mark.e2e
def test_the_printed_continuation_keeps_date_order_and_delimiter(tmp_path: Path) -> None:
    """`--since 01/06/2016 --date-order dmy`: the command printed to send the rest kept
    `--since 01/06/2016` without `--date-order`, and pasted it stopped at once (exit 2, "could
    be 1 June or 6 January"); `--delimiter` was left out the same way."""
    orders = corpus.make_orders(40, seed=5, platform="shopify")
    corpus.write_shopify_csv(orders, tmp_path / "orders.csv")
    with st.StandIn(api_key=KEY, port=free_port()) as s:
        done = run(tmp_path, KEY, "send", "orders.csv", "--since", "01/06/2016", "--date-order",
                   "dmy", "--limit", "1", "--base-url", s.url, *FAST, columns=80)  # fmt: skip
        assert done.returncode in (ExitCode.OK, ExitCode.REJECTED), said(done)
        command = done.stderr.split("send all the rest with:\n")[1].strip().splitlines()[0]
        assert "--date-order dmy" in command, command
        rest = run(Path("/"), KEY, *shlex.split(command)[1:], columns=80)
        assert rest.returncode in (ExitCode.OK, ExitCode.REJECTED), said(rest)
        status = run(Path("/"), None, "status", str(tmp_path / "orders.csv"), columns=80)
        again = status.stdout.split("sent with:\n")[1].strip().splitlines()[0]
        assert "--date-order dmy" in again, status.stdout
    assert continuation(_options("orders.csv", delimiter=";")).count("--delimiter ';'") == 1


def _options(path: str, **inputs: str) -> SendOptions:
    return SendOptions(inputs=InputOptions(paths=(path,), **inputs))  # type: ignore[arg-type]


@pytest.mark.slow  # a send and two verifies on the stand-in's clock: 3 s
@pytest.mark.e2e
def test_verify_at_80_columns_names_each_order_whole_and_says_how_to_verify_again(
    tmp_path: Path,
) -> None:
    """At 80 columns an order Klaviyo lacks ran over its line and folded to column 0
    ("  orders_export.csv:202  order 5110118576  Ordered Product 2023-07: 1 of 3" and then
    "missing" alone); the verdict said "Run `klaviyo-backfill verify` again", which, pasted,
    stops at once: "give the export PATHS the send used"."""
    orders = [o for o in corpus.make_orders(300, 17, "shopify") if o.identifiable][:150]
    corpus.write_shopify_csv(orders, tmp_path / "orders_export.csv")
    with st.StandIn(api_key=KEY, faults=st.Faults(lost_after_ack=0.03, seed=11)) as s:
        sent = in_process(tmp_path, KEY, "send", "orders_export.csv", "--base-url", s.url,
                          *FAST, clock=s.clock)  # fmt: skip
        assert sent.returncode == ExitCode.OK, said(sent)
        done = in_process(tmp_path, KEY, "verify", "orders_export.csv", "--base-url", s.url,
                          clock=s.clock, columns=80)  # fmt: skip
        assert done.returncode == ExitCode.SHORT and s.lost, said(done)
        lines = done.stdout.splitlines()
        start = lines.index(next(x for x in lines if x.startswith("Orders Klaviyo lacks")))
        named = lines[start + 1 : start + 1 + 2 * min(20, len(s.lost))]
        named = named[: next((i for i, x in enumerate(named) if not x.startswith("  ")), None)]
        assert all(len(x) <= 80 and x.startswith("  ") for x in named), "\n".join(named)
        assert any(x.startswith("    ") for x in named), "\n".join(named)  # one split in two
        again = done.stdout.split("Verify again in a few minutes:\n")[1].splitlines()[0].strip()
        assert again.startswith("klaviyo-backfill verify /") and KEY not in again, again
        pasted = in_process(Path("/"), KEY, *shlex.split(again)[1:], clock=s.clock, columns=80)
    assert pasted.returncode == ExitCode.SHORT, said(pasted)
    assert pasted.stdout.count("order ") == done.stdout.count("order "), said(pasted)


@pytest.mark.slow  # two sends and a verify on the stand-in's clock: 3 s
@pytest.mark.e2e
def test_the_verdict_counts_the_events_missing_order_by_order(tmp_path: Path) -> None:
    """Another export's events in the same months fill the monthly rows: 46 events were
    missing order by order, named above, and the verdict said "(2 event(s) missing; 46
    order(s) named above)"."""
    orders = [o for o in corpus.make_orders(160, 17, "shopify") if o.identifiable]
    corpus.write_shopify_csv(orders[1::2], tmp_path / "other.csv")
    corpus.write_shopify_csv(orders[::2], tmp_path / "orders.csv")
    with st.StandIn(api_key=KEY) as s:
        for name in ("other.csv", "orders.csv"):
            sent = in_process(tmp_path, KEY, "send", name, "--base-url", s.url, *FAST,
                              clock=s.clock)  # fmt: skip
            assert sent.returncode == ExitCode.OK, said(sent)
            s.faults = st.Faults(lost_after_ack=0.05, seed=11)  # the second export's lose some
        done = in_process(tmp_path, KEY, "verify", "orders.csv", "--base-url", s.url, "--json",
                          "v.json", clock=s.clock, columns=80)  # fmt: skip
    missing = json.loads((tmp_path / "v.json").read_text())["per_order"]["events_missing"]
    assert done.returncode == ExitCode.SHORT and missing > 0, said(done)
    verdict = " ".join(done.stdout[done.stdout.index("SHORT: ") :].split())
    assert f"({missing:,} event(s) missing;" in verdict, verdict


@pytest.mark.slow  # two sends and a verify on the stand-in's clock: 2 s
@pytest.mark.e2e
def test_verify_of_an_unfinished_job_prints_its_continuation_whole(tmp_path: Path) -> None:
    """An unfinished job's verdict folded the command that continues it into its sentence
    ("Continue it with: klaviyo-backfill" / "send /tmp/... --base-url" / "http://..."): no
    line of it could be pasted; and it counted "0 event(s) missing" from the monthly rows
    while the orders read one by one lacked some."""
    orders = [o for o in corpus.make_orders(160, 17, "shopify") if o.identifiable]
    corpus.write_shopify_csv(orders[1::2], tmp_path / "other.csv")
    corpus.write_shopify_csv(orders[::2], tmp_path / "orders.csv")
    with st.StandIn(api_key=KEY) as s:
        for name, *extra in (("other.csv",), ("orders.csv", "--limit", "50")):
            sent = in_process(tmp_path, KEY, "send", name, "--base-url", s.url, *extra, *FAST,
                              clock=s.clock)  # fmt: skip
            assert sent.returncode == ExitCode.OK, said(sent)
            s.faults = st.Faults(lost_after_ack=0.05, seed=11)  # the second export's lose some
        done = in_process(tmp_path, KEY, "verify", "orders.csv", "--base-url", s.url, "--json",
                          "v.json", clock=s.clock, columns=80)  # fmt: skip
        doc = json.loads((tmp_path / "v.json").read_text())
        assert doc["unfinished"] and doc["per_order"]["events_missing"] > 0, said(done)
        verdict = " ".join(done.stdout[done.stdout.index("UNFINISHED: ") :].split())
        assert f"({doc['per_order']['events_missing']:,} event(s) missing)" in verdict, verdict
        command = done.stdout.split("Continue it with:\n")[1].splitlines()[0].strip()
        assert command == doc["continue_with"], done.stdout
        rest = run(Path("/"), KEY, *shlex.split(command)[1:], columns=80)
    assert rest.returncode == ExitCode.OK, said(rest)


@pytest.mark.e2e
def test_a_failures_file_that_cannot_be_created_is_not_called_a_full_disk(tmp_path: Path) -> None:
    """A dry run from a folder it may not write in (`cd /`, a read-only share) stopped on
    "failures file orders.failures.jsonl could not be written: No such file or directory" and
    said "Free some space there": the disk was not full, and the file was named without the
    folder it was to be in."""
    corpus._patched_shopify_csv(corpus._clean_orders(), tmp_path / "orders.csv",
                                {"Total": "-1.00"})  # fmt: skip
    done = run(tmp_path, None, "send", "orders.csv", "--dry-run", "--failures", "nowhere/f.jsonl",
               columns=80)  # fmt: skip
    assert done.returncode == ExitCode.USAGE, said(done)
    assert f"{tmp_path / 'nowhere' / 'f.jsonl'} could not be written" in done.stderr, said(done)
    assert "space" not in done.stderr and "--failures FILE" in done.stderr, said(done)


@pytest.mark.slow  # a send, a verify and a repair on the stand-in's clock: 3 s
@pytest.mark.e2e
def test_a_repair_does_not_call_the_orders_it_skips_held_as_sent(tmp_path: Path) -> None:
    """A repair's summary counted every order not in its file as "skipped: held as sent (not
    in the repair)": the export's orders the send had rejected (nobody to attribute them to)
    among them, which Klaviyo never held."""
    orders = corpus.make_orders(200, 17, "shopify")
    unsendable = sum(not o.identifiable for o in orders)
    corpus.write_shopify_csv(orders, tmp_path / "orders.csv")
    with st.StandIn(api_key=KEY, faults=st.Faults(lost_after_ack=0.03, seed=11)) as s:
        sent = in_process(tmp_path, KEY, "send", "orders.csv", "--base-url", s.url, *FAST,
                          clock=s.clock)  # fmt: skip
        assert sent.returncode == ExitCode.REJECTED and unsendable, said(sent)
        done = in_process(tmp_path, KEY, "verify", "orders.csv", "--base-url", s.url, "--json",
                          "v.json", clock=s.clock)  # fmt: skip
        command = json.loads((tmp_path / "v.json").read_text())["repair_command"]
        assert command, said(done)
        repaired = in_process(Path("/"), KEY, *shlex.split(command)[1:], "--summary-json",
                              str(tmp_path / "r.json"), *FAST, clock=s.clock)  # fmt: skip
    assert repaired.returncode == ExitCode.OK, said(repaired)
    summary = json.loads((tmp_path / "r.json").read_text())
    assert summary["orders_read"] == len(orders), summary
    rest = summary["orders_read"] - summary["orders_mapped"] - summary["orders_rejected"]
    assert summary["skipped"] == {"not listed in the repair file": rest} and rest > unsendable


@pytest.mark.e2e
def test_status_of_every_job_sets_the_jobs_apart(tmp_path: Path) -> None:
    """`status` without a path ran one job's block into the next: the command that continues
    one job, then at once the next one's " Account" line (no rule, no blank line)."""
    orders = [o for o in corpus.make_orders(40, seed=5, platform="shopify") if o.identifiable]
    corpus.write_shopify_csv(orders[:10], tmp_path / "march.csv")
    corpus.write_shopify_csv(orders[10:], tmp_path / "april.csv")
    with st.StandIn(api_key=KEY, port=free_port()) as s:
        for name in ("march.csv", "april.csv"):
            sent = in_process(tmp_path, KEY, "send", name, "--base-url", s.url, *FAST,
                              clock=s.clock)  # fmt: skip
            assert sent.returncode == ExitCode.OK, said(sent)
    listed = run(Path("/"), None, "status", columns=80)
    assert listed.returncode == ExitCode.OK, said(listed)
    blocks = listed.stdout.split("\n\n")
    assert len(blocks) == 3 and blocks[0].startswith("Jobs in "), listed.stdout  # then 2 jobs
    assert all(b.lstrip().startswith("Account") for b in blocks[1:]), listed.stdout


def _stray_quote(path: Path) -> int:
    """A '"' opening the last field of an order's row whose next row is another order's: the
    physical line of that row."""
    lines = path.read_bytes().split(b"\r\n")
    for i in range(1, len(lines) - 1):
        here, there = lines[i].split(b",", 1)[0], lines[i + 1].split(b",", 1)[0]
        if (
            here.startswith(b"#")
            and there.startswith(b"#")
            and here != there
            and b'"' not in lines[i]
        ):
            head, last = lines[i].rsplit(b",", 1)
            lines[i] = head + b',"' + last
            path.write_bytes(b"\r\n".join(lines))
            return i + 1
    raise AssertionError("no row to spoil")


@pytest.mark.e2e
def test_a_stray_quote_that_swallows_the_next_order_stops_the_file(tmp_path: Path) -> None:
    """A '"' left in one row's last field joined it with the next order's row: that order
    was read as part of a field and never counted (2,499 orders read of 2,500, no
    rejection, no warning)."""
    orders = [o for o in corpus.make_orders(60, seed=5, platform="shopify") if o.identifiable]
    corpus.write_shopify_csv(orders, tmp_path / "orders.csv")
    line = _stray_quote(tmp_path / "orders.csv")
    done = run(tmp_path, None, "send", "orders.csv", "--dry-run", columns=80)
    assert done.returncode == ExitCode.USAGE, said(done)
    assert f"orders.csv:{line}: " in done.stderr and "stray" in done.stderr, said(done)
    assert "Traceback" not in done.stderr


@pytest.mark.e2e
def test_multi_line_notes_and_a_trailing_empty_column_are_no_stray_quote(tmp_path: Path) -> None:
    orders = [o for o in corpus.make_orders(60, seed=5, platform="shopify") if o.identifiable]
    corpus.write_shopify_csv(orders, tmp_path / "orders.csv")
    text = (tmp_path / "orders.csv").read_text(encoding="utf-8")
    assert "\n" in "".join(c for row in csv.reader(io.StringIO(text)) for c in row), "no note"
    (tmp_path / "orders.csv").write_text(text.replace("\r\n", ",\r\n"), encoding="utf-8")
    done = run(tmp_path, None, "send", "orders.csv", "--dry-run", columns=80)
    assert done.returncode == ExitCode.OK, said(done)
    read = done.stdout.split("Orders read")[1].split("\n")[0]
    assert f" {len(orders)} " in read, done.stdout


@pytest.mark.e2e
def test_a_csv_sorted_in_a_spreadsheet_says_its_rows_must_be_adjacent(tmp_path: Path) -> None:
    """A Shopify export sorted by SKU in a spreadsheet: each order's later rows (Name, Email,
    Created at and the line item: no Total, Currency or status) were rejected as "total:
    missing order total", hundreds of them, without a word of why."""
    orders = [o for o in corpus.make_orders(60, seed=5, platform="shopify") if o.identifiable]
    corpus.write_shopify_csv(orders, tmp_path / "orders.csv")
    rows = list(csv.reader(io.StringIO((tmp_path / "orders.csv").read_text(encoding="utf-8"))))
    sku = rows[0].index("Lineitem sku")
    with open(tmp_path / "sorted.csv", "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([rows[0], *sorted(rows[1:], key=lambda r: r[sku])])
    done = run(tmp_path, None, "send", "sorted.csv", "--dry-run", columns=80)
    assert done.returncode == ExitCode.REJECTED, said(done)
    reasons = {str(r["detail"]) for r in _failures(tmp_path, "sorted.failures.jsonl")}
    assert reasons and all("must be adjacent" in r for r in reasons), reasons


@pytest.mark.e2e
def test_a_binary_file_is_not_called_utf_16(tmp_path: Path) -> None:
    """A program's file saved as orders.csv: "The file looks like UTF-16: try --encoding
    utf-16."; tried, "cannot be decoded as utf-16 ... The file looks like UTF-16: try
    --encoding utf-16." again."""
    blob = bytes(range(256)) * 8 + b"\x00\x00\x01\x00" * 300  # an executable's bytes, say
    (tmp_path / "orders.csv").write_bytes(b"\x7fELF\x02\x01\x01\x00" + blob)
    for extra in ([], ["--encoding", "utf-16"]):
        done = run(tmp_path, None, "send", "orders.csv", "--dry-run", *extra, columns=80)
        assert done.returncode == ExitCode.USAGE, said(done)
        assert "orders.csv" in done.stderr and "UTF-16" not in done.stderr, said(done)
        assert "not text" in done.stderr, said(done)


@pytest.mark.slow  # a send and a preflight on the stand-in's clock: 1.5 s
@pytest.mark.e2e
def test_preflight_of_next_months_export_counts_what_the_account_holds(tmp_path: Path) -> None:
    """Next month's export (the old orders and new ones) to an account that holds the old:
    preflight said "(40 would be sent)" and a request count for all of them; the send then
    skipped the 30 the account held. A merchant reading 40 fears them counted twice."""
    orders = [o for o in corpus.make_orders(60, seed=5, platform="shopify") if o.identifiable]
    corpus.write_shopify_csv(orders[:30], tmp_path / "orders.csv")
    with st.StandIn(api_key=KEY) as s:
        first = in_process(tmp_path, KEY, "send", "orders.csv", "--base-url", s.url, *FAST,
                           clock=s.clock)  # fmt: skip
        assert first.returncode == ExitCode.OK, said(first)
        corpus.write_shopify_csv(orders, tmp_path / "orders.csv")  # next month's, saved over
        done = in_process(tmp_path, KEY, "preflight", "orders.csv", "--base-url", s.url,
                          "--json", "p.json", clock=s.clock, columns=80)  # fmt: skip
    assert done.returncode == ExitCode.OK, said(done)
    assert json.loads((tmp_path / "p.json").read_text())["held_by_this_account"] == 30
    text = " ".join(done.stdout.split())
    assert f"{len(orders)} ({len(orders)} would be sent; 30 of them this" in text, text


@pytest.mark.e2e
def test_a_time_zone_in_the_wrong_case_is_named_as_it_is_spelt(tmp_path: Path) -> None:
    """`--timezone europe/berlin`: "unknown time zone", and an example, America/New_York; the
    zone meant is one letter's case away."""
    corpus.write_woo_csv(corpus.make_orders(5, seed=5, platform="woocommerce"),
                         tmp_path / "orders.csv")  # fmt: skip
    done = run(tmp_path, None, "send", "orders.csv", "--dry-run", "--timezone", "europe/berlin",
               columns=80)  # fmt: skip
    assert done.returncode == ExitCode.USAGE, said(done)
    assert "Europe/Berlin" in done.stderr, said(done)


@pytest.mark.e2e
@pytest.mark.parametrize("again", [[], ["--resume"]], ids=["rerun", "resume"])
def test_an_export_saved_over_an_unfinished_job_is_named_and_restart_sends_it(
    tmp_path: Path, again: list[str]
) -> None:
    """A job stopped part-way (here at --limit), then next month's export saved over the file:
    a rerun or --resume said the checkpoint 'belongs to another run' (or printed a --resume
    that said so). Now: the file changed since the job began, and the command that sends it
    (--restart), which, pasted from another folder, sends every order once."""
    orders = corpus.make_orders(60, seed=5, platform="shopify")
    export = tmp_path / "orders_export.csv"
    corpus.write_shopify_csv(orders[:40], export)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with st.StandIn(api_key=KEY, port=free_port()) as s:
        first = in_process(tmp_path, KEY, "send", export.name, "--limit", "5", "--base-url",
                           s.url, *FAST, clock=s.clock, columns=80)  # fmt: skip
        assert first.returncode in (ExitCode.OK, ExitCode.REJECTED), said(first)
        corpus.write_shopify_csv(orders, export)  # next month's, saved over it
        done = run(tmp_path, KEY, "send", export.name, *again, "--base-url", s.url, *FAST,
                   columns=80)  # fmt: skip
        err = " ".join(done.stderr.split())
        assert done.returncode == ExitCode.USAGE, said(done)
        assert f"{export} changed since the unfinished job" in err, said(done)
        assert "belongs to another run" not in err and "--resume" not in done.stderr
        command = done.stderr.split("Send it with:\n")[1].strip().splitlines()[0]
        assert command.endswith("--restart"), command
        if again:
            return  # the same command as the rerun's, which the rerun's case sends
        sent = in_process(elsewhere, KEY, *shlex.split(command)[1:], clock=s.clock, columns=80)
        assert sent.returncode in (ExitCode.OK, ExitCode.REJECTED), said(sent)
        whole = st.StandIn(api_key=KEY)  # what the new export sends, alone, into an account
        with whole:
            alone = in_process(elsewhere, KEY, "send", str(export), "--base-url", whole.url,
                               *FAST, clock=whole.clock)  # fmt: skip
            assert alone.returncode in (ExitCode.OK, ExitCode.REJECTED), said(alone)
            expected = whole.keys()
        held = s.keys()
        assert held == expected and len(held) == len(s.events)  # all of it, each once
