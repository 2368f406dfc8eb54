"""Regenerate the synthetic sample exports in this directory (deterministic).

.venv/bin/python sample_data/generate.py
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import corpus  # noqa: E402  (tests/corpus.py, found through sys.path above)

ORDERS_PER_FILE = 30
# One seed per file: seeds pick disjoint id ranges, and the platforms' ranges never meet.
# The exports at the top hold only orders that can be sent (every awkward case but "nobody
# to attribute it to"), so that the README's dry run of sample_data/ exits 0; problems/
# holds a Shopify export with orders the tool must reject, to show how it reports them.
FILES = {
    "shopify_orders_export.csv": ("shopify", 11),
    "shopify_orders.json": ("shopify", 12),
    "woocommerce_orders.csv": ("woocommerce", 21),
    "woocommerce_orders.json": ("woocommerce", 22),
    "problems/shopify_orders_with_problems.csv": ("shopify", 13),
}


def main(out_dir: Path = HERE) -> None:
    for name, (platform, seed) in FILES.items():
        orders = corpus.make_orders(ORDERS_PER_FILE, seed, platform)
        if not name.startswith("problems/"):
            orders = [o for o in orders if o.identifiable]
        path = out_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith("shopify_orders_export.csv") or name.endswith("with_problems.csv"):
            corpus.write_shopify_csv(orders, path, columns=79)
        elif name == "shopify_orders.json":
            corpus.write_shopify_json(orders, path, shape="wrapped")
        elif name == "woocommerce_orders.csv":
            corpus.write_woo_csv(orders, path)
        else:
            corpus.write_woo_json(orders, path, shape="array")
        rejected = sum(not o.identifiable for o in orders)
        print(f"{path.name}: {len(orders)} orders ({rejected} without a usable email or phone)")


if __name__ == "__main__":
    main()
