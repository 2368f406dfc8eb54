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
    "shopify_json": shopify_json,
    "woocommerce_json": woocommerce_json,
}
