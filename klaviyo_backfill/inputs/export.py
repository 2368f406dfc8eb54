"""Read one export as a stream of RawOrders, whatever its format: CSV (rows grouped into
orders) and JSON. Nothing here holds a whole file."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from ..errors import InputError
from ..model import RawOrder
from .csv_orders import HeldRows, Start, iter_csv
from .json_orders import iter_json_orders
from .sources import Input


def read_orders(
    source: Input,
    skip: Callable[[str], bool] | None = None,
    start: Start | None = None,
    held: HeldRows | None = None,
) -> Iterator[RawOrder]:
    """RawOrders of one input; a CSV order whose key `skip` accepts, or whose rows `held`
    knows, is not even extracted, and a CSV file can be picked up at an order's `start` (a
    resumed run). An order's key is its id, with its store where one is named (its own
    `store` field, else the input's `--store`: model.order_key)."""
    if source.layout.kind == "json":
        orders = iter_json_orders(source.path, source.layout, source.encoding, source.side_lines)
        if source.store:
            orders = _stored(orders, source.store)
    else:
        orders = iter_csv(source.path, source.layout, source.encoding, skip, start, held,
                          source.store)  # fmt: skip
    return orders if source.name is None else _named(orders, source.name)


def _stored(orders: Iterator[RawOrder], store: str) -> Iterator[RawOrder]:
    """JSON orders that name no store of their own, in `--store`'s."""
    for raw in orders:
        if not raw.fields.get("store"):
            raw.fields["store"] = store
        yield raw


def _named(orders: Iterator[RawOrder], name: str) -> Iterator[RawOrder]:
    """A spooled stream's orders and errors, named as the user named the stream."""
    try:
        for raw in orders:
            raw.source = name
            yield raw
    except InputError as exc:
        raise exc.at(name) from None
