"""Bounded-memory bookkeeping: exact duplicate detection past the spill, profile estimates."""

from __future__ import annotations

from klaviyo_backfill.pipeline.distinct import DistinctCount, SeenIds


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


def test_the_estimate_is_the_same_in_every_process() -> None:
    """dry run, inspect and a resumed send must agree on "about N profiles"."""
    import os
    import subprocess
    import sys

    code = (
        "from klaviyo_backfill.pipeline.distinct import DistinctCount, stable_hash\n"
        "d = DistinctCount(exact_up_to=1000)\n"
        "for i in range(60_000):\n"
        "    d.add(stable_hash((f'c{i % 40_000}@example.com', None, None)))\n"
        "print(len(d), d.estimated)\n"
    )
    runs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(runs) == 1
    count, estimated = runs.pop().split()
    assert estimated == "True" and abs(int(count) - 40_000) < 0.02 * 40_000
