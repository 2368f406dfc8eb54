"""Dates that leave out a part: never completed from today.

dateutil fills what a text does not say from today's date, so `2024` read as this day of 2024
and `Monday` as the coming Monday: orders went out with made-up dates, and --since/--until
chose the wrong ones. An export's time needs a year, a month and a day or rejects its order;
on the command line a year, month or day is a period, and anything less is refused.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from klaviyo_backfill.cli import main
from klaviyo_backfill.errors import FieldError, UsageError
from klaviyo_backfill.inputs.values import parse_time, read_time
from klaviyo_backfill.pipeline.job import parse_when

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


# --- --since and --until ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "since", "until"),
    [
        ("2024", datetime(2024, 1, 1), datetime(2025, 1, 1)),
        ("March 2024", datetime(2024, 3, 1), datetime(2024, 4, 1)),
        ("2024-03", datetime(2024, 3, 1), datetime(2024, 4, 1)),
        ("2024-12", datetime(2024, 12, 1), datetime(2025, 1, 1)),
        ("2024-02-29", datetime(2024, 2, 29), datetime(2024, 3, 1)),
        ("2024-03-05", datetime(2024, 3, 5), datetime(2024, 3, 6)),
        ("2024-12-31", datetime(2024, 12, 31), datetime(2025, 1, 1)),
        ("2024-03-10", datetime(2024, 3, 10), datetime(2024, 3, 11)),  # 23 hours in New York
        ("2024-03-05 14:30", datetime(2024, 3, 5, 14, 30), datetime(2024, 3, 5, 14, 30)),
        ("2024-03-05T00:00", datetime(2024, 3, 5), datetime(2024, 3, 5)),  # a moment
    ],
)
def test_a_period_is_its_start_for_since_and_its_end_for_until(
    text: str, since: datetime, until: datetime
) -> None:
    """In the run's zone; --until keeps the orders before the moment it returns."""
    assert parse_when(text, "--since", NEW_YORK) == since.replace(tzinfo=NEW_YORK)
    assert parse_when(text, "--until", NEW_YORK) == until.replace(tzinfo=NEW_YORK)
    assert parse_when(text, "--since", NEW_YORK).tzinfo is NEW_YORK  # type: ignore[union-attr]


def test_an_offset_in_the_value_wins_over_the_zone() -> None:
    moment = parse_when("2024-03-05 10:00 +02:00", "--until", NEW_YORK)
    assert moment == datetime(2024, 3, 5, 8, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("Monday", "it has no year, month or day"),
        ("12", "it has no year or month"),
        ("March", "it has no year or day"),
        ("Dec 5", "it has no year"),
        ("2024 10:00", "it has no month or day"),
        ("someday", None),
        ("", None),
    ],
)
@pytest.mark.parametrize("option", ["--since", "--until"])
def test_less_than_a_year_on_the_command_line_is_refused(
    option: str, text: str, why: str | None
) -> None:
    with pytest.raises(UsageError) as caught:
        parse_when(text, option, UTC)
    expected = f"{option} {text!r} is not a date" + ("" if why is None else f": {why}")
    assert caught.value.message == expected
    assert caught.value.hint and "2024-03" in caught.value.hint


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


def test_since_a_year_takes_the_whole_year(tmp_path: Path) -> None:
    code, sent, _ = _dry_run(
        tmp_path,
        {
            "#old": "2023-12-31 23:59:59 +0000",
            "#first": "2024-01-01 00:00:00 +0000",
            "#feb": "2024-02-01 12:00:00 +0000",
            "#dec": "2024-12-31 12:00:00 +0000",
        },
        "--since", "2024",
    )  # fmt: skip
    assert code == 0
    assert sent == ["#first", "#feb", "#dec"]


def test_until_a_year_keeps_all_of_it(tmp_path: Path) -> None:
    code, sent, _ = _dry_run(
        tmp_path,
        {
            "#feb": "2024-02-01 12:00:00 +0000",
            "#dec": "2024-12-31 12:00:00 +0000",
            "#last": "2024-12-31 23:59:59 +0000",
            "#new": "2025-01-01 00:00:00 +0000",
        },
        "--until", "2024",
    )  # fmt: skip
    assert code == 0
    assert sent == ["#feb", "#dec", "#last"]


def test_a_month_or_a_day_is_a_period_in_the_runs_zone(tmp_path: Path) -> None:
    orders = {
        "#feb": "2024-02-29 23:00:00",
        "#mar1": "2024-03-01 00:00:00",
        "#mar5": "2024-03-05 18:00:00",
        "#mar31": "2024-03-31 23:59:00",
        "#apr": "2024-04-01 00:00:00",
    }
    new_york = ("--timezone", "America/New_York")
    assert _dry_run(tmp_path, orders, "--since", "March 2024", "--until", "2024-03", *new_york)[
        1
    ] == ["#mar1", "#mar5", "#mar31"]
    assert _dry_run(tmp_path, orders, "--since", "2024-03-05", "--until", "2024-03-05")[1] == [
        "#mar5"
    ]
    assert _dry_run(tmp_path, orders, "--until", "2024-03-05 18:00")[1] == ["#feb", "#mar1"]


@pytest.mark.parametrize("option", ["--since", "--until"])
@pytest.mark.parametrize("value", ["Monday", "12", "March", "Dec 5"])
def test_a_date_without_a_year_on_the_command_line_exits_2(
    tmp_path: Path, option: str, value: str
) -> None:
    export = tmp_path / "orders.csv"
    export.write_text(HEADER + "\n#1,a@example.com,paid,USD,5.00,2024-02-01,1,Tee,5.00\n")
    code, out = _run("send", str(export), "--dry-run", option, value)
    assert code == 2
    assert f"{option} {value!r} is not a date: it has no year" in out
    assert "Traceback" not in out


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


# --- a day and a month in figures (issue #22 item 3) --------------------------------------


@pytest.mark.parametrize("option", ["--since", "--until"])
@pytest.mark.parametrize("text", ["05/01/2024", "5.1.2024", "05-01-24", "05/01/2024 10:00"])
def test_a_day_and_month_that_can_be_swapped_are_refused_with_both_iso_forms(
    option: str, text: str
) -> None:
    """`--since 05/01/2024` was read as 1 May; a European merchant meant 5 January."""
    with pytest.raises(UsageError) as caught:
        parse_when(text, option, UTC)
    assert caught.value.message.startswith(f"{option} {text!r} could be 5 January or 1 May")
    assert "2024-01-05 or 2024-05-01" in (caught.value.hint or "")
    assert "--date-order" in (caught.value.hint or "")


@pytest.mark.parametrize(
    ("text", "order", "day"),
    [
        ("05/01/2024", "dmy", datetime(2024, 1, 5)),
        ("05/01/2024", "mdy", datetime(2024, 5, 1)),
        ("5.1.2024 10:00", "dmy", datetime(2024, 1, 5, 10)),
        ("13/01/2024", None, datetime(2024, 1, 13)),  # only one order makes a date
        ("01/13/2024", None, datetime(2024, 1, 13)),
        ("04/04/2024", None, datetime(2024, 4, 4)),  # either order, the same day
        ("13/01/2024", "dmy", datetime(2024, 1, 13)),
    ],
)
def test_figures_are_read_in_the_date_order_given_or_the_only_one_that_fits(
    text: str, order: str | None, day: datetime
) -> None:
    assert parse_when(text, "--since", NEW_YORK, order) == day.replace(tzinfo=NEW_YORK)


def test_a_date_impossible_in_the_date_order_given_is_refused() -> None:
    with pytest.raises(UsageError) as caught:
        parse_when("13/01/2024", "--since", UTC, "mdy")
    assert caught.value.message == "--since '13/01/2024' is not a date in --date-order mdy"


def _shop(tmp_path: Path) -> Path:
    path = tmp_path / "orders.csv"
    path.write_text(
        HEADER + "\n#1,a@example.com,paid,EUR,10,2024-01-04 10:00:00 +0000,1,Mug,10\n"
        "#2,b@example.com,paid,EUR,10,2024-01-06 10:00:00 +0000,1,Mug,10\n"
        "#3,c@example.com,paid,EUR,10,2024-05-02 10:00:00 +0000,1,Mug,10\n"
    )
    return path


def test_the_dry_run_and_inspect_echo_the_window_they_applied_in_iso_dates(
    tmp_path: Path,
) -> None:
    path = _shop(tmp_path)
    env = {"COLUMNS": "200"}
    refused = CliRunner().invoke(main, ["send", str(path), "--dry-run", "--since", "05/01/2024"])
    assert refused.exit_code == 2
    assert "could be 5 January or 1 May 2024" in refused.output
    summary = tmp_path / "s.json"
    for order, since, until in (("dmy", "05/01/2024", "30/04/2024"),
                                ("mdy", "01/05/2024", "04/30/2024")):  # fmt: skip
        done = CliRunner().invoke(
            main,
            ["send", str(path), "--dry-run", "--preview", "0", "--failures", str(tmp_path / "f"),
             "--summary-json", str(summary), "--since", since, "--until", until,
             "--timezone", "Europe/Paris", "--date-order", order],
            env=env,
        )  # fmt: skip
        assert done.exit_code == 0, done.output
        assert "from 2024-01-05 through 2024-04-30 (Europe/Paris)" in done.output, done.output
        written = json.loads(summary.read_text())
        assert written["since"] == "2024-01-05T00:00:00+01:00"
        assert written["until"] == "2024-05-01T00:00:00+02:00"
        assert written["orders_mapped"] == 1
    inspected = CliRunner().invoke(
        main, ["inspect", str(path), "--until", "2024-01-05 12:00"], env=env
    )
    assert inspected.exit_code == 0, inspected.output
    assert "before 2024-01-05 12:00 (UTC)" in inspected.output
    plain = CliRunner().invoke(main, ["inspect", str(path)], env=env)
    assert "Window" not in plain.output
