"""A released mean of values clamped to [lo, hi] is brought back into [lo, hi].

The noise is added to the sum and the count apart, so their ratio can leave the bounds
that hold the truth (an outside rehearsal read a mean score of 102.29 for scores declared
in [0, 100]).  Bringing it back is post-processing (free), never moves it away from the
truth, and keeps NULL (an empty cell) NULL, which DuckDB's ``greatest`` would not.
"""

from __future__ import annotations

import duckdb
import pytest
from sqlglot import exp

from sandbox.query.cell_accuracy import _within_bounds
from sandbox.query.rewrite import _within

MEAN = '("__s" / NULLIF("__n", 0))'


@pytest.mark.parametrize(
    ("s", "n", "expected"),
    [(1023.0, 10, 100.0), (-20.0, 10, 0.0), (505.0, 10, 50.5), (None, 10, None), (5.0, 0, None)],
)
def test_a_mean_is_brought_into_its_bounds(s, n, expected) -> None:  # type: ignore[no-untyped-def]
    sql = (
        f"SELECT {_within(MEAN, 0.0, 100.0)} AS m FROM (SELECT ?::DOUBLE AS __s, ?::BIGINT AS __n)"
    )
    assert duckdb.connect().execute(sql, [s, n]).fetchall() == [(expected,)]


def test_an_unbounded_end_is_left_open() -> None:
    sql = f"SELECT {_within(MEAN, float('-inf'), 100.0)} AS m FROM (SELECT -5e9 AS __s, 1 AS __n)"
    assert duckdb.connect().execute(sql).fetchall() == [(-5e9,)]
    assert _within(MEAN, float("-inf"), float("inf")) == MEAN


def test_the_accuracy_reads_the_mean_inside() -> None:
    """cell_accuracy finds the mean (and so its ratio interval) inside the bounds' CASE;
    anything else is left as it is."""
    for lo, hi in ((0.0, 100.0), (-1000.0, 2000.0), (0.0, 1e20)):
        wrapped = exp.maybe_parse(_within(MEAN, lo, hi), dialect="duckdb")
        inner = _within_bounds(wrapped.unnest())
        assert inner.sql(dialect="duckdb") == exp.maybe_parse(MEAN).sql(dialect="duckdb")
    other = exp.maybe_parse('CASE WHEN "__s" < 0 THEN 0 ELSE "__n" END', dialect="duckdb")
    assert _within_bounds(other) is other
