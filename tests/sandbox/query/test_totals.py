"""Totals as scalar subqueries, released as queries of their own (totals.py, parts.py).

The outer query and each total are checked, run and disclosed separately; the outer
expression reads the released totals in the release query.  Where nothing is withheld
the answer is raw DuckDB's on the same (clamped) data; a total under k is withheld
as it would be alone; ε is split over the parts; what is not a total stays refused.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import sqlglot

from sandbox.core.errors import QueryRefused
from sandbox.query.disclosure import DisclosureParams
from sandbox.query.parse import parse_query
from sandbox.query.parts import split_totals
from sandbox.query.release import PreparedWithTotals, execute, prepare, release
from sandbox.query.totals import TOTAL
from tests.sandbox.query.test_guard import DEMO_DATASETS, MAX_SQL_LENGTH, access, demo_spec

#: Nothing withheld and nothing noised: the released figures are the computed ones.
EXACT = DisclosureParams(k=1, dominance_p=None)

RATIO_08 = (
    "SELECT gender, sum(claim_amount) / (SELECT sum(claim_amount) FROM health.claims) AS share "
    "FROM health.claims GROUP BY gender"
)
CTE_11 = (
    "WITH a AS (SELECT district, count(*) AS n FROM health.claims GROUP BY 1), "
    "b AS (SELECT sum(n) AS total FROM a) "
    "SELECT a.district, a.n * 100.0 / b.total AS pct FROM a, b"
)
ANSWERED = [
    RATIO_08,
    CTE_11,
    # several totals, in HAVING and ORDER BY too; one total twice
    "SELECT gender, count(*) - (SELECT count(*) FROM health.claims WHERE gender = 'F') AS d, "
    "(SELECT avg(age) FROM health.claims) AS mean_age FROM health.claims GROUP BY gender "
    "HAVING count(*) > 0.1 * (SELECT count(*) FROM health.claims) "
    "ORDER BY (SELECT count(*) FROM health.claims) DESC, 1",
    # a total over another dataset, with a filter of its own
    "SELECT district, count(*) * 1.0 / (SELECT count(*) FROM transport.trips WHERE fare > 5) "
    "AS per_dear_trip FROM health.claims GROUP BY district",
    # a total over an aggregating CTE the outer query also reads (a rollup, rollup.py)
    "WITH g AS (SELECT gender, district, count(*) AS n FROM health.claims GROUP BY 1, 2) "
    "SELECT gender, district, n * 1.0 / (SELECT sum(n) FROM g) AS share FROM g",
    # the total as a derived table joined by a comma
    "SELECT a.district, a.n / t.total AS share FROM (SELECT district, sum(claim_amount) AS n "
    "FROM health.claims GROUP BY 1) a, (SELECT sum(claim_amount) AS total FROM health.claims) t",
]


def clamp(con: Any) -> Any:
    """The raw demo tables with every bounded measure clamped to its declared bounds.

    The sandbox clamps each value before it sums (docs/disclosure.md): on these tables
    raw DuckDB computes what the sandbox releases when nothing is withheld.
    """
    for dataset in DEMO_DATASETS:
        for column in demo_spec(dataset).columns:
            if column.bounds is not None:
                lo, hi = column.bounds
                con.execute(
                    f"UPDATE {dataset} SET {column.name} = greatest({lo!r}, least({hi!r}, "
                    f"{column.name}))"
                )
    return con


@pytest.fixture(scope="module")
def clamped(raw_demo: Any) -> Any:
    return clamp(raw_demo)


def _rounded(row: dict[str, Any] | tuple[Any, ...]) -> tuple[Any, ...]:
    values = row.values() if isinstance(row, dict) else row
    return tuple(
        float(f"{float(v):.9g}") if isinstance(v, float) or hasattr(v, "as_tuple") else v
        for v in values
    )


def released(platform: Any, sql: str, params: DisclosureParams = EXACT) -> Any:
    prepared = prepare(sql, access(), params, max_sql_length=MAX_SQL_LENGTH)
    return prepared, release(execute(platform.enclave, prepared), prepared)


@pytest.mark.parametrize("sql", ANSWERED)
def test_a_total_gives_raw_duckdbs_answer(demo_platform: Any, clamped: Any, sql: str) -> None:
    prepared, result = released(demo_platform, sql)
    assert isinstance(prepared, PreparedWithTotals) and prepared.parts
    rows = [_rounded(r) for r in result.table.to_pylist()]
    expected = [_rounded(r) for r in clamped.sql(sql).fetchall()]
    assert len(rows) > 1
    assert sorted(rows, key=repr) == sorted(expected, key=repr)


def test_the_outer_query_and_each_total_are_split(demo_platform: Any) -> None:
    split = split_totals(parse_query(CTE_11, max_length=MAX_SQL_LENGTH))
    assert split is not None
    (total,) = split.totals
    assert total.normalized_sql == 'SELECT COUNT(*) AS "total" FROM health.claims'
    main = split.main.expression
    assert "SELECT" not in main.sql().split("FROM")[0][6:]  # no subquery left in the outputs
    marked = [lit for lit in main.find_all(sqlglot.exp.Literal) if TOTAL in lit.meta]
    assert [lit.meta[TOTAL] for lit in marked] == [0]
    assert split.main.datasets == total.datasets == ("health.claims",)


def test_the_same_total_twice_is_one_release(demo_platform: Any) -> None:
    sql = (
        "SELECT gender, count(*) * 1.0 / (SELECT count(*) FROM health.claims) AS a, "
        "count(*) * 2.0 / (SELECT count(*) FROM health.claims) AS b FROM health.claims "
        "GROUP BY gender"
    )
    prepared, result = released(demo_platform, sql)
    assert isinstance(prepared, PreparedWithTotals) and len(prepared.parts) == 1
    for row in result.table.to_pylist():
        assert row["b"] == pytest.approx(2 * row["a"])


def test_a_total_under_k_is_withheld_as_it_would_be_alone(demo_platform: Any, clamped: Any) -> None:
    """D16 has 64 insured persons: under k=70 its total is withheld, the outer groups are not."""
    small = "SELECT count(*) FROM health.claims WHERE district = 'D16'"
    persons = "SELECT count(DISTINCT person_id) FROM health.claims WHERE district = 'D16'"
    assert clamped.sql(persons).fetchall()[0][0] < 70
    params = DisclosureParams(k=70, dominance_p=None)
    _, alone = released(demo_platform, small, params)
    assert alone.table.num_rows == 0
    sql = (
        f"SELECT gender, count(*) AS n, count(*) * 1.0 / ({small}) AS ratio "
        "FROM health.claims GROUP BY gender"
    )
    _, result = released(demo_platform, sql, params)
    rows = result.table.to_pylist()
    assert len(rows) == 2
    assert all(r["n"] >= 70 and r["ratio"] is None for r in rows)


def test_epsilon_is_split_over_the_outer_query_and_its_totals(demo_platform: Any) -> None:
    params = DisclosureParams(
        k=10, epsilon=1.0, max_rows_per_entity=2, max_groups_per_entity=1, dominance_p=None
    )
    prepared, result = released(demo_platform, RATIO_08, params)
    assert isinstance(prepared, PreparedWithTotals)
    (part,) = prepared.parts
    assert part.params.epsilon == prepared.params.epsilon == 0.5
    assert part.params.delta == prepared.params.delta == params.delta / 2
    assert 0 < prepared.epsilon <= params.epsilon + 1e-9
    assert result.epsilon_spent == pytest.approx(prepared.epsilon)


REFUSED = [
    # correlated: the total would be one per outer row
    (
        "SELECT gender, count(*) / (SELECT count(*) FROM health.claims c2 "
        "WHERE c2.gender = c.gender) AS r FROM health.claims c GROUP BY gender",
        "guard.subquery_predicate",
    ),
    # in a FILTER (inside an aggregate): evaluated per row; in WHERE it is a threshold,
    # released first (test_thresholds.py)
    (
        "SELECT gender, count(*) FILTER (WHERE claim_amount > "
        "(SELECT avg(claim_amount) FROM health.claims)) AS n FROM health.claims GROUP BY gender",
        "guard.subquery_predicate",
    ),
    # inside an aggregate: evaluated per row
    (
        "SELECT gender, sum(claim_amount / (SELECT sum(claim_amount) FROM health.claims)) AS s "
        "FROM health.claims GROUP BY gender",
        "guard.subquery_predicate",
    ),
    # a subquery with GROUP BY is no total
    (
        "SELECT gender, count(*) / (SELECT count(*) FROM health.claims GROUP BY district) AS r "
        "FROM health.claims GROUP BY gender",
        "guard.subquery_predicate",
    ),
    # nothing around it: the total is a query of its own
    ("SELECT (SELECT count(*) FROM health.claims) AS n", "guard.subquery_predicate"),
    # the total is checked as a query of its own: an identifier in its WHERE is refused
    (
        "SELECT gender, count(*) * 1.0 / (SELECT count(*) FROM health.claims "
        "WHERE person_id = 'P0000001') AS r FROM health.claims GROUP BY gender",
        "guard.identifier",
    ),
    (
        "SELECT gender, count(*) AS n FROM health.claims GROUP BY gender "
        "ORDER BY (SELECT max(name) FROM health.claims)",
        "guard.identifier",
    ),
    (
        "SELECT gender, (SELECT max(claim_amount) FROM health.claims) AS m, count(*) AS n "
        "FROM health.claims GROUP BY gender",
        "guard.aggregate_record_value",
    ),
]


@pytest.mark.parametrize(("sql", "rule"), REFUSED)
def test_what_is_not_a_sound_total_stays_refused(sql: str, rule: str) -> None:
    with pytest.raises(QueryRefused) as info:
        prepare(sql, access(), EXACT, max_sql_length=MAX_SQL_LENGTH)
    assert info.value.rule == rule
    for constant in re.findall(r"'([^']*)'", sql):
        assert constant not in str(info.value)


def test_a_forged_placeholder_mark_is_ignored(demo_platform: Any, clamped: Any) -> None:
    """sqlglot reads ``/* sqlglot.meta sbx_total */`` into a node's meta: never a total."""
    sql = (
        "SELECT gender, count(*) / 2.0 /* sqlglot.meta sbx_total */ AS half, "
        "count(*) * 1.0 / (SELECT count(*) FROM health.claims) AS share "
        "FROM health.claims GROUP BY gender"
    )
    _, result = released(demo_platform, sql)
    rows = sorted(map(_rounded, result.table.to_pylist()), key=repr)
    assert rows == sorted(map(_rounded, clamped.sql(sql).fetchall()), key=repr)
