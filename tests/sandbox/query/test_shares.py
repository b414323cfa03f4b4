"""Shares of rows under a budget (``sandbox/query/shares.py``, ``entity_caps.share_of_cap``).

A share's numerator is each entity's share of the rows it keeps, not its rows under the
condition capped apart: an entity with more than ``C`` rows in a group, all or most of
them under the condition, made the share tend to 1 (MovieLens: 0.75 against 0.52).
"""

from __future__ import annotations

from decimal import Decimal

import duckdb
import pytest
import sqlglot
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlglot import exp

from sandbox.query.rewrite import ContributionBounds
from sandbox.query.shares import SHARE as MARK
from sandbox.query.shares import mark_shares
from tests.sandbox.query.test_rewrite_cap import plan_of

SHARE = "SELECT avg(CASE WHEN claim_amount > 100 THEN 1 ELSE 0 END) AS s FROM health.claims"


@pytest.mark.parametrize(
    ("sql", "found"),
    [
        ("SELECT count(*) FILTER (WHERE x > 1) / count(*) FROM t", {"x > 1": ""}),
        ("SELECT 100.0 * count(*) FILTER (WHERE x > 1) / count(*) FROM t", {"x > 1": ""}),
        ("SELECT count(*) FILTER (WHERE x > 1) * 1.0 / count(*) FROM t", {"x > 1": ""}),
        (
            "SELECT CAST(count(*) FILTER (WHERE x > 1) AS DOUBLE) / nullif(count(*), 0) FROM t",
            {"x > 1": ""},
        ),
        (
            "SELECT count(*) FILTER (WHERE (y = 2) AND (x > 1)) / count(*) FILTER (WHERE y = 2) "
            "FROM t",
            {"(y = 2) AND (x > 1)": " FILTER (WHERE y = 2)"},
        ),
        # not shares: a denominator under another condition, a count of values, a sum
        ("SELECT count(*) FILTER (WHERE x > 1) / count(*) FILTER (WHERE y = 2) FROM t", {}),
        ("SELECT count(*) FILTER (WHERE x > 1) / count(x) FROM t", {}),
        ("SELECT count(*) / count(*) FILTER (WHERE x > 1) FROM t", {}),
        ("SELECT sum(x) FILTER (WHERE x > 1) / count(*) FROM t", {}),
    ],
)
def test_which_divisions_are_shares(sql: str, found: dict[str, str]) -> None:
    root = sqlglot.parse_one(sql, read="duckdb")
    mark_shares(root)
    marked = {
        node.expression.this.sql(dialect="duckdb"): node.meta[MARK]
        for node in root.find_all(exp.Filter)
        if MARK in node.meta
    }
    assert marked == found


def _stats(rows: list[tuple[str, Decimal]], c: int) -> tuple[float, float]:
    con = duckdb.connect()
    con.execute("CREATE SCHEMA health")
    con.execute("CREATE TABLE health.claims (person_id VARCHAR, claim_amount DECIMAL(12, 2))")
    con.executemany("INSERT INTO health.claims VALUES (?, ?)", rows)
    plan = plan_of(SHARE, ContributionBounds(max_rows_per_entity=c, max_groups_per_entity=1))
    (row,) = con.sql(plan.stats_sql).to_arrow_table().to_pylist()
    (share,) = [s.name for s in plan.stats if s.kind == "rows" and s.filtered]
    (rows_,) = [s.name for s in plan.stats if s.kind == "rows" and not s.filtered]
    return float(row[share]), float(row[rows_])


@settings(max_examples=60, deadline=None)
@given(
    entities=st.lists(st.tuples(st.integers(0, 12), st.integers(0, 12)), min_size=1, max_size=8),
    c=st.integers(1, 5),
)
def test_a_numerator_is_whole_within_its_denominator_and_exact_for_small_entities(
    entities: list[tuple[int, int]], c: int
) -> None:
    """Per entity: h rows over 100 and m at or under; at most C counted, h where h + m ≤ C."""
    rows = [
        (f"P{i}", Decimal(amount))
        for i, (h, m) in enumerate(entities)
        for amount in [500] * h + [50] * m
    ]
    if not rows:
        return
    share, total = _stats(rows, c)
    assert share == int(share) and 0 <= share <= total
    assert total == sum(min(h + m, c) for h, m in entities)
    small = [(h, m) for h, m in entities if h + m <= c]
    if len(small) == len(entities):
        assert share == sum(h for h, _ in small)
    # never more than the entity's rows under the condition, nor than C
    assert share <= sum(min(h, c) for h, _ in entities)


def test_busy_entities_count_by_their_own_share() -> None:
    """400 persons of 20 claims, a quarter of them over 100, at C = 4: the share is about
    a quarter (capped apart, it came out 1: four of each person's five large claims)."""
    rows = [
        (f"P{p:03d}", Decimal(500 if k % 4 == 0 else 50)) for p in range(400) for k in range(20)
    ]
    share, total = _stats(rows, 4)
    assert total == 1600
    assert share / total == pytest.approx(0.25, abs=0.03)


def test_only_the_shares_own_numerator_is_a_share() -> None:
    """A count of the same rows elsewhere in the query stays a row count capped apart
    (a review: keyed by its predicate alone, the share form took over every count under
    that FILTER, and a co-moment's n with it)."""
    sql = (
        "SELECT count(*) FILTER (WHERE claim_amount > 100) AS n, "
        "avg(CASE WHEN claim_amount > 100 THEN 1 ELSE 0 END) AS s FROM health.claims"
    )
    plan = plan_of(sql, ContributionBounds(max_rows_per_entity=4, max_groups_per_entity=1))
    filtered = [s.name for s in plan.stats if s.kind == "rows" and s.filtered]
    assert len(filtered) == 2, plan.stats
    con = duckdb.connect()
    con.execute("CREATE SCHEMA health")
    con.execute("CREATE TABLE health.claims (person_id VARCHAR, claim_amount DECIMAL(12, 2))")
    # one person of 20 claims, 10 of them over 100
    con.executemany(
        "INSERT INTO health.claims VALUES (?, ?)",
        [("P1", Decimal(500 if k % 2 else 50)) for k in range(20)],
    )
    (row,) = con.sql(plan.stats_sql).to_arrow_table().to_pylist()
    values = sorted(row[name] for name in filtered)
    assert values == [2, 4], values  # the share's 10·4/20 = 2, the count's min(10, 4)
