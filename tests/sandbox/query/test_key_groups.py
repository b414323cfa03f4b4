"""A query's G from its keys' declared values per entity (``values_per_entity``).

The demo claims declare age 2, gender 1 and district 1 values per person.  A query grouped
by those runs with G = the product (never above the dataset's G); anything else keeps
the dataset's G.  The cap in the stats query enforces whatever G is chosen, so a person
the declaration misdescribes keeps only that many groups: checked on data below.
"""

from __future__ import annotations

import duckdb
import pytest

from sandbox.query.disclosure import DisclosureParams
from sandbox.query.guard import check_query
from sandbox.query.key_groups import declared_groups
from sandbox.query.parse import parse_query
from sandbox.query.release import prepare
from sandbox.query.rewrite import ENTITIES
from tests.sandbox.query.test_guard import MAX_SQL_LENGTH, access

PARAMS = DisclosureParams(k=1, epsilon=1.0, max_rows_per_entity=9, max_groups_per_entity=4)
GROUPABLE = frozenset({"age", "gender", "diagnosis_code", "hospital_id"})


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT gender, count(*) FROM health.claims GROUP BY gender", 1),
        ("SELECT district, gender, count(*) FROM health.claims GROUP BY 1, 2", 1),
        ("SELECT lower(gender) AS g, count(*) FROM health.claims GROUP BY 1", 1),
        ("SELECT age, count(*) FROM health.claims GROUP BY age", 2),
        ("SELECT district, age, avg(claim_amount) FROM health.claims GROUP BY 1, 2", 2),
        ("SELECT diagnosis_code, count(*) FROM health.claims GROUP BY 1", None),
        ("SELECT gender, diagnosis_code, count(*) FROM health.claims GROUP BY 1, 2", None),
        ("SELECT count(*) FROM health.claims", None),
        (
            "WITH w AS (SELECT person_id, gender FROM health.claims) "
            "SELECT gender, count(*) FROM w GROUP BY gender",
            1,
        ),
    ],
)
def test_the_declared_bound_of_a_query(sql: str, expected: int | None) -> None:
    grants = access(GROUPABLE)
    checked = check_query(parse_query(sql, max_length=MAX_SQL_LENGTH), grants)
    assert declared_groups(checked, grants) == expected


def test_a_join_keeps_the_dataset_g() -> None:
    grants = access(frozenset({"industry", "month"}))
    sql = (
        "SELECT e.industry, count(*) FROM market.enterprises e JOIN hrss.social_insurance s "
        "ON s.credit_code = e.credit_code GROUP BY 1"
    )
    checked = check_query(parse_query(sql, max_length=MAX_SQL_LENGTH), grants)
    assert declared_groups(checked, grants) is None


def test_prepare_runs_a_count_by_gender_at_g_1_and_caps_at_it() -> None:
    grants = access(GROUPABLE)
    by_gender = prepare(
        "SELECT gender, count(*) FROM health.claims GROUP BY gender",
        grants,
        PARAMS,
        max_sql_length=MAX_SQL_LENGTH,
    )
    assert by_gender.params.max_groups_per_entity == 1
    assert by_gender.params.max_rows_per_entity == 9
    assert by_gender.plan.bounds is not None and by_gender.plan.bounds.max_groups_per_entity == 1
    by_diagnosis = prepare(
        "SELECT diagnosis_code, count(*) FROM health.claims GROUP BY 1",
        grants,
        PARAMS,
        max_sql_length=MAX_SQL_LENGTH,
    )
    assert by_diagnosis.params.max_groups_per_entity == 4
    exact = prepare(
        "SELECT gender, count(*) FROM health.claims GROUP BY gender",
        grants,
        DisclosureParams(k=1, max_rows_per_entity=9, max_groups_per_entity=4),
        max_sql_length=MAX_SQL_LENGTH,
    )
    assert exact.params.max_groups_per_entity == 4  # no budget: no cap, nothing changes


def test_a_person_the_declaration_misdescribes_counts_in_one_group_only() -> None:
    """P1 has claims as F and as M (the declaration says one gender): the cap keeps one."""
    grants = access(GROUPABLE)
    prepared = prepare(
        "SELECT gender, count(*) FROM health.claims GROUP BY gender",
        grants,
        PARAMS,
        max_sql_length=MAX_SQL_LENGTH,
    )
    con = duckdb.connect()
    con.execute("CREATE SCHEMA health")
    con.execute("CREATE TABLE health.claims (person_id VARCHAR, gender VARCHAR)")
    con.execute(
        "INSERT INTO health.claims VALUES ('P1', 'F'), ('P1', 'M'), ('P1', 'M'), "
        "('P2', 'F'), ('P3', 'M'), ('P3', 'M')"
    )
    stats = con.sql(prepared.plan.stats_sql).to_arrow_table()
    assert sum(stats.column(ENTITIES).to_pylist()) == 3  # each person in one group
