"""The cost bounds before a query runs (sandbox/query/cost.py): cases as data, then properties."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlglot

from sandbox.core.errors import QueryRefused
from sandbox.query.cost import CostLimits, analyse, check_cost
from sandbox.query.parse import parse_query

CASES = [
    json.loads(line)
    for line in (Path(__file__).parent / "cost_cases" / "cost.jsonl").read_text().splitlines()
    if line
]
ROWS = {
    "health.claims": 10_000,
    "market.enterprises": 500,
    "hrss.social_insurance": 5_000,
    "transport.trips": 20_000,
}
LIMITS = CostLimits()


def parsed(sql: str):  # type: ignore[no-untyped-def]
    return parse_query(sql, max_length=100_000).expression


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_cost_case(case: dict[str, Any]) -> None:
    expression = parsed(case["sql"])
    if case["expect"] == "ok":
        cost = check_cost(expression, ROWS, LIMITS)
        if "reads" in case:
            assert dict(cost.reads) == case["reads"]
            assert cost.rows_total == sum(ROWS[d] * n for d, n in case["reads"].items())
        return
    with pytest.raises(QueryRefused) as info:
        check_cost(expression, ROWS, LIMITS)
    assert info.value.rule == case["rule"]
    assert case["subject"] in info.value.message, info.value.message
    if "reads" in case:  # what it would have read, counted without running it
        unbounded = CostLimits(max_dataset_reads=10**12, max_rows_read=10**18)
        assert dict(analyse(expression, ROWS, unbounded).reads) == case["reads"]


def test_the_rows_ceiling_counts_every_read() -> None:
    """64 reads of 10,000 rows pass the reads bound; a ceiling of 500,000 rows refuses them."""
    branches = " UNION ALL ".join(["SELECT district FROM health.claims"] * 64)
    sql = f"SELECT district, count(*) AS n FROM ({branches}) GROUP BY 1"
    assert check_cost(parsed(sql), ROWS, LIMITS).rows_total == 640_000
    with pytest.raises(QueryRefused) as info:
        check_cost(parsed(sql), ROWS, CostLimits(max_rows_read=500_000))
    assert info.value.rule == "guard.cost"
    assert (
        "640,000 rows" in info.value.message and "64 reads of health.claims" in info.value.message
    )


def test_analysis_is_linear_in_the_text_not_the_expansion() -> None:
    """Nine levels of ten-fold reuse (a billion reads) are counted without expanding them."""
    ctes = ["c0 AS (SELECT district FROM health.claims)"]
    for i in range(1, 10):
        ctes.append(
            f"c{i} AS (" + " UNION ALL ".join([f"SELECT district FROM c{i - 1}"] * 10) + ")"
        )
    sql = "WITH " + ", ".join(ctes) + " SELECT district, count(*) AS n FROM c9 GROUP BY 1"
    unbounded = CostLimits(max_dataset_reads=10**12, max_rows_read=10**18)
    cost = analyse(parsed(sql), ROWS, unbounded)
    assert cost.reads == {"health.claims": 10**9}
    assert cost.nodes > 10**9  # the expanded tree the guard would have walked
    assert cost.ctes == 10


def test_a_cte_that_reaches_itself_is_refused_not_looped() -> None:
    """A reference out of DuckDB's scope still counts (the costliest CTE of that name), and
    two CTEs that reach each other that way are refused rather than followed forever."""
    sql = (
        "WITH a AS (SELECT district FROM b), b AS (SELECT district FROM a) "
        "SELECT count(*) FROM a, health.claims"
    )
    with pytest.raises(QueryRefused) as info:
        check_cost(parsed(sql), ROWS, LIMITS)
    assert info.value.rule == "guard.too_complex" and "refers to itself" in info.value.message
    later = (
        "WITH a AS (SELECT district FROM b), b AS (SELECT district FROM health.claims "
        "UNION ALL SELECT district FROM health.claims) SELECT count(*) FROM a"
    )
    assert check_cost(parsed(later), ROWS, LIMITS).reads == {"health.claims": 2}


def test_a_wide_cte_referenced_often_is_too_complex_referenced_rarely_is_not() -> None:
    """The node bound counts a CTE's body at each reference: what the guard would walk."""
    body = ", ".join(f"claim_amount AS v{i}" for i in range(250))

    def sql(refs: int) -> str:
        return (
            f"WITH w AS (SELECT district, {body} FROM health.claims) "
            "SELECT district, count(*) AS n FROM ("
            + " UNION ALL ".join(["SELECT district FROM w"] * refs)
            + ") GROUP BY 1"
        )

    assert check_cost(parsed(sql(8)), ROWS, LIMITS).reads == {"health.claims": 8}
    with pytest.raises(QueryRefused) as info:
        check_cost(parsed(sql(64)), ROWS, LIMITS)
    assert info.value.rule == "guard.too_complex"


@pytest.mark.parametrize(
    ("sql", "subject"),
    [
        ("SELECT repeat(diagnosis_code, 1000) FROM health.claims", "1,000 copies"),
        ("SELECT lpad(district, 100000000, 'x') FROM health.claims", "100,000,000 characters"),
        ("SELECT lpad(district, age, 'x') FROM health.claims", "takes a constant count"),
    ],
)
def test_growth_functions_are_bounded_if_allowlisted(sql: str, subject: str) -> None:
    """repeat() and lpad() are not allowlisted today; the width analysis bounds them anyway."""
    expression = sqlglot.parse_one(sql, read="duckdb")
    with pytest.raises(QueryRefused) as info:
        analyse(expression, ROWS, LIMITS)
    assert info.value.rule == "guard.cost" and subject in info.value.message
    small = sqlglot.parse_one("SELECT repeat(diagnosis_code, 3) FROM health.claims", read="duckdb")
    assert analyse(small, ROWS, LIMITS).string_copies == 3
