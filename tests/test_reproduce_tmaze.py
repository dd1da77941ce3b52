"""benchmarks/reproduce_tmaze.py: what counts as reaching a corridor length, and its interval."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_a_length_counts_only_after_every_shorter_one():
    sys.path.insert(0, str(REPO / "benchmarks"))
    from reproduce_tmaze import reached, wilson

    results = [{"length": 30, "success_rate": 1.0}, {"length": 100, "success_rate": 1.0}, {"length": 1000, "success_rate": 0.97}]
    assert [reached(results, n) for n in (30, 100, 1000, 10_000)] == [True, True, False, False]
    assert reached(results[:2], 10_000) is None  # not evaluated yet, nothing failed before it
    assert wilson(5, 5)[1] == 1.0 and 0.5 < wilson(5, 5)[0] < 0.6  # 5/5: [0.57, 1.00]
    low, high = wilson(4, 5)
    assert low < 0.8 < high and wilson(0, 5)[0] == 0.0
