"""Sums of squares noised centred on their bounds' midpoint (docs/disclosure.md, "Variances").

A variance's sum of squares ``Q`` is noised as ``Σ(x - c)² = Q - 2c·S + c²·N`` of its sum
``S`` and count ``N`` over the same rows, at ``G·C·((upper - lower)/2)²``, and released as
that plus ``2c·S~ - c²·N~``: the release's ``Q - S²/N`` is then the centred values'.  These
tests check the pairing, the arithmetic (exact, against the definition), the release,
the accuracy gained, and against the real rewrite and DuckDB that one entity moves
``Σ(x - c)²`` by no more than the sensitivity.
"""

from __future__ import annotations

import statistics
from decimal import Decimal
from fractions import Fraction

import pyarrow as pa
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sandbox.query import disclosure_exact as exact
from sandbox.query.disclosure import (
    ENTITIES,
    DisclosureParams,
    StatColumn,
    disclose,
    noise_plan,
    sensitivity,
)
from sandbox.query.noise import seeded_noise
from sandbox.query.rewrite import ContributionBounds
from tests.sandbox.query.test_centred_sums import Fixed
from tests.sandbox.query.test_rewrite_cap import Row, _database, plan_of, rows_strategy

VARIANCE = [
    StatColumn("__e1", "entities"),
    StatColumn("__s2", "sum", 1.0, 5.0, cell="__e1"),
    StatColumn("__n3", "count", cell="__e1"),
    StatColumn("__q4", "sumsq", 1.0, 5.0, of="__s2", cell="__e1"),
]


def test_a_variances_squares_are_noised_around_the_midpoint_of_their_bounds() -> None:
    params = DisclosureParams(k=10, epsilon=1.0, max_rows_per_entity=3)
    plans = {p.column: p for p in noise_plan(VARIANCE, params)}
    q = plans["__q4"]
    assert (q.centre, q.centred_on, q.squares_of) == (3, "__n3", "__s2")
    # (upper - lower)²/4 = 4 a row, not max(lower², upper²) = 25.
    assert q.sensitivity == 3 * 4 == sensitivity(VARIANCE[3], params) * 4 / 25
    assert plans["__s2"].centred_on == "__n3" and plans["__s2"].squares_of is None


@pytest.mark.parametrize(
    "columns",
    [
        [*VARIANCE[:3], StatColumn("__q4", "sumsq", 1.0, 5.0, cell="__e1")],  # no sum named
        [*VARIANCE[:3], StatColumn("__q4", "sumsq", 0.0, 5.0, of="__s2", cell="__e1")],
        [*VARIANCE, StatColumn("__n5", "count", cell="__e1")],  # two counts: no pairing
        [*VARIANCE[:3], StatColumn("__q4", "sumsq", -5.0, 5.0, of="__s2", cell="__e1")],
        [  # far from 0 for their width: float sums' error would outgrow the grid
            VARIANCE[0],
            StatColumn("__s2", "sum", 1000.0, 1010.0, cell="__e1"),
            VARIANCE[2],
            StatColumn("__q4", "sumsq", 1000.0, 1010.0, of="__s2", cell="__e1"),
        ],
    ],
)
def test_squares_without_their_own_sum_and_count_are_not_centred(
    columns: list[StatColumn],
) -> None:
    plans = {p.column: p for p in noise_plan(columns, DisclosureParams(k=10, epsilon=1.0))}
    assert plans["__q4"].squares_of is None and plans["__q4"].centred_on is None


def test_the_released_squares_add_back_the_released_sum_and_count() -> None:
    params = DisclosureParams(k=10, epsilon=1.0)
    plans = {p.column: p for p in noise_plan(VARIANCE, params)}
    stats = pa.table(
        {
            "__k0": ["a"],
            ENTITIES: [400],
            "__e1": [400],
            "__s2": [1_200.0],  # mean 3
            "__n3": [400],
            "__q4": [4_000.0],  # Σx² = 4000: Σ(x - 3)² = 4000 - 6·1200 + 9·400 = 400
        }
    )
    # Draws: __n3 (selects), groups, __s2 (centred), __q4 (centred squares), in grid units.
    grid_s, grid_q = plans["__s2"].resolution, plans["__q4"].resolution
    out = disclose(stats, VARIANCE, params, noise=Fixed([-4, 0, 7, 11])).table.to_pylist()[0]
    n = 396
    s = float(round(Fraction(1_200 - 3 * 400) / grid_s) + 7) * float(grid_s) + 3 * n
    qc = float(round(Fraction(400) / grid_q) + 11) * float(grid_q)
    assert out["__n3"] == n and out["__s2"] == s
    assert out["__q4"] == pytest.approx(qc + 6 * s - 9 * n, rel=1e-12)
    # The variance the release computes is the centred values': Q - S²/N = Qc - (S - cN)²/N.
    assert out["__q4"] - s * s / n == pytest.approx(qc - (s - 3 * n) ** 2 / n, rel=1e-9)
    exact_row = disclose(stats, VARIANCE, params, noise=Fixed([0, 0, 0, 0])).table.to_pylist()[0]
    assert exact_row["__q4"] == 4_000.0 and exact_row["__s2"] == 1_200.0


def test_variances_are_more_accurate_centred() -> None:
    """A spread of 1 on ratings 1 to 5: the squares' noise is 4 a row, not 25."""
    params = DisclosureParams(k=10, epsilon=1.0, max_rows_per_entity=5)
    n, mean, var = 2_000, 3.0, 1.0
    stats = pa.table(
        {
            "__k0": ["a"],
            ENTITIES: [600],
            "__e1": [600],
            "__s2": [n * mean],
            "__n3": [n],
            "__q4": [n * (var + mean * mean)],
        }
    )
    plain = [*VARIANCE[:3], StatColumn("__q4", "sumsq", 1.0, 5.0, cell="__e1")]

    def errors(columns: list[StatColumn]) -> float:
        out = []
        for seed in range(300):
            row = disclose(stats, columns, params, noise=seeded_noise(seed)).table.to_pylist()[0]
            if row["__n3"]:
                got = max(0.0, row["__q4"] - row["__s2"] ** 2 / row["__n3"]) / row["__n3"]
                out.append(abs(got - var))
        return statistics.median(out)

    assert errors(VARIANCE) < 0.4 * errors(plain)


values = st.one_of(
    st.none(),
    st.floats(min_value=-1e12, max_value=1e12, allow_nan=False),
    st.integers(min_value=-(10**6), max_value=10**6).map(float),
)


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(
        st.tuples(values, values, st.one_of(st.none(), st.integers(0, 10**9))), max_size=12
    ),
    centre=st.sampled_from([Fraction(3), Fraction(-7, 2), Fraction(6500), Fraction(1, 1024)]),
    resolution=st.sampled_from([Fraction(1), Fraction(1, 100), Fraction(1000), Fraction(1, 3)]),
)
def test_square_units_are_the_definitions(
    rows: list[tuple[float | None, float | None, int | None]],
    centre: Fraction,
    resolution: Fraction,
) -> None:
    """Certified float rows and the per-value definition agree bit for bit."""
    q = pa.array([r[0] for r in rows], pa.float64())
    s = pa.array([r[1] for r in rows], pa.float64())
    n = pa.array([r[2] for r in rows], pa.int64())
    got = [int(v) for v in exact.square_units(q, s, n, resolution, centre)]
    want = [
        round(
            (Fraction(a or 0) - 2 * centre * Fraction(b or 0) + centre * centre * int(c or 0))
            / resolution
        )
        for a, b, c in rows
    ]
    assert got == want


def test_square_units_near_a_tie_take_the_definition() -> None:
    """``Q - 2cS + c²N`` that cancels to x.5 units: float would round either way."""
    q = pa.array([1e15 + 0.5], pa.float64())
    s = pa.array([0.0], pa.float64())
    n = pa.array([0], pa.int64())
    assert list(exact.square_units(q, s, n, Fraction(1), Fraction(3))) == [
        round(Fraction(1e15 + 0.5))
    ]


VARIANCE_SQL = (
    "SELECT diagnosis_code, var_pop(claim_amount), avg(claim_amount) FROM health.claims GROUP BY 1"
)


# One person's three rows in each of two groups, spread across the bounds: the squares
# must be scaled to C rows as the sum and count are, or Σ(x - c)² exceeds C·w².
SPREAD = [("P1", g, Decimal(v)) for g in ("A", "B") for v in (13_000, 13_000, 0)]


@settings(max_examples=40, deadline=None)
@given(
    rows=rows_strategy,
    who=st.sampled_from(["P1", "P2", "P3", "P4"]),
    total=st.sampled_from([None, 3]),
)
@example(rows=SPREAD, who="P1", total=None)
@example(rows=[*SPREAD, ("P2", "A", Decimal(5))], who="P1", total=3)
def test_one_entity_moves_the_centred_squares_by_at_most_their_sensitivity(
    rows: list[Row], who: str, total: int | None
) -> None:
    """The rewrite's real stats (with and without a binding ``T``): removing one person
    changes ``Σ|Δ(Q - 2c·S + c²·N)|`` by at most the centred squares' sensitivity."""
    bounds = ContributionBounds(
        max_rows_per_entity=2, max_groups_per_entity=2, max_total_rows_per_entity=total
    )
    plan = plan_of(VARIANCE_SQL, bounds)
    columns = [StatColumn(**s.__dict__) for s in plan.stats]
    params = DisclosureParams(
        k=1,
        epsilon=1.0,
        max_rows_per_entity=2,
        max_groups_per_entity=2,
        max_total_rows_per_entity=total,
    )
    plans = {p.column: p for p in noise_plan(columns, params)}
    (squares,) = [p for p in plans.values() if p.squares_of is not None]
    assert squares.centred_on is not None
    c = squares.centre

    def centred(data: list[Row]) -> dict[object, Fraction]:
        table = _database(data).sql(plan.stats_sql).to_arrow_table().to_pylist()
        key = plan.keys[0]
        return {
            r[key]: Fraction(r[squares.column] or 0)
            - 2 * c * Fraction(r[squares.squares_of] or 0)
            + c * c * int(r[squares.centred_on] or 0)
            for r in table
        }

    before = centred(rows)
    after = centred([r for r in rows if r[0] != who])
    moved = sum(abs(before.get(g, 0) - after.get(g, 0)) for g in set(before) | set(after))
    # Float sums of squares of values near 13,000: a relative 1e-9 of what cancelled.
    assert moved <= squares.sensitivity * (1 + Fraction(1, 10**9)) + Fraction(1, 10**3)
    rows_bound = 2 * 2 if total is None else total
    assert squares.sensitivity == rows_bound * c * c  # rows · ((upper - lower)/2)², lower 0
    assert all(v >= -Fraction(1, 10**3) for v in before.values())  # Σ(x - c)² ≥ 0


def test_the_real_rewrite_names_the_sum_of_the_same_values() -> None:
    plan = plan_of(VARIANCE_SQL, ContributionBounds(max_rows_per_entity=2))
    (square,) = [s for s in plan.stats if s.kind == "sumsq"]
    (total,) = [s for s in plan.stats if s.kind == "sum"]
    assert square.of == total.name and not total.shown
    shown = plan_of(
        "SELECT diagnosis_code, sum(claim_amount), avg(claim_amount) FROM health.claims GROUP BY 1",
        ContributionBounds(max_rows_per_entity=2),
    )
    assert [s.shown for s in shown.stats if s.kind == "sum"] == [True]
