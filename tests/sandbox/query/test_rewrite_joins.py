"""Joins count every dataset's entities; variance and stddev are under the dominance rule.

A purpose-built enclave: ``health.claims`` (a person's claims) and ``ref.months``, a
reference table of twelve rows whose ``year`` is declared joinable with the claims'.
One person's claim joined to twelve months is twelve rows of twelve reference
"entities", but still one person.
"""

from __future__ import annotations

import duckdb
import pytest

from sandbox.core.access import DatasetAccess
from sandbox.core.classification import Level, parse_classification
from sandbox.core.errors import QueryRefused
from sandbox.query.disclosure import DisclosureParams
from sandbox.query.noise import seeded_noise
from sandbox.query.release import Prepared, prepare, release
from tests.sandbox.query.test_guard import MAX_SQL_LENGTH

CLAIMS = """
[dataset]
id = "health.claims"
entity_key = "person_id"
[columns.person_id]
level = "L3"
role = "identifier"
type = "VARCHAR"
[columns.district]
level = "L1"
role = "dimension"
type = "VARCHAR"
[columns.year]
level = "L1"
role = "dimension"
type = "INTEGER"
{claims_joins}
[columns.amount]
level = "L2"
role = "measure"
type = "DOUBLE"
bounds = [0, 1000000]
"""
MONTHS = """
[dataset]
id = "ref.months"
entity_key = "month_id"
[columns.month_id]
level = "L1"
role = "identifier"
type = "VARCHAR"
[columns.season]
level = "L1"
role = "dimension"
type = "VARCHAR"
[columns.year]
level = "L1"
role = "dimension"
type = "INTEGER"
joinable = ["health.claims.year"]
"""


def grants(*, claims_consent: bool = True) -> dict[str, DatasetAccess]:
    joins = 'joinable = ["ref.months.year"]' if claims_consent else ""
    specs = [
        parse_classification(CLAIMS.format(claims_joins=joins)),
        parse_classification(MONTHS),
    ]
    return {s.id: DatasetAccess(s, Level.L3) for s in specs}


@pytest.fixture(scope="module")
def enclave():
    con = duckdb.connect()
    con.execute("CREATE SCHEMA health; CREATE SCHEMA ref")
    con.execute(
        "CREATE TABLE health.claims (person_id VARCHAR, district VARCHAR, year INTEGER, "
        "amount DOUBLE)"
    )
    # D01: 40 people with modest claims; D02: one person alone; D03: one giant claimant
    # among 30 small ones (78% of the district's total).
    rows = [(f"p{i}", "D01", 2025, 100.0 + i) for i in range(40)]
    rows += [("lonely", "D02", 2025, 4321.0)]
    rows += [(f"s{i}", "D03", 2025, 100.0) for i in range(30)]
    rows += [("giant", "D03", 2025, 10_640.0)]
    con.executemany("INSERT INTO health.claims VALUES (?, ?, ?, ?)", rows)
    con.execute("CREATE TABLE ref.months (month_id VARCHAR, season VARCHAR, year INTEGER)")
    con.executemany(
        "INSERT INTO ref.months VALUES (?, ?, ?)",
        [(f"2025-{m:02d}", "QWERTY"[(m - 1) // 3], 2025) for m in range(1, 13)],
    )
    yield con
    con.close()


def run(con, sql: str, params: DisclosureParams, access=None):
    prepared: Prepared = prepare(sql, access or grants(), params, max_sql_length=MAX_SQL_LENGTH)
    stats = con.sql(prepared.plan.stats_sql).to_arrow_table()
    return prepared, release(stats, prepared, noise=seeded_noise(7))


def test_a_reference_table_first_does_not_multiply_one_person(enclave) -> None:
    """The leak: twelve month rows first made one person's claim count as twelve entities."""
    sql = (
        "SELECT count(*) AS n, sum(c.amount) AS total FROM ref.months m "
        "JOIN health.claims c ON m.year = c.year WHERE c.district = 'D02'"
    )
    _, released = run(enclave, sql, DisclosureParams(k=10))
    assert released.table.to_pylist() == [], "one person's claim was released"


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT count(*) AS n, sum(amount) AS total FROM (SELECT c.amount, c.district "
        "FROM ref.months m JOIN health.claims c ON m.year = c.year) t WHERE district = 'D02'",
        "WITH j AS (SELECT m.season, c.amount, c.district FROM ref.months m "
        "JOIN health.claims c ON m.year = c.year) "
        "SELECT season, count(*) AS n, sum(amount) AS total FROM j WHERE district = 'D02' "
        "GROUP BY 1",
        "SELECT count(*) AS n, sum(c.amount) AS total FROM ref.months m JOIN "
        "(SELECT year AS y, amount FROM health.claims WHERE district = 'D02') c ON m.year = c.y",
    ],
)
def test_the_reference_rows_cannot_hide_in_a_derived_table(enclave, sql: str) -> None:
    _, released = run(enclave, sql, DisclosureParams(k=10))
    assert released.table.to_pylist() == [], "one person's claim was released"


def test_a_join_on_entity_keys_under_a_budget_is_answered(demo_platform) -> None:
    from tests.sandbox.query.test_guard import access

    sql = (
        "SELECT count(*) AS n, sum(s.employees) AS staff FROM market.enterprises e "
        "JOIN (SELECT credit_code AS c, month, employees FROM hrss.social_insurance) s "
        "ON e.credit_code = s.c"
    )
    params = DisclosureParams(k=10, epsilon=1.0, max_rows_per_entity=2, max_groups_per_entity=3)
    prepared = prepare(sql, access(), params, max_sql_length=MAX_SQL_LENGTH)
    assert not any(s.kind == "joined" for s in prepared.plan.stats)
    stats = demo_platform.enclave.query(prepared.plan.stats_sql)
    released = release(stats, prepared, noise=seeded_noise(5))
    assert released.epsilon_spent == 1.0 and released.table.num_rows > 0
    assert released.groups_suppressed is not None  # noised under a budget, not withheld


def test_every_dataset_of_the_join_needs_k_entities(enclave) -> None:
    sql = (
        "SELECT c.district, count(*) AS n, count(DISTINCT c.person_id) AS people "
        "FROM ref.months m JOIN health.claims c ON m.year = c.year GROUP BY 1 ORDER BY 1"
    )
    prepared, released = run(enclave, sql, DisclosureParams(k=10, dominance_p=None))
    assert {s.kind for s in prepared.plan.stats} >= {"joined"}
    rows = released.table.to_pylist()
    assert [r["district"] for r in rows] == ["D01", "D03"]
    assert rows[0]["people"] == 40 and rows[0]["n"] == 40 * 12
    # The other order: the claims first, the months joined (12 month entities per group).
    flipped = (
        "SELECT c.district, count(*) AS n FROM health.claims c "
        "JOIN ref.months m ON c.year = m.year GROUP BY 1 ORDER BY 1"
    )
    _, again = run(enclave, flipped, DisclosureParams(k=10, dominance_p=None))
    assert [r["district"] for r in again.table.to_pylist()] == ["D01", "D03"]
    # Twelve months are fewer than k = 13: every group goes, whichever dataset is first.
    _, none = run(enclave, sql, DisclosureParams(k=13, dominance_p=None))
    assert none.table.num_rows == 0


def test_dominance_counts_each_joined_datasets_entities(enclave) -> None:
    """The giant's claim is 78% of D03's total, over p = 0.75: suppressed whichever is first.

    With the months first, each month's "contribution" was a twelfth of the total.
    """
    for sql in (
        "SELECT c.district, sum(c.amount) AS s FROM ref.months m "
        "JOIN health.claims c ON m.year = c.year GROUP BY 1",
        "SELECT c.district, sum(c.amount) AS s FROM health.claims c "
        "JOIN ref.months m ON c.year = m.year GROUP BY 1",
    ):
        _, released = run(enclave, sql, DisclosureParams(k=10, dominance_p=0.75))
        assert [r["district"] for r in released.table.to_pylist()] == ["D01"], sql


@pytest.mark.parametrize(
    ("aggregate", "p"),
    [
        ("stddev(amount)", 0.9),
        ("var_pop(amount)", 0.9),
        ("variance(amount)", 0.9),
        ("avg(amount)", 0.75),
    ],
)
def test_dominance_covers_every_aggregate_that_carries_a_sum(enclave, aggregate, p) -> None:
    """stddev and variance release the sum of squares, avg the sum: the giant is in both."""
    sql = f"SELECT district, {aggregate} AS v, count(*) AS n FROM health.claims GROUP BY 1"
    _, released = run(enclave, sql, DisclosureParams(k=10, dominance_p=p))
    assert [r["district"] for r in released.table.to_pylist()] == ["D01"]
    _, off = run(enclave, sql, DisclosureParams(k=10, dominance_p=None))
    assert sorted(r["district"] for r in off.table.to_pylist()) == ["D01", "D03"]


def test_a_square_can_dominate_where_the_sum_does_not(enclave) -> None:
    """The giant holds 78% of D03's sum (under p = 0.9) but 99% of its sum of squares."""
    lenient = DisclosureParams(k=10, dominance_n=1, dominance_p=0.9)
    sums = "SELECT district, sum(amount) AS s FROM health.claims GROUP BY 1 ORDER BY 1"
    _, by_sum = run(enclave, sums, lenient)
    assert [r["district"] for r in by_sum.table.to_pylist()] == ["D01", "D03"]
    spread = "SELECT district, stddev_pop(amount) AS v FROM health.claims GROUP BY 1 ORDER BY 1"
    _, by_square = run(enclave, spread, lenient)
    assert [r["district"] for r in by_square.table.to_pylist()] == ["D01"]


def test_join_consent_needs_both_bureaus(enclave) -> None:
    sql = (
        "SELECT m.season, count(*) FROM health.claims c JOIN ref.months m "
        "ON c.year = m.year GROUP BY 1"
    )
    with pytest.raises(QueryRefused) as info:
        prepare(sql, grants(claims_consent=False), DisclosureParams(k=10), max_sql_length=10_000)
    assert info.value.rule == "guard.join"
    assert "ref.months.year declares the pair" in info.value.message
    assert "health.claims's classification does not" in info.value.message


def test_under_a_budget_joins_are_on_entity_keys_only(enclave) -> None:
    sql = (
        "SELECT c.district, count(*) FROM health.claims c JOIN ref.months m "
        "ON c.year = m.year GROUP BY 1"
    )
    with pytest.raises(QueryRefused) as info:
        prepare(sql, grants(), DisclosureParams(k=10, epsilon=1.0), max_sql_length=10_000)
    assert info.value.rule == "guard.join_budget"
    assert "entity keys" in info.value.message


def test_no_released_stddev_is_one_firms_capital_in_the_demo(demo_platform) -> None:
    """The red team's case: a firm dominating a group's sum of squares is read via stddev.

    Over the demo's industry-by-district cells, no released stddev may come
    from a group where the two largest firms hold more than p of the sum of squares.
    """
    sql = (
        "SELECT industry, district, stddev_pop(registered_capital) AS sd, "
        "avg(registered_capital) AS mean, count(*) AS n FROM market.enterprises "
        "GROUP BY 1, 2"
    )
    grants = access_demo()
    prepared = prepare(sql, grants, DisclosureParams(k=10), max_sql_length=MAX_SQL_LENGTH)
    stats = demo_platform.enclave.query(prepared.plan.stats_sql)
    released = release(stats, prepared).table.to_pylist()
    assert released, "the query releases something"
    with demo_platform.enclave.cursor() as cur:
        shares = cur.sql(
            "SELECT industry, district, list_sum(list_slice(list_reverse_sort("
            "list(least(registered_capital, 1e9)::DOUBLE ^ 2)), 1, 2)) / "
            "sum(least(registered_capital, 1e9)::DOUBLE ^ 2) FROM market.enterprises "
            "GROUP BY 1, 2"
        ).fetchall()
    top = {(i, d): s for i, d, s in shares}
    dominated = [r for r in released if top[(r["industry"], r["district"])] > 0.9]
    assert not dominated, f"{len(dominated)} released stddevs are one or two firms' capital"


def access_demo():
    from tests.sandbox.query.test_guard import access

    return access()


def test_on_may_filter_one_side_of_an_outer_join(demo_platform) -> None:
    """``LEFT JOIN ... ON key AND s.month = ...``: coverage per industry, as DuckDB counts it."""
    from tests.sandbox.query.test_guard import access

    sql = (
        "SELECT e.industry, count(DISTINCT s.credit_code) AS insured, "
        "count(DISTINCT e.credit_code) AS firms FROM market.enterprises e "
        "LEFT JOIN hrss.social_insurance s ON e.credit_code = s.credit_code "
        "AND s.month = '2025-01' GROUP BY 1 ORDER BY 1"
    )
    prepared = prepare(
        sql, access(), DisclosureParams(k=10, dominance_p=None), max_sql_length=MAX_SQL_LENGTH
    )
    released = release(demo_platform.enclave.query(prepared.plan.stats_sql), prepared)
    with demo_platform.enclave.cursor() as cur:
        truth = {row[0]: row[1:] for row in cur.sql(sql).fetchall()}
    rows = released.table.to_pylist()
    assert rows
    for row in rows:
        assert (row["insured"], row["firms"]) == truth[row["industry"]]


def test_a_filter_in_on_cannot_raise_an_error(demo_platform) -> None:
    """A failing ON filter is NULL (TRY), not an error that tells about a row."""
    from tests.sandbox.query.test_guard import access

    sql = (
        "SELECT e.district, count(*) AS n FROM market.enterprises e JOIN hrss.social_insurance "
        "s ON e.credit_code = s.credit_code AND "
        + " * ".join(["s.employees"] * 16)
        + " > 0 GROUP BY 1"
    )
    with demo_platform.enclave.cursor() as cur, pytest.raises(duckdb.Error):
        cur.sql(sql).fetchall()  # as written, employees^16 overflows on some rows
    prepared = prepare(sql, access(), DisclosureParams(k=10), max_sql_length=MAX_SQL_LENGTH)
    demo_platform.enclave.query(prepared.plan.stats_sql)  # runs: the filter is TRY(...)


@pytest.mark.parametrize(
    "on",
    [
        "e.credit_code = s.credit_code OR e.district = 'D01'",
        "e.credit_code = s.credit_code AND e.district = s.month",
        "e.district = 'D01'",
    ],
)
def test_on_filters_relate_one_side_only(on: str) -> None:
    from tests.sandbox.query.test_guard import access

    sql = (
        "SELECT e.district, count(*) FROM market.enterprises e "
        f"JOIN hrss.social_insurance s ON {on} GROUP BY 1"
    )
    with pytest.raises(QueryRefused) as info:
        prepare(sql, access(), DisclosureParams(k=10), max_sql_length=MAX_SQL_LENGTH)
    assert info.value.rule == "guard.join"
