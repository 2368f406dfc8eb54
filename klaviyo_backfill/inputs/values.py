"""Parse the values of an export: money, quantities, times, emails and phone numbers.

Each parser takes the raw value and the layout field name it came from, and raises
`FieldError` (which rejects that one order) when the value cannot be used.
"""

from __future__ import annotations

import html
import re
import warnings
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import phonenumbers
from dateutil import parser as dateutil_parser
from dateutil.parser import UnknownTimezoneWarning

from ..errors import FieldError, UsageError

__all__ = [
    "STORE_LENGTH",
    "clean",
    "is_currency",
    "minor_units",
    "parse_email",
    "parse_money",
    "parse_period",
    "parse_phone",
    "parse_quantity",
    "parse_time",
    "quantize",
    "quantum",
    "read_time",
    "store_problem",
    "zone",
]

_EMAIL = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)
_PLAIN_MONEY = re.compile(r"-?\d+(\.\d+)?\Z")
_MONEY_JUNK = re.compile(r"[\s\u00a0'$€£¥₹]")
# Three capitals at either end of an amount, next to its number: stripped where they are an
# ISO 4217 code ('USD 12.50', '12.50EUR'). A word alone ('TBD', 'INF', 'USD') is no amount.
_MONEY_CODE = re.compile(r"^[A-Z]{3}(?=[^A-Za-z])|(?<=[^A-Za-z])[A-Z]{3}$")
# The active ISO 4217 codes (funds, metals and test codes too), and those withdrawn since
# 2011 that past orders may still carry (ANG BYR CUC EEK HRK LTL LVL MRO SLL STD VEF ZMK ZWL).
_ISO_4217 = frozenset({
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD",
    "BDT", "BHD", "BIF", "BMD", "BND", "BOB", "BOV", "BRL", "BSD", "BTN", "BWP", "BYN",
    "BYR", "BZD", "CAD", "CDF", "CHE", "CHF", "CHW", "CLF", "CLP", "CNY", "COP", "COU",
    "CRC", "CUC", "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD", "EEK", "EGP", "ERN",
    "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ", "GYD",
    "HKD", "HNL", "HRK", "HTG", "HUF", "IDR", "ILS", "INR", "IQD", "IRR", "ISK", "JMD",
    "JOD", "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT", "LAK",
    "LBP", "LKR", "LRD", "LSL", "LTL", "LVL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK",
    "MNT", "MOP", "MRO", "MRU", "MUR", "MVR", "MWK", "MXN", "MXV", "MYR", "MZN", "NAD",
    "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN", "PGK", "PHP", "PKR", "PLN",
    "PYG", "QAR", "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD",
    "SHP", "SLE", "SLL", "SOS", "SRD", "SSP", "STD", "STN", "SVC", "SYP", "SZL", "THB",
    "TJS", "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "USN",
    "UYI", "UYU", "UYW", "UZS", "VED", "VEF", "VES", "VND", "VUV", "WST", "XAF", "XAG",
    "XAU", "XBA", "XBB", "XBC", "XBD", "XCD", "XCG", "XDR", "XOF", "XPD", "XPF", "XPT",
    "XSU", "XTS", "XUA", "XXX", "YER", "ZAR", "ZMK", "ZMW", "ZWG", "ZWL",
})  # fmt: skip
_SHOPIFY_TIME = re.compile(
    r"^(\d{4})-(\d\d)-(\d\d)[ T](\d\d):(\d\d)(?::(\d\d))? ?([+-])(\d\d):?(\d\d)$"
)
# ISO 4217 currencies whose minor unit is not the cent.
_MINOR_UNITS = {
    **dict.fromkeys(
        [
            "BIF",
            "CLP",
            "DJF",
            "GNF",
            "ISK",
            "JPY",
            "KMF",
            "KRW",
            "PYG",
            "RWF",
            "UGX",
            "UYI",
            "VND",
            "VUV",
            "XAF",
            "XOF",
            "XPF",
        ],
        0,
    ),
    **dict.fromkeys(["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"], 3),
}


# An abbreviation dateutil does not know leaves the time naive: read in --timezone, and
# counted in the summary's warnings, rather than warned about once per row on stderr.
warnings.filterwarnings("ignore", category=UnknownTimezoneWarning)

# Zone abbreviations seen in exports, as the fixed offsets they stand for (dateutil warns and
# drops the ones it does not know).
_ZONE_NAMES = {
    name: int(hours * 3600)
    for name, hours in {
        "UTC": 0, "GMT": 0, "Z": 0, "BST": 1, "CET": 1, "CEST": 2, "EET": 2, "EEST": 3,
        "EST": -5, "EDT": -4, "CST": -6, "CDT": -5, "MST": -7, "MDT": -6, "PST": -8, "PDT": -7,
        "AKST": -9, "AKDT": -8, "HST": -10, "AEST": 10, "AEDT": 11, "JST": 9,
    }.items()
}  # fmt: skip


# The defaults read_time gives dateutil. No part of one may be read as the other's: each
# year (both leap years) and month (both of 31 days) apart, each day a week or more from the
# other's (a weekday moves a missing day up to six days on), midnight in the first.
_PROBE = datetime(2000, 1, 3)
_OTHER_PROBE = datetime(2004, 3, 17, 1)


def clean(value: Any, unescape: bool = False) -> str | None:
    """A trimmed string, or None for blank; numbers become their text."""
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    text = text.strip()
    if unescape and "&" in text:
        text = html.unescape(text)
    return text or None


def _strip_apostrophe(text: str) -> str:
    # spreadsheets keep leading zeros by prefixing an apostrophe: '02110
    return text[1:] if text.startswith("'") else text


def clean_code(value: Any) -> str | None:
    text = clean(value)
    return None if text is None else (_strip_apostrophe(text).strip() or None)


def parse_money(value: Any, field: str, decimal_comma: bool = False) -> Decimal | None:
    """Decimal money from '12.50', '1,234.50', '$12.50', 12.5 or (decimal_comma) '1.234,50'."""
    if (
        type(value) is str
        and not decimal_comma
        and len(value) < _DIGITS
        and _PLAIN_MONEY.match(value)
    ):
        return Decimal(value)  # the common case, first
    if value is None:
        return None
    if isinstance(value, bool):
        raise FieldError(field, value, "not an amount of money")
    if isinstance(value, int | float):
        return _bounded(Decimal(str(value)), field, value)
    text = str(value)
    if _PLAIN_MONEY.match(text) and not decimal_comma:
        return _bounded(Decimal(text), field, value)
    text = _MONEY_JUNK.sub("", text.strip())
    if not text:
        return None
    text = _MONEY_CODE.sub(_iso_code_out, text)
    if decimal_comma:
        if "." in text:  # a thousands separator: only where it groups three digits
            if not re.fullmatch(r"-?\d{1,3}(\.\d{3})+(,\d+)?", text):
                raise FieldError(field, value, "not an amount of money")
            text = text.replace(".", "")
        text = text.replace(",", ".")
    elif "," in text:
        if not re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", text):
            raise FieldError(field, value, "not an amount of money")
        text = text.replace(",", "")
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise FieldError(field, value, "not an amount of money") from None
    if not amount.is_finite():
        raise FieldError(field, value, "not an amount of money")
    return _bounded(amount, field, value)


# An amount of money has fewer than 15 digits before its point: a quadrillion is no price,
# Klaviyo keeps a value as a double (15 significant digits), and a product with a quantity
# (at most MAX_QUANTITY) stays inside Decimal's 28 digits, where quantize() would fail
_DIGITS = 15
MAX_QUANTITY = 10**9


def _bounded(amount: Decimal, field: str, value: Any) -> Decimal:
    if not amount.is_finite():  # a JSON 1e999 is a float('inf')
        raise FieldError(field, value, "not an amount of money")
    if amount and amount.adjusted() >= _DIGITS:
        raise FieldError(field, value, f"an amount of more than {_DIGITS} digits: not a price")
    return amount


def _iso_code_out(match: re.Match[str]) -> str:
    return "" if match.group() in _ISO_4217 else match.group()


def is_currency(code: str) -> bool:
    """Whether `code` (any case) is an ISO 4217 currency code, current or withdrawn since 2011."""
    return code.upper() in _ISO_4217


STORE_LENGTH = 40  # characters a store's name may have


def store_problem(name: str) -> str | None:
    """What is wrong with a store's name (`--store`, a layout's `store` field), if anything:
    it goes into every unique id of its orders, so it is short, printable, and without ':'
    (what joins it to the order id: model.order_key) or surrounding spaces."""
    if not name:
        return "is empty"
    if len(name) > STORE_LENGTH:
        return f"is longer than {STORE_LENGTH} characters"
    if not name.isprintable():
        return "holds a control or unprintable character"
    if ":" in name:
        return "holds ':' (it joins a store to an order id)"
    if name != name.strip():
        return "begins or ends with a space"
    return None


def minor_units(currency: str) -> int:
    return _MINOR_UNITS.get(currency.upper(), 2)


@lru_cache(maxsize=256)
def quantum(currency: str) -> Decimal:
    """The currency's minor unit: Decimal('0.01') for most, Decimal('1') for JPY."""
    return Decimal(1).scaleb(-minor_units(currency))


def quantize(amount: Decimal, currency: str) -> Decimal:
    """Round half-up to the currency's minor unit (cents for most); FieldError for an amount
    too large to hold in cents (Decimal's 28 digits)."""
    try:
        return amount.quantize(quantum(currency), rounding=ROUND_HALF_UP)
    except InvalidOperation:
        raise FieldError("amount", amount, "too large to be an amount of money") from None


def parse_quantity(value: Any, field: str) -> int:
    if value is None or value == "":
        return 1
    if type(value) is str and value.isascii() and value.isdigit() and len(value) < 10:
        return int(value)
    text = str(value).strip()
    if not text.isascii():  # '²' passes isdigit, not int(); '٣' both: only 0-9 count
        raise FieldError(field, value, "not a quantity")
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise FieldError(field, value, "not a quantity") from None
    if not number.is_finite() or number < 0 or number > MAX_QUANTITY:
        raise FieldError(field, value, f"not a whole quantity from 0 to {MAX_QUANTITY:,}")
    if number != number.to_integral_value():
        raise FieldError(field, value, "not a whole, non-negative quantity")
    return int(number)


@lru_cache(maxsize=64)
def zone(name: str) -> tzinfo:
    """The IANA zone of that name, or a UsageError that says what a name looks like."""
    if name.upper() in ("UTC", "Z", "GMT"):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        meant = [z for z in available_timezones() if z.lower() == name.strip().lower()]
        raise UsageError(
            f"unknown time zone {name!r}",
            f"Did you mean {sorted(meant)[0]}? (IANA names are spelt with their capitals)" if meant
            else "Use an IANA name such as America/New_York or UTC.",
        ) from None  # fmt: skip


@lru_cache(maxsize=256)
def _fixed_offset(sign: str, hours: int, minutes: int) -> timezone:
    delta = timedelta(hours=hours, minutes=minutes)
    return timezone(-delta if sign == "-" else delta)


def _fast_time(text: str) -> datetime | None:
    """ISO 8601 and Shopify's '2021-07-12 04:57:56 -0400', without dateutil."""
    if len(text) < 10 or text[4] != "-" or text[7] != "-":
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    match = _SHOPIFY_TIME.match(text)  # an offset after a space, or with no colon
    if match is None:
        return None
    y, mo, d, h, mi, s, sign, oh, om = match.groups()
    return datetime(
        int(y), int(mo), int(d), int(h), int(mi), int(s or 0),
        tzinfo=_fixed_offset(sign, int(oh), int(om)),
    )  # fmt: skip


def read_time(text: str) -> tuple[datetime, tuple[str, ...]]:
    """What dateutil reads in `text`, and the parts of a moment it does not give, of "year",
    "month", "day" and "time" (a day without a time reads as its midnight).

    dateutil fills what a text leaves out from a default, today's date unless told: `2024`
    would read as this day of 2024, `Monday` as the coming Monday. Read with a default no
    date can be mistaken for (year, month and day each) and, where the result could still be
    that default's, with a second one: a part that differs between the two readings came
    from the default. Raises ValueError or OverflowError when dateutil reads no date at all.
    """
    moment = dateutil_parser.parse(text, default=_PROBE, tzinfos=_ZONE_NAMES)
    if (
        moment.year != _PROBE.year
        and moment.month != _PROBE.month
        and not _PROBE.day <= moment.day < _PROBE.day + 7  # a weekday moves a missing day on
        and moment.hour != 0
    ):
        return moment, ()  # no part of it can have come from the default
    other = dateutil_parser.parse(text, default=_OTHER_PROBE, tzinfos=_ZONE_NAMES)
    missing = [
        part for part in ("year", "month", "day") if getattr(moment, part) != getattr(other, part)
    ]
    if moment.hour != other.hour:
        missing.append("time")
    return moment, tuple(missing)


# What read_time may find missing in a date that stands for a span: a moment (nothing), a
# day (its time), a month (its day), a year (its month).
_PERIODS = ((), ("time",), ("day", "time"), ("month", "day", "time"))


def _none_of(parts: tuple[str, ...]) -> str:
    """'no day', 'no year or month', 'no year, month or day'."""
    return "no " + (parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} or {parts[-1]}")


def parse_time(
    value: Any, field: str, default_zone: tzinfo, date_format: str | None = None
) -> tuple[datetime, bool] | None:
    """An aware datetime, and whether it was naive (read in `default_zone`).

    A value without a year, a month and a day (`2024`, `June 2020`, `Monday`, `12`) is no
    moment of an order: FieldError, never a date completed from today."""
    text = clean(value)
    if text is None:
        return None
    missing: tuple[str, ...] = ()
    try:
        if date_format is not None:
            moment = datetime.strptime(text, date_format)
        elif (fast := _fast_time(text)) is not None:
            moment = fast
        else:
            moment, missing = read_time(text)
    except (ValueError, OverflowError, TypeError):
        raise FieldError(field, value, "not a date and time") from None
    if missing and missing != ("time",):
        date_parts = tuple(part for part in missing if part != "time")
        raise FieldError(field, value, f"not a full date: {_none_of(date_parts)}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        return moment.replace(tzinfo=default_zone), True
    return moment, False


def parse_period(text: str, field: str, default_zone: tzinfo) -> tuple[datetime, datetime]:
    """The span a date stands for: a year (`2024`), a month (`2024-03`, `March 2024`) or a day
    (`2024-03-05`), as its first moment and the first moment after it, in `default_zone`
    unless the text has an offset; a moment (`2024-03-05 14:30`) spans nothing (start ==
    end). FieldError for a text without a year, or a day without a month, or a time without
    a day (`Monday`, `March`, `Dec 5`, `12`): nothing is completed from today."""
    try:
        moment, missing = read_time(text)
    except (ValueError, OverflowError, TypeError):
        raise FieldError(field, text, "not a date") from None
    if missing not in _PERIODS:
        date_parts = tuple(part for part in missing if part != "time")
        raise FieldError(field, text, f"not a date: it has {_none_of(date_parts)}")
    aware = moment.tzinfo is not None and moment.utcoffset() is not None
    tz = moment.tzinfo if aware else default_zone
    if not missing:
        moment = moment.replace(tzinfo=tz)
        return moment, moment
    year, month, day = moment.year, moment.month, moment.day
    try:
        if missing == ("time",):
            start = date(year, month, day)
            end = start + timedelta(days=1)
        elif missing == ("day", "time"):
            start = date(year, month, 1)
            end = date(year + 1, 1, 1) if month == 12 else date(year, month + 1, 1)
        else:
            start, end = date(year, 1, 1), date(year + 1, 1, 1)
    except (ValueError, OverflowError):  # the end of 9999
        raise FieldError(field, text, "not a date") from None
    return datetime.combine(start, time(), tz), datetime.combine(end, time(), tz)


def parse_email(value: Any) -> str | None:
    """The address when it is syntactically an email address; None otherwise."""
    text = clean(value)
    if text is None or len(text) > 254 or not _EMAIL.match(text):
        return None
    return text


def parse_phone(value: Any, country_code: str | None) -> str | None:
    """E.164 ("+16175550123") when the number is valid for its country, else None."""
    text = clean_code(value)
    if text is None:
        return None
    region = country_code.upper() if country_code and len(country_code) == 2 else None
    return _e164(text, region)


@lru_cache(maxsize=1 << 16)
def _e164(text: str, region: str | None) -> str | None:
    if region is None:
        if text.startswith("00"):  # the international prefix: phonenumbers reads it only
            text = "+" + text[2:]  # for a region that dials it, so write it as "+"
        elif not text.startswith("+"):
            return None
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))
