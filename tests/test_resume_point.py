"""A resumed run seeks to the first unsettled order instead of re-reading what was sent."""

from __future__ import annotations

import json
from pathlib import Path

import corpus
import pytest
import standin as st
from cli_helpers import run

pytestmark = pytest.mark.e2e
KEY = "pk_test_0123456789abcdef"


def send(tmp_path: Path, url: str, *args: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    summary = tmp_path / "summary.json"
    result = run(tmp_path, KEY, "send", "orders.csv", "--base-url", url, "--failures",
                 "failures.jsonl", "--summary-json", str(summary), "-q", *args)  # fmt: skip
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(summary.read_text())


def test_resume_starts_after_the_settled_orders_and_completes(tmp_path: Path) -> None:
    orders = corpus.make_orders(300, 17, "shopify")
    corpus.write_shopify_csv(orders, tmp_path / "orders.csv")
    expected_orders = sum(o.identifiable for o in orders)
    with st.StandIn(api_key=KEY) as s:
        code, first = send(tmp_path, s.url, "--limit", "120")
        assert code in (0, 1) and first["orders_mapped"] == 120
        code, second = send(tmp_path, s.url, "--resume")
        assert code == 1  # the corpus holds orders that identify nobody
        stored = s.keys()
    placed = {k for k in stored if k[1] == "Placed Order"}
    assert second["resumed_at"] is not None and second["resumed_at"].startswith("orders.csv:")
    assert second["orders_read"] < len(orders) - 100  # the settled part was not read again
    assert len(placed) == expected_orders
    failures = (tmp_path / "failures.jsonl").read_text().splitlines()
    rejected = [json.loads(line)["order_id"] for line in failures]
    assert sorted(rejected) == sorted(o.id for o in orders if not o.identifiable)
