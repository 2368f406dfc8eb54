"""Bounded-memory bookkeeping: exact duplicate detection past the spill, profile estimates."""

from __future__ import annotations

from klaviyo_backfill.distinct import DistinctCount, SeenIds


def test_seen_ids_stay_exact_after_spilling_to_disk() -> None:
    seen = SeenIds(spill_after=100)
    assert all(seen.add(f"order-{i}") for i in range(1000))
    assert seen.db is not None and not seen.memory  # spilled
    assert not any(seen.add(f"order-{i}") for i in range(1000))
    assert seen.add("order-1000")


def test_distinct_count_is_exact_then_estimates_within_two_percent() -> None:
    small = DistinctCount(exact_up_to=1000)
    for i in range(500):
        small.add(hash(f"c{i % 250}@example.com"))
    assert len(small) == 250 and not small.estimated
    big = DistinctCount(exact_up_to=1000)
    for i in range(300_000):
        big.add(hash(f"customer{i % 150_000}@example.com"))
    assert big.estimated
    assert abs(len(big) - 150_000) / 150_000 < 0.02
