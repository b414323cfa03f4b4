"""ROLLUP, CUBE and GROUPING SETS: one query per grouping set, released and stacked.

Without a budget (k = 1, nothing withheld) the stacked rows are DuckDB's own answer to
the query as written, in the demo data (bounded measures clamped as the sandbox clamps
them); under a budget each set gets an equal share of ε, and the shares add up to the
query's ε.  Shapes not read are refused by ``guard.grouping_sets``, naming no value.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlglot

from sandbox.core.errors import QueryRefused
from sandbox.core.settings import Settings
from sandbox.platform import Platform
from sandbox.query.disclosure import DisclosureParams
from sandbox.query.grouping_sets import MAX_SETS, grouping_sets
from sandbox.query.guard import check_query
from sandbox.query.noise import seeded_noise
from sandbox.query.parse import parse_query
from sandbox.query.release import PreparedWithSets, execute, prepare, release
from sandbox.query.service import QueryService
from tests.conftest import build_deployment
from tests.sandbox.query.test_guard import MAX_SQL_LENGTH, access
from tests.sandbox.query.test_totals import EXACT, _rounded, clamp

ANSWERED = [
    "SELECT district, gender, count(*) AS n FROM health.claims GROUP BY ROLLUP (district, gender)",
    "SELECT gender, count(*) AS n, avg(claim_amount) AS mean FROM health.claims "
    "GROUP BY GROUPING SETS ((gender), ())",
    "SELECT gender, floor(age / 10) * 10 AS band, count(DISTINCT person_id) AS persons "
    "FROM health.claims GROUP BY CUBE (gender, floor(age / 10) * 10)",
    "SELECT district, gender, count(*) AS n FROM health.claims WHERE age >= 60 "
    "GROUP BY district, ROLLUP (gender) HAVING count(*) > 10",
    "SELECT district, gender, sum(claim_amount) AS total FROM health.claims "
    "GROUP BY ROLLUP (1, 2) ORDER BY total DESC LIMIT 7",
    "SELECT district, gender, count(*) AS n FROM health.claims "
    "GROUP BY ROLLUP (district, gender) ORDER BY 1, 2 LIMIT 5 OFFSET 3",
    "SELECT gender, count(*) AS n FROM health.claims GROUP BY ROLLUP (gender) ORDER BY n OFFSET 1",
    # keys inside an aggregate's FILTER are the rows' values (a review found them NULLed)
    "SELECT gender, count(*) FILTER (WHERE gender = 'F' OR age >= 60) AS f "
    "FROM health.claims GROUP BY ROLLUP (gender)",
    "SELECT district, count(*) AS n FROM health.claims GROUP BY ROLLUP (district) "
    "HAVING count(*) FILTER (WHERE district = 'D01') > 0",
    # a qualified column is the key it names; a set written twice is released twice
    "SELECT c.district, count(*) AS n FROM health.claims AS c GROUP BY ROLLUP (district)",
    "SELECT district, count(*) AS n FROM health.claims "
    "GROUP BY GROUPING SETS ((district), (district))",
    # GROUPING(): this set's constant, 1 where a key is aggregated away (bits, first highest)
    "SELECT district, gender, GROUPING(gender) AS g, GROUPING(district, gender) AS gg, "
    "count(*) AS n FROM health.claims GROUP BY ROLLUP (district, gender) ORDER BY 1, 2",
    "SELECT gender, floor(age / 10) * 10 AS band, count(*) AS n FROM health.claims "
    "GROUP BY CUBE (gender, floor(age / 10) * 10) HAVING GROUPING(gender) = 0",
]


@pytest.fixture(scope="module")
def clamped(raw_demo: Any) -> Any:
    return clamp(raw_demo)


@pytest.mark.parametrize("sql", ANSWERED)
def test_without_withholding_the_rows_are_duckdbs(
    sql: str, demo_platform: Any, clamped: Any
) -> None:
    prepared = prepare(sql, access(), EXACT, max_sql_length=MAX_SQL_LENGTH)
    assert isinstance(prepared, PreparedWithSets) and len(prepared.sets) >= 2
    result = release(execute(demo_platform.enclave, prepared), prepared)
    want = clamped.sql(sql)
    assert result.table.column_names == want.columns
    got = [_rounded(r) for r in result.table.to_pylist()]
    rows = [_rounded(r) for r in want.fetchall()]
    if "ORDER BY" in sql:
        assert got == rows
    else:
        assert sorted(got, key=repr) == sorted(rows, key=repr)
    if "ROLLUP" in sql or "()" in sql:
        assert any(None in r for r in got)  # the subtotal rows are there


def test_under_a_budget_each_set_has_an_equal_share(demo_platform: Any) -> None:
    params = DisclosureParams(
        k=10,
        epsilon=0.9,
        delta=1e-6,
        max_rows_per_entity=9,
        max_groups_per_entity=4,
        max_total_rows_per_entity=9,
    )
    prepared = prepare(ANSWERED[0], access(), params, max_sql_length=MAX_SQL_LENGTH)
    assert isinstance(prepared, PreparedWithSets)
    assert [p.params.epsilon for p in prepared.sets] == pytest.approx([0.3] * 3)
    assert [p.params.delta for p in prepared.sets] == pytest.approx([1e-6 / 3] * 3)
    assert prepared.epsilon == pytest.approx(0.9)
    released = release(execute(demo_platform.enclave, prepared), prepared)
    assert released.epsilon_spent == pytest.approx(0.9)
    totals = [r for r in released.table.to_pylist() if r["district"] is None]
    assert len(totals) == 1 and totals[0]["gender"] is None  # the grand total, noised
    assert abs(totals[0]["n"] - 10_000) < 500


def test_sets_are_the_plain_queries_in_sqls_order() -> None:
    root = sqlglot.parse_one(
        "SELECT a, b, upper(b) AS u, count(*) FROM t GROUP BY CUBE (a, b)", read="duckdb"
    )
    sets = [s.sql(dialect="duckdb") for s in grouping_sets(root)]
    assert sets == [
        "SELECT a, b, UPPER(b) AS u, COUNT(*) FROM t GROUP BY a, b",
        "SELECT a, NULL, UPPER(NULL), COUNT(*) FROM t GROUP BY a",
        "SELECT NULL, b, UPPER(b) AS u, COUNT(*) FROM t GROUP BY b",
        "SELECT NULL, NULL, UPPER(NULL), COUNT(*) FROM t",
    ]


@pytest.mark.parametrize(
    "sql",
    [
        # an output's alias as a key: it and a column could name different things
        "SELECT district AS d, count(*) FROM health.claims GROUP BY ROLLUP (d)",
        # more sets than shares worth having
        "SELECT district, gender, age, hospital_id, count(*) FROM health.claims "
        "GROUP BY CUBE (district, gender, floor(age / 10) * 10, hospital_id)",
        # a sort key that is no output
        "SELECT district, count(*) AS n FROM health.claims GROUP BY ROLLUP (district) "
        "ORDER BY sum(claim_amount)",
        # GROUPING() of what is no key
        "SELECT gender, GROUPING(district) AS g, count(*) FROM health.claims "
        "GROUP BY ROLLUP (gender)",
    ],
)
def test_shapes_not_read_are_refused(sql: str) -> None:
    with pytest.raises(QueryRefused) as info:
        prepare(sql, access(), EXACT, max_sql_length=MAX_SQL_LENGTH)
    assert info.value.rule == "guard.grouping_sets"
    assert "D0" not in str(info.value)  # names no value


def test_more_than_max_sets_is_refused_by_count() -> None:
    keys = ", ".join(f"k{i}" for i in range(4))
    root = sqlglot.parse_one(f"SELECT count(*) FROM t GROUP BY CUBE ({keys})", read="duckdb")
    with pytest.raises(QueryRefused, match=f"more than {MAX_SETS} grouping sets"):
        grouping_sets(root)


def test_each_set_is_checked_by_the_guard() -> None:
    """An identifier as a rolled-up key is refused in the sets, as in any GROUP BY."""
    with pytest.raises(QueryRefused) as info:
        prepare(
            "SELECT name, count(*) FROM health.claims GROUP BY ROLLUP (name)",
            access(),
            EXACT,
            max_sql_length=MAX_SQL_LENGTH,
        )
    assert info.value.rule == "guard.identifier"


def test_rollup_elsewhere_or_checked_as_one_query_is_refused() -> None:
    with pytest.raises(QueryRefused) as info:  # only in the released SELECT's GROUP BY
        parse_query(
            "SELECT count(*) FROM (SELECT district FROM health.claims "
            "GROUP BY ROLLUP (district)) AS t",
            max_length=MAX_SQL_LENGTH,
        )
    assert info.value.rule == "guard.grouping_sets"
    assert "ROLLUP is read only in the GROUP BY of the released SELECT" in str(info.value)
    parsed = parse_query(ANSWERED[0], max_length=MAX_SQL_LENGTH)
    with pytest.raises(QueryRefused) as checked:
        check_query(parsed, access())
    assert checked.value.rule == "guard.grouping_sets"


def test_large_constructs_are_refused_before_any_set_is_written_out() -> None:
    """Refused by counting (a review's 18 ROLLUPs ran past ten minutes when every
    combination was enumerated first); a key written twice in one construct counts once."""
    many = ", ".join(["ROLLUP (district)"] * 18)
    with pytest.raises(QueryRefused, match=f"more than {MAX_SETS} grouping sets"):
        grouping_sets(sqlglot.parse_one(f"SELECT count(*) FROM t GROUP BY {many}", read="duckdb"))
    twice = ", ".join(["district"] * 22)
    root = sqlglot.parse_one(f"SELECT count(*) FROM t GROUP BY CUBE ({twice})", read="duckdb")
    assert len(grouping_sets(root)) == 2


def test_the_engine_reads_up_to_every_sets_own_margin(tmp_path: Any) -> None:
    """With () first, the first set's read cap is the bare limit (one group); the grouped
    set's is the limit plus its noise's margin.  The engine reads up to the largest of the
    sets' caps: the first's alone made the grouped set stop on its true number of groups,
    one exact bit (review, December 2026)."""
    home = tmp_path / "home"
    platform, tokens = build_deployment(home)
    platform.close()
    platform = Platform(Settings(home=home, threads=2, max_result_rows=2))
    try:
        service = QueryService(platform, noise=seeded_noise(0))
        insurer = platform.authority.authenticate(tokens["op-insurer"])
        sql = (
            "SELECT hospital_id, claim_date, count(*) AS n FROM health.claims "
            "GROUP BY GROUPING SETS ((), (hospital_id, claim_date))"
        )
        prepared = service._authorize(insurer, sql, "x", None, None, epsilon=0.1).prepared
        assert isinstance(prepared, PreparedWithSets)
        caps = [service._read_cap(part) for part in prepared.sets]
        assert caps[0] < caps[1]
        assert service._read_cap(prepared) == max(caps)
    finally:
        platform.close()
