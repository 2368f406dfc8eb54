"""Dates that leave out a part: never completed from today.

dateutil fills what a text does not say from today's date, so `2024` read as this day of 2024
and `Monday` as the coming Monday: orders went out with made-up dates. An export's time needs
a year, a month and a day, or it rejects its order.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from klaviyo_backfill.cli import main
from klaviyo_backfill.errors import FieldError
from klaviyo_backfill.values import parse_time, read_time

NEW_YORK = ZoneInfo("America/New_York")
HEADER = "Name,Email,Financial Status,Currency,Total,Created at,Lineitem quantity,Lineitem name,Lineitem price"  # fmt: skip


# --- an export's times ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "missing"),
    [
        ("2024", "no month or day"),
        ("Monday", "no year, month or day"),
        ("12", "no year or month"),
        ("March", "no year or day"),
        ("Dec 5", "no year"),
        ("June 2020", "no day"),
        ("2024-03", "no day"),
        ("Monday March 2024", "no day"),  # the weekday would pick the day
        ("10:30", "no year, month or day"),
        ("4:57 PM", "no year, month or day"),
    ],
)
def test_an_export_time_without_a_year_month_and_day_is_refused(text: str, missing: str) -> None:
    with pytest.raises(FieldError) as caught:
        parse_time(text, "created_at", UTC)
    error = caught.value
    assert (error.field, error.value) == ("created_at", text)
    assert error.reason == f"not a full date: {missing}"
    assert str(error) == f"created_at: not a full date: {missing} ({text!r})"


@pytest.mark.parametrize("field", ["fulfilled_at", "cancelled_at", "refunded_at"])
def test_every_time_field_refuses_a_partial_date_by_its_own_name(field: str) -> None:
    with pytest.raises(FieldError, match=f"^{field}: not a full date: no day"):
        parse_time("June 2020", field, UTC)


@pytest.mark.parametrize(
    ("text", "expected", "naive"),
    [
        ("2024-03-05", datetime(2024, 3, 5, tzinfo=NEW_YORK), True),  # a day: its midnight
        ("March 5, 2024", datetime(2024, 3, 5, tzinfo=NEW_YORK), True),
        ("5 Mar 2024", datetime(2024, 3, 5, tzinfo=NEW_YORK), True),
        ("03/05/2024 4:57 PM", datetime(2024, 3, 5, 16, 57, tzinfo=NEW_YORK), True),
        ("Tue, 05 Mar 2024 10:00:00 +0000", datetime(2024, 3, 5, 10, tzinfo=UTC), False),
        ("2021-07-12 04:57:56 -0400", datetime(2021, 7, 12, 8, 57, 56, tzinfo=UTC), False),
        ("2021-07-12T04:57:56", datetime(2021, 7, 12, 4, 57, 56, tzinfo=NEW_YORK), True),
        # the dates read_time gives dateutil as defaults are dates like any other
        ("January 3, 2000", datetime(2000, 1, 3, tzinfo=NEW_YORK), True),
        ("Monday, January 3, 2000 00:00", datetime(2000, 1, 3, tzinfo=NEW_YORK), True),
        ("March 17, 2004 1:00", datetime(2004, 3, 17, 1, tzinfo=NEW_YORK), True),
        ("Jan 9 2000", datetime(2000, 1, 9, tzinfo=NEW_YORK), True),
        ("Feb 29 2024", datetime(2024, 2, 29, tzinfo=NEW_YORK), True),
    ],
)
def test_a_full_date_reads_as_before(text: str, expected: datetime, naive: bool) -> None:
    parsed = parse_time(text, "created_at", NEW_YORK)
    assert parsed is not None
    moment, was_naive = parsed
    assert moment == expected and was_naive is naive


def test_read_time_names_what_the_text_leaves_out() -> None:
    assert read_time("2024")[1] == ("month", "day", "time")
    assert read_time("March 2024")[1] == ("day", "time")
    assert read_time("2024-03-05")[1] == ("time",)
    assert read_time("2024-03-05 00:00")[1] == ()
    assert read_time("Dec 5 10:00")[1] == ("year",)
    with pytest.raises(ValueError):
        read_time("someday")


# --- through the command line -----------------------------------------------------------


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout + result.stderr


def _dry_run(
    tmp_path: Path, created: dict[str, str], *args: str
) -> tuple[int, list[str], list[dict]]:  # type: ignore[type-arg]
    """Dry-run one order per entry (order name -> Created at): (exit code, names of the
    orders sent, rows of the failures file)."""
    export = tmp_path / "orders.csv"
    rows = [HEADER] + [
        f"{name},c{n}@example.com,paid,USD,5.00,{when},1,Tee,5.00"
        for n, (name, when) in enumerate(created.items())
    ]
    export.write_text("\n".join(rows) + "\n")
    output, failures = tmp_path / "out.jsonl", tmp_path / "failures.jsonl"
    code, _ = _run("send", str(export), "--dry-run", "--endpoint", "single",
                   "--output", str(output), "--failures", str(failures), *args)  # fmt: skip
    events = [json.loads(line)["data"]["attributes"] for line in output.read_text().splitlines()]
    sent = [
        e["properties"]["OrderId"]
        for e in events
        if e["metric"]["data"]["attributes"]["name"] == "Placed Order"
    ]
    rejected = [json.loads(line) for line in failures.read_text().splitlines()] if failures.exists() else []  # fmt: skip
    return code, sent, rejected


def test_orders_dated_without_a_day_month_and_year_are_rejected_and_the_rest_sent(
    tmp_path: Path,
) -> None:
    code, sent, rejected = _dry_run(
        tmp_path,
        {
            "#good": "2024-02-01 12:00:00 +0000",
            "#year": "2024",
            "#weekday": "Monday",
            "#month": "June 2020",
            "#day": "12",
            "#noyear": "Dec 5",
            "#plain": "5 March 2024",
        },
    )
    assert code == 1
    assert sent == ["#good", "#plain"]
    export = str(tmp_path / "orders.csv")
    assert [(r["order_id"], r["source"], r["line"]) for r in rejected] == [
        ("#year", export, 3),
        ("#weekday", export, 4),
        ("#month", export, 5),
        ("#day", export, 6),
        ("#noyear", export, 7),
    ]
    assert all(r["reason"].startswith("not a full date: no ") for r in rejected)
    assert rejected[2]["detail"] == "created_at: not a full date: no day ('June 2020')"


def test_a_fulfilment_time_without_a_day_rejects_its_order(tmp_path: Path) -> None:
    export = tmp_path / "orders.csv"
    export.write_text(
        "Name,Email,Financial Status,Currency,Total,Created at,Fulfilled at,Lineitem quantity,"
        "Lineitem name,Lineitem price\n"
        "#1,a@example.com,paid,USD,5.00,2024-02-01 12:00:00 +0000,June 2024,1,Tee,5.00\n"
        "#2,b@example.com,paid,USD,5.00,2024-02-01 12:00:00 +0000,2024-02-03,1,Tee,5.00\n"
    )
    failures = tmp_path / "f.jsonl"
    code, _ = _run("send", str(export), "--dry-run", "--failures", str(failures))
    assert code == 1
    (row,) = [json.loads(line) for line in failures.read_text().splitlines()]
    assert (row["order_id"], row["line"]) == ("#1", 2)
    assert row["detail"] == "fulfilled_at: not a full date: no day ('June 2024')"
