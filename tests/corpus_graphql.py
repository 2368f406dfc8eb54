"""The corpus's orders as Shopify's GraphQL Admin API exports them (order-exports.md): a bulk
operation's JSON Lines (each line item its own line with `__parentId`) and paged answers
(`{"data": {"orders": {"edges": [{"node": ...}]}}}` or `nodes`).

Rendered from the same "truth" orders as `corpus.write_shopify_json`, in GraphQL's own terms:
GIDs for ids, MoneyBags with trailing zeros dropped (`"24.0"`), times in UTC with `Z`, enums
in capitals (`PAID`, `FULFILLED`, `CUSTOMER`). Stdlib only, like corpus.py.

    write_bulk(orders, path, arrangement="shuffled", seed=3)
    write_pages(orders, path, page_size=50, shape="nodes")
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

try:  # tests/ as a plain directory on sys.path, or as a package
    import corpus
except ImportError:
    from tests import corpus  # type: ignore[no-redef]

ARRANGEMENTS = ("grouped", "shuffled", "children_first")


def gid(kind: str, number: str | int) -> str:
    return f"gid://shopify/{kind}/{number}"


def amount(value: Decimal) -> str:
    """GraphQL's Decimal scalar: trailing zeros dropped, one kept ("24.0", "0.0", "11.5")."""
    text = format(value.normalize(), "f")
    return text if "." in text else f"{text}.0"


def bag(value: Decimal, currency: str) -> dict[str, Any]:
    return {"shopMoney": {"amount": amount(value), "currencyCode": currency}}


def utc(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _address(address: corpus.TruthAddress) -> dict[str, Any]:
    return {
        "firstName": address.first_name,
        "lastName": address.last_name,
        "company": address.company or None,
        "address1": address.address1,
        "address2": address.address2 or None,
        "city": address.city,
        "province": address.province or None,
        "provinceCode": address.province_code or None,
        "country": address.country,
        "countryCodeV2": address.country_code,
        "zip": address.zip,
        "phone": address.phone,
    }


def line_node(order: corpus.TruthOrder, line: corpus.TruthLine) -> dict[str, Any]:
    return {
        "id": gid("LineItem", line.line_id),
        "sku": line.sku or None,
        "name": line.display_name,
        "title": line.name,
        "variantTitle": line.variant_title or None,
        "quantity": line.quantity,
        "originalUnitPriceSet": bag(line.price, order.currency),
        "vendor": line.vendor or None,
        "product": {"id": gid("Product", line.product_id)} if line.product_id else None,
    }


def order_node(order: corpus.TruthOrder) -> dict[str, Any]:
    """One order without its line items (a bulk line), in the GraphQL Order's terms."""
    customer = None
    if order.customer_id is not None:
        customer = {
            "id": gid("Customer", order.customer_id),
            "firstName": order.first_name,
            "lastName": order.last_name,
            "defaultEmailAddress": {"emailAddress": order.email} if order.email else None,
            "defaultPhoneNumber": {"phoneNumber": order.phone} if order.phone else None,
        }
    return {
        "id": gid("Order", order.id),
        "name": order.number,
        "email": order.email or None,
        "phone": order.phone,
        "createdAt": utc(order.created_at),
        "processedAt": utc(order.created_at),
        "cancelledAt": utc(order.cancelled_at),
        "cancelReason": order.cancel_reason.upper() if order.cancel_reason else None,
        "currencyCode": order.currency,
        "totalPriceSet": bag(order.total, order.currency),
        "subtotalPriceSet": bag(order.subtotal, order.currency),
        "totalTaxSet": bag(order.taxes, order.currency),
        "totalDiscountsSet": bag(order.discount_amount, order.currency),
        "discountCodes": [order.discount_code] if order.discount_code else [],
        "displayFinancialStatus": order.financial_status.upper(),
        "displayFulfillmentStatus": "FULFILLED" if order.fulfilled_at else "UNFULFILLED",
        "customer": customer,
        "billingAddress": _address(order.billing),
        "shippingAddress": _address(order.shipping_address),
        "fulfillments": (
            [{"createdAt": utc(order.fulfilled_at), "status": "SUCCESS"}]
            if order.fulfilled_at
            else []
        ),
        "refunds": [
            {
                "id": gid("Refund", r.id),
                "createdAt": utc(r.created_at),
                "note": r.note,
                "totalRefundedSet": bag(r.amount, order.currency),
            }
            for r in order.refunds
        ],
    }


def _dump(value: Any, escape_slashes: bool) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.replace("/", "\\/") if escape_slashes else text


def write_bulk(
    orders: Iterable[corpus.TruthOrder],
    path: Path | str,
    arrangement: str = "grouped",
    seed: int = 0,
    escape_slashes: bool = False,
) -> Path:
    """A bulk operation's JSONL: "grouped" (each order, then its line items), "shuffled"
    (children after their parent, anywhere later), "children_first" (every line item before
    any order: what another tool's re-sort could leave)."""
    parents: list[dict[str, Any]] = []
    children: list[tuple[int, dict[str, Any]]] = []  # (parent's index, line)
    for index, order in enumerate(corpus._ordered(orders, True)):
        parents.append(order_node(order))
        for line in order.lines:
            node = line_node(order, line) | {"__parentId": gid("Order", order.id)}
            children.append((index, node))
    if arrangement == "grouped":
        lines: list[dict[str, Any]] = []
        for index, parent in enumerate(parents):
            lines.append(parent)
            lines.extend(node for i, node in children if i == index)
    elif arrangement == "shuffled":
        rng = random.Random(seed)
        slots: list[list[dict[str, Any]]] = [[p] for p in parents]
        for index in range(len(parents)):  # each child at or after its parent's slot, in order
            mine = [node for i, node in children if i == index]
            places = sorted(rng.randrange(index, len(parents)) for _ in mine)
            for place, node in zip(places, mine, strict=True):
                slots[place].append(node)
        lines = [line for slot in slots for line in slot]
    elif arrangement == "children_first":
        lines = [node for _, node in children] + parents
    else:
        raise ValueError(f"unknown arrangement {arrangement!r}")
    text = "".join(_dump(line, escape_slashes) + "\n" for line in lines)
    Path(path).write_text(text, encoding="utf-8")
    return Path(path)


def write_pages(
    orders: Iterable[corpus.TruthOrder],
    path: Path | str,
    page_size: int = 50,
    shape: str = "edges",
    layout: str = "lines",
) -> Path:
    """Paged answers, one per query: `shape` "edges" or "nodes" (for the orders and their
    line items alike); `layout` "lines" (one answer a line) or "array" (a JSON array of the
    answers, pretty-printed) or "one" (the first page alone, pretty-printed)."""
    ordered = corpus._ordered(orders, True)
    pages = []
    for start in range(0, len(ordered), page_size):
        nodes = []
        for order in ordered[start : start + page_size]:
            items = [line_node(order, line) for line in order.lines]
            node = order_node(order) | {"lineItems": _connection(items, shape)}
            nodes.append(node)
        more = start + page_size < len(ordered)
        connection = _connection(nodes, shape) | {
            "pageInfo": {"hasNextPage": more, "endCursor": f"cursor{start + page_size}"}
        }
        pages.append(
            {"data": {"orders": connection}, "extensions": {"cost": {"requestedQueryCost": 252}}}
        )
    with Path(path).open("w", encoding="utf-8") as handle:
        if layout == "lines":
            handle.writelines(_dump(page, False) + "\n" for page in pages)
        elif layout == "array":
            json.dump(pages, handle, ensure_ascii=False, indent=2)
        elif layout == "one":
            json.dump(pages[0], handle, ensure_ascii=False, indent=2)
        else:
            raise ValueError(f"unknown layout {layout!r}")
    return Path(path)


def _connection(items: list[dict[str, Any]], shape: str) -> dict[str, Any]:
    if shape == "edges":
        return {"edges": [{"cursor": f"c{i}", "node": item} for i, item in enumerate(items)]}
    if shape == "nodes":
        return {"nodes": items}
    raise ValueError(f"unknown shape {shape!r}")
