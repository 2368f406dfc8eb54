"""Folders and files (issue #14, "the first hour", item 6): a folder stands for the exports in
it; what else it holds is skipped and listed in the summary, never a reason to stop; a
spreadsheet, in a folder or named, is told to be saved as CSV.

Through the CLI (click's runner), on folders made here."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from klaviyo_backfill.cli import main

SAMPLE = Path(__file__).parent.parent / "sample_data"
XLSX = b"PK\x03\x04\x14\x00\x06\x00" + b"\x00" * 64  # how a workbook (a zip) begins


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env={"COLUMNS": "200"})
    return result.exit_code, result.output


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    """A folder as a merchant leaves it: the export, and what else was beside it."""
    folder = tmp_path / "exports"
    folder.mkdir()
    shutil.copy(SAMPLE / "shopify_orders_export.csv", folder / "orders.csv")
    (folder / "readme.txt").write_text("Orders exported on 3 March, see the shop's notes.\n")
    (folder / "notes.md").write_text("# notes\n")
    (folder / "fix.py").write_text("print('hi')\n")
    (folder / "orders.xlsx").write_bytes(XLSX)
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (folder / "old").mkdir()
    return folder


def skipped_of(summary: Path) -> dict[str, str]:
    return {
        Path(s["path"]).name: s["why"] for s in json.loads(summary.read_text())["skipped_files"]
    }


def test_a_folder_skips_what_is_not_an_export_and_lists_it(shop: Path, tmp_path: Path) -> None:
    """A readme.txt beside the exports stopped the run; .md, .py and .xlsx went unsaid."""
    summary = tmp_path / "s.json"
    code, out = run("send", str(shop), "--dry-run", "--preview", "0", "--failures",
                    str(tmp_path / "f"), "--summary-json", str(summary))  # fmt: skip
    assert code == 0, out
    skipped = skipped_of(summary)
    assert set(skipped) == {
        "readme.txt",
        "notes.md",
        "fix.py",
        "orders.xlsx",
        "old",
    }  # not .DS_Store
    assert "not an export this tool recognises" in skipped["readme.txt"]
    assert skipped["orders.xlsx"] == "an Excel workbook: save it as CSV to send it"
    assert skipped["notes.md"] == "not an export (.md)"
    assert skipped["old"] == "a folder: not read (only the files of a folder given are)"
    assert json.loads(summary.read_text())["orders_read"] > 0
    text = " ".join(out.split())
    assert "Skipped file: readme.txt" in text and "save it as CSV" in text
    code, report = run("inspect", str(shop))
    assert code == 0 and "Skipped file: orders.xlsx" in " ".join(report.split())


def test_a_forced_format_skips_the_files_of_a_folder_that_do_not_fit_it(
    shop: Path, tmp_path: Path
) -> None:
    summary = tmp_path / "s.json"
    code, out = run("send", str(shop), "--dry-run", "--format", "shopify-csv", "--preview", "0",
                    "--failures", str(tmp_path / "f"), "--summary-json", str(summary))  # fmt: skip
    assert code == 0, out
    assert skipped_of(summary)["readme.txt"].startswith("not a shopify-csv export (no column")


def test_a_folder_of_no_exports_says_what_it_skipped(tmp_path: Path) -> None:
    folder = tmp_path / "nothing"
    folder.mkdir()
    (folder / "readme.txt").write_text("hello\n")
    (folder / "orders.numbers").write_bytes(XLSX)
    code, out = run("send", str(folder), "--dry-run")
    assert code == 2
    text = " ".join(out.split())
    assert "no export files found in" in text and "readme.txt" in text
    assert "orders.numbers (a Numbers spreadsheet: save it as CSV to send it)" in text


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("orders.xlsx", "an Excel workbook"),
        ("orders.numbers", "a Numbers spreadsheet"),
        ("export.csv", "an Excel workbook"),
    ],
)
def test_a_spreadsheet_named_is_told_to_be_saved_as_csv(
    tmp_path: Path, name: str, kind: str
) -> None:
    """An .xlsx passed by name was called "not an export this tool recognises (csv)"."""
    path = tmp_path / name
    path.write_bytes(XLSX)  # a workbook, whatever its name says
    code, out = run("send", str(path), "--dry-run")
    assert code == 2
    text = " ".join(out.split())
    assert f"is {kind}, not a CSV or JSON export" in text, text
    assert "Save it as CSV" in text and "(csv)" not in text
