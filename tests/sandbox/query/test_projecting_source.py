"""A projecting CTE or derived table taken into the aggregate that reads it
(``merge_source.projecting_source``) gives DuckDB's answer, as a hypothesis property.

Small tables with NULLs; a computed column of the inner (several forms), an inner and an
outer WHERE, a CTE or a derived table: the query as written and as the guard reads it
(``respell``) run in raw DuckDB and agree, NULLs included, with the outputs' names.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import sqlglot
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlglot import exp

from sandbox.query.dialects import respell
from tests.sandbox.query.raw_duckdb import answers

VALUE = st.one_of(st.none(), st.integers(-50, 50))
ROWS = st.lists(
    st.tuples(st.integers(0, 2), VALUE, VALUE, st.one_of(st.none(), st.integers(0, 3))),
    min_size=1,
    max_size=30,
)
# (not coalesce(x, c): NULL where every x is, a documented difference of its own)
TABLE = "CREATE TABLE t (g INTEGER, x INTEGER, y INTEGER, f INTEGER)"
COMPUTED = ["x - y", "2 * x", "x / 4", "x + y", "coalesce(x, y)", "x * 3 - y"]
# (a count alone is read through the CTE by lineage: only sums, means and the like take it in)
AGGREGATES = ["sum(m)", "avg(m) AS a", "sum(m) / count(*) AS r", "stddev_pop(m), count(m) AS c"]


def _read(sql: str) -> str:
    root = sqlglot.parse_one(sql, read="duckdb")
    respell(root)
    return root.sql(dialect="duckdb")


def _same(written: Any, read: Any) -> bool:
    if written is None or read is None:
        return written is None and read is None
    return math.isclose(float(written), float(read), rel_tol=1e-9, abs_tol=1e-9)


@settings(max_examples=150, deadline=None)
@given(
    rows=ROWS,
    computed=st.sampled_from(COMPUTED),
    aggregate=st.sampled_from(AGGREGATES),
    inner_where=st.booleans(),
    outer_where=st.booleans(),
    cte=st.booleans(),
)
def test_taken_in_it_gives_duckdbs_answer(
    rows: list[tuple[int, int | None, int | None, int | None]],
    computed: str,
    aggregate: str,
    inner_where: bool,
    outer_where: bool,
    cte: bool,
) -> None:
    inner = f"SELECT g, {computed} AS m FROM t" + (" WHERE f >= 1" if inner_where else "")
    tail = (" WHERE m > 0" if outer_where else "") + " GROUP BY g ORDER BY g"
    if cte:
        sql = f"WITH s AS ({inner}) SELECT g, {aggregate} FROM s{tail}"
    else:
        sql = f"SELECT g, {aggregate} FROM ({inner}) AS s{tail}"
    read = _read(sql)
    assert not sqlglot.parse_one(read, read="duckdb").find(exp.Subquery, exp.CTE), read
    (columns, want), (taken, got) = answers(TABLE, rows, sql, read)
    assert taken == columns, (sql, read)
    assert [r[0] for r in want] == [r[0] for r in got]
    for row, other in zip(want, got, strict=True):
        for value, taken in zip(row[1:], other[1:], strict=True):
            assert _same(value, taken), (sql, read, row, other)


@pytest.mark.parametrize(
    "sql",
    [
        # a bare column: lineage reads it through the CTE, as before
        "WITH s AS (SELECT g, x AS m FROM t) SELECT g, sum(m) FROM s GROUP BY g",
        # the inner deduplicates or limits: not one SELECT's rows
        "WITH s AS (SELECT DISTINCT g, x - y AS m FROM t) SELECT g, sum(m) FROM s GROUP BY g",
        "SELECT g, sum(m) FROM (SELECT g, x - y AS m FROM t LIMIT 5) s GROUP BY g",
        # the outer joins, or names a column the inner does not have
        "WITH s AS (SELECT g, x - y AS m FROM t) SELECT sum(m) FROM s JOIN t USING (g)",
        "WITH s AS (SELECT g, x - y AS m FROM t) SELECT sum(m), sum(f) FROM s",
        # only a count reads the computed column: lineage reads it through the CTE
        "WITH s AS (SELECT g, CASE WHEN x > 1 THEN 1 END AS m FROM t) SELECT g, count(m) "
        "FROM s GROUP BY g",
    ],
)
def test_other_shapes_are_left_as_written(sql: str) -> None:
    root = sqlglot.parse_one(sql, read="duckdb")
    before = root.sql(dialect="duckdb")
    respell(root)
    assert root.sql(dialect="duckdb") == before


ROWS_FIXED = [(0, 5, 1, 1), (0, 7, None, 0), (1, 2, 3, 1), (1, None, 4, 2), (2, 9, 9, 3)]


@pytest.mark.parametrize(
    "sql",
    [
        # inside an aggregate of HAVING, v is the inner's v (x times 2), though the outer
        # calls an output v too
        "WITH c AS (SELECT g, x * 2 AS v FROM t) SELECT g, avg(v) AS v FROM c GROUP BY g "
        "HAVING sum(v) > 0 ORDER BY g",
        "WITH c AS (SELECT g, x - y AS m FROM t) SELECT g, avg(m) AS a FROM c GROUP BY g "
        "ORDER BY a DESC, g",
        "WITH c AS (SELECT g, x + y AS m, CASE WHEN f > 1 THEN x END AS w FROM t) "
        "SELECT g, sum(m) AS s, sum(w) AS w FROM c GROUP BY g ORDER BY g",
    ],
)
def test_names_bind_as_duckdb_binds_them(sql: str) -> None:
    read = _read(sql)
    assert not sqlglot.parse_one(read, read="duckdb").find(exp.CTE), read
    (_, merged), (_, written) = answers(TABLE, ROWS_FIXED, read, sql)
    assert merged == written, (sql, read)


@pytest.mark.parametrize(
    "sql",
    [
        # an outer alias in HAVING that a base column shares (g): rebound once merged
        "WITH c AS (SELECT g AS h, x * 2 AS m FROM t) SELECT h, avg(m) AS g FROM c "
        "GROUP BY h HAVING g > 1",
        # the inner's WHERE reads its own alias (a), which an outer alias would capture
        "WITH c AS (SELECT x * 2 AS m, g AS a, f FROM t WHERE a = 1) "
        "SELECT f AS a, avg(m) AS v FROM c GROUP BY f",
        # an unnamed output DuckDB names its own way
        "WITH c AS (SELECT g, x * 2 AS m FROM t) SELECT g, avg(m) * 2 FROM c GROUP BY g",
        "WITH c AS (SELECT g, x * 2 AS m FROM t) SELECT g, avg(m) FILTER (WHERE m > 0) "
        "FROM c GROUP BY g",
    ],
)
def test_names_a_merge_would_rebind_are_left_as_written(sql: str) -> None:
    read = _read(sql)
    assert sqlglot.parse_one(read, read="duckdb").find(exp.CTE), read
