"""The command line through click's CliRunner: dry run, output, filters, exit codes."""

from __future__ import annotations

import csv
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import corpus
import pytest
from cli_helpers import CLI, SAMPLES
from click.testing import CliRunner

from klaviyo_backfill.cli import main


def bodies(text: str) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def placed(tmp_path: Path, *args: str) -> list[dict]:  # type: ignore[type-arg]
    """The Placed Order events a single-endpoint dry run over `args` would send."""
    out = tmp_path / "o.jsonl"
    run("send", *args, "--dry-run", "--endpoint", "single", "--output", str(out),
        "--failures", str(tmp_path / "f"))  # fmt: skip
    events = [b["data"]["attributes"] for b in bodies(out.read_text())]
    return [e for e in events if e["metric"]["data"]["attributes"]["name"] == "Placed Order"]


def dry_run_rows(tmp_path: Path, rows: list[str], *args: str) -> tuple[int, str, list[dict]]:  # type: ignore[type-arg]
    """Write `rows` as orders.csv, dry-run it: (exit code, stdout, the failures file's rows)."""
    export = tmp_path / "orders.csv"
    export.write_text("\n".join(rows) + "\n")
    failures = tmp_path / "f.jsonl"
    code, out, _ = run("send", str(export), "--dry-run", "--failures", str(failures), *args)
    lines = failures.read_text().splitlines() if failures.exists() else []
    return code, out, [json.loads(line) for line in lines]


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    return corpus.write_shopify_csv(corpus.make_orders(60, 7, "shopify"), tmp_path / "shop.csv")


def test_dry_run_of_sample_data_previews_summarises_and_exits_0(tmp_path: Path) -> None:
    failures = tmp_path / "f.jsonl"
    code, out, _ = run("send", str(SAMPLES), "--dry-run", "--failures", str(failures))
    assert code == 0  # the README's first command
    assert "Preview: the first event of each metric" in out
    assert "Placed Order" in out and "Revenue USD" in out
    assert "do not add up" not in out and "read = mapped" not in out  # no jargon when they do
    assert not failures.exists()


def test_rejected_orders_go_to_the_failures_file_and_exit_1(tmp_path: Path) -> None:
    failures = tmp_path / "f.jsonl"
    export = SAMPLES / "problems" / "shopify_orders_with_problems.csv"
    code, out, _ = run("send", str(export), "--dry-run", "--failures", str(failures))
    assert code == 1
    rejected = [json.loads(r) for r in failures.read_text().splitlines()]
    assert rejected and all(r["reason"] and r["source"] == str(export) for r in rejected)
    assert f"{len(rejected)} rejected orders written to {failures}" in " ".join(out.split())


def test_a_clean_rerun_leaves_no_failures_file_from_the_run_before(
    shop: Path, tmp_path: Path
) -> None:
    failures = tmp_path / "f.jsonl"
    problems = SAMPLES / "problems" / "shopify_orders_with_problems.csv"
    assert run("send", str(problems), "--dry-run", "--failures", str(failures))[0] == 1
    assert failures.read_text()
    clean = corpus.write_shopify_csv(
        [o for o in corpus.make_orders(20, 9, "shopify") if o.identifiable], tmp_path / "ok.csv"
    )
    code, out, _ = run("send", str(clean), "--dry-run", "--failures", str(failures))
    assert code == 0, out
    assert not failures.exists()


def test_summary_json_is_written_by_a_dry_run_and_checked_before_any_work(
    shop: Path, tmp_path: Path
) -> None:
    summary = tmp_path / "summary.json"
    failures = tmp_path / "f.jsonl"
    code, _, _ = run("send", str(shop), "--dry-run", "--failures", str(failures),
                     "--summary-json", str(summary))  # fmt: skip
    written = json.loads(summary.read_text())
    assert written["dry_run"] is True and written["orders_read"] == 60
    rejected = len(failures.read_text().splitlines())
    assert written["orders_read"] == written["orders_mapped"] + rejected + sum(
        written["skipped"].values()
    )
    assert code == (1 if rejected else 0)
    failures.unlink()
    nowhere = tmp_path / "no-such-folder" / "summary.json"
    code, out, err = run("send", str(shop), "--dry-run", "--failures", str(failures),
                         "--summary-json", str(nowhere))  # fmt: skip
    assert code == 2 and f"--summary-json {nowhere} cannot be written" in out + err
    assert not failures.exists()  # stopped before reading a single order


def test_a_layout_that_names_its_zone_is_not_warned_about_naive_times(tmp_path: Path) -> None:
    cart = SAMPLES / "custom_cart"
    code, out, _ = run("send", str(cart / "orders.csv"), "--layout", str(cart / "layout.toml"),
                       "--dry-run", "--failures", str(tmp_path / "f"))  # fmt: skip
    assert code == 0 and "Orders read" in out
    assert "naive time" not in out  # the layout says America/Chicago: nothing was guessed
    code, out, _ = run("send", str(cart / "orders.csv"), "--layout", str(cart / "layout.toml"),
                       "--dry-run", "--failures", str(tmp_path / "f"), "--endpoint", "single",
                       "--output", str(tmp_path / "o.jsonl"))  # fmt: skip
    first = json.loads((tmp_path / "o.jsonl").read_text().splitlines()[0])
    assert first["data"]["attributes"]["time"] == "2022-02-01T06:17:00+00:00"  # 00:17 CST


def test_naive_times_are_warned_of_only_when_the_zone_was_guessed(tmp_path: Path) -> None:
    woo = str(SAMPLES / "woocommerce_orders.csv")  # its dates carry no offset
    guessed = run("send", woo, "--dry-run", "--currency", "EUR", "--failures", str(tmp_path / "f"),
                  "--preview", "1")  # fmt: skip
    named = run("send", woo, "--dry-run", "--currency", "EUR", "--failures", str(tmp_path / "f"),
                "--timezone", "UTC", "--preview", "1")  # fmt: skip
    assert "naive time read as UTC" in guessed[1]
    assert "naive time" not in named[1]
    preview = [out.split("Dry run: nothing was sent")[0] for _, out, _ in (guessed, named)]
    assert preview[0] == preview[1] and '"time"' in preview[0]  # the same times either way


def test_inspect_json_keeps_warning_examples_apart_from_rejections_and_yen_has_no_cents(
    tmp_path: Path,
) -> None:
    rows = ["Name,Email,Financial Status,Currency,Total,Created at,Lineitem quantity,"
            "Lineitem name,Lineitem price",
            "#1,a@example.com,paid,JPY,1250,2021-06-01 12:00:00 +0000,1,Tea,1250",
            "#2,,paid,JPY,990,2021-06-02 12:00:00 +0000,1,Tea,990",
            "#3,c@example.com,paid,JPY,990,2021-06-03 12:00:00,1,Tea,990"]  # fmt: skip
    code, out, rejected = dry_run_rows(tmp_path, rows)
    assert code == 1 and "Revenue JPY" in out and "2,240" in out and "2,240.00" not in out
    details = [r["detail"] for r in rejected]
    assert details and not any(d.endswith("(None)") for d in details), details
    code, out, _ = run("inspect", str(tmp_path / "orders.csv"), "--json")
    report = json.loads(out)
    assert code == 1 and report["rejected"] and report["warnings"]
    assert set(report["rejected_examples"]) == set(report["rejected"])
    assert set(report["warning_examples"]) == set(report["warnings"])


def test_output_dash_puts_bodies_on_stdout_and_the_report_on_stderr(
    shop: Path, tmp_path: Path
) -> None:
    code, out, err = run(
        "send", str(shop), "--dry-run", "--output", "-", "--failures", str(tmp_path / "f")
    )
    assert code in (0, 1)
    lines = out.splitlines()
    assert lines and all(line.startswith('{"data":') for line in lines)
    assert "Dry run" in err


def test_limit_takes_the_first_n_orders(shop: Path, tmp_path: Path) -> None:
    """--limit N sends the first N orders that can be sent, in file order (newest first here,
    so neither id nor date order): an order rejected among them does not count."""
    with shop.open(newline="", encoding="utf-8") as fh:
        in_file = [row["Id"] for row in csv.DictReader(fh) if row["Total"]]  # first rows only
    truth = {o.id: o for o in corpus.make_orders(60, 7, "shopify")}
    sendable = [i for i in in_file if truth[i].identifiable]
    assert not all(truth[i].identifiable for i in in_file[:5]), "one of the first 5 is rejected"
    assert sendable[:5] != sorted(sendable)[:5]
    events = placed(tmp_path, str(shop), "--limit", "5")
    assert [e["properties"]["OrderId"] for e in events] == sendable[:5]
    out = bodies((tmp_path / "o.jsonl").read_text())
    assert {b["data"]["attributes"]["properties"]["OrderId"] for b in out} == set(sendable[:5])


def test_since_and_until_filter_on_order_time(shop: Path, tmp_path: Path) -> None:
    events = placed(tmp_path, str(shop), "--since", "2019-01-01", "--until", "2021-01-01")
    assert events
    assert all("2019-01-01" <= e["time"] < "2021-01-02" for e in events)  # through that day


@pytest.mark.parametrize(
    ("args", "floor"),
    [([], 1990), (["--revision", "2026-05-01"], 2000), (["--revision", "2026-07-15.pre"], 1990),
     (["--revision", "2026-05-01", "--endpoint", "legacy"], 1990)],
)  # fmt: skip
def test_the_time_floor_is_the_revisions(tmp_path: Path, args: list[str], floor: int) -> None:
    """Revisions before 2026-07-15 refuse events before 2000; the Track API has no revision."""
    rows = ["Name,Email,Financial Status,Currency,Total,Created at,Lineitem quantity,"
            "Lineitem name,Lineitem price"]  # fmt: skip
    rows += [f"#{year},c{year}@example.com,paid,USD,5.00,{year}-06-01 12:00:00 +0000,1,Tee,5.00"
             for year in (1989, 1995, 2001)]  # fmt: skip
    code, _, rejected = dry_run_rows(tmp_path, rows, *args)
    assert code == 1
    assert [r["order_id"] for r in rejected] == [f"#{y}" for y in (1989, 1995) if y < floor]
    assert all(r["reason"].startswith(f"before {floor}, ") for r in rejected)
    assert all(r["line"] == 2 + (1989, 1995).index(int(r["order_id"][1:])) for r in rejected)


def test_later_dates_past_a_year_ahead_reject_the_order_and_big_refunds_are_warned(
    tmp_path: Path,
) -> None:
    """Klaviyo refuses any event over a year ahead, not only a Placed Order: a fulfilment or
    refund dated so is rejected with its field, as a creation date is; a refund larger than the
    order's total goes through with a warning."""
    ahead = (datetime.now(UTC) + timedelta(days=800)).strftime("%Y-%m-%d %H:%M:%S +0000")
    rows = ["Name,Email,Financial Status,Currency,Total,Created at,Fulfilled at,Refunded Amount,"
            "Lineitem quantity,Lineitem name,Lineitem price",
            f"#1,a@example.com,paid,USD,10.00,2021-06-01 12:00:00 +0000,{ahead},,1,Tee,10.00",
            "#2,b@example.com,refunded,USD,10.00,2021-06-01 12:00:00 +0000,,50.00,1,Tee,10.00",
            "#3,c@example.com,paid,USD,10.00,2021-06-01 12:00:00 +0000,,,1,Tee,10.00"]  # fmt: skip
    code, out, (rejected,) = dry_run_rows(tmp_path, rows)
    assert code == 1
    assert (rejected["order_id"], rejected["line"]) == ("#1", 2)
    assert rejected["detail"].startswith("fulfilled_at: more than a year in the future")
    assert "refunded more than the order total" in " ".join(out.split())


def test_a_quantity_in_non_ascii_digits_rejects_its_order_and_the_run_goes_on(
    tmp_path: Path,
) -> None:
    """'²' passes str.isdigit() but not int(): it stopped the whole run with a traceback."""
    summary = tmp_path / "summary.json"
    rows = ["Name,Email,Financial Status,Currency,Total,Created at,Lineitem quantity,"
            "Lineitem name,Lineitem price",
            "#1,a@example.com,paid,USD,10.00,2021-06-01 12:00:00 +0000,1,Tee,10.00",
            "#2,b@example.com,paid,USD,20.00,2021-06-02 12:00:00 +0000,²,Tee,10.00",
            "#3,c@example.com,paid,USD,10.00,2021-06-03 12:00:00 +0000,1,Tee,10.00"]  # fmt: skip
    code, _, rejected = dry_run_rows(tmp_path, rows, "--summary-json", str(summary))
    assert code == 1
    assert [(r["source"], r["line"], r["order_id"]) for r in rejected] == [
        (str(tmp_path / "orders.csv"), 3, "#2")
    ]
    assert rejected[0]["detail"] == "line item 1 quantity: not a quantity ('²')"
    written = json.loads(summary.read_text())
    assert (written["orders_read"], written["orders_mapped"]) == (3, 2)


def test_an_order_whose_rows_are_apart_is_said_to_be_so(tmp_path: Path) -> None:
    rows = ["Name,Id,Email,Financial Status,Currency,Total,Created at,Lineitem quantity,"
            "Lineitem name,Lineitem price,Lineitem sku",
            "#4,104,a@example.com,paid,USD,30.00,2021-06-01 12:00:00 +0000,1,Tee,10.00,T1",
            "#5,105,b@example.com,paid,USD,10.00,2021-06-02 12:00:00 +0000,1,Tee,10.00,T1",
            "#4,,,,,,,2,Cap,10.00,C1"]  # fmt: skip
    code, _, (rejected,) = dry_run_rows(tmp_path, rows)
    assert code == 1 and (rejected["order_id"], rejected["line"]) == ("#4", 4)
    assert "rows of one order must be adjacent" in rejected["reason"]


def test_backfill_flag_is_set_unless_trigger_flows(shop: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    run("send", str(shop), "--dry-run", "--output", str(out), "--failures", str(tmp_path / "f"))
    events = [e for b in bodies(out.read_text()) for p in b["data"]["attributes"]["events-bulk-create"]["data"]
              for e in p["attributes"]["events"]["data"]]  # fmt: skip
    assert events and all(e["attributes"]["backfill"] is True for e in events)
    run(
        "send",
        str(shop),
        "--dry-run",
        "--trigger-flows",
        "--output",
        str(out),
        "--failures",
        str(tmp_path / "f"),
    )
    assert '"backfill"' not in out.read_text()


def test_overlapping_exports_map_each_order_once(tmp_path: Path) -> None:
    orders = corpus.make_orders(30, 8, "shopify")
    a = corpus.write_shopify_csv(orders[:20], tmp_path / "a.csv")
    b = corpus.write_shopify_json(orders[10:], tmp_path / "b.json")
    ids = [e["unique_id"] for e in placed(tmp_path, str(a), str(b))]
    # the JSON export's orders with a customer and no email or phone go by its customer id
    sendable = [o.identifiable or (i >= 20 and o.customer_id) for i, o in enumerate(orders)]
    assert len(ids) == len(set(ids)) == sum(map(bool, sendable))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--timezone", "Mars/Olympus"], "unknown time zone"),
        (["--since", "someday"], "--since"),
        (["--revision", "2025-01-15"], "backfill"),
        (["--rate-limit", "fast"], "--rate-limit"),
        (["--currency", "EURO"], "--currency 'EURO' is not an ISO 4217 code"),
        (["--currency", "XYZ"], "--currency 'XYZ' is not an ISO 4217 code"),
        (["--since", "2021-01-01", "--until", "2020-01-01"], "is not before --until"),
    ],
)
def test_bad_options_exit_2_with_a_message(shop: Path, args: list[str], message: str) -> None:
    code, out, err = run("send", str(shop), "--dry-run", *args)
    assert code == 2
    assert message in out + err


def test_send_without_key_exits_2_naming_the_variable(
    shop: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KLAVIYO_API_KEY", raising=False)
    code, out, err = run("send", str(shop), "--base-url", "http://127.0.0.1:9")
    assert code == 2
    assert "KLAVIYO_API_KEY" in out + err


def test_plain_http_to_another_host_is_refused(shop: Path) -> None:
    code, out, err = run("send", str(shop), "--base-url", "http://example.com", "--api-key", "pk_x")
    assert code in (2, 3)
    assert "https" in out + err


def test_output_to_an_unwritable_place_is_a_message_not_a_traceback(
    shop: Path, tmp_path: Path
) -> None:
    code, out, err = run(
        "send",
        str(shop),
        "--dry-run",
        "--failures",
        str(tmp_path / "f"),
        "--output",
        str(tmp_path / "no" / "such" / "dir.jsonl"),
    )
    assert code == 2
    assert "No such file or directory" in out + err
    assert "Traceback" not in out + err


@pytest.mark.e2e
def test_output_piped_into_head_ends_quietly(tmp_path: Path) -> None:
    import subprocess

    shop = corpus.write_shopify_csv(corpus.make_orders(400, 9, "shopify"), tmp_path / "big.csv")
    pipeline = f"'{CLI}' send '{shop}' --dry-run --output - --failures '{tmp_path / 'f'}' | head -c 100 > /dev/null"
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c", pipeline], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr  # pipefail: the tool's own exit code
    assert "Traceback" not in result.stderr
    assert "BrokenPipe" not in result.stderr


def test_a_layout_or_a_column_with_a_currency_that_is_no_iso_4217_code(tmp_path: Path) -> None:
    """Three letters were taken for a code: `--currency XYZ` went out as the currency of
    every order. A layout's `[options] currency` stops the run naming the layout; a column's
    value rejects its order."""
    export = SAMPLES / "custom_cart" / "orders.csv"
    layout = (SAMPLES / "custom_cart" / "layout.toml").read_text()
    bad = tmp_path / "layout.toml"
    bad.write_text(layout.replace('currency = "USD"', 'currency = "XYZ"'))
    code, out, err = run("send", str(export), "--layout", str(bad), "--dry-run")
    assert code == 2 and "[options] currency 'XYZ' is not an ISO 4217 code" in out + err
    assert run("send", str(export), "--layout", str(bad), "--currency", "usd", "--dry-run")[0] == 2
    code, out, rows = dry_run_rows(
        tmp_path,
        ["Name,Email,Financial Status,Currency,Total,Created at,Lineitem quantity,"
         "Lineitem name,Lineitem price,Lineitem sku,Id",
         "#1,a@example.com,paid,XYZ,10.00,2024-03-01 10:00:00 +0000,1,Tee,10.00,T,1",
         "#2,b@example.com,paid,chf,10.00,2024-03-01 10:00:00 +0000,1,Tee,10.00,T,2"],
    )  # fmt: skip
    assert code == 1 and [(r["order_id"], r["reason"]) for r in rows] == [
        ("1", "not an ISO 4217 currency code")
    ]


@pytest.mark.parametrize(
    ("export", "code"),
    [("shopify_orders_export.csv", 0), ("problems/shopify_orders_with_problems.csv", 1)],
)
def test_inspect_and_a_dry_run_exit_alike(tmp_path: Path, export: str, code: int) -> None:
    """One rule for both: 1 when an order would be rejected, else 0 (inspect said 0)."""
    path = str(SAMPLES / export)
    assert run("send", path, "--dry-run", "--failures", str(tmp_path / "f"))[0] == code
    assert run("inspect", path)[0] == code
    assert run("inspect", path, "--json")[0] == code


@pytest.mark.parametrize("width", [60, 80])
def test_inspect_never_breaks_a_file_line_example(
    width: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At 80 columns the examples column folded `shopify.csv:2` / `4,`."""
    monkeypatch.chdir(SAMPLES)
    export = "problems/shopify_orders_with_problems.csv"
    report = json.loads(run("inspect", export, "--json")[1])
    places = [p for kind in ("rejected_examples", "warning_examples") for ps in report[kind].values()
              for p in ps]  # fmt: skip
    assert len(places) >= 4
    out = CliRunner().invoke(main, ["inspect", export], env={"COLUMNS": str(width)}).stdout
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= width
    for place in places:
        assert any(line.strip(" │").strip() == place for line in lines), (place, out)


def test_a_dry_run_previews_one_event_per_metric_and_n_full_events_on_request(
    tmp_path: Path,
) -> None:
    """The dry run opened with 425 lines of JSON (one request body, cut to one profile)."""
    f = str(tmp_path / "f")
    out = CliRunner().invoke(main, ["send", str(SAMPLES), "--dry-run", "--failures", f],
                             env={"COLUMNS": "80"}).stdout  # fmt: skip
    preview = out.split("Dry run: nothing was sent")[0].splitlines()
    assert len(preview) <= 60, "\n".join(preview)
    metrics = ["Placed Order", "Ordered Product", "Fulfilled Order", "Cancelled Order",
               "Refunded Order"]  # fmt: skip
    headings = [line.split(" ")[0] + " " + line.split(" ")[1] for line in preview
                if line.split(" ")[:2] and " ".join(line.split(" ")[:2]) in metrics]  # fmt: skip
    assert headings == metrics
    assert "--preview N" in " ".join(preview)

    bodies_out = tmp_path / "bodies.jsonl"
    code, out, _ = run("send", str(SAMPLES), "--dry-run", "--failures", f, "--preview", "1",
                       "--output", str(bodies_out))  # fmt: skip
    assert code == 0
    first = json.loads(bodies_out.read_text().splitlines()[0])
    entries = first["data"]["attributes"]["events-bulk-create"]["data"]
    assert len(entries) > 1  # a body holds many events; --preview 1 shows one (a whole body
    assert out.count('"metric": {') == 1, out  # was 6,102 lines), in full
    three = run("send", str(SAMPLES), "--dry-run", "--failures", f, "--preview", "3")[1]
    assert three.count('"metric": {') == 3 and "Preview: the first 3 events" in three
    none = run("send", str(SAMPLES), "--dry-run", "--failures", f, "--preview", "0")[1]
    assert "Preview" not in none and "Dry run: nothing was sent" in none


def test_a_refund_without_a_date_names_the_date_it_took(tmp_path: Path) -> None:
    """The warning said "dated by the documented rule" without saying which date."""
    head = ("Name,Email,Financial Status,Currency,Total,Refunded Amount,Created at,Cancelled at,"
            "Lineitem quantity,Lineitem name,Lineitem price,Lineitem sku,Id")  # fmt: skip
    at, later = "2024-03-01 10:00:00 +0000", "2024-03-02 10:00:00 +0000"
    rows = [head,
            f"#1,a@example.com,refunded,USD,10.00,10.00,{at},{later},1,Tee,10.00,T,1",
            f"#2,b@example.com,partially_refunded,USD,10.00,4.00,{at},,1,Tee,10.00,T,2"]  # fmt: skip
    out, summary = tmp_path / "o.jsonl", tmp_path / "s.json"
    code, _, _ = dry_run_rows(tmp_path, rows, "--endpoint", "single", "--output", str(out),
                              "--summary-json", str(summary))  # fmt: skip
    assert code == 0
    warnings = json.loads(summary.read_text())["warnings"]
    assert warnings == {
        "refund without a date: dated at the order's cancellation time": 1,
        "refund without a date: dated at the order's time": 1,
    }
    refunds = {e["unique_id"]: e["time"] for e in (b["data"]["attributes"] for b in bodies(
        out.read_text())) if e["metric"]["data"]["attributes"]["name"] == "Refunded Order"}  # fmt: skip
    assert refunds == {"1": "2024-03-02T10:00:00+00:00", "2": "2024-03-01T10:00:00+00:00"}


def test_revenue_is_shown_gross_less_cancelled_and_refunded_and_net(tmp_path: Path) -> None:
    """The summary's one "Revenue" was gross, cancelled and refunded orders included."""
    head = ("Name,Email,Financial Status,Currency,Total,Refunded Amount,Created at,Cancelled at,"
            "Lineitem quantity,Lineitem name,Lineitem price,Lineitem sku,Id")  # fmt: skip
    at = "2024-03-01 10:00:00 +0000"
    rows = [head,
            f"#1,a@example.com,refunded,USD,10.00,10.00,{at},{at},1,Tee,10.00,T,1",  # cancelled
            f"#2,b@example.com,partially_refunded,USD,10.00,4.00,{at},,1,Tee,10.00,T,2",
            f"#3,c@example.com,paid,USD,10.00,,{at},,1,Tee,10.00,T,3"]  # fmt: skip
    summary = tmp_path / "s.json"
    code, out, _ = dry_run_rows(tmp_path, rows, "--summary-json", str(summary), "--preview", "0")
    assert code == 0
    told = json.loads(summary.read_text())
    assert told["revenue"] == {"USD": "30.00"}  # gross
    assert told["revenue_cancelled"] == {"USD": "10.00"}
    assert told["revenue_refunded"] == {"USD": "4.00"}  # #1's refund is of a cancelled order
    assert told["revenue_net"] == {"USD": "16.00"}
    for label, amount in [("Revenue USD: gross (every order)", "30.00"),
                          ("less cancelled orders", "10.00"),
                          ("less refunds", "4.00"), ("net USD", "16.00")]:  # fmt: skip
        assert re.search(rf"{re.escape(label)}\s*│\s*{re.escape(amount)} │", out), out
    report = json.loads(run("inspect", str(tmp_path / "orders.csv"), "--json")[1])
    assert report["revenue_net"] == {"USD": "16.00"}


def test_a_placeholder_is_no_name_zip_or_address(tmp_path: Path) -> None:
    """A zip of `-` or a name of `Jane .` went out as the profile's zip and last name."""
    head = ("Name,Email,Financial Status,Currency,Total,Created at,Lineitem quantity,"
            "Lineitem name,Lineitem price,Lineitem sku,Id,Billing Name,Billing Address1,"
            "Billing City,Billing Zip,Billing Country,Shipping Name,Shipping Zip")  # fmt: skip
    at = "2024-03-01 10:00:00 +0000"
    rows = [head,
            f"#1,a@example.com,paid,USD,10.00,{at},1,Tee,10.00,T,1,Jane .,1 Main St,N/A,-,US,-,n/a",
            f"#2,-,paid,USD,10.00,{at},1,Tee,10.00,T,2,Jo Doe,--,Springfield,12345,US,,"]  # fmt: skip
    out, summary = tmp_path / "o.jsonl", tmp_path / "s.json"
    code, _, rejected = dry_run_rows(tmp_path, rows, "--endpoint", "single", "--output",
                                     str(out), "--summary-json", str(summary))  # fmt: skip
    assert code == 1 and [r["order_id"] for r in rejected] == ["2"]  # nobody: `-` is no email
    assert "malformed email ignored" not in json.loads(summary.read_text())["warnings"]
    placed = [b["data"]["attributes"] for b in bodies(out.read_text())
              if b["data"]["attributes"]["metric"]["data"]["attributes"]["name"] == "Placed Order"]  # fmt: skip
    (jane,) = placed
    profile = jane["profile"]["data"]["attributes"]
    assert profile["first_name"] == "Jane" and "last_name" not in profile
    assert profile["location"] == {"address1": "1 Main St", "country": "US"}
    assert jane["properties"]["BillingAddress"] == {
        "FirstName": "Jane", "Address1": "1 Main St", "CountryCode": "US"
    }  # fmt: skip
    assert "ShippingAddress" not in jane["properties"]
