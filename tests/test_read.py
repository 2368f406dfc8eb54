"""Readers: every JSON shape, CSV quirks, format detection, and bad input as clear errors."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from datetime import UTC, timedelta
from decimal import Decimal
from pathlib import Path

import corpus
import pytest
from click.testing import CliRunner

from klaviyo_backfill.cli import main
from klaviyo_backfill.errors import InputError
from klaviyo_backfill.inputs.csv_orders import Start
from klaviyo_backfill.inputs.detect import detect_layout
from klaviyo_backfill.inputs.export import read_orders
from klaviyo_backfill.inputs.json_orders import iter_json
from klaviyo_backfill.inputs.layouts import Source, builtin_layouts
from klaviyo_backfill.inputs.sources import Input
from klaviyo_backfill.mapping.convert import Settings, to_order

LAYOUTS = builtin_layouts()


def ids(path: Path, layout: str) -> list[str]:
    source = Input(str(path), LAYOUTS[layout], "utf-8-sig")
    return [str(raw.get("id")) for raw in read_orders(source)]


@pytest.mark.parametrize("shape", ["wrapped", "array", "jsonl"])
def test_shopify_json_shapes_yield_every_order_once(tmp_path: Path, shape: str) -> None:
    orders = corpus.make_orders(40, 3, "shopify")
    path = corpus.write_shopify_json(orders, tmp_path / f"o.{shape}.json", shape=shape)
    assert sorted(ids(path, "shopify-json")) == sorted(o.id for o in orders)


def test_json_orders_report_the_line_they_start_on(tmp_path: Path) -> None:
    path = tmp_path / "o.json"
    path.write_text('{"orders": [\n  {"id": 1},\n\n  {"id": 2}\n]}\n')
    assert [(line, rec["id"]) for line, rec in iter_json(str(path), "utf-8")] == [(2, 1), (4, 2)]


def test_wrapped_json_with_other_keys_first_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "o.json"
    path.write_text(json.dumps({"count": 2, "orders": [{"id": 1}, {"id": 2}]}))
    assert [rec["id"] for _, rec in iter_json(str(path), "utf-8")] == [1, 2]


def test_json_streams_objects_larger_than_the_read_chunk(tmp_path: Path) -> None:
    big = [{"id": i, "note": "x" * 200_000} for i in range(3)]
    path = tmp_path / "big.json"
    path.write_text(json.dumps(big))
    assert [rec["id"] for _, rec in iter_json(str(path), "utf-8")] == [0, 1, 2]


@pytest.mark.parametrize("columns", [75, 78, 79])
def test_every_shopify_csv_vintage_is_detected_and_read(tmp_path: Path, columns: int) -> None:
    orders = corpus.make_orders(30, 4, "shopify")
    path = corpus.write_shopify_csv(orders, tmp_path / "o.csv", columns=columns)
    assert detect_layout(str(path), LAYOUTS, "utf-8-sig").name == "shopify-csv"
    assert sorted(ids(path, "shopify-csv")) == sorted(o.id for o in orders)


def test_csv_rows_of_an_order_become_its_lines(tmp_path: Path) -> None:
    orders = corpus.make_orders(20, 5, "shopify")
    path = corpus.write_shopify_csv(orders, tmp_path / "o.csv", bom=True)
    source = Input(str(path), LAYOUTS["shopify-csv"], "utf-8-sig")
    by_id = {str(raw.get("id")): raw for raw in read_orders(source)}
    for order in orders:
        assert len(by_id[order.id].lines) == len(order.lines)


def test_woocommerce_csv_with_bom_is_detected(tmp_path: Path) -> None:
    orders = corpus.make_orders(20, 6, "woocommerce")
    path = corpus.write_woo_csv(orders, tmp_path / "w.csv")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    assert detect_layout(str(path), LAYOUTS, "utf-8-sig").name == "woocommerce-csv"


def test_unknown_layout_names_the_formats(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(InputError) as err:
        detect_layout(str(path), LAYOUTS, "utf-8")
    assert "shopify-csv" in str(err.value) and "--layout" in str(err.value)


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return corpus.broken_files(tmp_path_factory.mktemp("broken"))


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("empty", "is empty"),
        ("header_only", "no orders"),
        ("missing_created_at", "no column 'Created at'"),
        ("truncated_json", "cut short"),
        ("latin1", "--encoding"),
    ],
)
def test_unusable_file_exits_2_with_one_line_naming_it(
    broken: dict[str, Path], tmp_path: Path, case: str, message: str
) -> None:
    path = broken[case]
    result = CliRunner().invoke(
        main, ["send", str(path), "--dry-run", "--failures", str(tmp_path / "f")]
    )
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert str(path) in result.output
    assert "Traceback" not in result.output


def test_a_csv_cut_inside_a_row_stops_the_run_and_one_without_a_final_line_break_reads(
    tmp_path: Path,
) -> None:
    """`head -c` of an export ends inside a row: read as it is, the row's order would go out
    with the columns before the cut only (another id, fewer lines). A complete file whose
    last line has no line break is fine."""
    whole = corpus.write_shopify_csv(corpus.make_orders(8, 3, "shopify"), tmp_path / "all.csv")
    data = whole.read_bytes()
    lines = data.split(b"\n")
    cut = len(b"\n".join(lines[:5])) + 1 + len(lines[5]) // 2  # halfway into line 6
    cut_file = tmp_path / "cut.csv"
    cut_file.write_bytes(data[:cut])
    args = ["--dry-run", "--preview", "0", "--failures", str(tmp_path / "f")]
    result = CliRunner().invoke(main, ["send", str(cut_file), *args])
    assert result.exit_code == 2, result.output
    assert f"{cut_file}:6: ends inside a row" in result.output and "cut short" in result.output
    no_break = tmp_path / "lbr.csv"  # as long a name as all.csv: the table is as wide
    no_break.write_bytes(data.rstrip(b"\r\n"))
    whole_run = CliRunner().invoke(main, ["send", str(whole), *args])
    no_break_run = CliRunner().invoke(main, ["send", str(no_break), *args])
    assert no_break_run.exit_code == whole_run.exit_code != 2, no_break_run.output

    def named(output: str, path: Path) -> str:  # a path a table cut at its start too
        return output.replace(str(path), "X").replace(path.name, "X")

    assert named(no_break_run.output, no_break) == named(whole_run.output, whole)


@pytest.mark.parametrize(
    ("text", "fmt"), [('{"orders": []}', "shopify-json"), ("[]", "woocommerce-json")]
)
def test_a_json_export_without_orders_exits_2_as_a_csv_one_does(
    tmp_path: Path, text: str, fmt: str
) -> None:
    path = tmp_path / "orders.json"
    path.write_text(text)
    result = CliRunner().invoke(main, ["send", str(path), "--format", fmt, "--dry-run"])
    assert result.exit_code == 2, result.output
    assert f"{path}: holds no orders" in result.output


def test_utf16_is_named_in_the_message_either_way_and_reads_when_asked_for(
    broken: dict[str, Path], tmp_path: Path
) -> None:
    utf8 = broken["bad_date"]  # any export in UTF-8
    utf16 = tmp_path / "orders-utf16.csv"
    utf16.write_text(utf8.read_text(encoding="utf-8"), encoding="utf-16")
    failures = ["--dry-run", "--preview", "0", "--failures", str(tmp_path / "f")]
    for path, extra, said in (
        (utf16, [], "The file looks like UTF-16: try --encoding utf-16."),
        (utf8, ["--encoding", "utf-16"], "cannot be decoded as utf-16"),
    ):
        result = CliRunner().invoke(main, ["send", str(path), *failures, *extra])
        assert result.exit_code == 2, result.output
        assert str(path) in result.output and said in result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
    result = CliRunner().invoke(main, ["send", str(utf16), *failures, "--encoding", "utf-16"])
    assert result.exit_code == 1, result.output  # read, with its one bad date rejected
    assert "not a date and time" in (tmp_path / "f").read_text()


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("bad_date", "not a date and time"),
        ("bad_total", "not an amount of money"),
        ("year_1970", "before 1990"),
        ("future_date", "more than a year in the future"),
    ],
)
def test_bad_order_is_rejected_and_the_rest_goes_through(
    broken: dict[str, Path], tmp_path: Path, case: str, reason: str
) -> None:
    failures = tmp_path / "failures.jsonl"
    out = tmp_path / "out.jsonl"
    path = broken[case]
    result = CliRunner().invoke(
        main,
        [
            "send",
            str(path),
            "--dry-run",
            "--failures",
            str(failures),
            "--output",
            str(out),
            "--endpoint",
            "single",
        ],
    )
    assert result.exit_code == 1, result.output
    rows = [json.loads(line) for line in failures.read_text().splitlines()]
    assert len(rows) == 1
    assert rows[0]["source"] == str(path) and rows[0]["line"] > 1 and reason in rows[0]["reason"]
    sent = {
        json.loads(line)["data"]["attributes"]["properties"]["OrderId"]
        for line in out.read_text().splitlines()
    }
    assert rows[0]["order_id"] not in sent
    assert sent, "the other orders of the file still go through"


def test_latin1_file_reads_with_encoding_option(broken: dict[str, Path], tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        [
            "send",
            str(broken["latin1"]),
            "--dry-run",
            "--encoding",
            "latin-1",
            "--failures",
            str(tmp_path / "f"),
        ],
    )
    assert result.exit_code in (0, 1), result.output
    assert "Dry run" in result.output


def _csv_orders(path: Path) -> dict[str, list[dict[str, str]]]:
    """The rows of a Shopify CSV by order name, read by the csv module with no field limit."""
    limit = csv.field_size_limit()
    csv.field_size_limit(2**31 - 1)
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    finally:
        csv.field_size_limit(limit)
    by_name: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_name.setdefault(row["Name"], []).append(row)
    return by_name


def test_huge_field_is_read(broken: dict[str, Path], tmp_path: Path) -> None:
    """A 200 KB note (past csv's 128 KB default field limit, with quotes, commas and
    newlines) neither rejects its order nor shifts a column: every order goes through whole."""
    path = broken["huge_note"]
    cells = _csv_orders(path)
    note = cells[corpus.BROKEN_ORDER_NAME][0]["Notes"]
    assert len(note) > 131072 and '"' in note and "," in note and "\n" in note
    failures, out, summary = tmp_path / "f.jsonl", tmp_path / "o.jsonl", tmp_path / "s.json"
    result = CliRunner().invoke(
        main,
        ["send", str(path), "--dry-run", "--endpoint", "single", "--output", str(out),
         "--failures", str(failures), "--summary-json", str(summary)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert not failures.exists()
    counts = json.loads(summary.read_text())
    assert counts["orders_read"] == counts["orders_mapped"] == len(cells)
    assert counts["orders_rejected"] == 0 and counts["rejected"] == {}
    events = [json.loads(line)["data"]["attributes"] for line in out.read_text().splitlines()]
    placed = {
        e["properties"]["OrderNumber"]: e
        for e in events
        if e["metric"]["data"]["attributes"]["name"] == "Placed Order"
    }
    assert placed.keys() == cells.keys()
    for name, rows in cells.items():  # the victim, and the order after it in the file
        assert placed[name]["unique_id"] == rows[0]["Id"]
        assert Decimal(str(placed[name]["value"])) == Decimal(rows[0]["Total"])
        assert placed[name]["properties"]["ItemNames"] == [r["Lineitem name"] for r in rows]


def test_huge_field_arrives_whole_in_its_order(broken: dict[str, Path]) -> None:
    """Read through a layout that maps the notes column, the 200 KB note is the order's value,
    byte for byte, and the order is still converted."""
    path = broken["huge_note"]
    note = _csv_orders(path)[corpus.BROKEN_ORDER_NAME][0]["Notes"]
    shopify = LAYOUTS["shopify-csv"]
    layout = replace(shopify, order={**shopify.order, "cancel_reason": (Source("Notes"),)})
    raws = {raw.get("number"): raw for raw in read_orders(Input(str(path), layout, "utf-8-sig"))}
    assert raws[corpus.BROKEN_ORDER_NAME].get("cancel_reason") == note.strip()
    order = to_order(raws[corpus.BROKEN_ORDER_NAME], layout, Settings())
    assert order.cancel_reason == note.strip()
    assert len(order.cancel_reason) > 131072  # csv's default field size limit


def test_a_stray_value_in_a_json_array_is_rejected_and_the_rest_goes_through(
    tmp_path: Path,
) -> None:
    orders = corpus.make_orders(6, 12, "shopify")
    good = corpus.write_shopify_json(orders, tmp_path / "good.json", shape="array")
    records = json.loads(good.read_text())
    path = tmp_path / "stray.json"
    path.write_text(json.dumps([records[0], "oops", *records[1:]], indent=1))
    failures, out = tmp_path / "f.jsonl", tmp_path / "out.jsonl"
    args = ["send", str(path), "--dry-run", "--endpoint", "single", "--output", str(out)]
    result = CliRunner().invoke(main, [*args, "--failures", str(failures)])
    assert result.exit_code == 1, result.output
    rows = [json.loads(line) for line in failures.read_text().splitlines()]
    stray = [r for r in rows if "JSON str" in r["reason"]]
    assert len(stray) == 1 and stray[0]["line"] > 1
    names = [json.loads(b)["data"]["attributes"]["metric"]["data"]["attributes"]["name"]
             for b in out.read_text().splitlines()]  # fmt: skip
    assert names.count("Placed Order") == sum(o.identifiable for o in orders)


def test_nul_bytes_and_zone_abbreviations_do_not_stop_a_csv(tmp_path: Path) -> None:
    orders = corpus.make_orders(8, 21, "shopify")
    path = corpus.write_shopify_csv(orders, tmp_path / "o.csv")
    first = next(o for o in orders if o.identifiable)
    text = path.read_text(encoding="utf-8")
    assert first.last_name in text
    text = text.replace(first.last_name, first.last_name[:1] + "\x00" + first.last_name[1:])
    stamp = corpus.csv_date(first.created_at)
    when = first.created_at.astimezone(UTC).replace(tzinfo=None)
    est = (when - timedelta(hours=5)).strftime("%b %d %Y %I:%M:%S %p") + " EST"
    path.write_text(text.replace(stamp, est), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(
        main, ["send", str(path), "--dry-run", "--endpoint", "single", "--output", str(out),
               "--failures", str(tmp_path / "f")],
    )  # fmt: skip
    assert result.exit_code in (0, 1), result.output
    attributes = [json.loads(b)["data"]["attributes"] for b in out.read_text().splitlines()]
    placed = {
        a["unique_id"]: a
        for a in attributes
        if a["metric"]["data"]["attributes"]["name"] == "Placed Order"
    }
    assert placed[first.id]["time"] == when.replace(tzinfo=UTC).isoformat()
    assert len(placed) == sum(o.identifiable for o in orders)


def test_a_byte_order_mark_opens_the_file_only(tmp_path: Path) -> None:
    """Each CSV line is decoded on its own (in C): the mark is dropped at offset 0 only, a
    resumed read still starts right, and the offsets of orders stay exact byte positions."""
    source_csv = corpus.write_woo_csv(corpus.make_orders(4, 9, "woocommerce"), tmp_path / "s.csv")
    path = tmp_path / "bom.csv"
    text = source_csv.read_bytes().lstrip(b"\xef\xbb\xbf")
    path.write_bytes(b"\xef\xbb\xbf" + text)
    source = Input(str(path), LAYOUTS["woocommerce-csv"], "utf-8-sig")
    raws = list(read_orders(source))
    assert raws and all(not str(raw.get("id")).startswith("\ufeff") for raw in raws)
    data = path.read_bytes()
    for raw in raws:  # an order's offset is where its first row's bytes begin
        assert data[raw.offset :].startswith(data[raw.offset : raw.end])
        assert data[raw.offset - 1 : raw.offset] == b"\n"
    second = raws[1]
    resumed = list(read_orders(source, start=Start(second.offset, second.line)))
    assert [r.get("id") for r in resumed] == [r.get("id") for r in raws[1:]]
    assert [(r.offset, r.line) for r in resumed] == [(r.offset, r.line) for r in raws[1:]]


def test_a_character_cut_short_at_the_end_of_a_file_is_an_error_not_lost(
    tmp_path: Path,
) -> None:
    path = tmp_path / "cut.csv"
    whole = corpus.write_woo_csv(corpus.make_orders(3, 9, "woocommerce"), tmp_path / "w.csv")
    path.write_bytes(whole.read_bytes().rstrip(b"\r\n") + "é".encode()[:1])  # no newline after
    source = Input(str(path), LAYOUTS["woocommerce-csv"], "utf-8-sig")
    with pytest.raises(InputError) as caught:
        list(read_orders(source))
    assert "cannot be decoded as utf-8-sig" in str(caught.value)
    assert caught.value.line == path.read_bytes().count(b"\n") + 1


@pytest.mark.parametrize("name", ["orders.jsonl", "orders.json"])
def test_a_broken_json_lines_line_is_one_rejected_order_named_by_its_line(
    tmp_path: Path, name: str
) -> None:
    """One broken line stopped the whole file, and the error named line 10 for line 8."""
    from click.testing import CliRunner

    from klaviyo_backfill.cli import main

    orders = [o for o in corpus.make_orders(20, 9, "shopify") if o.identifiable][:10]
    lines = corpus.write_shopify_json(orders, tmp_path / "o.json", shape="jsonl").read_text()
    rows = lines.splitlines()
    assert len(rows) == 10
    rows[7] = rows[7][: len(rows[7]) // 2]  # line 8 cut in the middle
    (tmp_path / name).write_text("\n".join(rows) + "\n")
    failures, summary = tmp_path / "f.jsonl", tmp_path / "s.json"
    result = CliRunner().invoke(main, ["send", str(tmp_path / name), "--dry-run", "--preview",
                                       "0", "--failures", str(failures), "--summary-json",
                                       str(summary)])  # fmt: skip
    assert result.exit_code == 1, result.output
    (rejected,) = [json.loads(x) for x in failures.read_text().splitlines()]
    assert rejected["line"] == 8 and rejected["reason"].startswith("not valid JSON"), rejected
    told = json.loads(summary.read_text())
    assert (told["orders_read"], told["orders_mapped"], told["orders_rejected"]) == (10, 9, 1)
