"""Sums noised centred on their bounds' midpoint (docs/disclosure.md, "Averages, centred").

A sum paired with the count of the same rows (the rewrite's ``sum(x)`` and ``count(x)``
share ``x``'s presence cell) is noised as ``sum - c·count`` at sensitivity
``G·C·(upper - lower)/2`` and released as that plus ``c`` times the noisy count.  These
tests check the pairing, the sensitivity, the release arithmetic, and (against the real
rewrite and DuckDB) that one entity moves ``sum - c·count`` by no more than that.
"""

from __future__ import annotations

import math
import statistics
from fractions import Fraction

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.query.disclosure import (
    ENTITIES,
    DisclosureParams,
    StatColumn,
    disclose,
    noise_plan,
    sensitivity,
)
from sandbox.query.noise import discrete_laplace_variance, seeded_noise
from sandbox.query.rewrite import ContributionBounds
from tests.sandbox.query.test_rewrite_cap import Row, _database, plan_of, rows_strategy

PAIRED = [
    StatColumn("__e1", "entities"),
    StatColumn("__s2", "sum", 0.0, 100.0, cell="__e1"),
    StatColumn("__n3", "count", cell="__e1"),
]
PARAMS = DisclosureParams(k=10, epsilon=1.0)


class Fixed:
    """Returns the draws it is given, in order."""

    def __init__(self, draws: list[int]) -> None:
        self.draws = list(draws)

    def discrete_laplace(self, scale: Fraction, size: int) -> list[int]:
        return [self.draws.pop(0) for _ in range(size)]


def test_a_paired_sum_is_noised_at_half_its_sensitivity_around_the_midpoint() -> None:
    params = DisclosureParams(k=10, epsilon=1.0, max_rows_per_entity=3, max_groups_per_entity=2)
    plans = {p.column: p for p in noise_plan(PAIRED, params)}
    assert plans["__s2"].centre == 50 and plans["__s2"].centred_on == "__n3"
    assert plans["__s2"].sensitivity == sensitivity(PAIRED[1], params) / 2 == 2 * 3 * 50
    # The split is the one an uncentred sum got: only the noise scale halves.
    alone = {
        p.column: p
        for p in noise_plan([*PAIRED[:1], StatColumn("__s2", "sum", 0.0, 100.0), PAIRED[2]], params)
    }
    assert alone["__s2"].centred_on is None
    assert float(plans["__s2"].epsilon) == pytest.approx(float(alone["__s2"].epsilon), rel=1e-2)
    ratio = (plans["__s2"].scale * plans["__s2"].resolution) / (
        alone["__s2"].scale * alone["__s2"].resolution
    )
    assert ratio == pytest.approx(0.5, rel=0.01)


@pytest.mark.parametrize(
    ("lower", "upper", "shown", "centred"),
    [
        (0.0, 100.0, False, True),
        (0.0, 100.0, True, True),
        (-20.0, 100.0, True, True),
        (-100.0, 100.0, False, False),
        (10.0, 100.0, False, True),
        (10.0, 100.0, True, False),
        (-100.0, -10.0, False, True),
        (-100.0, -10.0, True, False),
        (1000.0, 1010.0, False, False),  # 202 half-widths from 0: float error (FLOAT_SPAN)
        (20.0, 100.0, False, True),  # 2.5
        (50.0, 100.0, False, False),  # 4
    ],
)
def test_which_sums_are_centred(lower: float, upper: float, shown: bool, centred: bool) -> None:
    """Around 0 always; on one side of 0 only a sum no output shows as it is (an average's
    or a variance's: a plain SUM there would carry ``c`` times the count's noise); a
    symmetric range has centre 0."""
    column = StatColumn("__s2", "sum", lower, upper, cell="__e1", shown=shown)
    plans = {p.column: p for p in noise_plan([PAIRED[0], column, PAIRED[2]], PARAMS)}
    assert (plans["__s2"].centred_on is not None) is centred


def average_error(
    stats: pa.Table, columns: list[StatColumn], params: DisclosureParams, true: float, seeds: int
) -> float:
    """The median absolute error of ``__s2 / __n3`` over ``seeds`` seeded releases."""
    out = []
    for seed in range(seeds):
        row = disclose(stats, columns, params, noise=seeded_noise(seed)).table.to_pylist()[0]
        if row["__n3"]:
            out.append(abs(row["__s2"] / row["__n3"] - true))
    return statistics.median(out)


def test_an_average_on_one_side_of_zero_is_more_accurate_centred() -> None:
    """Ratings 1 to 5 averaged: the centred sum's noise is the width's, not the top's."""
    params = DisclosureParams(k=10, epsilon=1.0, max_rows_per_entity=5)
    stats = pa.table(
        {"__k0": ["a"], ENTITIES: [600], "__e1": [600], "__s2": [6_000.0], "__n3": [2_000]}
    )
    averaged, summed = (
        [PAIRED[0], StatColumn("__s2", "sum", 1.0, 5.0, cell="__e1", shown=shown), PAIRED[2]]
        for shown in (False, True)
    )
    centred = average_error(stats, averaged, params, 3.0, 300)
    assert centred < 0.6 * average_error(stats, summed, params, 3.0, 300)


def test_a_sum_without_its_own_count_is_not_centred() -> None:
    """Two counts on one cell, or none, or a count of another cell: no pairing is assumed."""
    params = DisclosureParams(k=10, epsilon=1.0)
    for columns in (
        [PAIRED[0], PAIRED[1]],
        [PAIRED[0], PAIRED[1], StatColumn("__n3", "count")],
        [*PAIRED, StatColumn("__n4", "count", cell="__e1")],
    ):
        plans = {p.column: p for p in noise_plan(columns, params)}
        assert plans["__s2"].centred_on is None


def test_the_released_sum_is_the_noisy_centred_sum_plus_the_centre_times_the_noisy_count() -> None:
    params = DisclosureParams(k=10, epsilon=1.0)
    plans = {p.column: p for p in noise_plan(PAIRED, params)}
    grid = plans["__s2"].resolution
    stats = pa.table(
        {"__k0": ["a"], ENTITIES: [5_000], "__e1": [400], "__s2": [12_345.0], "__n3": [400]}
    )
    # Draws in order: __n3 (count(x) selects the groups: no count(*), C = 1), the number
    # of groups, then __s2 (centred, in grid units).
    assert plans["__n3"].selects and ENTITIES not in plans
    out = disclose(stats, PAIRED, params, noise=Fixed([-4, 0, 7])).table.to_pylist()[0]
    centred = round(Fraction(12_345) / grid - 50 * 400 / grid) + 7
    assert out["__n3"] == 396
    assert out["__s2"] == float(centred * grid + 50 * 396)
    # Without noise on either the sum is exact; and it is never released below 0.
    exact = disclose(stats, PAIRED, params, noise=Fixed([0, 0, 0])).table.to_pylist()[0]
    assert exact["__s2"] == 12_345.0 and exact["__n3"] == 400
    low = disclose(stats, PAIRED, params, noise=Fixed([0, 0, -(10**9)])).table.to_pylist()[0]
    assert low["__s2"] == 0.0


def test_averages_are_more_accurate_centred() -> None:
    """An average near its range's middle: its error shrinks by about half or more."""
    params = DisclosureParams(k=10, epsilon=1.0, max_rows_per_entity=2, max_groups_per_entity=3)
    stats = pa.table(
        {"__k0": ["a"], ENTITIES: [600], "__e1": [600], "__s2": [60_000.0], "__n3": [1_200]}
    )  # a group well above the release threshold τ: every draw releases it
    uncentred = [PAIRED[0], StatColumn("__s2", "sum", 0.0, 100.0), StatColumn("__n3", "count")]

    centred = average_error(stats, PAIRED, params, 50.0, 400)
    assert centred < 0.6 * average_error(stats, uncentred, params, 50.0, 400)


AVERAGE = (
    "SELECT diagnosis_code, avg(claim_amount), sum(claim_amount) FROM health.claims GROUP BY 1"
)


@settings(max_examples=40, deadline=None)
@given(rows=rows_strategy, who=st.sampled_from(["P1", "P2", "P3", "P4"]))
def test_one_entity_moves_the_centred_sum_by_at_most_its_sensitivity(
    rows: list[Row], who: str
) -> None:
    """The rewrite's real stats: removing one person changes ``Σ|Δ(sum - c·count)|`` by at
    most ``G·C·(upper - lower)/2``, the sensitivity the centred noise is calibrated to."""
    bounds = ContributionBounds(max_rows_per_entity=2, max_groups_per_entity=2)
    plan = plan_of(AVERAGE, bounds)
    columns = [StatColumn(**s.__dict__) for s in plan.stats]
    params = DisclosureParams(k=1, epsilon=1.0, max_rows_per_entity=2, max_groups_per_entity=2)
    plans = {p.column: p for p in noise_plan(columns, params)}
    (centred,) = [p for p in plans.values() if p.centred_on is not None]
    assert centred.column in {c.name for c in columns if c.kind == "sum"}

    def centred_sums(data: list[Row]) -> dict[object, Fraction]:
        con = _database(data)
        table = con.sql(plan.stats_sql).to_arrow_table().to_pylist()
        key = plan.keys[0]
        return {
            r[key]: Fraction(r[centred.column] or 0)
            - centred.centre * int(r[centred.centred_on] or 0)
            for r in table
        }

    before = centred_sums(rows)
    after = centred_sums([r for r in rows if r[0] != who])
    moved = sum(abs(before.get(g, 0) - after.get(g, 0)) for g in set(before) | set(after))
    assert moved <= centred.sensitivity * (1 + Fraction(1, 10**9)) + Fraction(1, 10**6)
    assert centred.sensitivity == 2 * 2 * (centred.centre)  # G·C·(upper - lower)/2, lower 0


def test_the_released_sums_noise_has_the_calibrated_variance() -> None:
    """Error of the released sum: the centred sum's noise plus ``c`` times the count's."""
    params = DisclosureParams(k=10, epsilon=1.0, max_rows_per_entity=2)
    plans = {p.column: p for p in noise_plan(PAIRED, params)}
    s, n = plans["__s2"], plans["__n3"]
    stats = pa.table(
        {"__k0": ["a"], ENTITIES: [5_000], "__e1": [5_000], "__s2": [250_000.0], "__n3": [5_000]}
    )
    errors = [
        disclose(stats, PAIRED, params, noise=seeded_noise(seed)).table["__s2"][0].as_py()
        - 250_000.0
        for seed in range(2_000)
    ]
    expected = float(s.resolution) ** 2 * discrete_laplace_variance(s.scale) + float(
        s.centre
    ) ** 2 * discrete_laplace_variance(n.scale)
    assert statistics.fmean(e * e for e in errors) == pytest.approx(expected, rel=0.15)
    assert abs(statistics.fmean(errors)) < 0.1 * math.sqrt(expected)  # unbiased
