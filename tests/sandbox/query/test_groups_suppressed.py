"""``groups_suppressed`` under a budget: a noisy lower bound that never reads as a finding."""

from __future__ import annotations

import statistics

from sandbox.query.disclosure import DisclosureParams, disclose, noise_plan
from sandbox.query.noise import seeded_noise
from tests.sandbox.query.test_disclosure import COLUMNS, people, stats_from

PARAMS = DisclosureParams(k=10, epsilon=1.0)
SEEDS = range(400)


def _reported(records: list) -> list[int]:
    table = stats_from(records)
    out = []
    for seed in SEEDS:
        suppressed = disclose(table, COLUMNS, PARAMS, noise=seeded_noise(seed)).groups_suppressed
        assert suppressed is not None and suppressed >= 0
        out.append(suppressed)
    return out


def test_without_a_budget_nothing_is_reported() -> None:
    """An exact count of dropped groups would say whether anybody matches."""
    for records in ([*people("big", 300), ("lonely", "p-1", 5.0)], people("big", 300)):
        released = disclose(stats_from(records), COLUMNS, DisclosureParams(k=10))
        assert released.groups_suppressed is None


def test_a_query_that_suppresses_nothing_reports_zero() -> None:
    """Two large groups, both released: the noise on the number of groups (a small share of
    ε, scale about 22 here) used to be reported as e.g. "112 groups suppressed"."""
    groups = [p for p in noise_plan(COLUMNS, PARAMS) if p.column == "__groups"]
    assert groups and groups[0].half_width > 20  # the noise a point estimate would show
    reported = _reported(people("A", 2_000) + people("B", 2_000))
    # A lower bound at 97.5% confidence: above the truth (0) in at most 2.5% of draws.
    assert sum(r > 0 for r in reported) <= 0.04 * len(reported)


def test_many_suppressed_groups_give_a_positive_lower_bound() -> None:
    """300 one-person groups are held back: the bound says so, and stays below 300."""
    lonely = [(f"g{i}", f"p{i}", 5.0) for i in range(300)]
    reported = _reported(people("big", 2_000) + lonely)
    assert sum(r > 300 for r in reported) <= 0.04 * len(reported)
    assert statistics.median(reported) > 200  # informative: the noise is far below 300
    assert len(set(reported)) > 3  # and noisy: never the exact count
