"""values.py, directly: money, minor units, quantities, emails, phone numbers, times, zones.

Expected values are written out by hand (Decimal literals, UTC instants worked out from the
offset), never obtained by calling the function under test.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from klaviyo_backfill.errors import FieldError, UsageError
from klaviyo_backfill.inputs.values import (
    clean,
    minor_units,
    parse_email,
    parse_money,
    parse_phone,
    parse_quantity,
    parse_time,
    quantize,
    quantum,
    zone,
)

NEW_YORK = ZoneInfo("America/New_York")


def same_decimal(got: Decimal | None, want: str) -> bool:
    """Equal in value and in written form (Decimal('5') == Decimal('5.00') otherwise)."""
    return isinstance(got, Decimal) and str(got) == want


# ---------------------------------------------------------------- parse_money


@pytest.mark.parametrize(
    ("text", "want"),
    [("12.50", "12.50"), ("0", "0"), ("7", "7"), ("0.1", "0.1"), (" 12.50 ", "12.50"),
     ("+5", "5")],
)  # fmt: skip
def test_plain_amounts_are_read_exactly(text: str, want: str) -> None:
    assert same_decimal(parse_money(text, "total"), want)


@pytest.mark.parametrize(
    ("text", "want"),
    [("$12.50", "12.50"), ("€12.50", "12.50"), ("£9.99", "9.99"), ("¥1000", "1000"),
     ("₹250.00", "250.00"), ("USD 12.50", "12.50"), ("12.50 EUR", "12.50"),
     ("12.50USD", "12.50"), ("CHF 30.05", "30.05")],
)  # fmt: skip
def test_currency_symbols_and_codes_are_ignored(text: str, want: str) -> None:
    assert same_decimal(parse_money(text, "total"), want)


@pytest.mark.parametrize(
    ("text", "want"),
    [("1,234.50", "1234.50"), ("1,234,567.89", "1234567.89"), ("1,000", "1000"),
     ("$1,234.56", "1234.56"), ("1 234.50", "1234.50"), ("1\u00a0234.50", "1234.50"),
     ("1'234.50", "1234.50")],
)  # fmt: skip
def test_thousands_separators_are_dropped(text: str, want: str) -> None:
    assert same_decimal(parse_money(text, "total"), want)


@pytest.mark.parametrize(
    ("text", "want"),
    [("1.234,50", "1234.50"), ("12,50", "12.50"), ("0,99", "0.99"),
     ("€ 1.234.567,89", "1234567.89"), ("1 234,50", "1234.50"), ("-3,10", "-3.10"),
     ("1.234", "1234"), ("1.234.567", "1234567"), ("-1.234,5", "-1234.5"), ("12", "12")],
)  # fmt: skip
def test_decimal_comma_reads_comma_as_the_decimal_point(text: str, want: str) -> None:
    assert same_decimal(parse_money(text, "total", decimal_comma=True), want)


@pytest.mark.parametrize("text", ["12,50", "1,23", "12,5", "1,2345.00", "1234,567"])
def test_without_decimal_comma_commas_that_are_not_thousands_groups_are_refused(text: str) -> None:
    with pytest.raises(FieldError) as caught:
        parse_money(text, "total")
    assert caught.value.field == "total"


@pytest.mark.parametrize(
    "text", ["12.50", "1,234.5", "12.5.3", "1.23,45", "1234.567", "1.2345", ".5", "USD 0.99"]
)
def test_decimal_comma_refuses_dots_that_are_not_thousands_groups(text: str) -> None:
    """The mirror of the default mode's '12,50': a dot was dropped wherever it was, so '12.50'
    read as 1250 and '1,234.5' as 1.2345."""
    with pytest.raises(FieldError) as caught:
        parse_money(text, "total", decimal_comma=True)
    assert caught.value.field == "total" and caught.value.value == text


@pytest.mark.parametrize(
    ("text", "want"),
    [("-12.50", "-12.50"), ("-$12.50", "-12.50"), ("$-12.50", "-12.50"),
     ("-1,234.50", "-1234.50"), ("USD -4.00", "-4.00")],
)  # fmt: skip
def test_negative_amounts_keep_their_sign(text: str, want: str) -> None:
    assert same_decimal(parse_money(text, "refunded_amount"), want)


@pytest.mark.parametrize("text", ["abc", "12.5.3", "--5", "(12.50)", "12.50-", "NaN", "1/2"])
def test_garbage_is_a_field_error_naming_the_field(text: str) -> None:
    with pytest.raises(FieldError) as caught:
        parse_money(text, "discount_value")
    assert caught.value.field == "discount_value"
    assert str(caught.value).startswith("discount_value: ")
    assert caught.value.value == text


@pytest.mark.parametrize("text", ["TBD", "INF", "NAN", "USD", "ALL", " EUR ", "USD $"])
def test_a_bare_word_is_garbage_not_blank(text: str) -> None:
    """Any three capitals were stripped as a currency code, so 'TBD' or 'INF' read as blank
    (None). A code is stripped only next to a number: a word alone, even a code (a column
    shifted by one), is not an amount."""
    with pytest.raises(FieldError) as caught:
        parse_money(text, "total")
    assert caught.value.value == text


@pytest.mark.parametrize("text", ["12.50 TBD", "ABC 12.50", "12 INF", "5XYZ", "US 5", "USDX 5"])
def test_three_capitals_that_are_no_iso_4217_code_are_not_stripped(text: str) -> None:
    with pytest.raises(FieldError):
        parse_money(text, "total")


@pytest.mark.parametrize(
    ("text", "want"),
    [("JPY 1000", "1000"), ("1000JPY", "1000"), ("KWD 1.250", "1.250"), ("ALL 500", "500"),
     ("HRK 99.90", "99.90"), ("XCG 10", "10"), ("ZWG 7.5", "7.5")],
)  # fmt: skip
def test_iso_4217_codes_next_to_the_number_are_stripped(text: str, want: str) -> None:
    """Active codes, and ones withdrawn lately that past orders carry (HRK: Croatia, 2023)."""
    assert same_decimal(parse_money(text, "total"), want)


def test_a_code_is_stripped_with_decimal_comma_too() -> None:
    assert same_decimal(parse_money("EUR 1.234,50", "total", decimal_comma=True), "1234.50")
    assert same_decimal(parse_money("12,50 EUR", "total", decimal_comma=True), "12.50")
    with pytest.raises(FieldError):
        parse_money("TBD", "total", decimal_comma=True)


@pytest.mark.parametrize("value", [None, "", "   ", "$", " € "])
def test_blank_money_is_none(value: str | None) -> None:
    assert parse_money(value, "total") is None


def test_booleans_are_not_money() -> None:
    with pytest.raises(FieldError) as caught:
        parse_money(True, "total")
    assert caught.value.field == "total"


@pytest.mark.parametrize(("value", "want"), [(12.5, "12.5"), (3, "3"), (0.1, "0.1")])
def test_numbers_from_json_become_their_decimal_text(value: float, want: str) -> None:
    """0.1 is Decimal('0.1'), not the binary float's 0.1000000000000000055511151231257827."""
    assert same_decimal(parse_money(value, "total"), want)


# ---------------------------------------------------------------- minor units, quantize


@pytest.mark.parametrize(
    ("currency", "units", "step"),
    [("JPY", 0, "1"), ("jpy", 0, "1"), ("KRW", 0, "1"), ("USD", 2, "0.01"), ("EUR", 2, "0.01"),
     ("KWD", 3, "0.001"), ("BHD", 3, "0.001"), ("XYZ", 2, "0.01")],
)  # fmt: skip
def test_minor_units_follow_iso_4217(currency: str, units: int, step: str) -> None:
    assert minor_units(currency) == units
    assert same_decimal(quantum(currency), step)


@pytest.mark.parametrize(
    ("amount", "currency", "want"),
    [("1234.5", "JPY", "1235"), ("1234.49", "JPY", "1234"), ("1000", "JPY", "1000"),
     ("2.345", "USD", "2.35"), ("2.344", "USD", "2.34"), ("5", "USD", "5.00"),
     ("-2.345", "USD", "-2.35"), ("1.2345", "KWD", "1.235"), ("1.2", "KWD", "1.200"),
     ("0.0049", "EUR", "0.00")],
)  # fmt: skip
def test_quantize_rounds_half_up_to_the_minor_unit(amount: str, currency: str, want: str) -> None:
    assert same_decimal(quantize(Decimal(amount), currency), want)


# ---------------------------------------------------------------- parse_quantity


@pytest.mark.parametrize(
    ("value", "want"),
    [("3", 3), (" 4 ", 4), ("0", 0), ("3.0", 3), (7, 7), (2.0, 2), (None, 1), ("", 1)],
)
def test_whole_quantities_are_read_and_blank_is_one(value: object, want: int) -> None:
    got = parse_quantity(value, "quantity")
    assert got == want and type(got) is int


@pytest.mark.parametrize("value", ["2.5", "-1", "abc", "1,000", "NaN", "Infinity", True])
def test_fractional_negative_or_unreadable_quantities_are_refused(value: object) -> None:
    with pytest.raises(FieldError) as caught:
        parse_quantity(value, "quantity")
    assert caught.value.field == "quantity"


@pytest.mark.parametrize("value", ["²", "①", " ² ", "1²", "\u0663", "\uff13", "1.\u0665"])
def test_digit_like_symbols_are_a_field_error(value: str) -> None:
    """str.isdigit() is true for '²' and '①', int() is not (a bare ValueError stopped the run);
    Arabic-Indic and full-width digits read as numbers to both: only ASCII digits are read."""
    with pytest.raises(FieldError) as caught:
        parse_quantity(value, "quantity")
    assert caught.value.field == "quantity" and caught.value.value == value


# ---------------------------------------------------------------- parse_email


@pytest.mark.parametrize(
    ("value", "want"),
    [("a@example.com", "a@example.com"), ("  a@example.com ", "a@example.com"),
     ("A.B+tag@sub.example.co.uk", "A.B+tag@sub.example.co.uk")],
)  # fmt: skip
def test_valid_emails_come_back_trimmed(value: str, want: str) -> None:
    assert parse_email(value) == want


@pytest.mark.parametrize(
    "value",
    [None, "", "a@b", "a@@example.com", "a b@example.com", "a@example.c", "a@-example.com",
     "a@example.com.", "a..b@example.com", ".a@example.com", "example.com"],
)  # fmt: skip
def test_malformed_emails_are_none(value: str | None) -> None:
    assert parse_email(value) is None


def test_emails_longer_than_254_characters_are_none() -> None:
    domain = f"{'b' * 63}.{'c' * 63}.{'d' * 57}.com"
    longest = f"{'a' * 64}@{domain}"
    assert len(longest) == 254 and parse_email(longest) == longest
    too_long = f"{'a' * 64}@{'b' * 63}.{'c' * 63}.{'d' * 58}.com"
    assert len(too_long) == 255 and parse_email(too_long) is None


# ---------------------------------------------------------------- parse_phone


@pytest.mark.parametrize(
    ("value", "want"),
    [("+1 650-253-0000", "+16502530000"), ("+44 20 7946 0958", "+442079460958"),
     ("+81 90-1234-5678", "+819012345678"), ("'+16502530000", "+16502530000")],
)  # fmt: skip
def test_international_numbers_become_e164_without_a_country(value: str, want: str) -> None:
    assert parse_phone(value, None) == want


@pytest.mark.parametrize(
    ("value", "country", "want"),
    [("(650) 253-0000", "US", "+16502530000"), ("650.253.0000", "us", "+16502530000"),
     ("020 7946 0958", "GB", "+442079460958"), ("090-1234-5678", "JP", "+819012345678"),
     ("+44 20 7946 0958", "US", "+442079460958")],
)  # fmt: skip
def test_national_numbers_take_the_country_given(value: str, country: str, want: str) -> None:
    assert parse_phone(value, country) == want


@pytest.mark.parametrize(
    ("value", "country"),
    [("650-253-0000", None), ("6502530000", "USA"), ("12345", "US"), ("not a phone", "US"),
     ("+1 000-000-0000", None), ("", "US"), (None, "US")],
)  # fmt: skip
def test_numbers_that_cannot_be_made_valid_are_none(value: str | None, country: str | None) -> None:
    assert parse_phone(value, country) is None


@pytest.mark.parametrize(
    ("value", "want"),
    [("0044 20 7946 0958", "+442079460958"), ("001 650-253-0000", "+16502530000"),
     ("00 81 90-1234-5678", "+819012345678"), ("'0044 20 7946 0958", "+442079460958")],
)  # fmt: skip
def test_00_international_prefix_is_read_without_a_country(value: str, want: str) -> None:
    """parse_phone let a '00' number through without a country, but phonenumbers reads '00'
    only for a region that dials it: it was always None."""
    assert parse_phone(value, None) == want


@pytest.mark.parametrize("value", ["00", "0044", "0000 20 7946 0958", "00 1 000-000-0000"])
def test_00_numbers_that_are_not_valid_are_none(value: str) -> None:
    assert parse_phone(value, None) is None


def test_00_with_a_country_that_dials_it_is_read_as_before() -> None:
    assert parse_phone("0044 20 7946 0958", "DE") == "+442079460958"


# ---------------------------------------------------------------- parse_time


@pytest.mark.parametrize(
    ("text", "instant", "offset_hours"),
    [("2021-07-12T04:57:56-04:00", datetime(2021, 7, 12, 8, 57, 56, tzinfo=UTC), -4),
     ("2021-07-12T04:57:56Z", datetime(2021, 7, 12, 4, 57, 56, tzinfo=UTC), 0),
     ("2021-07-12T04:57:56+05:30", datetime(2021, 7, 11, 23, 27, 56, tzinfo=UTC), 5.5),
     ("2021-07-12 04:57:56 -0400", datetime(2021, 7, 12, 8, 57, 56, tzinfo=UTC), -4),
     ("2021-07-12 04:57:56 -04:00", datetime(2021, 7, 12, 8, 57, 56, tzinfo=UTC), -4),
     ("2021-07-12 04:57 +0530", datetime(2021, 7, 11, 23, 27, tzinfo=UTC), 5.5),
     ("2021-07-12 04:57:56 EDT", datetime(2021, 7, 12, 8, 57, 56, tzinfo=UTC), -4),
     ("Jul 12, 2021 4:57 PM EST", datetime(2021, 7, 12, 21, 57, tzinfo=UTC), -5)],
)  # fmt: skip
def test_an_offset_in_the_text_wins_over_the_default_zone(
    text: str, instant: datetime, offset_hours: float
) -> None:
    parsed = parse_time(text, "created_at", NEW_YORK)
    assert parsed is not None
    moment, naive = parsed
    assert not naive
    assert moment == instant
    assert moment.utcoffset() == timedelta(hours=offset_hours)


@pytest.mark.parametrize(
    ("text", "instant"),
    [("2021-07-12 04:57:56", datetime(2021, 7, 12, 8, 57, 56, tzinfo=UTC)),  # EDT, -4
     ("2021-01-12 04:57:56", datetime(2021, 1, 12, 9, 57, 56, tzinfo=UTC)),  # EST, -5
     ("2021-07-12", datetime(2021, 7, 12, 4, 0, tzinfo=UTC))],
)  # fmt: skip
def test_naive_times_are_read_in_the_default_zone_and_say_so(text: str, instant: datetime) -> None:
    parsed = parse_time(text, "created_at", NEW_YORK)
    assert parsed is not None
    moment, naive = parsed
    assert naive
    assert moment == instant


@pytest.mark.filterwarnings("ignore::dateutil.parser.UnknownTimezoneWarning")  # pytest resets
def test_an_unknown_zone_abbreviation_leaves_the_time_naive() -> None:
    parsed = parse_time("2021-07-12 04:57:56 XYZ", "created_at", NEW_YORK)
    assert parsed == (datetime(2021, 7, 12, 4, 57, 56, tzinfo=NEW_YORK), True)


def test_a_layout_date_format_is_followed() -> None:
    parsed = parse_time("12/07/2021 04:57", "created_at", UTC, "%d/%m/%Y %H:%M")
    assert parsed == (datetime(2021, 7, 12, 4, 57, tzinfo=UTC), True)
    with pytest.raises(FieldError):
        parse_time("2021-07-12 04:57", "created_at", UTC, "%d/%m/%Y %H:%M")


@pytest.mark.parametrize(
    "text", ["garbage", "2021-02-30 10:00:00", "2021-07-12 04:57:56 +2500", "99999-01-01"]
)
def test_unreadable_times_are_a_field_error_naming_the_field(text: str) -> None:
    with pytest.raises(FieldError) as caught:
        parse_time(text, "fulfilled_at", UTC)
    assert caught.value.field == "fulfilled_at"


@pytest.mark.parametrize("value", [None, "", "   "])
def test_blank_times_are_none(value: str | None) -> None:
    assert parse_time(value, "created_at", UTC) is None


# ---------------------------------------------------------------- clean, zone


@pytest.mark.parametrize(
    ("value", "want"),
    [(None, None), ("", None), ("   ", None), (" a ", "a"), (5, "5"), (0, "0"), (1.5, "1.5"),
     ("a &amp; b", "a &amp; b")],
)  # fmt: skip
def test_clean_trims_and_blank_is_none(value: object, want: str | None) -> None:
    assert clean(value) == want


def test_clean_unescapes_html_only_when_asked() -> None:
    assert clean(" Caf&eacute; &amp; Tea ", unescape=True) == "Café & Tea"
    assert clean("Caf&eacute;") == "Caf&eacute;"


@pytest.mark.parametrize("name", ["UTC", "utc", "Z", "GMT"])
def test_utc_names_are_utc(name: str) -> None:
    assert zone(name) is UTC


def test_iana_names_are_their_zone() -> None:
    berlin = zone("Europe/Berlin")
    assert datetime(2021, 7, 1, 12, tzinfo=berlin).utcoffset() == timedelta(hours=2)
    assert datetime(2021, 1, 1, 12, tzinfo=berlin).utcoffset() == timedelta(hours=1)


@pytest.mark.parametrize("name", ["Mars/Base", "", "../etc/passwd", "Europe/berlin "])
def test_unknown_zones_are_a_usage_error_with_a_hint(name: str) -> None:
    with pytest.raises(UsageError) as caught:
        zone(name)
    assert "unknown time zone" in caught.value.message
    assert caught.value.hint is not None and "IANA" in caught.value.hint
