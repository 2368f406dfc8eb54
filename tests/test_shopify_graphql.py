"""Shopify's GraphQL Admin API exports (issue #22, item 8d-f): a bulk operation's JSON Lines
(line items as lines of their own with `__parentId`, in any order after or even before their
order) and paged answers (`edges`/`node` or `nodes`) give exactly the events of the same
orders' REST JSON; a layout names where a document's orders sit (`orders_path`); a Shopify
customer id identifies an order that has no email or phone.

The same corpus orders rendered both ways (tests/corpus.py, tests/corpus_graphql.py), each
run through the real CLI's dry run; the request bodies compared byte for byte."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import corpus_graphql as graphql
import pytest
from cli_helpers import run

try:  # tests/ as a plain directory on sys.path, or as a package
    import corpus
except ImportError:
    from tests import corpus  # type: ignore[no-redef]


def dry_run(folder: Path, path: Path, *extra: str) -> tuple[int, str, list[tuple[str, str]], str]:
    """(exit code, the request bodies, the rejected orders (id, reason), the output)."""
    out, failures = folder / f"{path.name}.bodies", folder / f"{path.name}.failures"
    done = run(folder, "pk_x", "send", str(path), "--dry-run", "--preview", "0", "--endpoint",
               "single", "--output", str(out), "--failures", str(failures), *extra)  # fmt: skip
    rejected = sorted(
        (f["order_id"], f["reason"])
        for f in map(json.loads, failures.read_text().splitlines() if failures.exists() else [])
    )
    return (
        done.returncode,
        out.read_text() if out.exists() else "",
        rejected,
        done.stdout + done.stderr,
    )


@pytest.fixture(scope="module")
def orders() -> list[corpus.TruthOrder]:
    return corpus.make_orders(120, 11, "shopify")


@pytest.fixture(scope="module")
def rest(
    tmp_path_factory: pytest.TempPathFactory, orders: list[corpus.TruthOrder]
) -> tuple[int, str, list[tuple[str, str]]]:
    folder = tmp_path_factory.mktemp("rest")
    code, bodies, rejected, output = dry_run(
        folder, corpus.write_shopify_json(orders, folder / "orders.json")
    )
    assert code == 1 and bodies.count('"Placed Order"') > 100, output
    return code, bodies, rejected


WRITERS = {
    "bulk, grouped": lambda o, p: graphql.write_bulk(o, p.with_suffix(".jsonl"), "grouped"),
    "bulk, children anywhere after, slashes escaped": lambda o, p: graphql.write_bulk(
        o, p.with_suffix(".jsonl"), "shuffled", seed=3, escape_slashes=True
    ),
    "bulk, children before their orders": lambda o, p: graphql.write_bulk(
        o, p.with_suffix(".jsonl"), "children_first"
    ),
    "pages of edges, one a line": lambda o, p: graphql.write_pages(o, p.with_suffix(".jsonl"), 50),
    "pages of nodes, an array": lambda o, p: graphql.write_pages(o, p, 50, "nodes", "array"),
    "one page, pretty-printed": lambda o, p: graphql.write_pages(o, p, 500, "edges", "one"),
}


@pytest.mark.e2e
@pytest.mark.parametrize("shape", WRITERS)
def test_graphql_exports_give_exactly_the_events_of_the_same_orders_rest_json(
    tmp_path: Path, orders: list[corpus.TruthOrder], rest: tuple[int, str, list[tuple[str, str]]],
    shape: str,
) -> None:  # fmt: skip
    path = WRITERS[shape](orders, tmp_path / "orders.json")
    code, bodies, rejected, output = dry_run(tmp_path, path)
    assert "shopify-graphql" in output or code == rest[0], output
    assert (code, bodies, rejected) == rest


@pytest.mark.e2e
def test_the_format_is_detected_and_can_be_named(
    tmp_path: Path, orders: list[corpus.TruthOrder]
) -> None:
    path = graphql.write_bulk(orders[:10], tmp_path / "bulk.jsonl", "children_first")
    detected = dry_run(tmp_path, path)
    named = dry_run(tmp_path, path, "--format", "shopify-graphql")
    assert detected[1] and detected[:3] == named[:3]
    done = run(tmp_path, "pk_x", "inspect", str(path))
    assert done.returncode in (0, 1) and "Traceback" not in done.stderr, done.stderr
    assert "10 (" in " ".join(done.stdout.split()), done.stdout  # Orders: 10 (n would be sent)


def test_a_bulk_file_is_read_with_its_children_spooled_to_a_private_file_and_removed(
    tmp_path: Path, orders: list[corpus.TruthOrder], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Children out of place are grouped through SQLite on disk (memory: one order's worth),
    in a private folder under TMPDIR that is gone afterwards."""
    spool = tmp_path / "tmp"
    spool.mkdir()
    path = graphql.write_bulk(orders, tmp_path / "bulk.jsonl", "shuffled", seed=5)
    from klaviyo_backfill.inputs import graphql as reader
    from klaviyo_backfill.inputs.json_orders import iter_json

    monkeypatch.setenv("TMPDIR", str(spool))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    seen: list[int] = []
    records = reader.bulk_records(lambda: iter_json(str(path), "utf-8"), str(path))
    for _, record in records:
        stores = list(spool.glob("klaviyo-backfill-*/children.sqlite"))
        assert len(stores) == 1 and stores[0].stat().st_mode & 0o777 == 0o600
        assert stores[0].parent.stat().st_mode & 0o777 == 0o700
        with sqlite3.connect(stores[0]) as db:
            assert db.execute("SELECT count(*) FROM child").fetchone()[0] == sum(
                len(o.lines) for o in orders
            )
        seen.append(len(record.get("LineItem", [])))
    assert seen == [len(o.lines) for o in corpus._ordered(orders, True)]
    assert list(spool.iterdir()) == []


@pytest.mark.e2e
def test_a_graphql_error_answer_stops_naming_the_file_and_its_message(tmp_path: Path) -> None:
    path = tmp_path / "page.json"
    path.write_text(json.dumps({"data": None, "errors": [{"message": "Throttled"}]}))
    code, _, _, output = dry_run(tmp_path, path, "--format", "shopify-graphql")
    assert code == 2 and f"{path}:1: holds a GraphQL error, not orders: Throttled" in output


@pytest.mark.e2e
def test_a_layout_names_where_a_documents_orders_sit(tmp_path: Path) -> None:
    """`orders_path` with `[]` through lists; a record without its first key is an order."""
    path = tmp_path / "report.json"
    path.write_text(json.dumps({"report": {"sections": [
        {"rows": [{"no": "1", "at": "2024-03-05T10:00:00Z", "mail": "a@example.com", "sum": "5"}]},
        {"rows": [{"no": "2", "at": "2024-03-06T10:00:00Z", "mail": "b@example.com", "sum": "7"}]},
    ]}}))  # fmt: skip
    layout = tmp_path / "layout.toml"
    layout.write_text(
        '[order]\nid = "no"\ncreated_at = "at"\nemail = "mail"\ntotal = "sum"\n'
        '[options]\ncurrency = "EUR"\norders_path = "report.sections[].rows"\n'
    )
    code, bodies, rejected, output = dry_run(tmp_path, path, "--layout", str(layout))
    assert code == 0 and not rejected, output
    placed = [json.loads(b)["data"]["attributes"]["properties"]["OrderId"]
              for b in bodies.splitlines() if '"Placed Order"' in b]  # fmt: skip
    assert placed == ["1", "2"]


@pytest.mark.e2e
def test_a_shopify_customer_id_identifies_an_order_without_email_or_phone(
    tmp_path: Path, orders: list[corpus.TruthOrder]
) -> None:
    """Its profile's external_id (Klaviyo's own Shopify integration keys profiles so); an
    order with an email or phone keeps those alone; one with neither nor a customer is
    still rejected."""
    path = corpus.write_shopify_json(orders, tmp_path / "orders.json")
    _, bodies, rejected, _ = dry_run(tmp_path, path)
    profiles = {}
    for body in bodies.splitlines():
        attributes = json.loads(body)["data"]["attributes"]
        props = attributes["properties"]
        profiles[props["OrderId"]] = attributes["profile"]["data"]["attributes"]
    by_id = {o.id: o for o in orders}
    fallback = [o for o in orders if not o.identifiable and o.customer_id is not None]
    assert fallback, "the corpus has orders with a customer and no usable email or phone"
    for o in fallback:
        assert profiles[o.id].get("external_id") == o.customer_id
        assert "email" not in profiles[o.id] and "phone_number" not in profiles[o.id]
    assert all("external_id" not in profiles[o] for o in profiles if by_id[o].identifiable)
    assert {oid for oid, _ in rejected} == {
        o.id for o in orders if not o.identifiable and o.customer_id is None
    }


@pytest.mark.e2e
def test_line_items_whose_order_is_not_in_a_bulk_file_are_said_not_to_be_sent(
    tmp_path: Path, orders: list[corpus.TruthOrder]
) -> None:
    """A bulk file cut short, or put together from parts: the lines naming an order it does
    not hold are counted in a warning naming the file, not dropped in silence."""
    whole = graphql.write_bulk(orders[:20], tmp_path / "whole.jsonl", "children_first")
    lines = whole.read_text().splitlines()
    children = [line for line in lines if "__parentId" in line]
    *kept, dropped = [line for line in lines if "__parentId" not in line]  # one order lost
    lost = sum(json.loads(line)["__parentId"] == json.loads(dropped)["id"] for line in children)
    assert lost
    part = tmp_path / "part.jsonl"
    part.write_text("\n".join(children + kept) + "\n")
    code, bodies, _, output = dry_run(tmp_path, part)
    assert code in (0, 1) and bodies, output
    assert f"{part}: {lost} lines name an order that is not in the file" in output
    assert "not sent" in output
