"""A name in an aggregate's FILTER in HAVING or ORDER BY reads the rows' column, as
DuckDB binds it, even where an output alias has that name (``filter_names.filters_read_columns``;
sqlglot's qualify read the alias: a wrong answer, found while reviewing grouping sets)."""

from __future__ import annotations

from typing import Any

import pytest

from sandbox.query.release import execute, prepare, release
from tests.sandbox.query.test_guard import MAX_SQL_LENGTH, access
from tests.sandbox.query.test_totals import EXACT, _rounded

SHAPES = [
    "SELECT gender AS district, count(*) AS n FROM health.claims GROUP BY 1 "
    "HAVING count(*) FILTER (WHERE district = 'D01') > 500",
    "SELECT NULL AS district, count(*) AS n FROM health.claims "
    "HAVING count(*) FILTER (WHERE district = 'D01') > 0",
    "SELECT c.gender AS district, count(*) AS n FROM health.claims AS c GROUP BY 1 "
    "ORDER BY count(*) FILTER (WHERE district = 'D01'), 1",
    # outside an aggregate the alias is what HAVING reads, in DuckDB as here
    "SELECT gender AS district, count(*) AS n FROM health.claims GROUP BY 1 HAVING district = 'F'",
]


@pytest.mark.parametrize("sql", SHAPES)
def test_the_rows_are_duckdbs(sql: str, demo_platform: Any, raw_demo: Any) -> None:
    prepared = prepare(sql, access(), EXACT, max_sql_length=MAX_SQL_LENGTH)
    got = [
        _rounded(r)
        for r in release(execute(demo_platform.enclave, prepared), prepared).table.to_pylist()
    ]
    want = [_rounded(r) for r in raw_demo.sql(sql).fetchall()]
    assert got, sql
    if "ORDER BY" in sql:
        assert got == want
    else:
        assert sorted(got, key=repr) == sorted(want, key=repr)
