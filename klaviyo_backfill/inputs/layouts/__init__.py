"""Layouts: how the columns (CSV) or paths (JSON) of an export map onto order fields.

A layout is data, a TOML file: the built-in ones live in `layouts/`, and `--layout FILE`
loads a user's. A layout may name one small hook (see `hooks.py`) for what a table
cannot say, such as Shopify's refund transactions.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ...errors import LayoutError, UsageError
from ..values import is_currency, zone

__all__ = [
    "ADDRESS_KEYS",
    "LINE_KEYS",
    "ORDER_KEYS",
    "Layout",
    "Options",
    "Source",
    "builtin_layouts",
    "delimiter_named",
    "load",
]

ADDRESS_KEYS = (  # the fields of model.Address, as billing_*/shipping_* layout keys
    "first_name",
    "last_name",
    "company",
    "address1",
    "address2",
    "city",
    "region",
    "region_code",
    "country",
    "country_code",
    "zip",
    "phone",
)
ORDER_KEYS = frozenset(
    [
        "id",
        "number",
        "created_at",
        "email",
        "phone",
        "customer_phone",
        "external_id",
        "customer_id",
        "first_name",
        "last_name",
    ]
    + [
        "name",
        "currency",
        "total",
        "subtotal",
        "discount_code",
        "discount_value",
        "status",
        "store",
        "fulfillment_status",
    ]
    + [
        "fulfilled_at",
        "cancelled_at",
        "cancel_reason",
        "refunded_amount",
        "refunded_at",
        "refund_reason",
    ]
    + [f"{side}_{key}" for side in ("billing", "shipping") for key in (*ADDRESS_KEYS, "name")]
)
LINE_KEYS = frozenset(
    [
        "sku",
        "product_id",
        "name",
        "variant",
        "quantity",
        "price",
        "brand",
        "categories",
        "url",
        "image_url",
    ]
)
_OPTION_KEYS = frozenset(
    [
        "date_format",
        "timezone",
        "currency",
        "decimal_comma",
        "delimiter",
        "encoding",
        "lines",
        "orders_path",
        "bulk",
        "unescape_html",
        "fulfilled_statuses",
        "cancelled_statuses",
        "refunded_statuses",
        "categories_separator",
    ]
)
REQUIRED_ORDER_KEYS = ("id", "created_at")


@dataclass(frozen=True, slots=True)
class Source:
    """Where a field comes from: a column name (CSV) or a dotted path (JSON)."""

    path: str
    timezone: str | None = None  # a zone that overrides the layout's for this source


@dataclass(frozen=True, slots=True)
class Options:
    date_format: str | None = None
    timezone: str | None = None
    currency: str | None = None
    decimal_comma: bool = False
    delimiter: str | None = None  # CSV: None until detected from the file's header (, ; tab)
    encoding: str | None = None
    lines: str | tuple[str, ...] | None = None  # JSON: where an order's items sit (the first found)
    orders_path: tuple[str, ...] = ()  # JSON: where a document's orders sit (`data.orders.nodes`)
    bulk: bool = False  # JSON Lines: lines with `__parentId` belong to the line they name
    unescape_html: bool = False
    categories_separator: str = ","
    fulfilled_statuses: frozenset[str] = frozenset()
    cancelled_statuses: frozenset[str] = frozenset()
    refunded_statuses: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Layout:
    name: str
    kind: str  # "csv" | "json" | "" (a user layout: each file decides)
    order: dict[str, tuple[Source, ...]]
    line: dict[str, tuple[Source, ...]]
    options: Options = field(default_factory=Options)
    description: str = ""
    group_by: str | None = None  # CSV: adjacent rows with the same value form one order
    detect: tuple[str, ...] = ()  # CSV columns / JSON keys that identify the layout
    hook: str | None = None
    origin: str = ""
    # "order.id", "line.price"...: the keys whose columns must exist; None = every key named
    required: frozenset[str] | None = None


def _sources(value: Any, key: str, origin: str) -> tuple[Source, ...]:
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if isinstance(item, str):
            out.append(Source(item))
        elif isinstance(item, dict) and isinstance(item.get("path"), str):
            out.append(Source(item["path"], _zone_name(item.get("timezone"), key, origin)))
        else:
            raise LayoutError(origin, f"{key}: expected a column name, a list, or {{path=...}}")
    return tuple(out)


def _zone_name(name: Any, key: str, origin: str) -> str | None:
    """A zone a layout names must exist: said here, with the layout file, not at the first order."""
    if name is None:
        return None
    try:
        zone(str(name))
    except UsageError as exc:
        raise LayoutError(origin, f"{key}: {exc.message}", hint=exc.hint) from None
    return str(name)


def _known_only(table: dict[str, Any], known: frozenset[str], section: str, origin: str) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise LayoutError(
            origin,
            f"unknown key {unknown[0]!r} in [{section}]",
            hint=f"Known keys: {', '.join(sorted(known))}.",
        )


def _fields(table: Any, known: frozenset[str], section: str, origin: str) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise LayoutError(origin, f"[{section}] must be a table")
    _known_only(table, known, section, origin)
    return {key: _sources(value, f"[{section}] {key}", origin) for key, value in table.items()}


def _options(table: dict[str, Any], origin: str) -> Options:
    _known_only(table, _OPTION_KEYS, "options", origin)
    opts = dict(table)
    _zone_name(opts.get("timezone"), "[options] timezone", origin)
    currency = opts.get("currency")
    if currency is not None and not is_currency(str(currency)):
        raise LayoutError(origin, f"[options] currency {currency!r} is not an ISO 4217 code",
                          hint="Write e.g. EUR.")  # fmt: skip
    for key in ("orders_path", "lines"):
        value = opts.get(key)
        if isinstance(value, list):
            opts[key] = tuple(str(v) for v in value)
        elif key == "orders_path" and value is not None:
            opts[key] = (str(value),)
    if "delimiter" in opts:
        opts["delimiter"] = delimiter_named(opts["delimiter"], "[options] delimiter", origin)
    for key in ("fulfilled_statuses", "cancelled_statuses", "refunded_statuses"):
        if key in opts:
            opts[key] = frozenset(str(s).lower() for s in opts[key])
    return Options(**opts)


_DELIMITER_NAMES = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}


def delimiter_named(value: Any, option: str, origin: str | None = None) -> str:
    """One character (`,` `;` `|`), or `tab`/`\\t`: a CSV delimiter, or an error naming
    where it was given."""
    text = str(value)
    found = _DELIMITER_NAMES.get(text.lower(), text)
    if len(found) == 1 and found not in '\r\n"' and not found.isalnum():
        return found
    message = f"{option} {text!r} is not a delimiter"
    hint = "Give one character such as ';' or '|', or 'tab'."
    if origin is not None:
        raise LayoutError(origin, message, hint=hint)
    raise UsageError(message, hint)


def parse(doc: dict[str, Any], origin: str) -> Layout:
    head = doc.get("layout", {})
    order = _fields(doc.get("order", {}), ORDER_KEYS, "order", origin)
    for key in REQUIRED_ORDER_KEYS:
        if key not in order:
            raise LayoutError(origin, f"[order] {key} is required")
    options = _options(doc.get("options", {}), origin)
    kind = head.get("kind", "")  # "" = decided by looking at each file
    hook = head.get("hook")
    if hook is not None:
        from ..hooks import HOOKS

        if not isinstance(hook, str) or hook not in HOOKS:
            raise LayoutError(origin, f"[layout] hook {hook!r} is not a hook this tool has",
                              hint="Hooks: " + ", ".join(sorted(HOOKS)) + ".")  # fmt: skip
    if kind not in ("csv", "json", ""):
        raise LayoutError(origin, f"[layout] kind must be 'csv' or 'json', not {kind!r}")
    return Layout(
        name=head.get("name", Path(origin).stem),
        kind=kind,
        order=order,
        line=_fields(doc.get("line", {}), LINE_KEYS, "line", origin),
        options=options,
        description=head.get("description", ""),
        group_by=head.get("group_by"),
        detect=tuple(head.get("detect", ())),
        hook=hook,
        origin=origin,
        required=frozenset(head["required"]) if "required" in head else None,
    )


def load(path: str | Path) -> Layout:
    """Read a layout file; every problem is a LayoutError naming the file."""
    origin = str(path)
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except OSError as exc:
        raise LayoutError(origin, f"cannot read layout file: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise LayoutError(origin, f"not valid TOML: {exc}") from None
    return parse(doc, origin)


def builtin_layouts() -> dict[str, Layout]:
    """The layouts shipped in klaviyo_backfill/inputs/layouts/, by name."""
    found = {}
    for entry in sorted(resources.files(__package__).iterdir(), key=str):
        if entry.name.endswith(".toml"):
            layout = parse(tomllib.loads(entry.read_text("utf-8")), f"layouts/{entry.name}")
            found[layout.name] = layout
    return found
