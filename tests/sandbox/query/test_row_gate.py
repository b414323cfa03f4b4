"""A row count of the whole group selects the released groups where the entity count is
no output (``disclosure._gate``): the entity count is then not noised, and its share of ε
goes to the outputs.

Privacy: a group that one entity alone makes holds at most ``lone = min(C, T)`` of its
rows, and one entity makes at most ``groups_alone`` such groups (``G``; ``max(G, T)``
where ``T`` binds, a group existing through any cell kept for entity counts or rows), so
the threshold on the noisy row count is ``τ + lone - 1``; groups present without it are
selected by a function of an ε-DP count (post-processing).  The released row count is
the draw that selected (one draw, no second spend).
"""

from __future__ import annotations

import math
from fractions import Fraction

import pyarrow as pa
import pytest

from sandbox.query.disclosure import (
    ENTITIES,
    GROUPS,
    DisclosureParams,
    NoisePlan,
    StatColumn,
    disclose,
    noise_plan,
    selection_threshold,
)
from sandbox.query.noise import seeded_noise
from sandbox.query.release import prepare, release
from tests.sandbox.query.test_guard import MAX_SQL_LENGTH, access

COUNT = [StatColumn(ENTITIES, "entities"), StatColumn("__r1", "rows")]
AVERAGE = [
    StatColumn(ENTITIES, "entities"),
    StatColumn("__e1", "entities"),
    StatColumn("__s2", "sum", 0.0, 100.0, cell="__e1"),
    StatColumn("__n3", "count", cell="__e1"),
]


def _selecting(plans: list[NoisePlan]) -> NoisePlan:
    (plan,) = [p for p in plans if p.selects]
    return plan


def _laplace_tail(scale: Fraction, t: int) -> float:
    """``P[Z ≥ t]`` for discrete Laplace noise of scale ``b`` and ``t ≥ 1``."""
    q = math.exp(-1 / float(scale))
    return q**t / (1 + q)


@pytest.mark.parametrize(
    ("c", "g", "t"), [(2, 1, None), (3, 2, None), (9, 1, None), (9, 4, 9), (5, 3, 4), (2, 5, 6)]
)
def test_the_row_count_selects_at_a_threshold_one_entity_alone_rarely_reaches(c, g, t) -> None:
    params = DisclosureParams(
        k=10,
        epsilon=1.0,
        max_rows_per_entity=c,
        max_groups_per_entity=g,
        max_total_rows_per_entity=t,
    )
    plans = noise_plan(COUNT, params)
    gate = _selecting(plans)
    assert gate.column == "__r1" and ENTITIES not in {p.column for p in plans}
    assert gate.lone == min(c, params.rows_bound)
    tau = selection_threshold(gate, params)
    alone = params.groups_alone
    assert alone == (g if params.total_bound is None else max(g, params.total_bound))
    if gate.mechanism == "laplace":
        # At most `alone` groups of its own, each holding at most `lone` of its rows.
        assert alone * _laplace_tail(gate.scale, tau - gate.lone) <= params.delta
        # One less would not do: the threshold is the least that works (up to k).
        floor = (params.k - 1) * gate.lone + 1
        assert tau == floor or alone * _laplace_tail(gate.scale, tau - 1 - gate.lone) > (
            params.delta
        )


def test_a_group_one_entity_makes_alone_is_released_at_most_delta_of_the_time() -> None:
    """Through ``disclose``: 20,000 groups each made by one entity's C rows, at δ = 0.02
    (so the rate is measurable; a larger δ makes the Gaussian cheaper here).
    Thresholding as if one row (τ without ``lone - 1``) would release several times δ."""
    params = DisclosureParams(
        k=1, epsilon=1.0, max_rows_per_entity=4, max_groups_per_entity=1, delta=0.02
    )
    gate = _selecting(noise_plan(COUNT, params))
    assert gate.mechanism == "laplace" and gate.lone == 4
    unshifted = selection_threshold(gate, params) - (gate.lone - 1)
    assert _laplace_tail(gate.scale, unshifted - 4) > 1.5 * params.delta  # the test can fail
    n = 20_000
    stats = pa.table(
        {
            "__k0": pa.array(range(n), pa.int64()),
            ENTITIES: pa.array([1] * n, pa.int64()),
            "__r1": pa.array([4] * n, pa.int64()),
        }
    )
    released = disclose(stats, COUNT, params, noise=seeded_noise(7)).table.num_rows
    sd = math.sqrt(params.delta * (1 - params.delta) / n)
    assert released / n <= params.delta + 4 * sd


FILTERED = [
    StatColumn(ENTITIES, "entities"),
    StatColumn("__e1", "entities"),
    StatColumn("__r2", "rows", cell="__e1", filtered=True),
]


def test_a_filtered_row_count_that_selects_holds_lone_groups_to_delta() -> None:
    """``count(*) FILTER (WHERE f)`` the only output: its row count selects (the entity
    count and the FILTER's entities are not noised), with the same ``τ + lone - 1``: a
    group one entity alone makes holds at most ``C`` of its rows under any FILTER."""
    params = DisclosureParams(
        k=1, epsilon=1.0, max_rows_per_entity=3, max_groups_per_entity=1, delta=0.05
    )
    plans = noise_plan(FILTERED, params)
    gate = _selecting(plans)
    assert (gate.column, gate.lone) == ("__r2", 3)
    assert {p.column for p in plans} == {"__r2", GROUPS}  # one column carries all of ε
    n = 20_000
    stats = pa.table(
        {
            "__k0": pa.array(range(n), pa.int64()),
            ENTITIES: pa.array([1] * n, pa.int64()),
            "__e1": pa.array([1] * n, pa.int64()),
            "__r2": pa.array([3] * n, pa.int64()),
        }
    )
    released = disclose(stats, FILTERED, params, noise=seeded_noise(11)).table.num_rows
    sd = math.sqrt(params.delta * (1 - params.delta) / n)
    assert released / n <= params.delta + 4 * sd


def test_a_count_where_in_groups_comes_back_through_the_service(demo_platform) -> None:  # type: ignore[no-untyped-def]
    """``sum(CASE WHEN f THEN 1 ELSE 0 END)`` (normalized to ``count(*) FILTER``) by a key:
    on PUMS-like data (1,000 persons, 17 groups) it came back with no row at all, its ε
    spread over three columns and the entity count selecting at a high threshold."""
    sql = (
        "SELECT district, sum(CASE WHEN gender = 'F' THEN 1 ELSE 0 END) AS women "
        "FROM health.claims GROUP BY 1"
    )
    params = DisclosureParams(k=10, epsilon=1.0, max_rows_per_entity=9, max_groups_per_entity=1)
    prepared = prepare(sql, access(), params, max_sql_length=MAX_SQL_LENGTH)
    plans = noise_plan(prepared.columns, prepared.params)
    gate = _selecting(plans)
    assert prepared.columns[-1].filtered and gate.column == prepared.columns[-1].name
    assert gate.epsilon > Fraction(8, 10)  # the rest is the number of groups' share
    stats = demo_platform.enclave.query(prepared.plan.stats_sql)
    rows = release(stats, prepared, noise=seeded_noise(3)).table.to_pylist()
    assert len(rows) >= 14 and all(r["women"] is not None for r in rows)  # of 16 districts


class Counting:
    """A seeded source that counts the draws of each size it is asked for."""

    def __init__(self, seed: int) -> None:
        self.inner = seeded_noise(seed)
        self.sizes: list[int] = []

    def discrete_laplace(self, scale: Fraction, size: int) -> list[int]:
        self.sizes.append(size)
        return self.inner.discrete_laplace(scale, size)

    def discrete_gaussian(self, sigma2: Fraction, size: int) -> list[int]:
        self.sizes.append(size)
        return self.inner.discrete_gaussian(sigma2, size)


def test_the_released_row_count_is_the_draw_that_selected_and_no_entity_count_leaves() -> None:
    params = DisclosureParams(k=10, epsilon=1.0, max_rows_per_entity=4, max_groups_per_entity=1)
    tau = selection_threshold(_selecting(noise_plan(COUNT, params)), params)
    stats = pa.table(
        {
            "__k0": ["a", "b", "c"],
            ENTITIES: pa.array([900, 3, 400], pa.int64()),
            "__r1": pa.array([2_000, 12, 1_000], pa.int64()),
        }
    )
    source = Counting(3)
    out = disclose(stats, COUNT, params, noise=source).table
    # One draw per group for the row count (it selects), one for the number of groups.
    assert source.sizes == [3, 1]
    rows = out.to_pylist()
    assert [r["__k0"] for r in rows] == ["a", "c"]  # 12 rows are far below τ
    assert all(r["__r1"] >= tau for r in rows)
    assert all(r[ENTITIES] is None for r in rows)  # never released: it has no noise


@pytest.mark.parametrize(
    ("columns", "params", "selects"),
    [
        # count(DISTINCT key) shows the entity count: noised anyway, so it selects.
        (
            [StatColumn(ENTITIES, "entities", shown=True), COUNT[1]],
            DisclosureParams(k=10, epsilon=1.0, max_rows_per_entity=9),
            ENTITIES,
        ),
        # C = 1: count(*) is a copy of the entity count, already one column.
        (COUNT, DisclosureParams(k=10, epsilon=1.0), ENTITIES),
        # T binds: a group exists through any cell kept for entity counts or rows, so one
        # entity's own group still holds at most min(C, T) rows (entity_caps.total_cap).
        (
            COUNT,
            DisclosureParams(
                k=10,
                epsilon=1.0,
                max_rows_per_entity=9,
                max_groups_per_entity=4,
                max_total_rows_per_entity=9,
            ),
            "__r1",
        ),
        # Only a FILTERed count: it counts a finer cell and would hold groups back.
        (
            [
                StatColumn(ENTITIES, "entities"),
                StatColumn("__e1", "entities"),
                StatColumn("__r2", "rows", cell="__e1", filtered=True),
                StatColumn("__n3", "count", cell="__e1", filtered=True),
            ],
            DisclosureParams(k=10, epsilon=1.0, max_rows_per_entity=9),
            "__r2",  # every output is of one FILTER: its row count (_filter_gate)
        ),
        (
            [
                StatColumn(ENTITIES, "entities"),
                StatColumn("__e1", "entities"),
                StatColumn("__r2", "rows", cell="__e1", filtered=True),
                StatColumn("__e3", "entities"),
                StatColumn("__n4", "count", cell="__e3", filtered=True),
            ],
            DisclosureParams(k=10, epsilon=1.0, max_rows_per_entity=9),
            ENTITIES,  # two FILTERs: neither's count may hold back the other's cells
        ),
        (  # count(DISTINCT key) FILTER (WHERE g) shown beside count(*) FILTER (WHERE f)
            [
                StatColumn(ENTITIES, "entities"),
                StatColumn("__e1", "entities"),
                StatColumn("__r2", "rows", cell="__e1", filtered=True),
                StatColumn("__e3", "entities", shown=True),
            ],
            DisclosureParams(k=10, epsilon=1.0, max_rows_per_entity=9),
            ENTITIES,
        ),
        (  # at C = 1 the FILTER's row count copies its shown entity count: not a gate
            [
                StatColumn(ENTITIES, "entities"),
                StatColumn("__e1", "entities", shown=True),
                StatColumn("__r2", "rows", cell="__e1", filtered=True),
            ],
            DisclosureParams(k=10, epsilon=1.0, max_rows_per_entity=1),
            ENTITIES,
        ),
        # count(x) where there is no count(*): C = 1 (no copy) and above.
        (AVERAGE, DisclosureParams(k=10, epsilon=1.0), "__n3"),
        (AVERAGE, DisclosureParams(k=10, epsilon=1.0, max_rows_per_entity=9), "__n3"),
        # Where the row count's threshold stands for more rows than the entity count's
        # (its ε share is small beside a sum's, G = 4 under the Gaussian): entities.
        (
            AVERAGE,
            DisclosureParams(k=10, epsilon=1.0, max_rows_per_entity=2, max_groups_per_entity=4),
            ENTITIES,
        ),
    ],
    ids=[
        "shown",
        "copied",
        "total-bound",
        "filtered",
        "two-filters",
        "another-filters-shown-count",
        "c1-copied-filtered-count",
        "count-x-c1",
        "count-x-c9",
        "entities-better",
    ],
)
def test_which_count_selects(columns, params, selects) -> None:
    assert _selecting(noise_plan(columns, params)).column == selects


@pytest.mark.parametrize("epsilon", [0.5, 1.0, 3.0, 10.0])
def test_k_entities_are_held_as_the_rows_fewer_of_them_cannot_reach(epsilon) -> None:
    """A grant's k counts entities: on rows it is ``(k - 1)·C + 1``, the least number of
    rows no group of fewer than k entities can hold (at a large ε it is what binds)."""
    params = DisclosureParams(k=10, epsilon=epsilon, max_rows_per_entity=9)
    plans = noise_plan(COUNT, params)
    gate = _selecting(plans)
    if gate.column == "__r1":
        assert selection_threshold(gate, params) >= 9 * 9 + 1
    else:  # the entity count selects where k in rows would hold back more
        assert selection_threshold(gate, params) >= params.k


def test_without_keys_the_entity_count_still_meets_k() -> None:
    """One group exists whatever the data: nothing to select, k is held in persons."""
    params = DisclosureParams(k=10, epsilon=1.0, max_rows_per_entity=9)
    plans = noise_plan(COUNT, params, grouped=False)
    assert _selecting(plans).column == ENTITIES and GROUPS not in {p.column for p in plans}


def test_epsilon_goes_to_the_outputs_and_the_threshold_falls_in_rows(demo_platform) -> None:  # type: ignore[no-untyped-def]
    """Through prepare and release on the demo claims (C = 9 by district): the count gets
    all but the number of groups' share, and every released count reaches τ."""
    params = DisclosureParams(
        k=10, epsilon=1.0, max_rows_per_entity=9, max_groups_per_entity=1, dominance_p=None
    )
    sql = "SELECT district, count(*) AS n FROM health.claims GROUP BY 1"
    prepared = prepare(sql, access(), params, max_sql_length=MAX_SQL_LENGTH)
    plans = noise_plan(prepared.columns, prepared.params, grouped=True)
    gate = _selecting(plans)
    assert gate.epsilon >= Fraction(85, 100) and sum(p.epsilon for p in plans) <= 1
    stats = demo_platform.enclave.query(prepared.plan.stats_sql)
    tau = selection_threshold(gate, prepared.params)
    for seed in range(3):
        released = release(stats, prepared, noise=seeded_noise(seed))
        assert released.epsilon_spent == 1.0
        assert all(n >= tau for n in released.table.column("n").to_pylist())
        assert released.stats is not None
        assert released.stats.column(ENTITIES).null_count == released.stats.num_rows


def test_a_filter_cell_no_column_reads_costs_no_epsilon(demo_platform) -> None:  # type: ignore[no-untyped-def]
    """``avg(x) FILTER (WHERE f)`` makes f's cell beside x's presence cell under f (which
    its ``count(x)`` tests): f's own was noised with about 0.2 of ε that nothing read."""
    sql = (
        "SELECT district, avg(claim_amount) FILTER (WHERE gender = 'F') AS mean_f "
        "FROM health.claims GROUP BY 1"
    )
    params = DisclosureParams(k=10, epsilon=1.0, max_rows_per_entity=9, max_groups_per_entity=1)
    prepared = prepare(sql, access(), params, max_sql_length=MAX_SQL_LENGTH)
    cells = [c.name for c in prepared.columns if c.kind == "entities" and c.name != ENTITIES]
    read = {c.cell for c in prepared.columns}
    assert [c for c in cells if c not in read], "the query makes an unread FILTER cell"
    noised = {p.column for p in noise_plan(prepared.columns, prepared.params)}
    assert not noised & set(cells)  # neither cell: one unread, one tested on count(x)
    stats = demo_platform.enclave.query(prepared.plan.stats_sql)
    rows = release(stats, prepared, noise=seeded_noise(5)).table.to_pylist()
    assert rows and all(r["mean_f"] is not None for r in rows)  # the districts that pass


def test_a_filters_row_count_selects_beside_its_measures(demo_platform) -> None:  # type: ignore[no-untyped-def]
    """``count(*) FILTER (WHERE f)`` and ``avg(x) FILTER (WHERE f)``: x's presence cell
    under f lies within f's cell (``StatColumn.within``), so every output is of f and f's
    row count selects; the entity count, noised only to select, took a share before."""
    sql = (
        "SELECT district, count(*) FILTER (WHERE gender = 'F') AS women, "
        "avg(claim_amount) FILTER (WHERE gender = 'F') AS mean_f FROM health.claims GROUP BY 1"
    )
    params = DisclosureParams(k=10, epsilon=1.0, max_rows_per_entity=9, max_groups_per_entity=1)
    prepared = prepare(sql, access(), params, max_sql_length=MAX_SQL_LENGTH)
    by_name = {c.name: c for c in prepared.columns}
    rows = next(c for c in prepared.columns if c.kind == "rows")
    count = next(c for c in prepared.columns if c.kind == "count")
    assert by_name[count.cell].within == rows.cell  # type: ignore[index]
    plans = noise_plan(prepared.columns, prepared.params)
    assert _selecting(plans).column == rows.name and ENTITIES not in {p.column for p in plans}
    stats = demo_platform.enclave.query(prepared.plan.stats_sql)
    released = release(stats, prepared, noise=seeded_noise(2)).table.to_pylist()
    assert released and all(r["women"] is not None for r in released)
    # Two measures under f, without count(*) FILTER f: never one measure's count (a sparse
    # one would hold back groups whose other output passes): the entity count, as before.
    measures = (
        "SELECT district, avg(age) FILTER (WHERE gender = 'F') AS a, "
        "avg(claim_amount) FILTER (WHERE gender = 'F') AS m FROM health.claims GROUP BY 1"
    )
    prepared = prepare(measures, access(), params, max_sql_length=MAX_SQL_LENGTH)
    assert _selecting(noise_plan(prepared.columns, prepared.params)).column == ENTITIES
    # Two FILTERs still select on the entity count: neither holds the other's cells.
    other = sql.replace(
        "avg(claim_amount) FILTER (WHERE gender = 'F')",
        "avg(claim_amount) FILTER (WHERE age >= 60)",
    )
    prepared = prepare(other, access(), params, max_sql_length=MAX_SQL_LENGTH)
    assert _selecting(noise_plan(prepared.columns, prepared.params)).column == ENTITIES


def test_a_filter_in_parentheses_is_the_same_cell() -> None:
    """``FILTER (WHERE (f))`` and ``FILTER (WHERE f)``: one cell, one noised mean (they
    were two, each on a share of ε, and selection fell back to the entity count)."""
    sql = (
        "SELECT district, count(*) FILTER (WHERE gender = 'F') AS n, "
        "avg(claim_amount) FILTER (WHERE (gender = 'F')) AS m, "
        "avg(claim_amount) FILTER (WHERE ((gender = 'F'))) AS m2 FROM health.claims GROUP BY 1"
    )
    params = DisclosureParams(k=10, epsilon=1.0, max_rows_per_entity=9, max_groups_per_entity=1)
    prepared = prepare(sql, access(), params, max_sql_length=MAX_SQL_LENGTH)
    assert [c.kind for c in prepared.columns].count("sum") == 1
    plans = noise_plan(prepared.columns, prepared.params)
    assert _selecting(plans).column == next(c.name for c in prepared.columns if c.kind == "rows")
