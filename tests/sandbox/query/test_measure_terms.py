"""Sums and means of measures combined in a row (``measure_terms``) give DuckDB's answer.

A hypothesis property over small tables with NULLs in every measure: each form, with and
without the aggregate's own FILTER, grouped, runs in raw DuckDB as written and as the
guard reads it (``respell``), and the two agree, NULLs included (no difference allowed).
"""

from __future__ import annotations

import math
from typing import Any

import duckdb
import sqlglot
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlglot import exp

from sandbox.query.dialects import respell

VALUE = st.one_of(st.none(), st.integers(-50, 50))
ROWS = st.lists(
    st.tuples(st.integers(0, 2), VALUE, VALUE, VALUE, st.one_of(st.none(), st.integers(0, 3))),
    min_size=1,
    max_size=30,
)
FORMS = [
    "avg(x + y)",
    "sum(x - y)",
    "avg(x - y + z)",
    "sum(2 * x - y / 4)",
    "avg((x + y) - 3 * z)",
    "sum(x - x)",
    "sum(-x + y)",
    "avg((x + y) / 2)",
    "avg(2 * (x - y))",
    "avg(x - y - 5)",
    "sum(x - y - 5)",
    "sum(x::DOUBLE - y)",
    "sum(x / -2 + y)",
    "avg(-(x - y) * 3)",
    "sum(1.5 + x + y)",
]


def _same(written: Any, read: Any) -> bool:
    if written is None or read is None:
        return written is None and read is None
    return math.isclose(float(written), float(read), rel_tol=1e-9, abs_tol=1e-9)


def _read(sql: str) -> str:
    root = sqlglot.parse_one(sql, read="duckdb")
    respell(root)
    return root.sql(dialect="duckdb")


@settings(max_examples=200, deadline=None)
@given(rows=ROWS, form=st.sampled_from(FORMS), filtered=st.booleans())
def test_the_form_the_guard_reads_gives_duckdbs_answer(
    rows: list[tuple[int, int | None, int | None, int | None, int | None]],
    form: str,
    filtered: bool,
) -> None:
    aggregate = form + (" FILTER (WHERE f >= 1)" if filtered else "")
    sql = f"SELECT g, {aggregate} AS v FROM t GROUP BY g ORDER BY g"
    read = _read(sql)
    root = sqlglot.parse_one(read, read="duckdb")
    for agg in root.find_all(exp.Sum, exp.Avg):
        assert isinstance(agg.this, exp.Column), f"an aggregate of one column each: {read}"
    assert len({f.expression.sql() for f in root.find_all(exp.Filter)}) == 1, f"one cell: {read}"
    con = duckdb.connect()
    try:
        con.execute("CREATE TABLE t (g INTEGER, x INTEGER, y INTEGER, z INTEGER, f INTEGER)")
        con.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?)", rows)
        want, got = con.sql(sql).fetchall(), con.sql(read).fetchall()
    finally:
        con.close()
    assert [g for g, _ in want] == [g for g, _ in got]
    for (_, written), (_, value) in zip(want, got, strict=True):
        assert _same(written, value), (sql, read, written, value)


def test_the_sums_share_one_cell() -> None:
    """Every part of ``avg(x - y)`` reads the rows where both have a value: one FILTER."""
    read = _read("SELECT g, avg(x - y) AS v FROM t GROUP BY g")
    root = sqlglot.parse_one(read, read="duckdb")
    filters = {f.expression.sql() for f in root.find_all(exp.Filter)}
    assert filters == {"WHERE NOT x IS NULL AND NOT y IS NULL"}, read
