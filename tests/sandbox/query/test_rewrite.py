"""The rewrite computes the same statistics as the operator's SQL (before disclosure)."""

from __future__ import annotations

from decimal import Decimal

import duckdb
import pytest

from sandbox.query.rewrite import STATS_TABLE, ContributionBounds
from tests.sandbox.query.test_guard import MAX_SQL_LENGTH, access, guard


def release(demo_platform, sql: str, bounds: ContributionBounds | None = None):
    plan = guard(sql) if bounds is None else _plan_with_bounds(sql, bounds)
    stats = demo_platform.enclave.query(plan.stats_sql)
    con = duckdb.connect()
    con.register(STATS_TABLE, stats)
    return plan, stats, con.sql(plan.release_sql).fetchall()


def _plan_with_bounds(sql: str, bounds: ContributionBounds):
    from sandbox.query.guard import check_query
    from sandbox.query.parse import parse_query
    from sandbox.query.rewrite import build_plan

    grants = access()
    return build_plan(
        check_query(parse_query(sql, max_length=MAX_SQL_LENGTH), grants), grants, bounds=bounds
    )


def raw(demo_platform, sql: str):
    with demo_platform.enclave.cursor() as cur:
        return cur.sql(sql).fetchall()


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT district, count(*), count(DISTINCT person_id) FROM health.claims "
        "GROUP BY 1 ORDER BY 1",
        "SELECT board_station, count(*), sum(fare), avg(fare), count(DISTINCT card_id) "
        "FROM transport.trips GROUP BY 1 ORDER BY 1",
        "SELECT count(*), sum(fare), var_pop(fare), stddev(fare) FROM transport.trips",
        "SELECT board_station, count(*) FILTER (WHERE fare > 5) AS dear FROM transport.trips "
        "GROUP BY 1 ORDER BY 1",
        "SELECT industry, s.month, sum(s.employees), count(DISTINCT e.credit_code) "
        "FROM market.enterprises e JOIN hrss.social_insurance s USING (credit_code) "
        "GROUP BY ALL ORDER BY 1, 2",
        "SELECT d, count(*) FROM (SELECT district AS d FROM health.claims WHERE gender = 'F') "
        "GROUP BY d HAVING count(*) > 400 ORDER BY 2 DESC LIMIT 3",
        "SELECT hospital_id, min(claim_date), max(claim_date) FROM health.claims GROUP BY 1 "
        "ORDER BY 1",
        # UNION ALL keeps every row: persons in both branches are counted once per group.
        "SELECT d, count(*), count(DISTINCT person_id) FROM (SELECT district AS d, "
        "person_id FROM health.claims WHERE age < 40 UNION ALL SELECT "
        "district, person_id FROM health.claims WHERE gender = 'F') t "
        "GROUP BY 1 ORDER BY 1",
        "WITH c AS (SELECT board_station, fare, card_id FROM transport.trips) SELECT count(*), "
        "count(DISTINCT card_id), sum(fare) FROM (SELECT * FROM c UNION ALL SELECT * FROM c "
        "UNION ALL (SELECT board_station, fare, card_id FROM c WHERE fare > 5)) t",
        # COLUMNS(...) expands as DuckDB expands it (names, order, matches anywhere).
        "SELECT COLUMNS('station'), sum(COLUMNS('fare')), count(*) FROM transport.trips "
        "GROUP BY ALL ORDER BY board_station, alight_station",
        "SELECT month, sum(COLUMNS('employees|wage')) FROM hrss.social_insurance "
        "GROUP BY month ORDER BY 1",
    ],
)
def test_rewrite_matches_raw_duckdb(demo_platform, sql: str) -> None:
    _, _, released = release(demo_platform, sql)
    expected = raw(demo_platform, sql)
    assert len(released) == len(expected)
    for got, want in zip(released, expected, strict=True):
        for g, w in zip(got, want, strict=True):
            if isinstance(w, int | float | Decimal) and not isinstance(w, bool):
                assert float(g) == pytest.approx(float(w), rel=1e-9)
            else:
                assert g == w


def test_generalised_key_matches_banded_raw(demo_platform) -> None:
    _, _, released = release(
        demo_platform, "SELECT age, count(*) FROM health.claims GROUP BY age ORDER BY 1"
    )
    expected = raw(
        demo_platform,
        "SELECT floor(age / 10) * 10, count(*) FROM health.claims GROUP BY 1 ORDER BY 1",
    )
    assert released == expected
    # in the column's own type (INTEGER): 30, not 30.0 (an outside rehearsal read the
    # DOUBLE band floors as ages)
    assert all(type(band) is int for band, _ in released)


def test_measures_are_clamped_to_bounds(demo_platform) -> None:
    _, _, released = release(demo_platform, "SELECT sum(claim_amount) FROM health.claims")
    (clamped,) = raw(
        demo_platform, "SELECT sum(least(claim_amount, 13000)::DOUBLE) FROM health.claims"
    )
    (unclamped,) = raw(demo_platform, "SELECT sum(claim_amount::DOUBLE) FROM health.claims")
    assert released[0][0] == pytest.approx(clamped[0])
    assert clamped[0] < unclamped[0], "the demo data has claims above the bound"


def test_stats_carry_entities_and_top_contributions(demo_platform) -> None:
    plan, stats, _ = release(
        demo_platform, "SELECT district, sum(claim_amount) FROM health.claims GROUP BY 1"
    )
    kinds = {s.kind for s in plan.stats}
    assert {"entities", "rows", "sum", "count", "top2"} <= kinds or {"entities", "sum"} <= kinds
    top = next(s for s in plan.stats if s.kind == "top2")
    for row in stats.to_pylist():
        assert len(row[top.name]) <= 2
        assert row[top.name][0] <= row[top.of] + 1e-6


def test_contribution_bounds_cap_rows_per_entity(demo_platform) -> None:
    bounds = ContributionBounds(max_rows_per_entity=1, max_groups_per_entity=1)
    _, _, released = release(
        demo_platform, "SELECT count(*), count(DISTINCT person_id) FROM health.claims", bounds
    )
    rows, persons = released[0]
    assert rows == persons, "with one row and one group per entity, rows equal entities"


def test_contribution_bounds_keep_g_groups_per_entity(demo_platform) -> None:
    """Each entity keeps exactly min(G, its groups) groups (chosen by its own hashes)."""
    bounds = ContributionBounds(max_rows_per_entity=2, max_groups_per_entity=2)
    plan, stats, _ = release(
        demo_platform,
        "SELECT diagnosis_code, count(*) FROM health.claims GROUP BY 1",
        bounds,
    )
    kept = sum(stats["__entities"].to_pylist())
    (expected,) = raw(
        demo_platform,
        "SELECT sum(least(2, n)) FROM (SELECT count(DISTINCT diagnosis_code) AS n "
        "FROM health.claims GROUP BY person_id)",
    )[0]
    assert kept == expected
    again = demo_platform.enclave.query(plan.stats_sql)
    assert again.sort_by("__k0").equals(stats.sort_by("__k0"))  # the same choice every run


def test_with_a_budget_groups_under_k_never_leave_the_enclave(demo_platform) -> None:
    from sandbox.query.guard import check_query
    from sandbox.query.parse import parse_query
    from sandbox.query.rewrite import build_plan

    sql = "SELECT hospital_id, diagnosis_code, count(*) FROM health.claims GROUP BY 1, 2"
    grants = access()
    bounds = ContributionBounds(max_rows_per_entity=2, max_groups_per_entity=3)
    capped = build_plan(
        check_query(parse_query(sql, max_length=MAX_SQL_LENGTH), grants),
        grants,
        bounds=bounds,
        k=10,
    )
    small = demo_platform.enclave.query(capped.stats_sql)["__entities"].to_pylist()
    assert small and min(small) >= 10
    plain = build_plan(
        check_query(parse_query(sql, max_length=MAX_SQL_LENGTH), grants), grants, k=10
    )
    everything = demo_platform.enclave.query(plain.stats_sql)["__entities"].to_pylist()
    assert min(everything) < 10  # without a budget the exact suppressed count needs them all
