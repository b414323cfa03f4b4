"""Window functions over a query's released rows (``sandbox/query/windows.py``).

Without withholding (k = 1, no budget) a query with windows releases DuckDB's own
answer to it over the demo data (bounded measures clamped as the sandbox clamps them).
Under a budget the windows are computed from the released rows only: a total over
``sum(count(*)) OVER ()`` is the sum of the released noisy counts, never the true
total, and groups withheld count for nothing.  Windows anywhere else, or that would run
over rows rather than groups, are refused naming the rule and no value.
"""

from __future__ import annotations

from typing import Any

import pytest

from sandbox.core.errors import QueryRefused
from sandbox.query.cell_accuracy import output_accuracy
from sandbox.query.disclosure import DisclosureParams
from sandbox.query.noise import seeded_noise
from sandbox.query.parse import parse_query
from sandbox.query.release import PreparedWithWindows, execute, prepare, release
from sandbox.query.rewrite import STATS_TABLE
from sandbox.query.windows import split_windows
from tests.sandbox.query.test_guard import MAX_SQL_LENGTH, access
from tests.sandbox.query.test_totals import EXACT, _rounded, released
from tests.sandbox.query.test_totals import clamped as clamped  # the module's fixture

ANSWERED = [
    "SELECT district, count(*) AS n, rank() OVER (ORDER BY count(*) DESC) AS r, "
    "count(*) * 100.0 / sum(count(*)) OVER () AS share FROM health.claims GROUP BY district "
    "ORDER BY r, district LIMIT 5",
    "SELECT district, count(*) AS n, lag(count(*), 1) OVER (ORDER BY district) AS prev "
    "FROM health.claims GROUP BY district ORDER BY district",
    "SELECT gender, floor(age / 10) * 10 AS band, count(*) AS n, "
    "sum(count(*)) OVER (PARTITION BY gender ORDER BY floor(age / 10) * 10 "
    "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS running "
    "FROM health.claims GROUP BY 1, 2 ORDER BY 1, 2",
    "SELECT diagnosis_code, avg(claim_amount) AS m, avg(avg(claim_amount)) OVER () AS overall, "
    "row_number() OVER (ORDER BY diagnosis_code) AS i FROM health.claims GROUP BY 1 ORDER BY i",
    "SELECT district, sum(claim_amount) AS total, "
    "dense_rank() OVER (ORDER BY sum(claim_amount) DESC) AS place, "
    "first_value(district) OVER (ORDER BY sum(claim_amount) DESC) AS top, "
    "ntile(4) OVER (ORDER BY district) AS quarter "
    "FROM health.claims GROUP BY district HAVING count(*) > 20 ORDER BY district",
    # beside grouping sets the windows run over the stacked rows, subtotals included
    "SELECT district, gender, count(*) AS n, "
    "rank() OVER (PARTITION BY GROUPING(district), GROUPING(gender) "
    "ORDER BY count(*) DESC, district, gender) AS r, "
    "count(*) * 100.0 / sum(count(*)) OVER (PARTITION BY GROUPING(gender)) AS share "
    "FROM health.claims GROUP BY ROLLUP (district, gender) ORDER BY r, district, gender",
    "SELECT gender, floor(age / 10) * 10 AS band, sum(claim_amount) AS total, "
    "lag(sum(claim_amount)) OVER (PARTITION BY gender ORDER BY floor(age / 10) * 10) AS prev "
    "FROM health.claims GROUP BY CUBE (gender, floor(age / 10) * 10) "
    "ORDER BY gender NULLS LAST, band NULLS LAST",
    # a window aggregate over a scaled key: a window's function, not normalised
    "SELECT floor(age / 10) * 10 AS band, count(*) AS n, sum(band * 2) OVER () AS s, "
    "avg(count(*) * 2) OVER () AS m FROM health.claims GROUP BY 1 ORDER BY 1",
    # a window over an aggregate the query does not show itself
    "SELECT district, rank() OVER (ORDER BY count(DISTINCT person_id) DESC, district) AS r "
    "FROM health.claims GROUP BY district ORDER BY r",
    # a window's conditional or shifted aggregate: written as it is, not normalised
    "SELECT district, count(*) AS n, avg((count(*) > 500)::INT) OVER () AS s, "
    "sum(CASE WHEN count(*) > 500 THEN 1 ELSE 0 END) OVER (ORDER BY district) AS c, "
    "avg(count(*) + 1) OVER () AS m FROM health.claims GROUP BY district ORDER BY district",
]


@pytest.mark.parametrize("sql", ANSWERED)
def test_without_withholding_the_rows_are_duckdbs(
    sql: str, demo_platform: Any, clamped: Any
) -> None:
    prepared, result = released(demo_platform, sql)
    assert isinstance(prepared, PreparedWithWindows)
    want = clamped.sql(sql)
    assert result.table.column_names == want.columns
    assert [_rounded(r) for r in result.table.to_pylist()] == [_rounded(r) for r in want.fetchall()]


def test_the_inputs_of_windows_are_hidden_outputs_of_the_query_without_them() -> None:
    parsed = parse_query(ANSWERED[0], max_length=MAX_SQL_LENGTH)
    split = split_windows(parsed.expression, STATS_TABLE)
    assert split is not None
    inner = split.inner.sql(dialect="duckdb")
    assert "OVER" not in inner and "ORDER BY" not in inner and "LIMIT" not in inner
    assert '"__sbx_w0"' in inner
    assert split.names == ("district", "n", "r", "share")
    assert split.sources == ("__sbx_o0", "n", None, None)
    assert f'FROM "{STATS_TABLE}"' in split.outer_sql
    plain = parse_query("SELECT count(*) FROM health.claims", max_length=MAX_SQL_LENGTH)
    assert split_windows(plain.expression, STATS_TABLE) is None


BUDGET = DisclosureParams(
    k=10, epsilon=1.0, max_rows_per_entity=4, max_groups_per_entity=1, dominance_p=None
)


@pytest.mark.parametrize("seed", [4, 5])
def test_beside_grouping_sets_windows_read_the_stacked_released_rows(
    demo_platform: Any, seed: int
) -> None:
    """Each grouping set is released on its own (its noise, its ε share); the windows then
    run over the stacked rows: a partition by GROUPING() sums the released rows of one
    kind, and the ε is the query's without windows."""
    plain_sql = "SELECT gender, count(*) AS n FROM health.claims GROUP BY ROLLUP (gender)"
    sql = (
        "SELECT gender, count(*) AS n, "
        "sum(count(*)) OVER (PARTITION BY GROUPING(gender)) AS part "
        "FROM health.claims GROUP BY ROLLUP (gender)"
    )
    prepared = prepare(sql, access(), BUDGET, max_sql_length=MAX_SQL_LENGTH)
    result = release(execute(demo_platform.enclave, prepared), prepared, noise=seeded_noise(seed))
    rows = result.table.to_pylist()
    by_gender = [r for r in rows if r["gender"] is not None]
    total = [r for r in rows if r["gender"] is None]
    assert len(by_gender) == 2 and len(total) == 1
    assert all(r["part"] == sum(g["n"] for g in by_gender) for r in by_gender)
    assert total[0]["part"] == total[0]["n"]
    plain = prepare(plain_sql, access(), BUDGET, max_sql_length=MAX_SQL_LENGTH)
    alone = release(execute(demo_platform.enclave, plain), plain, noise=seeded_noise(seed))
    assert alone.epsilon_spent == result.epsilon_spent == 1.0
    assert sorted(map(str, alone.table.to_pylist())) == sorted(
        str({"gender": r["gender"], "n": r["n"]}) for r in rows
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_under_a_budget_windows_read_released_rows_only(demo_platform: Any, seed: int) -> None:
    """The windows' values follow from the released (noisy) counts alone: a total is
    their sum, a rank their order, a lag the previous released row's."""
    sql = (
        "SELECT diagnosis_code, count(*) AS n, sum(count(*)) OVER () AS total, "
        "rank() OVER (ORDER BY count(*) DESC) AS r, "
        "lag(count(*), 1) OVER (ORDER BY diagnosis_code) AS prev "
        "FROM health.claims GROUP BY 1"
    )
    prepared = prepare(sql, access(), BUDGET, max_sql_length=MAX_SQL_LENGTH)
    stats = execute(demo_platform.enclave, prepared)
    result = release(stats, prepared, noise=seeded_noise(seed))
    rows = result.table.to_pylist()
    assert rows
    counts = [r["n"] for r in rows]
    assert all(r["total"] == sum(counts) for r in rows)
    with demo_platform.enclave.cursor() as cur:
        true_total = cur.sql("SELECT count(*) FROM health.claims").fetchall()[0][0]
    assert sum(counts) != true_total  # noisy counts of the released diagnoses only
    for row in rows:
        assert row["r"] == 1 + sum(c > row["n"] for c in counts)
    by_code = sorted(rows, key=lambda r: r["diagnosis_code"])
    assert [r["prev"] for r in by_code] == [None, *(r["n"] for r in by_code[:-1])]
    # the same noise as the query without its windows: they cost no ε
    plain = prepare(
        "SELECT diagnosis_code, count(*) AS n FROM health.claims GROUP BY 1",
        access(),
        BUDGET,
        max_sql_length=MAX_SQL_LENGTH,
    )
    alone = release(execute(demo_platform.enclave, plain), plain, noise=seeded_noise(seed))
    assert alone.epsilon_spent == result.epsilon_spent
    assert sorted(alone.table.column("n").to_pylist()) == sorted(counts)
    accuracy = output_accuracy(prepared)
    assert accuracy is not None
    assert accuracy["n"]["mechanism"] and accuracy["total"] == {
        "half_width": None,
        "level": 0.95,
        "window": True,
    }


@pytest.mark.parametrize(
    ("sql", "rule"),
    [
        # over rows, not groups: the query without the window is not aggregated
        ("SELECT district, row_number() OVER () FROM health.claims", "guard.not_aggregated"),
        (
            "SELECT district, count(*) OVER (PARTITION BY district) FROM health.claims",
            "guard.not_aggregated",
        ),
        # a window's input that is neither a group key nor an aggregate (a measure here)
        (
            "SELECT district, rank() OVER (ORDER BY claim_amount) FROM health.claims "
            "GROUP BY district",
            "guard.measure",
        ),
        # placement
        (
            "SELECT district, sum(row_number() OVER ()) FROM health.claims GROUP BY district",
            "guard.window",
        ),
        (
            "SELECT count(*) FROM health.claims WHERE claim_amount > "
            "(SELECT avg(claim_amount) OVER () FROM health.claims)",
            "guard.window",
        ),
        (
            "WITH r AS (SELECT person_id, row_number() OVER () AS i FROM health.claims) "
            "SELECT count(*) FROM r",
            "guard.window",
        ),
        (
            "SELECT district, count(*) FROM health.claims GROUP BY district "
            "HAVING rank() OVER (ORDER BY count(*)) < 3",
            "guard.window",
        ),
        (
            "SELECT DISTINCT district, rank() OVER (ORDER BY count(*)) FROM health.claims "
            "GROUP BY district",
            "guard.window",
        ),
        (  # a GROUPING() of no key, inside a window beside grouping sets
            "SELECT district, count(*), rank() OVER (PARTITION BY GROUPING(gender)) "
            "FROM health.claims GROUP BY ROLLUP (district)",
            "guard.grouping_sets",
        ),
        (  # sqlglot's writer would drop it: another frame, silently
            "SELECT district, count(*), sum(count(*)) OVER (ORDER BY district ROWS BETWEEN 1 "
            "PRECEDING AND 1 FOLLOWING EXCLUDE CURRENT ROW) FROM health.claims "
            "GROUP BY ROLLUP (district)",
            "guard.window",
        ),
        # functions and constants
        (
            "SELECT district, string_agg(district, ',') OVER () FROM health.claims "
            "GROUP BY district",
            "guard.window",
        ),
        (
            "SELECT district, lag(count(*), count(*)) OVER (ORDER BY district) "
            "FROM health.claims GROUP BY district",
            "guard.window",
        ),
        (
            "SELECT district, sum(count(*)) OVER (ORDER BY district ROWS BETWEEN count(*) "
            "PRECEDING AND CURRENT ROW) FROM health.claims GROUP BY district",
            "guard.window",
        ),
        (
            "SELECT district, count(*) AS n, rank() OVER (ORDER BY count(*)) FROM "
            "health.claims GROUP BY district ORDER BY avg(claim_amount)",
            "guard.window",
        ),
        # found by an attack: errors the engine would only raise at release, after the
        # run was charged (an outside review, December 2026)
        (
            "SELECT district, rank(count(*)) OVER (ORDER BY district) FROM health.claims "
            "GROUP BY district",
            "guard.window",
        ),
        (
            "SELECT district, ntile(0) OVER (ORDER BY district) FROM health.claims "
            "GROUP BY district",
            "guard.window",
        ),
        (
            "SELECT district, lag(count(*), 99999999999999999999999) OVER (ORDER BY "
            "district) FROM health.claims GROUP BY district",
            "guard.window",
        ),
        (
            "SELECT district, sum(count(*)) OVER (ORDER BY district ROWS BETWEEN "
            "99999999999999999999 PRECEDING AND CURRENT ROW) FROM health.claims "
            "GROUP BY district",
            "guard.window",
        ),
        (
            "SELECT count(*) OVER () AS c FROM health.claims GROUP BY district",
            "guard.window",
        ),
        (
            "SELECT district, count(*) AS n, sum(count(*)) OVER () - (SELECT count(*) FROM "
            "health.claims) AS t FROM health.claims GROUP BY district",
            "guard.window",
        ),
    ],
)
def test_windows_elsewhere_are_refused(sql: str, rule: str) -> None:
    with pytest.raises(QueryRefused) as info:
        prepare(sql, access(), EXACT, max_sql_length=MAX_SQL_LENGTH)
    assert info.value.rule == rule, info.value.message
    assert "D01" not in info.value.message


def test_without_a_budget_withheld_groups_are_in_no_window(demo_platform: Any) -> None:
    """Reviewed releases too: a group the low-count filter withholds adds nothing."""
    sql = (
        "SELECT district, diagnosis_code, count(*) AS n, sum(count(*)) OVER () AS total "
        "FROM health.claims GROUP BY 1, 2"
    )
    prepared = prepare(sql, access(), DisclosureParams(k=10), max_sql_length=MAX_SQL_LENGTH)
    result = release(execute(demo_platform.enclave, prepared), prepared)
    rows = result.table.to_pylist()
    counts = [r["n"] for r in rows]
    assert rows  # withheld groups are not counted without a budget (no exact count)
    assert all(r["total"] == sum(counts) for r in rows)
    with demo_platform.enclave.cursor() as cur:
        true_total = cur.sql("SELECT count(*) FROM health.claims").fetchall()[0][0]
    assert sum(counts) < true_total


def test_what_an_output_computes_around_a_window_cannot_fail_on_the_data(
    demo_platform: Any,
) -> None:
    """An attack made the windows' arithmetic overflow for some released values and not
    others: under review the failure reached the analyst before any review, one bit of
    exact values per query.  The windows now run as columns of their own and what the
    output computes around them under TRY: NULL where it fails, as the release query's
    expressions are, and the run succeeds either way (so it is held, not refused)."""
    sql = (
        "SELECT district, count(*) AS n, greatest(max(count(*)) OVER () - {t}, 0) "
        "* 9223372036854775807 AS x FROM health.claims GROUP BY district"
    )
    with demo_platform.enclave.cursor() as cur:
        (most,) = cur.sql(
            "SELECT max(n) FROM (SELECT count(*) AS n FROM health.claims GROUP BY district)"
        ).fetchall()[0]
    for t in (most - 2, most - 1, most):
        prepared = prepare(sql.format(t=t), access(), EXACT, max_sql_length=MAX_SQL_LENGTH)
        result = release(execute(demo_platform.enclave, prepared), prepared)
        values = set(result.table.column("x").to_pylist())
        assert values == (
            {None} if t < most - 1 else {9223372036854775807} if t == most - 1 else {0}
        )
