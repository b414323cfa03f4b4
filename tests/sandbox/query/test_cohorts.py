"""Cohort subqueries: ``<entity key> IN (SELECT <entity key> FROM <dataset> WHERE …)``.

Without withholding (k = 1, no budget) a cohort query releases DuckDB's own answer over
the demo data.  Under a budget a cohort costs what the query without it costs, and a
cohort every entity is in releases exactly what the query without it releases, under
the same draws.  Every other subquery in WHERE, and a cohort whose condition breaks a
rule a WHERE on its dataset would break, is refused naming its rule
(``guard_cases/refuse.jsonl`` holds those cases; ``answer.jsonl`` the accepted forms).
"""

from __future__ import annotations

from typing import Any

import pytest

from sandbox.core.errors import QueryRefused
from sandbox.query.cohorts import COHORT, mark_cohorts
from sandbox.query.disclosure import DisclosureParams
from sandbox.query.noise import seeded_noise
from sandbox.query.parse import parse_query
from sandbox.query.release import execute, prepare, release
from tests.sandbox.query.test_guard import MAX_SQL_LENGTH, access, guard
from tests.sandbox.query.test_totals import _rounded, released
from tests.sandbox.query.test_totals import clamped as clamped  # the module's fixture

ASTHMA = "SELECT person_id FROM health.claims WHERE diagnosis_code = 'J45'"
ANSWERED = [
    f"SELECT district, count(*) AS n FROM health.claims WHERE person_id IN ({ASTHMA}) "
    "GROUP BY district ORDER BY district",
    f"SELECT count(DISTINCT person_id) AS persons, avg(claim_amount) AS mean "
    f"FROM health.claims c WHERE c.age >= 60 AND (c.person_id IN ({ASTHMA}))",
    "SELECT diagnosis_code, sum(claim_amount) AS total FROM health.claims AS c "
    "WHERE c.person_id IN (SELECT p.person_id FROM health.claims AS p "
    "WHERE p.claim_amount > 5000 AND p.gender = 'F') GROUP BY 1 ORDER BY 1",
    # two cohorts: persons with both an asthma and a diabetes claim
    f"SELECT gender, count(*) AS n FROM health.claims WHERE person_id IN ({ASTHMA}) "
    "AND person_id IN (SELECT person_id FROM health.claims WHERE diagnosis_code = 'E11') "
    "GROUP BY gender ORDER BY gender",
    # DISTINCT changes nothing in IN (SELECT …): dropped
    "SELECT count(*) AS n FROM health.claims c WHERE c.person_id IN "
    "(SELECT DISTINCT person_id FROM health.claims WHERE gender = 'F')",
    # a cohort with no condition keeps every row of every entity with a key
    "SELECT count(*) AS n FROM health.claims WHERE person_id IN "
    "(SELECT person_id FROM health.claims)",
]


@pytest.mark.parametrize("sql", ANSWERED)
def test_without_withholding_the_rows_are_duckdbs(
    sql: str, demo_platform: Any, clamped: Any
) -> None:
    _, result = released(demo_platform, sql)
    want = clamped.sql(sql)
    assert result.table.column_names == want.columns
    rows = [_rounded(r) for r in result.table.to_pylist()]
    assert rows == [_rounded(r) for r in want.fetchall()]
    assert rows and all(v is not None for v in rows[0])  # the cohort is not empty


BUDGET = DisclosureParams(
    k=10, epsilon=1.0, max_rows_per_entity=4, max_groups_per_entity=2, dominance_p=None
)
PLAIN = "SELECT district, count(*) AS n, sum(claim_amount) AS s FROM health.claims c"
EVERYONE = "c.person_id IN (SELECT person_id FROM health.claims)"


def test_under_a_budget_a_cohort_costs_what_the_query_without_it_costs() -> None:
    big = "SELECT person_id FROM health.claims WHERE claim_amount > 5000"
    with_cohort = prepare(
        f"{PLAIN} WHERE c.person_id IN ({big}) GROUP BY 1",
        access(),
        BUDGET,
        max_sql_length=MAX_SQL_LENGTH,
    )
    without = prepare(f"{PLAIN} GROUP BY 1", access(), BUDGET, max_sql_length=MAX_SQL_LENGTH)
    assert with_cohort.epsilon == without.epsilon == 1.0
    assert "TRY(" not in with_cohort.plan.stats_sql.split(" IN (")[0].rsplit("WHERE", 1)[-1]


def test_a_cohort_everyone_is_in_releases_what_the_query_without_it_does(
    demo_platform: Any,
) -> None:
    """Persons without a key are no entity under a budget either way (rewrite.py)."""
    outcomes = []
    for sql in (f"{PLAIN} WHERE {EVERYONE} GROUP BY 1", f"{PLAIN} GROUP BY 1"):
        prepared = prepare(sql, access(), BUDGET, max_sql_length=MAX_SQL_LENGTH)
        stats = execute(demo_platform.enclave, prepared)
        outcomes.append(release(stats, prepared, noise=seeded_noise(7)).table.to_pylist())
    assert outcomes[0] == outcomes[1]
    assert len(outcomes[0]) > 5


def test_a_cohort_keeps_all_of_an_entitys_rows_or_none(demo_platform: Any) -> None:
    """The cohort's condition picks persons; the outer query then counts all their claims,
    also those that do not meet it (a WHERE on the rows would count only those)."""
    cohort = f"SELECT count(*) AS n FROM health.claims WHERE person_id IN ({ASTHMA})"
    rows = "SELECT count(*) AS n FROM health.claims WHERE diagnosis_code = 'J45'"
    counts = [released(demo_platform, sql)[1].table[0][0] for sql in (cohort, rows)]
    assert counts[0].as_py() > counts[1].as_py() > 0


def test_the_shape_is_marked_before_any_rule() -> None:
    parsed = parse_query(ANSWERED[0], max_length=MAX_SQL_LENGTH)
    root = parsed.expression.copy()
    mark_cohorts(root)
    marked = [n for n in root.walk() if n.meta.get(COHORT)]
    assert len(marked) == 2  # the IN and its SELECT


REFUSED = {
    # the keys
    "SELECT count(*) FROM health.claims c WHERE c.district IN "
    "(SELECT district FROM health.claims WHERE gender = 'F')": "guard.subquery_predicate",
    "SELECT count(*) FROM health.claims c WHERE c.person_id IN "
    "(SELECT hospital_id FROM health.claims)": "guard.subquery_predicate",
    # correlated
    "SELECT count(*) FROM health.claims c WHERE c.person_id IN "
    "(SELECT person_id FROM health.claims p WHERE p.district = c.district)": (
        "guard.subquery_predicate"
    ),
    # where it stands
    "SELECT count(*) FROM health.claims c WHERE NOT c.person_id IN (SELECT person_id FROM "
    "health.claims)": "guard.subquery_predicate",
    "SELECT count(*) FROM health.claims c WHERE c.person_id NOT IN (SELECT person_id FROM "
    "health.claims)": "guard.subquery_predicate",
    "SELECT count(*) FROM health.claims c WHERE c.gender = 'F' OR c.person_id IN "
    "(SELECT person_id FROM health.claims)": "guard.subquery_predicate",
    "SELECT count(*) FILTER (WHERE person_id IN (SELECT person_id FROM health.claims)) "
    "FROM health.claims": "guard.subquery_predicate",
    "SELECT gender, count(*) FROM health.claims GROUP BY gender HAVING gender IN "
    "(SELECT gender FROM health.claims)": "guard.subquery_predicate",
    # the subquery's own clauses
    "SELECT count(*) FROM health.claims c WHERE c.person_id IN "
    "(SELECT person_id FROM health.claims GROUP BY person_id)": "guard.subquery_predicate",
    "SELECT count(*) FROM health.claims c WHERE c.person_id IN "
    "(SELECT person_id FROM health.claims ORDER BY claim_amount DESC LIMIT 1)": (
        "guard.subquery_predicate"
    ),
    "SELECT count(*) FROM health.claims c WHERE c.person_id IN "
    "(SELECT person_id FROM health.claims UNION ALL SELECT person_id FROM health.claims)": (
        "guard.subquery_predicate"
    ),
    "WITH x AS (SELECT person_id FROM health.claims) SELECT count(*) FROM health.claims c "
    "WHERE c.person_id IN (SELECT person_id FROM x)": "guard.subquery_predicate",
    "SELECT count(*) FROM health.claims c WHERE c.person_id IN "
    "(SELECT a.person_id FROM health.claims a JOIN health.claims b "
    "ON a.person_id = b.person_id)": "guard.subquery_predicate",
    "SELECT count(*) FROM health.claims c WHERE c.person_id IN (SELECT person_id FROM "
    "health.claims WHERE person_id IN (SELECT person_id FROM health.claims))": (
        "guard.subquery_predicate"
    ),
    # the condition keeps every rule a WHERE on the dataset keeps
    "SELECT count(*) FROM health.claims c WHERE c.person_id IN "
    "(SELECT person_id FROM health.claims WHERE person_id = 'P0000001')": "guard.identifier",
    "SELECT count(*) FROM health.claims c WHERE c.person_id IN "
    "(SELECT person_id FROM health.claims WHERE age = 37)": "guard.generalisation",
    # two bands of one person's rows would tell who crossed 40 (outside review): a
    # generalised column stays out of a cohort's condition, on its bands too
    "SELECT count(DISTINCT person_id) FROM health.claims WHERE person_id IN "
    "(SELECT person_id FROM health.claims WHERE age >= 30 AND age < 40) AND person_id IN "
    "(SELECT person_id FROM health.claims WHERE age >= 40 AND age < 50)": "guard.generalisation",
    "SELECT floor(age / 10) * 10 AS band, count(DISTINCT person_id) FROM health.claims "
    "WHERE person_id IN (SELECT person_id FROM health.claims WHERE floor(age / 10) * 10 = 30) "
    "GROUP BY 1": "guard.generalisation",
    "SELECT count(*) FROM transport.trips t WHERE t.card_id IN (SELECT card_id FROM "
    "transport.trips WHERE hour(board_time) = 8)": "guard.generalisation",
    "SELECT count(*) FROM health.claims c WHERE c.person_id IN "
    "(SELECT person_id FROM health.claims WHERE name = 'x')": "guard.identifier",
    "SELECT count(*) FROM health.claims c WHERE c.person_id IN "
    "(SELECT person_id FROM health.claims WHERE id_number = 'x')": "guard.l4_column",
    "SELECT count(*) FROM health.claims c WHERE c.person_id IN "
    "(SELECT person_id FROM health.claims WHERE nothing = 'x')": "guard.resolve",
}


@pytest.mark.parametrize("sql", sorted(REFUSED))
def test_refused_naming_the_rule_and_no_value(sql: str) -> None:
    with pytest.raises(QueryRefused) as info:
        guard(sql)
    assert info.value.rule == REFUSED[sql], info.value.message
    assert "P0000001" not in info.value.message or "P0000001" in sql


# -- a cohort from another dataset ----------------------------------------------------

ENROLMENT = """
[dataset]
id = "{domain}.enrolment"
entity_key = "person_id"

[columns.person_id]
level = "L3"
role = "identifier"
type = "VARCHAR"
joinable = [{joinable}]

[columns.plan]
level = "L1"
role = "dimension"
"""
FROM_ENROLMENT = (
    "SELECT district, count(*) AS n FROM health.claims c WHERE c.person_id IN "
    "(SELECT person_id FROM {domain}.enrolment WHERE plan = 'A') GROUP BY district"
)


def _with_enrolment(domain: str, joinable: str) -> dict[str, Any]:
    from sandbox.core.access import DatasetAccess
    from sandbox.core.classification import parse_classification

    text = ENROLMENT.format(domain=domain, joinable=joinable).replace("joinable = []\n", "")
    spec = parse_classification(text)
    grants = access()
    grants[spec.id] = DatasetAccess(spec, groupable=frozenset({"plan"}))
    return grants


def test_a_cohort_from_a_dataset_of_the_same_bureau_on_its_declared_pair() -> None:
    grants = _with_enrolment("health", '"health.claims.person_id"')
    parsed = parse_query(FROM_ENROLMENT.format(domain="health"), max_length=MAX_SQL_LENGTH)
    plan = guard_with(parsed, grants)
    assert '"health"."enrolment"' in plan.stats_sql and " IN (SELECT " in plan.stats_sql


@pytest.mark.parametrize(
    ("domain", "joinable", "said"),
    [
        ("health", "", "are not declared joinable"),
        # across bureaus one side's declaration is not the other's consent
        ("hrss", '"health.claims.person_id"', "both must declare it"),
    ],
)
def test_a_cohort_from_another_dataset_needs_the_pair_declared(
    domain: str, joinable: str, said: str
) -> None:
    grants = _with_enrolment(domain, joinable)
    parsed = parse_query(FROM_ENROLMENT.format(domain=domain), max_length=MAX_SQL_LENGTH)
    with pytest.raises(QueryRefused) as info:
        guard_with(parsed, grants)
    assert info.value.rule == "guard.join" and said in info.value.message


def guard_with(parsed: Any, grants: dict[str, Any]) -> Any:
    from sandbox.query.guard import check_query
    from sandbox.query.rewrite import build_plan

    return build_plan(check_query(parsed, grants), grants)
