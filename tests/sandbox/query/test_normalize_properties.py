"""The shifted-measure and cast-condition forms (``normalize.shifted_measure``,
``conditional._cast_condition``) give DuckDB's own answer, as a hypothesis property.

Small tables with NULLs, random constants, each form with and without a FILTER,
grouped: the query as written and the query as the guard reads it (``respell``) run in
raw DuckDB and agree to floating-point rounding.  One documented difference is allowed:
``sum((c)::INT)`` where ``c`` is NULL on every row of a group is NULL as written and 0
as ``count(*) FILTER (WHERE c)``.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import sqlglot
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.query.dialects import respell
from tests.sandbox.query.raw_duckdb import answers

ROWS = st.lists(
    st.tuples(
        st.integers(0, 2),  # g: the group
        st.one_of(st.none(), st.integers(-50, 50)),  # x: a measure, sometimes NULL
        st.one_of(st.none(), st.integers(0, 3)),  # f: filtered on, sometimes NULL
    ),
    min_size=1,
    max_size=30,
)
CONSTANT = st.integers(-20, 20)

#: Each form with {b} a constant and {t} a threshold; ``cast_sum``: the one difference.
FORMS = [
    ("avg(x + {b})", False),
    ("avg({b} - x)", False),
    ("sum(x + {b})", False),
    ("sum({b} - x)", False),
    ("avg(x * 2 - {b})", False),
    ("sum(x / 4 + {b})", False),
    ("avg((x > {t})::INT)", False),
    ("avg(CAST(x >= {t} AND f = 1 AS DOUBLE))", False),
    ("avg(TRY_CAST(x IN ({t}, {b}) AS INTEGER))", False),
    ("sum((x > {t})::INT)", True),
    ("sum((x < {t} OR f IS NULL)::BIGINT)", True),
]


def _same(written: Any, read: Any, cast_sum: bool) -> bool:
    if written is None or read is None:
        return written is None and (read is None or (cast_sum and read == 0))
    return math.isclose(float(written), float(read), rel_tol=1e-9, abs_tol=1e-9)


@settings(max_examples=150, deadline=None)
@given(
    rows=ROWS,
    form=st.sampled_from(FORMS),
    b=CONSTANT,
    t=CONSTANT,
    filtered=st.booleans(),
)
def test_the_form_the_guard_reads_gives_duckdbs_answer(
    rows: list[tuple[int, int | None, int | None]],
    form: tuple[str, bool],
    b: int,
    t: int,
    filtered: bool,
) -> None:
    template, cast_sum = form
    aggregate = template.format(b=b, t=t)
    if filtered:
        aggregate += " FILTER (WHERE f >= 1)"
    sql = f"SELECT g, {aggregate} AS v FROM t GROUP BY g ORDER BY g"
    root = sqlglot.parse_one(sql, read="duckdb")
    respell(root)
    read = root.sql(dialect="duckdb")
    assert read != sql.replace("  ", " "), f"left as written: {sql}"
    (_, want), (_, got) = answers(
        "CREATE TABLE t (g INTEGER, x INTEGER, f INTEGER)", rows, sql, read
    )
    assert [g for g, _ in want] == [g for g, _ in got]
    for (_, written), (_, value) in zip(want, got, strict=True):
        assert _same(written, value, cast_sum), (sql, read, written, value)


@pytest.mark.parametrize(
    "aggregate",
    [
        "avg(x * y + 1)",
        "sum(x - y / 0)",
        "avg(x::INT)",
        "sum((x > 1)::VARCHAR)",
        "avg(DISTINCT x + 1)",
        # measures combined in a row (measure_terms): only columns and numbers scaled by
        # numbers are read; a coalesce of two columns is not (its branches' cells)
        "sum(x * y - f)",
        "sum(coalesce(x, y))",
        "avg(coalesce(x, y + 1))",
        "sum(coalesce(x, 0, y))",
        "avg(DISTINCT x - y)",
        "sum(x - 'a')",
    ],
)
def test_other_forms_are_left_as_written(aggregate: str) -> None:
    sql = f"SELECT g, {aggregate} AS v FROM t GROUP BY g"
    root = sqlglot.parse_one(sql, read="duckdb")
    before = root.sql(dialect="duckdb")
    respell(root)
    assert root.sql(dialect="duckdb") == before
