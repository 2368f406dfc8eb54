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
    """RawOrders of one input; a CSV order whose id `skip` accepts, or whose rows `held`
    knows, is not even extracted, and a CSV file can be picked up at an order's `start` (a
    resumed run)."""
    if source.layout.kind == "json":
        orders = iter_json_orders(source.path, source.layout, source.encoding, source.side_lines)
    else:
        orders = iter_csv(source.path, source.layout, source.encoding, skip, start, held)
    return orders if source.name is None else _named(orders, source.name)


def _named(orders: Iterator[RawOrder], name: str) -> Iterator[RawOrder]:
    """A spooled stream's orders and errors, named as the user named the stream."""
    try:
        for raw in orders:
            raw.source = name
            yield raw
    except InputError as exc:
        raise exc.at(name) from None
