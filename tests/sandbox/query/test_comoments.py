"""Products, correlation, covariance and regression (``sandbox/query/comoments.py``).

- Each pair aggregate as the guard reads it (``respell``) gives DuckDB's own answer on
  random small tables with NULLs, groups and FILTERs (a hypothesis property), but NULL
  where DuckDB says NaN (a zero variance): the one documented difference.
- ``product_bounds`` holds every product of values within the bounds (a property).
- The rewrite gives a sum of a product the product's bounds, clamps each factor, and the
  sensitivity disclosure calibrates to follows from them.
- Through the service: exact (and held) without a budget, equal to DuckDB's value on the
  enclave's rows; noised, within [-1, 1], under a budget; the output named as written.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import sqlglot
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.query.comoments import product_bounds
from sandbox.query.dialects import respell
from sandbox.query.service import QueryService
from tests.conftest import build_deployment
from tests.sandbox.query.raw_duckdb import answers
from tests.sandbox.query.test_guard import guard

ROWS = st.lists(
    st.tuples(
        st.integers(0, 2),  # g: the group
        st.one_of(st.none(), st.integers(-30, 30)),  # x, sometimes NULL
        st.one_of(st.none(), st.integers(-30, 30)),  # y, sometimes NULL
        st.integers(0, 3),  # f: filtered on
    ),
    min_size=0,
    max_size=25,
)
FORMS = [
    "corr(x, y)",
    "covar_pop(x, y)",
    "covar_samp(y, x)",
    "regr_slope(y, x)",
    "regr_intercept(y, x)",
    "regr_r2(y, x)",
    "regr_count(y, x)",
    "regr_avgx(y, x)",
    "regr_avgy(y, x)",
    "regr_sxx(y, x)",
    "regr_syy(y, x)",
    "regr_sxy(y, x)",
    "corr(x, x)",
]


def _same(written: Any, read: Any) -> bool:
    if isinstance(written, float) and math.isnan(written):
        return read is None  # NULL where DuckDB divides by a zero variance
    if written is None or read is None:
        return written is None and read is None
    return math.isclose(float(written), float(read), rel_tol=1e-6, abs_tol=1e-6)


@settings(max_examples=200, deadline=None)
@given(rows=ROWS, form=st.sampled_from(FORMS), filtered=st.booleans())
def test_the_form_the_guard_reads_gives_duckdbs_answer(
    rows: list[tuple[int, int | None, int | None, int]], form: str, filtered: bool
) -> None:
    aggregate = form + (" FILTER (WHERE f >= 1)" if filtered else "")
    sql = f"SELECT g, {aggregate} AS v FROM t GROUP BY g ORDER BY g"
    root = sqlglot.parse_one(sql, read="duckdb")
    respell(root)
    read = root.sql(dialect="duckdb")
    assert "SUM(" in read or "COUNT(" in read, read
    create = "CREATE TABLE t (g INTEGER, x INTEGER, y INTEGER, f INTEGER)"
    (_, want), (_, got) = answers(create, rows, sql, read)
    assert [g for g, _ in want] == [g for g, _ in got]
    for (_, written), (_, value) in zip(want, got, strict=True):
        assert _same(written, value), (sql, read, written, value)


def test_a_float_cast_of_a_column_reads_as_the_column() -> None:
    root = sqlglot.parse_one("SELECT corr(x::DOUBLE, CAST(y AS FLOAT)) FROM t", read="duckdb")
    respell(root)
    assert "CAST" not in root.sql(dialect="duckdb")


@pytest.mark.parametrize(
    "aggregate",
    ["corr(x, y + 1)", "covar_pop(2 * x, y)", "corr(x, y) OVER ()", "corr(x::INT, y)"],
)
def test_other_forms_are_left_as_written(aggregate: str) -> None:
    sql = f"SELECT {aggregate} AS v FROM t"
    root = sqlglot.parse_one(sql, read="duckdb")
    before = root.sql(dialect="duckdb")
    respell(root)
    assert root.sql(dialect="duckdb") == before


BOUNDS = st.tuples(st.integers(-100, 100), st.integers(-100, 100)).map(sorted)


@settings(max_examples=300, deadline=None)
@given(first=BOUNDS, second=BOUNDS, data=st.data())
def test_every_product_lies_within_the_product_bounds(
    first: list[int], second: list[int], data: st.DataObject
) -> None:
    x = data.draw(st.integers(*first))
    y = data.draw(st.integers(*second))
    lo, hi = product_bounds((first[0], first[1]), (second[0], second[1]))
    assert lo <= x * y <= hi
    corners = {a * b for a in first for b in second}
    assert {lo, hi} <= corners  # and no wider than it must be
    slo, shi = product_bounds((first[0], first[1]), (first[0], first[1]), same=True)
    assert slo <= x * x <= shi and slo >= 0
    assert shi == max(first[0] ** 2, first[1] ** 2)


def test_a_sum_of_a_product_carries_the_products_bounds_and_clamps_each_factor() -> None:
    plan = guard("SELECT district, sum(claim_amount * age) AS s FROM health.claims GROUP BY 1")
    (total,) = [s for s in plan.stats if s.kind == "sum"]
    # claim_amount in [0, 13000], age in [0, 110]
    assert (total.lower, total.upper) == (0.0, 13000.0 * 110.0)
    assert "least(13000" in plan.stats_sql and "least(110" in plan.stats_sql
    # never the product as typed (DECIMAL * DECIMAL can overflow: an error that would
    # depend on a row's values), not even where it is only counted
    assert '"claim_amount" * "claims"."age"' not in plan.stats_sql
    assert '"age" * "claims"."claim_amount"' not in plan.stats_sql
    squares = guard("SELECT sum(age * age) AS q FROM health.claims")
    (square,) = [s for s in squares.stats if s.kind == "sum"]
    assert (square.lower, square.upper) == (0.0, 110.0 * 110.0)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Any:
    platform, tokens = build_deployment(tmp_path_factory.mktemp("comoments") / "home")
    yield platform, tokens
    platform.close()


PAIRS = (
    "SELECT gender, corr(age, claim_amount), covar_samp(age, claim_amount) AS c, "
    "regr_slope(claim_amount, age) AS b FROM health.claims GROUP BY gender ORDER BY gender"
)


def test_without_a_budget_the_values_are_exact_and_held(deployment: Any) -> None:
    platform, tokens = deployment
    service = QueryService(platform)
    bank = platform.authority.authenticate(tokens["op-bank"])  # reviewed: exact, held
    held = service.run_job(bank, PAIRS)
    assert type(held).__name__ == "Held"
    rows = held.table.to_pylist()
    assert list(rows[0]) == ["gender", "CORR(age, claim_amount)", "c", "b"]
    # the rewrite clamps every measure to its declared bounds, in every release mode
    clamped = PAIRS.replace("FROM health.claims", "FROM clamped").replace(
        "corr(age, claim_amount),", 'corr(age, claim_amount) AS "CORR(age, claim_amount)",'
    )
    with platform.enclave.cursor() as cur:
        truth = cur.sql(
            "WITH clamped AS (SELECT gender, greatest(0, least(110, age)) AS age, "
            "greatest(0, least(13000, claim_amount)) AS claim_amount FROM health.claims) " + clamped
        ).fetchall()
    assert len(rows) == len(truth)
    for row, (gender, r, c, b) in zip(rows, truth, strict=True):
        assert row["gender"] == gender
        # released values are rounded to the grant's digits (two in the test deployment)
        assert row["CORR(age, claim_amount)"] == pytest.approx(r, abs=0.006)
        assert row["c"] == pytest.approx(c, abs=0.006)
        assert row["b"] == pytest.approx(b, abs=0.006)


def test_under_a_budget_they_are_noised_and_a_correlation_stays_within_one(
    deployment: Any,
) -> None:
    platform, tokens = deployment
    service = QueryService(platform)
    insurer = platform.authority.authenticate(tokens["op-insurer"])  # a dp grant
    sql = "SELECT corr(age, claim_amount) AS r, sum(claim_amount * age) AS s FROM health.claims"
    explained = service.explain(insurer, sql)
    assert explained["accepted"] and explained["epsilon"] > 0
    assert explained["accuracy"]["r"]["half_width"] is None  # an expression: no interval
    assert explained["accuracy"]["s"]["half_width"] > 0  # a sum: its interval
    result = service.run(insurer, sql)
    (row,) = result.table.to_pylist()
    assert row["r"] is None or -1.0 <= row["r"] <= 1.0
    with platform.enclave.cursor() as cur:
        ((true_sum,),) = cur.sql("SELECT sum(claim_amount * age) FROM health.claims").fetchall()
    assert row["s"] != pytest.approx(float(true_sum), rel=1e-12)  # noised, not exact


def _where(sql: str) -> Any:
    return sqlglot.parse_one(f"SELECT 1 FROM t WHERE {sql}", read="duckdb").args["where"].this


@pytest.mark.parametrize(
    ("predicate", "value", "kept"),
    [
        ("x IS NOT NULL AND y IS NOT NULL", "x * y", True),
        ("(f = 1) AND NOT (x) IS NULL AND y IS NOT NULL", "x", True),
        (
            "TRY(NOT (x) IS NULL) AND TRY(NOT (TRY_CAST(floor(y / 10) * 10 AS INT)) IS NULL)",
            "y",
            True,
        ),
        ("x IS NOT NULL", "x * y", False),  # y may be NULL
        ("x IS NOT NULL OR y IS NOT NULL", "x", False),
        ("coalesce(x, 0) IS NOT NULL", "x", False),  # not strict: true where x is NULL
        ("NOT (x IS NULL OR f = 1)", "x", False),
        ("x IS NULL", "x", False),
        ("f = 1", "x", False),
    ],
)
def test_a_filter_keeps_values_only_where_it_tests_each_column(
    predicate: str, value: str, kept: bool
) -> None:
    from sandbox.query.cannot_raise import kept_non_null

    parsed = sqlglot.parse_one(f"SELECT {value}", read="duckdb").expressions[0]
    assert kept_non_null(_where(predicate), parsed) is kept


def test_the_sums_of_one_correlation_share_one_cell_and_one_count() -> None:
    plan = guard("SELECT corr(claim_amount, age) AS r FROM health.claims")
    sums = [s for s in plan.stats if s.kind == "sum"]
    counts = [s for s in plan.stats if s.kind in ("rows", "count")]
    cells = {s.name for s in plan.stats if s.kind == "entities"} - {"__entities"}
    assert len(sums) == 5 and len(counts) == 1 and len(cells) == 1
    assert {s.cell for s in sums} == cells == {counts[0].cell}
    # a FILTER that does not keep values only: each sum its own presence cell and count
    plain = guard(
        "SELECT sum(claim_amount) FILTER (WHERE coalesce(claim_amount, 0) > 1) AS s "
        "FROM health.claims"
    )
    (total,) = [s for s in plain.stats if s.kind == "sum"]
    (count,) = [s for s in plain.stats if s.kind == "count"]
    filter_cell = [s.name for s in plain.stats if s.kind == "entities"][1]  # the FILTER's
    assert count.cell == total.cell != filter_cell


def test_an_average_over_rows_with_a_value_is_exact_without_a_budget(deployment: Any) -> None:
    platform, tokens = deployment
    bank = platform.authority.authenticate(tokens["op-bank"])
    sql = (
        "SELECT district, avg(claim_amount) FILTER (WHERE claim_amount IS NOT NULL "
        "AND gender = 'F') AS m FROM health.claims GROUP BY district ORDER BY district"
    )
    held = QueryService(platform).run_job(bank, sql)
    with platform.enclave.cursor() as cur:
        truth = dict(
            cur.sql(sql.replace("avg(claim_amount)", "avg(least(claim_amount, 13000))")).fetchall()
        )
    rows = held.table.to_pylist()
    assert rows and all(
        r["m"] == pytest.approx(float(truth[r["district"]]), abs=0.006) for r in rows
    )


@pytest.mark.parametrize("count_first", [True, False])
def test_a_centred_sum_whose_count_is_a_copy_is_released_whole(
    deployment: Any, count_first: bool
) -> None:
    """At C = 1 a FILTER's row count is released as a copy of its entity count; a sum
    paired with that count (a FILTER keeping rows with a value) is uncentred after every
    copy is filled, whatever the order of the outputs (a review found 0.0 there)."""
    from sandbox.query.disclosure import DisclosureParams
    from sandbox.query.noise import seeded_noise
    from sandbox.query.release import prepare, release
    from tests.sandbox.query.test_guard import MAX_SQL_LENGTH, access

    platform, _ = deployment
    count = "count(DISTINCT person_id) FILTER (WHERE claim_amount IS NOT NULL) AS p"
    mean = "avg(claim_amount) FILTER (WHERE claim_amount IS NOT NULL) AS a"
    outputs = f"{count}, {mean}" if count_first else f"{mean}, {count}"
    sql = f"SELECT gender, {outputs} FROM health.claims GROUP BY 1 ORDER BY 1"
    params = DisclosureParams(
        k=10, epsilon=1.0, max_rows_per_entity=1, max_groups_per_entity=1, dominance_p=None
    )
    prepared = prepare(sql, access(), params, max_sql_length=MAX_SQL_LENGTH)
    released = release(
        platform.enclave.query(prepared.plan.stats_sql), prepared, noise=seeded_noise(3)
    )
    rows = released.table.to_pylist()
    assert len(rows) == 2
    # one claim per person and gender, clamped at 13000: means of about 3000 yuan, each
    # within a few hundred of it at ε = 1 over about 1000 persons (0.0 before the fix)
    assert all(2000 < r["a"] < 4500 for r in rows), rows


def test_under_a_budget_a_correlation_sums_centred_factors() -> None:
    """Under a budget a co-moment's products are sums of centred factors (released as
    the plain sums again, with the plain Σx, Σy and n): corr, the slope and the
    intercept over one pair share one set of five sums, one count and one cell."""
    from sandbox.query.guard import check_query
    from sandbox.query.parse import parse_query
    from sandbox.query.rewrite import ContributionBounds, build_plan
    from tests.sandbox.query.test_guard import MAX_SQL_LENGTH, access

    grants = access()
    sql = (
        "SELECT corr(claim_amount, age) AS r, regr_slope(claim_amount, age) AS b, "
        "regr_intercept(claim_amount, age) AS a, regr_avgx(claim_amount, age) AS mx "
        "FROM health.claims"
    )
    checked = check_query(parse_query(sql, max_length=MAX_SQL_LENGTH), grants)
    plan = build_plan(checked, grants, bounds=ContributionBounds(9, 4, 9))
    sums = sorted((s.lower, s.upper) for s in plan.stats if s.kind == "sum")
    # amount and age plain; (age - 55)², (amount - 6500)², (age - 55)(amount - 6500)
    assert sums == [
        (-357500.0, 357500.0),
        (0.0, 110.0),
        (0.0, 3025.0),
        (0.0, 13000.0),
        (0.0, 6500.0**2),
    ]
    assert len([s for s in plan.stats if s.kind in ("rows", "count")]) == 1
    cells = {s.name for s in plan.stats if s.kind == "entities"} - {"__entities"}
    assert len(cells) == 1
    # without a budget nothing is centred (dominance reads the sums themselves)
    assert all((s.lower or 0) >= 0 for s in guard(sql).stats if s.kind == "sum")


def test_at_a_huge_budget_the_centred_forms_equal_the_plain_sums(deployment: Any) -> None:
    """The uncentring is exact: with noise negligible (ε = 1e9) a covariance from the
    centred products equals the same covariance written out over plain sums (an
    analyst's own sums are never centred), both over the same capped rows."""
    from sandbox.query.disclosure import DisclosureParams
    from sandbox.query.noise import seeded_noise
    from sandbox.query.release import prepare, release
    from tests.sandbox.query.test_guard import MAX_SQL_LENGTH, access

    platform, _ = deployment
    pair = " FILTER (WHERE age IS NOT NULL AND claim_amount IS NOT NULL)"
    n = f"count(*){pair}"
    written = (
        f"(sum(age * claim_amount){pair} - sum(age){pair} * sum(claim_amount){pair} / {n})"
        f" / ({n} - 1)"
    )
    sql = (
        f"SELECT covar_samp(age, claim_amount) AS c, {written} AS w, "
        "regr_sxx(claim_amount, age) AS sxx, "
        f"sum(age * age){pair} - sum(age){pair} * sum(age){pair} / {n} AS wxx "
        "FROM health.claims"
    )
    params = DisclosureParams(
        k=1, epsilon=1e9, max_rows_per_entity=9, max_groups_per_entity=1, dominance_p=None
    )
    prepared = prepare(sql, access(), params, max_sql_length=MAX_SQL_LENGTH)
    kinds = [s.lower for s in prepared.plan.stats if s.kind == "sum"]
    assert any(lower is not None and lower < 0 for lower in kinds)  # a centred product
    stats = platform.enclave.query(prepared.plan.stats_sql)
    (row,) = release(stats, prepared, noise=seeded_noise(5)).table.to_pylist()
    # Equal but for each sum's rounding to its noise grid: a covariance is a difference of
    # sums about 2000 times its size, so 1e-3 of it.  A term of the uncentring missing
    # (n·mx·my alone is 3.6e9 here) would be off by far more.
    assert row["c"] == pytest.approx(row["w"], rel=1e-2)
    assert row["sxx"] == pytest.approx(row["wxx"], rel=1e-3)
