"""``count(DISTINCT x)`` of a column other than the entity key: how many values.

Under a budget its column is noised as a row count is (kind ``distinct``, the same
sensitivity), which holds only if one entity moves the column by at most that much: the
property below removes each entity in turn from random data and measures the stats
query's own answer (DuckDB, the plan as the service runs it), with and without a total
bound ``T``.  Without caps binding, and without a budget, it is DuckDB's own
``count(DISTINCT x)``.
"""

from __future__ import annotations

import random
from typing import Any

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.query.disclosure import DisclosureParams, StatColumn, sensitivity
from sandbox.query.noise import seeded_noise
from sandbox.query.release import with_total
from sandbox.query.rewrite import ContributionBounds, Plan
from sandbox.query.service import QueryService
from tests.conftest import build_deployment
from tests.sandbox.query.test_rewrite_cap import plan_of

GROUPED = "SELECT district, count(DISTINCT diagnosis_code) AS codes FROM health.claims GROUP BY 1"
FILTERED = (
    "SELECT district, count(DISTINCT diagnosis_code) FILTER (WHERE hospital_id <> 'H1') "
    "AS codes FROM health.claims GROUP BY 1"
)
WHOLE = "SELECT count(DISTINCT diagnosis_code) AS codes FROM health.claims"

Row = tuple[str | None, str | None, str | None, str | None]  # person, district, code, hospital

rows_strategy = st.lists(
    st.tuples(
        st.one_of(st.sampled_from(["P1", "P2", "P3", "P4", "P5"]), st.none()),
        st.one_of(st.sampled_from(["D1", "D2", "D3"]), st.none()),
        st.one_of(st.sampled_from(["A", "B", "C", "D", "E", "F", "G"]), st.none()),
        st.sampled_from(["H1", "H2"]),
    ),
    max_size=50,
)


def _database(rows: list[Row]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("CREATE SCHEMA health")
    con.execute(
        "CREATE TABLE health.claims (person_id VARCHAR, district VARCHAR, "
        "diagnosis_code VARCHAR, hospital_id VARCHAR)"
    )
    if rows:
        con.executemany("INSERT INTO health.claims VALUES (?, ?, ?, ?)", rows)
    return con


def _values(rows: list[Row], plan: Plan) -> dict[Any, int]:
    """The stats query's distinct count per group (0 where the group is absent)."""
    (name,) = [s.name for s in plan.stats if s.kind == "distinct"]
    con = _database(rows)
    try:
        table = con.sql(plan.stats_sql).to_arrow_table().to_pylist()
    finally:
        con.close()
    key = plan.keys[0] if plan.keys else None
    return {(row[key] if key else None): int(row[name] or 0) for row in table}


def _bounds(c: int, g: int, t: int | None) -> tuple[ContributionBounds, DisclosureParams]:
    """The bounds as the service applies them (``release.with_total``: C at most T)."""
    params = with_total(
        DisclosureParams(
            k=1,
            epsilon=1.0,
            max_rows_per_entity=c,
            max_groups_per_entity=g,
            max_total_rows_per_entity=t,
        )
    )
    bounds = ContributionBounds(
        params.max_rows_per_entity, params.max_groups_per_entity, params.max_total_rows_per_entity
    )
    return bounds, params


@settings(max_examples=150, deadline=None)
@given(
    rows=rows_strategy,
    sql=st.sampled_from([GROUPED, FILTERED, WHOLE]),
    c=st.integers(min_value=1, max_value=3),
    g=st.integers(min_value=1, max_value=3),
    t=st.one_of(st.none(), st.integers(min_value=1, max_value=6)),
)
def test_one_entity_moves_the_column_by_at_most_its_sensitivity(
    rows: list[Row], sql: str, c: int, g: int, t: int | None
) -> None:
    bounds, params = _bounds(c, g, t)
    plan = plan_of(sql, bounds)
    bound = sensitivity(StatColumn("v", "distinct"), params)
    assert bound == sensitivity(StatColumn("n", "count"), params)  # noised as a row count
    full = _values(rows, plan)
    for person in {r[0] for r in rows if r[0] is not None}:
        without = _values([r for r in rows if r[0] != person], plan)
        moved = [abs(full.get(k, 0) - without.get(k, 0)) for k in full.keys() | without.keys()]
        assert sum(moved) <= bound, (person, full, without)
        assert max(moved, default=0) <= c


def test_an_entity_with_many_values_in_a_cell_brings_at_most_c() -> None:
    rows: list[Row] = [("P1", "D1", code, "H2") for code in "ABCDEF"]
    rows += [("P2", "D1", "A", "H2")]
    bounds, _ = _bounds(2, 3, None)
    assert _values(rows, plan_of(GROUPED, bounds))["D1"] in (2, 3)  # two of P1's; P2's A
    assert _values(rows, plan_of(GROUPED, None)) == {"D1": 6}  # without a budget: all


def test_entities_keep_different_values_not_the_same_few() -> None:
    """Each entity's C values are chosen by a hash of value and entity: 300 persons with
    20 of 200 codes each, C = 9, still show nearly all 200 (the C smallest values, one
    order for everyone, showed 142 in a review)."""
    rng = random.Random(3)
    codes = [f"K{i:03d}" for i in range(200)]
    rows: list[Row] = [
        (f"P{p}", "D1", code, "H2") for p in range(300) for code in rng.sample(codes, 20)
    ]
    bounds, _ = _bounds(9, 1, None)
    assert _values(rows, plan_of(GROUPED, bounds))["D1"] >= 195


def test_under_a_total_bound_an_entity_brings_at_most_t_values_over_its_groups() -> None:
    """C = 2, G = 3, T = 2: two values in each of three districts would be six; the
    running total keeps the cells within T rows, two values in all."""
    rows: list[Row] = [
        ("P1", d, code, "H2")
        for d, codes in (("D1", "AB"), ("D2", "CD"), ("D3", "EF"))
        for code in codes
    ]
    bounds, params = _bounds(2, 3, 2)
    assert params.total_bound == 2
    assert sum(_values(rows, plan_of(GROUPED, bounds)).values()) == 2


@settings(max_examples=40, deadline=None)
@given(rows=rows_strategy, sql=st.sampled_from([GROUPED, FILTERED, WHOLE]))
def test_without_a_budget_it_is_duckdbs_count_distinct(rows: list[Row], sql: str) -> None:
    plan = plan_of(sql, None)
    con = _database(rows)
    try:
        want = con.sql(sql).fetchall()
    finally:
        con.close()
    got = _values(rows, plan)
    if plan.keys:
        assert got == {k: v for k, v in want}
    else:
        assert got == {None: want[0][0]}


@pytest.fixture(scope="module")
def dp_service(tmp_path_factory: pytest.TempPathFactory) -> Any:
    platform, tokens = build_deployment(tmp_path_factory.mktemp("distinct") / "home")
    yield QueryService(platform, noise=seeded_noise(5)), platform, tokens
    platform.close()


def test_a_budgeted_query_releases_a_noisy_count_of_values(dp_service: Any) -> None:
    """Through the service: each district's number of diagnosis codes, noised, with its
    accuracy stated before spending, beside the number of persons."""
    service, platform, tokens = dp_service
    insurer = platform.authority.authenticate(tokens["op-insurer"])
    sql = (
        "SELECT district, count(DISTINCT diagnosis_code) AS codes, "
        "count(DISTINCT person_id) AS persons FROM health.claims GROUP BY 1"
    )
    explained = service.explain(insurer, sql, epsilon=1.0)
    assert explained["accuracy"]["codes"]["half_width"] > 0
    result = service.run(insurer, sql, epsilon=1.0)
    rows = result.table.to_pylist()
    assert rows and all(r["codes"] >= 0 and r["codes"] == int(r["codes"]) for r in rows)
    assert result.meta["epsilon_spent"] == pytest.approx(1.0)


STAGE_SQL = (
    "WITH a AS (SELECT district, hospital_id, count(*) AS n FROM health.claims "
    "GROUP BY 1, 2) SELECT district, count(*) AS hospitals FROM a GROUP BY district"
)


@pytest.mark.parametrize("budget", [False, True])
def test_a_per_value_stage_counts_its_null_group_as_one_row(budget: bool) -> None:
    """Over a per-hospital stage, count(*) is the number of its rows, the NULL hospital's
    one of them (DuckDB's answer to the query as written): 2 here, where a plain
    count(DISTINCT hospital_id) is 1 (a review found the stage read as the latter)."""
    rows: list[Row] = [("P1", "D1", "A", "H1"), ("P2", "D1", "B", None), ("P3", "D1", "C", None)]
    con = _database(rows)
    try:
        want = dict(con.sql(STAGE_SQL).fetchall())
    finally:
        con.close()
    assert want == {"D1": 2}
    bounds = _bounds(2, 2, None)[0] if budget else None
    assert _values(rows, plan_of(STAGE_SQL, bounds)) == want
