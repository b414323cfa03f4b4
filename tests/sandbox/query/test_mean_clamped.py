"""``entity_caps.mean_clamped``: one entity's sum in a cell with its mean clamped, in DuckDB.

Its sensitivity must be the row clamp's (within ``least(n, C)·[lo, hi]``), and it must be
no farther from the entity's own sum (scaled to ``C`` of its values) than clamping each
value is: the point of that interval nearest it.
"""

from __future__ import annotations

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.query.entity_caps import clamp, mean_clamped, scaled_to_cap

values_strategy = st.lists(
    st.one_of(st.floats(min_value=-500, max_value=2_000, allow_nan=False), st.none()),
    max_size=12,
)
bounds_strategy = st.tuples(
    st.floats(min_value=-100, max_value=100), st.floats(min_value=0, max_value=1_000)
).map(lambda b: (b[0], b[0] + b[1]))


def _one_cell(values: list[float | None], lo: float, hi: float, cap: int) -> tuple:
    con = duckdb.connect()
    con.execute("CREATE TABLE t (x DOUBLE)")
    if values:
        con.executemany("INSERT INTO t VALUES (?)", [(v,) for v in values])
    by_mean = mean_clamped("x", "", lo, hi, cap)
    # rewrite's form before (and with a variance still): each value clamped, then scaled
    scaled = scaled_to_cap(f"sum({clamp('x', lo, hi)})", "count(x)", cap)
    by_row = clamp(scaled, min(lo, 0.0) * cap, max(hi, 0.0) * cap)
    raw = scaled_to_cap("sum(x)", "count(x)", cap)
    row = con.execute(f"SELECT {by_mean}, {by_row}, {raw}, count(x) FROM t").fetchone()
    assert row is not None
    return row


@settings(max_examples=200, deadline=None)
@given(values=values_strategy, bounds=bounds_strategy, cap=st.integers(1, 5))
def test_within_the_row_clamps_bounds_and_nearer_the_entitys_sum(values, bounds, cap) -> None:
    lo, hi = bounds
    by_mean, by_row, raw, n = _one_cell(values, lo, hi, cap)
    if n == 0:
        assert by_mean is None and raw is None
        return
    kept = min(n, cap)
    slack = 1e-9 * (1 + abs(lo) + abs(hi)) * kept
    assert kept * lo - slack <= by_mean <= kept * hi + slack  # the sensitivity
    assert abs(by_mean - raw) <= abs(by_row - raw) + 1e-6 * (1 + abs(raw))
    if all(v is None or lo <= v <= hi for v in values):
        assert by_mean == pytest.approx(by_row, rel=1e-9, abs=1e-9)


def test_a_cell_without_a_value_is_null_and_a_filter_applies_to_both_parts() -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT * FROM (VALUES (5000.0, 'a'), (10.0, 'b')) v(x, k)")
    where = " FILTER (WHERE k = 'b')"
    assert con.execute(f"SELECT {mean_clamped('x', where, 0, 100, 2)} FROM t").fetchone() == (10.0,)
    where = " FILTER (WHERE k = 'c')"
    assert con.execute(f"SELECT {mean_clamped('x', where, 0, 100, 2)} FROM t").fetchone() == (None,)
