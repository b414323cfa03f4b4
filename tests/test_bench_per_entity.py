"""Smoke test of ``bench/per_entity_overhead.py``: each query runs raw and through the
full path for both bench operators (reviewed and dp) on a tiny demo, and is timed.

The figures mean nothing at this scale; what is checked is that every query is answered
on every path (a refusal or a failure would raise) and each time is measured.
"""

from __future__ import annotations

from bench import per_entity_overhead


def test_each_query_runs_raw_and_on_both_paths() -> None:
    figures = per_entity_overhead.main(["--scale", "0.01", "--repeat", "1"])
    assert set(figures) == set(per_entity_overhead.QUERIES)
    for raw, plain, dp in figures.values():
        assert raw > 0 and plain > 0 and dp > 0
