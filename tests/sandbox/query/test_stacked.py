"""Totals stacked with UNION ALL read as one grouped query (sandbox/query/stacked.py).

Each case: the stacked query and the grouped query it is read as (``None``: left a
UNION ALL, for the advice and the guard).  Every read form gives DuckDB's rows of the
stacked query on the demo data, and the service answers it with the same values the
separate SELECTs would give.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlglot

from sandbox.core.errors import QueryRefused
from sandbox.query.service import QueryService
from sandbox.query.stacked import stacked_as_grouped
from tests.conftest import build_deployment

F_M = (
    "SELECT 'F' AS gender, count(*) AS n FROM health.claims WHERE gender = 'F' "
    "UNION ALL SELECT 'M', count(*) FROM health.claims WHERE gender = 'M'"
)
READ = [
    (
        F_M,
        'SELECT gender AS "gender", COUNT(*) AS n FROM health.claims '
        "WHERE gender IN ('F', 'M') GROUP BY gender",
    ),
    (
        "SELECT 'D01' AS d, count(*) AS n, avg(claim_amount) AS m FROM health.claims "
        "WHERE district = 'D01' AND gender = 'F' UNION ALL SELECT 'D02', count(*), "
        "avg(claim_amount) FROM health.claims WHERE gender = 'F' AND district = 'D02'",
        'SELECT district AS "d", COUNT(*) AS n, AVG(claim_amount) AS m FROM health.claims '
        "WHERE district IN ('D01', 'D02') AND gender = 'F' GROUP BY district",
    ),
]
LEFT = [
    # the output does not repeat the condition's constant
    "SELECT 'x' AS g, count(*) FROM health.claims WHERE gender = 'F' UNION ALL "
    "SELECT 'M', count(*) FROM health.claims WHERE gender = 'M'",
    # conditions on different columns
    "SELECT 'F' AS g, count(*) FROM health.claims WHERE gender = 'F' UNION ALL "
    "SELECT 'M', count(*) FROM health.claims WHERE district = 'M'",
    # the other conditions differ
    "SELECT 'F' AS g, count(*) FROM health.claims WHERE gender = 'F' AND district = 'D01' "
    "UNION ALL SELECT 'M', count(*) FROM health.claims WHERE gender = 'M' AND district = 'D02'",
    # one value twice: the stack is not a breakdown
    "SELECT 'F' AS g, count(*) FROM health.claims WHERE gender = 'F' UNION ALL "
    "SELECT 'F', count(*) FROM health.claims WHERE gender = 'F'",
    # an output that is not an aggregate
    "SELECT 'F' AS g, name FROM health.claims WHERE gender = 'F' UNION ALL "
    "SELECT 'M', name FROM health.claims WHERE gender = 'M'",
    # UNION (distinct), and branches that group already
    "SELECT 'F' AS g, count(*) FROM health.claims WHERE gender = 'F' UNION "
    "SELECT 'M', count(*) FROM health.claims WHERE gender = 'M'",
    "SELECT 'F' AS g, count(*) FROM health.claims WHERE gender = 'F' GROUP BY district "
    "UNION ALL SELECT 'M', count(*) FROM health.claims WHERE gender = 'M' GROUP BY district",
    # different sources
    "SELECT 'F' AS g, count(*) FROM health.claims WHERE gender = 'F' UNION ALL "
    "SELECT 'M', count(*) FROM transport.trips WHERE gender = 'M'",
]


@pytest.mark.parametrize(("stacked", "grouped"), READ)
def test_a_stack_of_per_value_totals_is_read_as_one_grouped_query(
    stacked: str, grouped: str
) -> None:
    read = stacked_as_grouped(sqlglot.parse_one(stacked, read="duckdb"))
    assert read is not None and read.sql(dialect="duckdb") == grouped


@pytest.mark.parametrize("sql", LEFT)
def test_other_stacks_are_left_as_written(sql: str) -> None:
    assert stacked_as_grouped(sqlglot.parse_one(sql, read="duckdb")) is None


@pytest.fixture(scope="module")
def raw(raw_demo: Any) -> Any:
    return raw_demo


@pytest.mark.parametrize(("stacked", "grouped"), READ)
def test_the_grouped_form_gives_the_stacks_rows(raw: Any, stacked: str, grouped: str) -> None:
    assert sorted(raw.sql(stacked).fetchall()) == sorted(raw.sql(grouped).fetchall())


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    platform, tokens = build_deployment(tmp_path_factory.mktemp("stacked") / "home")
    yield platform, tokens
    platform.close()


def test_the_service_answers_the_stack_as_the_separate_selects(deployment) -> None:  # type: ignore[no-untyped-def]
    platform, tokens = deployment
    bank = platform.authority.authenticate(tokens["op-bank"])
    service = QueryService(platform)
    stacked = service.run_job(bank, F_M).table.to_pylist()
    separate = [
        service.run_job(
            bank, f"SELECT count(*) AS n FROM health.claims WHERE gender = '{g}'"
        ).table.to_pylist()[0]["n"]
        for g in ("F", "M")
    ]
    assert {r["gender"]: r["n"] for r in stacked} == dict(zip(("F", "M"), separate, strict=True))


def test_a_stack_of_identifier_values_is_still_refused(deployment) -> None:  # type: ignore[no-untyped-def]
    platform, tokens = deployment
    bank = platform.authority.authenticate(tokens["op-bank"])
    sql = (
        "SELECT 'P1' AS p, count(*) AS n FROM health.claims WHERE person_id = 'P1' "
        "UNION ALL SELECT 'P2', count(*) FROM health.claims WHERE person_id = 'P2'"
    )
    with pytest.raises(QueryRefused) as info:
        QueryService(platform).run_job(bank, sql)
    assert info.value.rule == "guard.identifier"
