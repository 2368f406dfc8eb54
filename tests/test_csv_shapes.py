"""CSV files as spreadsheets leave them (issue #22, item 8): a re-save that folded each line
into one field stops naming file and line; `;` and tab delimiters are told from the header
(or named with --delimiter or a layout key); a file is told by its content, not its name.

Through the real CLI (tests/cli_helpers.py), on corpus exports rewritten here."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from cli_helpers import run

try:  # tests/ as a plain directory on sys.path, or as a package
    import corpus
except ImportError:
    from tests import corpus  # type: ignore[no-redef]

pytestmark = pytest.mark.e2e
XLSX = b"PK\x03\x04\x14\x00\x06\x00" + b"\x00" * 64  # how a workbook (a zip) begins


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> list[list[str]]:
    """The rows of a 79-column Shopify export of 40 corpus orders."""
    path = tmp_path_factory.mktemp("csv") / "orders.csv"
    corpus.write_shopify_csv(corpus.make_orders(40, 5, "shopify"), path)
    return list(csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig"))))


def write(path: Path, rows: list[list[str]], delimiter: str = ",") -> Path:
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter).writerows(rows)
    path.write_text(out.getvalue(), encoding="utf-8")
    return path


def events(tmp_path: Path, path: Path, *extra: str) -> tuple[int, str, str]:
    """(exit code, the request bodies of a dry run, its output)."""
    out = tmp_path / f"{path.name}.bodies"
    done = run(tmp_path, "pk_x", "send", str(path), "--dry-run", "--preview", "0",
               "--failures", str(tmp_path / "f"), "--output", str(out), *extra)  # fmt: skip
    return done.returncode, out.read_text() if out.exists() else "", done.stdout + done.stderr


def test_a_csv_whose_lines_were_folded_into_one_field_stops_naming_file_and_line(
    tmp_path: Path, rows: list[list[str]]
) -> None:
    """A spreadsheet re-save put each data line in one quoted field under an intact header:
    read, it was 9,811 orders, 0 mapped, thousands of rejections and exit 1."""
    folded = [rows[0]]
    for row in rows[1:]:
        line = io.StringIO()
        csv.writer(line).writerow(row)
        folded.append([line.getvalue().rstrip("\r\n")])
    path = write(tmp_path / "folded.csv", folded)
    code, bodies, output = events(tmp_path, path)
    assert code == 2, output
    assert f"{path}:2: has 1 field on this line where the header has 79 columns" in output
    assert "folded" in output and "Traceback" not in output
    assert bodies == ""
    assert not (tmp_path / "f").exists() or (tmp_path / "f").read_text() == ""


def test_a_csv_cut_inside_its_last_row_is_still_said_to_be_cut_short(
    tmp_path: Path, rows: list[list[str]]
) -> None:
    path = write(tmp_path / "cut.csv", rows[:6])
    path.write_text(path.read_text().rstrip("\r\n").rsplit(",", 60)[0])  # 19 fields left
    code, _, output = events(tmp_path, path)
    assert code == 2 and "ends inside a row" in output and "cut short" in output, output


@pytest.mark.parametrize(("delimiter", "name"), [(";", "semicolon.csv"), ("\t", "tab.txt")])
def test_a_shopify_export_resaved_with_another_delimiter_gives_the_same_events(
    tmp_path: Path, rows: list[list[str]], delimiter: str, name: str
) -> None:
    comma = write(tmp_path / "comma.csv", rows)
    other = write(tmp_path / name, rows, delimiter)
    code, expected, _ = events(tmp_path, comma)
    assert code in (0, 1) and expected.count('"Placed Order"') > 20
    again, bodies, output = events(tmp_path, other)
    assert again == code, output
    assert bodies == expected


def test_the_delimiter_can_be_forced_by_option_or_layout(
    tmp_path: Path, rows: list[list[str]]
) -> None:
    semicolon = write(tmp_path / "semicolon.csv", rows, ";")
    code, expected, _ = events(tmp_path, write(tmp_path / "comma.csv", rows))
    assert events(tmp_path, semicolon, "--delimiter", ";")[1] == expected
    wrong, _, output = events(tmp_path, semicolon, "--delimiter", ",")
    assert wrong == 2 and "not an export this tool recognises" in output
    bad, _, output = events(tmp_path, semicolon, "--delimiter", "ab")
    assert bad == 2 and "--delimiter 'ab' is not a delimiter" in output
    layout = tmp_path / "layout.toml"
    layout.write_text(
        '[order]\nid = "Name"\ncreated_at = "Created at"\nemail = "Email"\ntotal = "Total"\n'
        'currency = "Currency"\n[options]\ndelimiter = "semicolon"\n'
    )
    code, bodies, output = events(tmp_path, semicolon, "--layout", str(layout))
    assert code in (0, 1) and '"Placed Order"' in bodies, output
    layout.write_text(layout.read_text().replace('"semicolon"', '"tab"'))
    code, _, output = events(tmp_path, semicolon, "--layout", str(layout))
    assert code == 2 and "has no column" in output, output


def test_a_csv_named_like_a_workbook_is_read_and_a_real_workbook_refused(
    tmp_path: Path, rows: list[list[str]]
) -> None:
    """`orders_export (1).xlsx` that is really a CSV was refused (named) or skipped (in a
    folder) by its name."""
    code, expected, _ = events(tmp_path, write(tmp_path / "comma.csv", rows))
    renamed = write(tmp_path / "orders_export (1).xlsx", rows)
    again, bodies, output = events(tmp_path, renamed)
    assert (again, bodies) == (code, expected), output
    folder = tmp_path / "folder"
    folder.mkdir()
    write(folder / "orders_export (1).xlsx", rows)
    (folder / "real.xlsx").write_bytes(XLSX)
    again, bodies, output = events(tmp_path, folder)
    assert (again, bodies) == (code, expected), output
    assert "real.xlsx" in output and "save it as CSV" in " ".join(output.split())
    workbook = tmp_path / "workbook.xlsx"
    workbook.write_bytes(XLSX)
    refused, _, output = events(tmp_path, workbook)
    assert refused == 2 and "is an Excel workbook" in output and "Save it as CSV" in output


def test_inspect_flags_the_refunds_of_a_shopify_csv_that_have_no_date(tmp_path: Path) -> None:
    """A Shopify CSV exports no refund date: the refund lands in the order's month, which
    reconciliation then shows in the wrong month. The REST JSON of the same orders has
    the dates and is not flagged."""
    orders = corpus.make_orders(40, 5, "shopify")
    refunded = sum(1 for o in orders if o.refunds and o.identifiable)
    assert refunded
    csv_file = corpus.write_shopify_csv(orders, tmp_path / "orders.csv")
    json_file = corpus.write_shopify_json(orders, tmp_path / "orders.json")
    said = " ".join(run(tmp_path, "pk_x", "inspect", str(csv_file)).stdout.split())
    assert f"Refunds without a date │ {refunded} (dated at the order's time" in said, said
    assert "GraphQL export has the dates" in said.replace("│ ", "").replace(" │", "")
    said = run(tmp_path, "pk_x", "inspect", str(json_file)).stdout
    assert "Refunds without a date" not in said
