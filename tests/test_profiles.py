"""Profiles take only their latest attributes (latest.py): an old order never sends an old
name or address. End to end through the CLI against the stand-in, on an export where a
quarter of the customers changed name or city over time, its rows in no particular order."""

from __future__ import annotations

import csv
import json
import random
import secrets
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cli_helpers
import pytest
import standin as st
from cli_helpers import free_port

KEY = "pk_profiles_" + secrets.token_hex(12)
FAST = [*cli_helpers.FAST, "--failures", "failures.jsonl"]
HEADER = ["Name", "Email", "Financial Status", "Currency", "Total", "Created at",
          "Lineitem quantity", "Lineitem name", "Lineitem price", "Lineitem sku", "Id",
          "Billing Name", "Billing City", "Billing Country"]  # fmt: skip
FIRST = ["Ana", "Ben", "Chloe", "Dev", "Emma", "Femi", "Gus", "Hana", "Ivo", "Jun"]
LAST = ["Smith", "Okafor", "Tanaka", "Novak", "Rossi", "Kim", "Silva", "Berg"]
CITIES = ["Boston", "Lyon", "Osaka", "Porto", "Leeds", "Graz", "Cork", "Turku"]


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return cli_helpers.run(cwd, KEY, *args)


def make_orders(seed: int, customers: int = 250, orders: int = 800) -> list[dict[str, str]]:
    """`orders` orders of `customers` customers; a quarter of them move or marry between
    orders. Each order's row names the customer as they were when it was placed."""
    rng = random.Random(seed)
    start = datetime(2021, 1, 1, tzinfo=UTC)
    people = []
    for c in range(customers):
        changes = c % 4 == 0
        people.append({
            "email": f"customer{c}@example.com",
            "names": [f"{rng.choice(FIRST)} {rng.choice(LAST)}" for _ in range(3 if changes else 1)],
            "cities": [rng.choice(CITIES) for _ in range(3 if changes else 1)],
        })  # fmt: skip
    rows = []
    for n in range(orders):
        person = people[n % customers] if n < customers else rng.choice(people)
        when = start + timedelta(minutes=rng.randrange(5 * 365 * 24 * 60))
        era = min(2, (when - start).days * len(person["names"]) // (5 * 365 + 1))
        rows.append({
            "Name": f"#{1000 + n}", "Email": person["email"], "Financial Status": "paid",
            "Currency": "USD", "Total": "10.00",
            "Created at": when.strftime("%Y-%m-%d %H:%M:%S +0000"),
            "Lineitem quantity": "1", "Lineitem name": "Tee", "Lineitem price": "10.00",
            "Lineitem sku": "T1", "Id": str(5000 + n),
            "Billing Name": person["names"][min(era, len(person["names"]) - 1)],
            "Billing City": person["cities"][min(era, len(person["cities"]) - 1)],
            "Billing Country": "US",
        })  # fmt: skip
    rng.shuffle(rows)
    return rows


def write(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, HEADER)
        writer.writeheader()
        writer.writerows(rows)


def latest_of(rows: list[dict[str, str]]) -> dict[str, tuple[str, str]]:
    """Each customer's (name, city) on their latest order: computed from the rows alone."""
    best: dict[str, tuple[str, str, str, str]] = {}
    for row in rows:
        key = (row["Created at"], row["Id"])
        mine = (*key, row["Billing Name"], row["Billing City"])
        if row["Email"] not in best or mine[:2] > best[row["Email"]][:2]:
            best[row["Email"]] = mine
    return {email: (name, city) for email, (_, _, name, city) in best.items()}


def sent_attributes(s: st.StandIn) -> dict[str, set[tuple[str, str]]]:
    """Every (name, city) each profile was sent, over every event the stand-in took."""
    return sent_attributes_of(s.events)


def sent_attributes_of(events: list[st.StoredEvent]) -> dict[str, set[tuple[str, str]]]:
    seen: dict[str, set[tuple[str, str]]] = {}
    for event in events:
        p = event.profile
        if "first_name" in p or "location" in p:
            name = f"{p.get('first_name', '')} {p.get('last_name', '')}".strip()
            seen.setdefault(event.identity, set()).add((name, p.get("location", {}).get("city")))
    return seen


@pytest.mark.e2e
def test_no_profile_is_sent_an_older_name_or_city(tmp_path: Path) -> None:
    rows = make_orders(seed=8)
    write(tmp_path / "orders.csv", rows)
    truth = latest_of(rows)
    changed = {r["Email"] for r in rows} - {
        e for e in truth if len({(r["Billing Name"], r["Billing City"]) for r in rows
                                 if r["Email"] == e}) == 1
    }  # fmt: skip
    assert len(changed) >= 40  # the export does test something
    with st.StandIn(api_key=KEY, port=free_port()) as s:
        done = run(tmp_path, "send", "orders.csv", "--base-url", s.url, *FAST)
        assert done.returncode == 0, done.stdout + done.stderr
        got = sent_attributes(s)
    assert set(got) == set(truth)  # every profile is sent its attributes once...
    for email, sent in got.items():
        assert sent == {truth[email]}, email  # ...and only its latest order's


@pytest.mark.e2e
def test_all_sends_every_orders_attributes(tmp_path: Path) -> None:
    rows = make_orders(seed=9, customers=40, orders=120)
    write(tmp_path / "orders.csv", rows)
    with st.StandIn(api_key=KEY, port=free_port()) as s:
        done = run(tmp_path, "send", "orders.csv", "--base-url", s.url, *FAST,
                   "--profile-attributes", "all")  # fmt: skip
        assert done.returncode == 0, done.stderr
        got = sent_attributes(s)
    assert any(len(sent) > 1 for sent in got.values())  # old names went too, as asked


@pytest.mark.e2e
def test_a_later_export_sends_attributes_only_from_a_newer_order(tmp_path: Path) -> None:
    rows = make_orders(seed=10)
    cut = sorted(r["Created at"] for r in rows)[len(rows) * 7 // 10]
    early = [r for r in rows if r["Created at"] <= cut]
    write(tmp_path / "early.csv", early)
    write(tmp_path / "full.csv", rows)
    with st.StandIn(api_key=KEY, port=free_port()) as s:
        assert run(tmp_path, "send", "early.csv", "--base-url", s.url, *FAST).returncode == 0
        first = len(s.events)
        assert run(tmp_path, "send", "full.csv", "--base-url", s.url, *FAST).returncode == 0
        later = s.events[first:]
    truth = latest_of(rows)
    newer = {r["Email"] for r in rows if r["Created at"] > cut}
    for event in later:
        p = event.profile
        if "first_name" in p or "location" in p:
            assert event.identity in newer  # only a customer with a newer order
            name = f"{p.get('first_name', '')} {p.get('last_name', '')}".strip()
            assert (name, p["location"]["city"]) == truth[event.identity]


@pytest.mark.e2e
def test_a_dry_run_shows_the_same_rule(tmp_path: Path) -> None:
    rows = make_orders(seed=11, customers=60, orders=200)
    write(tmp_path / "orders.csv", rows)
    done = run(tmp_path, "send", "orders.csv", "--dry-run", "--endpoint", "single",
               "--output", "out.jsonl", "--preview", "0")  # fmt: skip
    assert done.returncode == 0, done.stderr
    truth = latest_of(rows)
    carried: dict[str, set[tuple[str, str]]] = {}
    for line in (tmp_path / "out.jsonl").read_text().splitlines():
        p = json.loads(line)["data"]["attributes"]["profile"]["data"]["attributes"]
        if "first_name" in p:
            name = f"{p['first_name']} {p.get('last_name', '')}".strip()
            carried.setdefault(p["email"], set()).add((name, p["location"]["city"]))
    assert {e: next(iter(v)) for e, v in carried.items()} == truth
    assert all(len(v) == 1 for v in carried.values())


@pytest.mark.e2e
def test_the_latest_table_never_outlives_its_run(tmp_path: Path, own_state_folder: Path) -> None:
    """It holds every customer's email: removed at the end of a run, when its pass fails,
    and (left by a killed run) by the next run."""
    scratch = own_state_folder / "klaviyo-backfill" / "tmp"
    scratch.mkdir(parents=True)
    (scratch / "latest-999999999-left.sqlite").write_bytes(b"left by a killed run")
    rows = make_orders(seed=12, customers=10, orders=20)
    write(tmp_path / "orders.csv", rows)
    done = run(tmp_path, "send", "orders.csv", "--dry-run", "--preview", "0")
    assert done.returncode == 0, done.stderr
    assert not list(scratch.iterdir())
    broken = (tmp_path / "orders.csv").read_bytes() + b"\xff\xfe not utf-8\n"
    (tmp_path / "broken.csv").write_bytes(broken)
    failed = run(tmp_path, "send", "broken.csv", "--dry-run", "--preview", "0")
    assert failed.returncode == 2 and "broken.csv" in failed.stderr
    assert not list(scratch.iterdir())


def test_a_stamp_names_the_profile_and_time_full_conversion_gives(tmp_path: Path) -> None:
    """The profile pass converts each order only as far as its profile and time need
    (`Converter.order(who_and_when=True)`): for every corpus order of every platform, awkward
    ones included, it keeps or rejects exactly as the full conversion does, with the same
    profile and time."""
    try:
        import corpus
    except ImportError:  # tests/ made a package
        from tests import corpus
    from klaviyo_backfill.errors import FieldError
    from klaviyo_backfill.inputs.export import read_orders
    from klaviyo_backfill.mapping.convert import Converter
    from klaviyo_backfill.mapping.events import identity_of
    from klaviyo_backfill.options import InputOptions, SendOptions
    from klaviyo_backfill.pipeline.job import job_from
    from klaviyo_backfill.pipeline.parallel import stamp

    writers = {"shopify": [(corpus.write_shopify_csv, "s.csv"), (corpus.write_shopify_json, "s.json")],
               "woocommerce": [(corpus.write_woo_csv, "w.csv"), (corpus.write_woo_json, "w.json")]}  # fmt: skip
    compared = kept = 0
    for platform, outputs in writers.items():
        orders = corpus.make_orders(400, 41, platform)
        for write, name in outputs:
            write(orders, tmp_path / name)
            job = job_from(SendOptions(InputOptions((str(tmp_path / name),))))
            converter = Converter(job.inputs[0].layout, job.settings)
            for raw in read_orders(job.inputs[0]):
                try:
                    full = converter.order(raw)
                    expected = (identity_of(full), full.created_at.timestamp(), full.id)
                except FieldError:
                    expected = None
                _, _, who, at, oid, _, _ = stamp(raw, converter, job.filters)
                assert (None if who is None else (who, at, oid)) == expected, (name, raw.line)
                compared += 1
                kept += expected is not None
    assert compared > 1000 and 0 < kept < compared  # some orders are rejected, most kept


@pytest.mark.e2e
def test_a_later_export_stopped_then_resumed_sends_each_event_once_and_only_the_latest(
    tmp_path: Path,
) -> None:
    """The later export's first run stops part-way (--limit: deterministic), the second
    continues it (--resume, from another reading of the export): together they send every
    new event once, none the account held, and attributes only from each customer's latest
    order, as one run does."""
    rows = make_orders(seed=12, customers=120, orders=400)
    cut = sorted(r["Created at"] for r in rows)[len(rows) * 6 // 10]
    write(tmp_path / "early.csv", [r for r in rows if r["Created at"] <= cut])
    write(tmp_path / "full.csv", rows)
    with st.StandIn(api_key=KEY, port=free_port()) as s:
        assert run(tmp_path, "send", "early.csv", "--base-url", s.url, *FAST).returncode == 0
        first, held = len(s.requests), len(s.events)
        part = run(tmp_path, "send", "full.csv", "--base-url", s.url, *FAST, "--limit", "40")
        assert part.returncode == 0, part.stderr
        middle = len(s.events)
        rest = run(tmp_path, "send", "full.csv", "--base-url", s.url, *FAST, "--resume")
        assert rest.returncode == 0, rest.stderr
        taken = [r for r in s.requests[first:] if r.status == 202]
        later = s.events[held:]
    with st.StandIn(api_key=KEY, port=free_port()) as once:  # the full export in one go
        assert run(tmp_path, "send", "full.csv", "--base-url", once.url, *FAST).returncode == 0
        everything = {(e.identity, e.metric, e.key_uid) for e in once.events}
    assert held < middle < held + len(later)  # both runs sent some
    assert sum(r.n_events for r in taken) == sum(r.n_stored for r in taken)  # none twice
    assert {(e.identity, e.metric, e.key_uid) for e in s.events} == everything
    truth = latest_of(rows)
    newer = {r["Email"] for r in rows if r["Created at"] > cut}
    attributed = sent_attributes_of(later)
    assert set(attributed) == newer  # every customer with a newer order gets its latest
    for email, sent in attributed.items():
        assert sent == {truth[email]}, email
