"""Named hooks: the few rules of a platform's export that a layout table cannot say.

A hook gets the order object as exported and the RawOrder the layout produced, and may
add fields to it. Adding a platform is a layout file, and at most one hook here.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from ..model import RawOrder

__all__ = ["HOOKS"]


def _codes(entries: Any) -> str | None:
    codes = [str(e.get("code")) for e in entries or () if isinstance(e, dict) and e.get("code")]
    return ", ".join(codes) or None


def shopify_json(record: dict[str, Any], raw: RawOrder) -> None:
    """Discount codes, refunds from their transactions, and the fulfilment time."""
    codes = _codes(record.get("discount_codes"))
    if codes:
        raw.fields["discount_code"] = codes
    for refund in record.get("refunds") or ():
        for transaction in refund.get("transactions") or ():
            if transaction.get("kind") == "refund" and transaction.get("status") in (
                None,
                "success",
            ):
                raw.refunds.append(
                    {
                        "amount": transaction.get("amount"),
                        "at": refund.get("created_at"),
                        "reason": refund.get("note"),
                    }
                )
    done = [
        f.get("created_at")
        for f in record.get("fulfillments") or ()
        if f.get("status") in (None, "success") and f.get("created_at")
    ]
    if done and record.get("fulfillment_status") == "fulfilled":
        raw.fields["fulfilled_at"] = done[-1]


def _number(gid: Any) -> Any:
    """`gid://shopify/Order/450789469` -> `450789469` (the REST id); other values as they are."""
    if isinstance(gid, str) and gid.startswith("gid://"):
        return gid.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0]
    return gid


def shopify_graphql(record: dict[str, Any], raw: RawOrder) -> None:
    """GIDs as their numbers, enums in the REST export's lower case, and what the REST hook
    reads from lists: discount codes, refunds (their totals) and the fulfilment time."""
    fields = raw.fields
    for key in ("id", "customer_id"):
        if key in fields:
            fields[key] = _number(fields[key])
    for line in raw.lines:
        if "product_id" in line:
            line["product_id"] = _number(line["product_id"])
    for key in ("status", "fulfillment_status", "cancel_reason"):
        if isinstance(fields.get(key), str):
            fields[key] = fields[key].lower()
    codes = [str(c) for c in record.get("discountCodes") or () if c]
    if codes:
        fields["discount_code"] = ", ".join(codes)
    for refund in record.get("refunds") or ():
        money = ((refund.get("totalRefundedSet") or {}).get("shopMoney") or {}).get("amount")
        if money is not None:
            raw.refunds.append(
                {"amount": money, "at": refund.get("createdAt"), "reason": refund.get("note")}
            )
    done = [
        f.get("createdAt")
        for f in record.get("fulfillments") or ()
        if str(f.get("status") or "success").lower() == "success" and f.get("createdAt")
    ]
    if done and fields.get("fulfillment_status") == "fulfilled":
        fields["fulfilled_at"] = done[-1]


def woocommerce_json(record: dict[str, Any], raw: RawOrder) -> None:
    """Coupon codes, and refunds (their totals are negative, with no date)."""
    codes = _codes(record.get("coupon_lines"))
    if codes:
        raw.fields["discount_code"] = codes
    for refund in record.get("refunds") or ():
        total = str(refund.get("total") or "").strip().lstrip("-")
        if total:
            raw.refunds.append({"amount": total, "at": None, "reason": refund.get("reason")})


def bigcommerce_json(record: dict[str, Any], raw: RawOrder) -> None:
    """The discount is the manual one plus the coupons'."""
    amounts = [record.get("discount_amount"), record.get("coupon_discount")]
    values = [Decimal(str(a)) for a in amounts if _is_number(a)]
    if values and sum(values):
        raw.fields["discount_value"] = str(sum(values))


def _is_number(value: Any) -> bool:
    try:
        Decimal(str(value))
    except (InvalidOperation, ValueError):
        return False
    return value is not None and value != ""


HOOKS: dict[str, Callable[[Any, RawOrder], None]] = {
    "bigcommerce_json": bigcommerce_json,
    "shopify_graphql": shopify_graphql,
    "shopify_json": shopify_json,
    "woocommerce_json": woocommerce_json,
}
