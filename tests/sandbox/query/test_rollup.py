"""Aggregates over an aggregating CTE or derived table, read over its rows (rollup.py).

Each rolled case: the analyst's query and the single SELECT it is read as; that form
gives DuckDB's rows of the query as written (on the demo data, and as a property on
small tables with NULLs); the sandbox answers cte-10 with raw DuckDB's figures where
nothing is withheld, withholds an outer group under k, refuses a per-X stage whose X
is an identifier other than the entity key, and answers one whose X is any other column
(a ``count(DISTINCT x)`` of values).
"""

from __future__ import annotations

from typing import Any

import duckdb
import pytest
import sqlglot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandbox.core.errors import QueryRefused
from sandbox.query.disclosure import DisclosureParams
from sandbox.query.release import execute, prepare, release
from sandbox.query.rollup import rollup
from tests.sandbox.query.test_guard import MAX_SQL_LENGTH, access
from tests.sandbox.query.test_totals import EXACT, _rounded, clamp

CTE_10 = (
    "WITH per_person AS (SELECT person_id, district, sum(claim_amount) AS total "
    "FROM health.claims GROUP BY person_id, district) "
    "SELECT district, avg(total) AS mean_per_person FROM per_person GROUP BY district"
)
ROLLED = [
    (
        CTE_10,
        "SELECT district, SUM(claim_amount) / COUNT(DISTINCT person_id) FILTER(WHERE NOT "
        'claim_amount IS NULL) AS "mean_per_person" FROM health.claims GROUP BY district',
    ),
    (
        "SELECT sum(n) AS total FROM (SELECT district, count(*) AS n FROM health.claims "
        "GROUP BY 1) AS t",
        'SELECT COUNT(*) AS "total" FROM health.claims',
    ),
    (
        "WITH a AS (SELECT district, gender, count(claim_amount) AS n, sum(claim_amount) AS s, "
        "min(age) AS young FROM health.claims WHERE age >= 30 GROUP BY 1, 2) "
        "SELECT gender, sum(n) AS n, sum(s) AS s, min(young) AS young, max(district) AS last "
        "FROM a WHERE district <> 'D01' GROUP BY gender ORDER BY gender",
        'SELECT gender, COUNT(claim_amount) AS "n", SUM(claim_amount) AS "s", MIN(age) AS '
        '"young", MAX(district) AS "last" FROM health.claims WHERE age >= 30 AND district '
        "<> 'D01' GROUP BY gender ORDER BY gender",
    ),
    (
        "WITH p AS (SELECT person_id, district, count(*) AS claims FROM health.claims "
        "GROUP BY person_id, district) SELECT district, count(*) AS persons, avg(claims) AS "
        "per_person, sum(claims) AS claims FROM p GROUP BY district HAVING count(*) > 10",
        'SELECT district, COUNT(DISTINCT person_id) AS "persons", COUNT(*) / COUNT(DISTINCT '
        'person_id) AS "per_person", COUNT(*) AS "claims" FROM health.claims GROUP BY '
        "district HAVING COUNT(DISTINCT person_id) > 10",
    ),
    (
        "WITH p AS (SELECT person_id, gender, sum(claim_amount) FILTER (WHERE age >= 60) AS "
        "old FROM health.claims GROUP BY 1, 2) SELECT gender, avg(old) AS mean_old FROM p "
        "GROUP BY gender",
        "SELECT gender, SUM(claim_amount) FILTER(WHERE age >= 60) / COUNT(DISTINCT person_id) "
        'FILTER(WHERE NOT claim_amount IS NULL AND age >= 60) AS "mean_old" FROM '
        "health.claims GROUP BY gender",
    ),
]
LEFT = [
    # max of per-person sums: one person's total
    "WITH p AS (SELECT person_id, district, sum(claim_amount) AS total FROM health.claims "
    "GROUP BY 1, 2) SELECT district, max(total) FROM p GROUP BY district",
    # a filter on a per-person sum: no filter on rows
    "WITH p AS (SELECT person_id, district, sum(claim_amount) AS total FROM health.claims "
    "GROUP BY 1, 2) SELECT district, avg(total) FROM p WHERE total > 1000 GROUP BY district",
    # the inner drops groups first
    "WITH a AS (SELECT district, count(*) AS n FROM health.claims GROUP BY 1 HAVING "
    "count(*) > 5) SELECT sum(n) FROM a",
    # avg of averages, and avg over two extra keys
    "WITH a AS (SELECT district, avg(age) AS m FROM health.claims GROUP BY 1) SELECT avg(m) FROM a",
    "WITH a AS (SELECT person_id, district, gender, count(*) AS n FROM health.claims "
    "GROUP BY 1, 2, 3) SELECT district, avg(n) FROM a GROUP BY district",
    # an outer key that is not an inner key
    "WITH a AS (SELECT district, count(*) AS n FROM health.claims GROUP BY 1) "
    "SELECT n, count(*) FROM a GROUP BY n",
]


def _read(sql: str) -> str | None:
    root = sqlglot.parse_one(sql, read="duckdb")
    before = root.sql(dialect="duckdb")
    assert isinstance(root, sqlglot.exp.Select)
    rollup(root)
    after = root.sql(dialect="duckdb")
    return after if after != before else None


@pytest.mark.parametrize(("sql", "read"), ROLLED)
def test_an_aggregate_over_an_aggregate_is_read_over_the_rows(sql: str, read: str) -> None:
    assert _read(sql) == read


@pytest.mark.parametrize("sql", LEFT)
def test_other_shapes_are_left_as_written(sql: str) -> None:
    assert _read(sql) is None


@pytest.mark.parametrize(("sql", "read"), ROLLED)
def test_the_read_form_gives_duckdbs_rows(raw_demo: Any, sql: str, read: str) -> None:
    rows = raw_demo.sql(sql).fetchall()
    assert rows
    assert sorted(map(_rounded, raw_demo.sql(read).fetchall()), key=repr) == sorted(
        map(_rounded, rows), key=repr
    )


TEMPLATES = [
    "WITH p AS (SELECT e, g, sum(x) AS t FROM r GROUP BY e, g) SELECT g, avg(t), count(t), "
    "count(*) FROM p GROUP BY g",
    "WITH p AS (SELECT e, g, sum(x) FILTER (WHERE f) AS t, count(x) AS c, count(*) FILTER "
    "(WHERE f) AS n FROM r GROUP BY e, g) SELECT g, avg(t), avg(c), avg(n), sum(t), sum(n) "
    "FROM p GROUP BY g",
    "WITH p AS (SELECT e, g, min(x) AS lo, max(x) AS hi, sum(x) AS t FROM r WHERE f "
    "GROUP BY e, g) SELECT g, min(lo), max(hi), sum(t), avg(t) FILTER (WHERE g > 0) FROM p "
    "GROUP BY g",
    "WITH p AS (SELECT e, sum(x) AS t FROM r GROUP BY e) SELECT avg(t), count(*) FROM p",
]
_row = st.tuples(
    st.integers(0, 4),  # entity (never NULL: the sandbox counts a NULL entity as one)
    st.one_of(st.none(), st.integers(0, 2)),  # group key
    st.one_of(st.none(), st.integers(-5, 5)),  # value
    st.booleans(),  # filter
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(_row, min_size=1, max_size=25), template=st.sampled_from(TEMPLATES))
def test_the_read_form_means_the_same_on_any_rows(rows: list[Any], template: str) -> None:
    read = _read(template)
    assert read is not None
    con = duckdb.connect()
    try:
        con.execute("CREATE TABLE r (e INTEGER, g INTEGER, x INTEGER, f BOOLEAN)")
        con.executemany("INSERT INTO r VALUES (?, ?, ?, ?)", rows)
        assert sorted(map(_rounded, con.sql(read).fetchall()), key=repr) == sorted(
            map(_rounded, con.sql(template).fetchall()), key=repr
        )
    finally:
        con.close()


def test_cte_10_gives_raw_duckdbs_answer(demo_platform: Any, clamped: Any) -> None:
    prepared = prepare(CTE_10, access(), EXACT, max_sql_length=MAX_SQL_LENGTH)
    result = release(execute(demo_platform.enclave, prepared), prepared)
    rows = sorted(map(_rounded, result.table.to_pylist()), key=repr)
    assert len(rows) > 1
    assert rows == sorted(map(_rounded, clamped.sql(CTE_10).fetchall()), key=repr)


def test_an_outer_group_under_k_persons_is_withheld(demo_platform: Any, raw_demo: Any) -> None:
    """k counts the persons of each district, not the per-person rows of the CTE."""
    persons = dict(
        raw_demo.sql(
            "SELECT district, count(DISTINCT person_id) FROM health.claims GROUP BY 1"
        ).fetchall()
    )
    k = 80
    params = DisclosureParams(k=k, dominance_p=None)
    prepared = prepare(CTE_10, access(), params, max_sql_length=MAX_SQL_LENGTH)
    result = release(execute(demo_platform.enclave, prepared), prepared)
    released = {r["district"] for r in result.table.to_pylist()}
    assert released == {d for d, n in persons.items() if n >= k}
    assert released and len(released) < len(persons)


def test_a_per_identifier_stage_is_refused() -> None:
    """A per-name stage is count(DISTINCT name): identifiers are counted only as entities."""
    sql = CTE_10.replace("person_id", "name").replace("per_person", "per_x")
    with pytest.raises(QueryRefused) as info:
        prepare(sql, access(), EXACT, max_sql_length=MAX_SQL_LENGTH)
    assert info.value.rule == "guard.identifier"
    assert "the rows of per_x are one per name in each group" in str(info.value)
    assert "count(DISTINCT person_id)" in str(info.value)


@pytest.mark.parametrize("key", ["hospital_id", "diagnosis_code"])
def test_a_per_value_stage_gives_raw_duckdbs_answer(
    key: str, demo_platform: Any, clamped: Any
) -> None:
    """A per-hospital (per-diagnosis) stage is sum / count(DISTINCT hospital_id): the
    mean total of a district's hospitals, as DuckDB gives it for the query as written."""
    sql = CTE_10.replace("person_id", key).replace("per_person", "per_x")
    prepared = prepare(sql, access(), EXACT, max_sql_length=MAX_SQL_LENGTH)
    result = release(execute(demo_platform.enclave, prepared), prepared)
    rows = dict(tuple(r.values()) for r in result.table.to_pylist())
    assert len(rows) > 1
    assert rows == pytest.approx(dict(clamped.sql(sql).fetchall()), rel=1e-9)


@pytest.fixture(scope="module")
def clamped(raw_demo: Any) -> Any:
    return clamp(raw_demo)
