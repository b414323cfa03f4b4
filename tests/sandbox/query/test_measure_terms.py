"""Sums and means of measures combined in a row (``measure_terms``) give DuckDB's answer.

A hypothesis property over small tables with NULLs in every measure: each form, with and
without the aggregate's own FILTER, grouped, runs in raw DuckDB as written and as the
guard reads it (``respell``), and the two agree, NULLs included (no difference allowed).
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import pytest
import sqlglot
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlglot import exp

from sandbox.query.cell_accuracy import _combination
from sandbox.query.dialects import respell
from sandbox.query.disclosure import NoisePlan
from sandbox.query.noise import seeded_noise
from sandbox.query.service import QueryService
from tests.conftest import build_deployment
from tests.sandbox.query.raw_duckdb import answers

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


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Any:
    platform, tokens = build_deployment(tmp_path_factory.mktemp("terms") / "home")
    yield platform, tokens
    platform.close()


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
    create = "CREATE TABLE t (g INTEGER, x INTEGER, y INTEGER, z INTEGER, f INTEGER)"
    (_, want), (_, got) = answers(create, rows, sql, read)
    assert [g for g, _ in want] == [g for g, _ in got]
    for (_, written), (_, value) in zip(want, got, strict=True):
        assert _same(written, value), (sql, read, written, value)


def test_the_sums_share_one_cell() -> None:
    """Every part of ``avg(x - y)`` reads the rows where both have a value: one FILTER."""
    read = _read("SELECT g, avg(x - y) AS v FROM t GROUP BY g")
    root = sqlglot.parse_one(read, read="duckdb")
    filters = {f.expression.sql() for f in root.find_all(exp.Filter)}
    assert filters == {"WHERE NOT x IS NULL AND NOT y IS NULL"}, read


# -- the interval of a combination (cell_accuracy._combination) -------------------------


def _plan(column: str, scale: int, **kwargs: object) -> NoisePlan:
    return NoisePlan(column, Fraction(1), Fraction(1), Fraction(1), Fraction(scale), **kwargs)  # type: ignore[arg-type]


def test_a_combinations_interval_covers_its_noise_as_claimed() -> None:
    """``sum(a) - 2·sum(b)`` with ``a`` centred on the count: three independent draws; the
    stated 95% half-width holds at least 95% of 20,000 simulated releases, and is less
    than three times the simulated 95th percentile (the union bound's slack)."""
    plans = {
        "__s1": _plan("__s1", 40, centre=Fraction(3), centred_on="__r3"),
        "__s2": _plan("__s2", 25),
        "__r3": _plan("__r3", 6),
    }
    kinds = {"__s1": "sum", "__s2": "sum", "__r3": "rows"}
    node = sqlglot.parse_one('"__s1" - "__s2" * 2', read="duckdb")
    entry = _combination(node, plans, kinds)
    half = entry["half_width"]
    source = seeded_noise(7)
    n = 20_000
    draws = {k: source.discrete_laplace(p.scale, n) for k, p in plans.items()}
    # released sum(a) carries its own draw and 3 times the count's; sum(b) its own, twice
    errors = [draws["__s1"][i] + 3 * draws["__r3"][i] - 2 * draws["__s2"][i] for i in range(n)]
    covered = sum(abs(e) <= half for e in errors) / n
    empirical = sorted(abs(e) for e in errors)[int(0.95 * n)]
    # at least 95%: a union bound over the draws, conservative (2.3 times the simulated
    # 95th percentile here), but not absurdly
    assert covered >= 0.95 and half < 3 * empirical, (half, covered, empirical)


def test_a_mean_of_a_combination_has_each_cells_interval(deployment: object) -> None:
    """Under a budget ``avg(a - b)`` and ``sum(a - b)`` say how far off they may be (an
    outside analyst saw signs flip with nothing beside them), per cell for the mean."""
    platform, tokens = deployment  # type: ignore[misc]
    service = QueryService(platform)
    insurer = platform.authority.authenticate(tokens["op-insurer"])
    sql = (
        "SELECT gender, avg(claim_amount - age) AS d, sum(claim_amount - age) AS s "
        "FROM health.claims GROUP BY 1 ORDER BY 1"
    )
    result = service.run(insurer, sql)
    accuracy = result.meta["accuracy"]
    assert accuracy["s"]["half_width"] > 0
    # the parts' shared FILTER cell's row count selects the groups, and says so
    assert accuracy["gender"]["counting"] == "rows under the FILTER"
    widths = accuracy["d"]["half_widths"]
    assert len(widths) == result.table.num_rows == 2
    assert all(w is not None and 0 < w < 2_000 for w in widths), widths
