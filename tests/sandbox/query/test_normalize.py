"""Equivalent forms made before the guard (sandbox/query/normalize.py), checked against DuckDB.

``normalize_cases/cases.jsonl``: each analyst query and what the normalisation makes
of it (``null``: left as written, for the guard to judge).  Every rewritten case
gives the same rows as the query as written, in raw DuckDB on the demo data; the
corpus shapes are then answered by the service with DuckDB's values.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import sqlglot
from sqlglot import exp

from sandbox.core.errors import QueryRefused
from sandbox.query.dialects import respell
from sandbox.query.service import QueryService
from tests.conftest import build_deployment

CASES = [
    json.loads(line)
    for line in (Path(__file__).parent / "normalize_cases" / "cases.jsonl").read_text().splitlines()
    if line.strip()
]


def _normalized(sql: str) -> exp.Expr:
    root = sqlglot.parse_one(sql, read="duckdb")
    respell(root)
    return root


def _duckdb_sql(root: exp.Expr) -> str:
    """The normalised query as DuckDB reads it (its OFFSET back out of the LIMIT node)."""
    root = root.copy()
    limit = root.args.get("limit")
    if isinstance(limit, exp.Limit) and limit.args.get("offset") is not None:
        root.set("offset", exp.Offset(expression=limit.args["offset"].pop()))
    return root.sql(dialect="duckdb")


@pytest.fixture(scope="module")
def raw(raw_demo: Any) -> Any:
    return raw_demo


def _rows(con: Any, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    result = con.sql(sql)
    return result.columns, result.fetchall()


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_the_normalised_form(case: dict[str, Any]) -> None:
    root = sqlglot.parse_one(case["sql"], read="duckdb")
    before = root.sql(dialect="duckdb")
    if case.get("refused"):  # a shape advice.py refuses with the accepted way
        with pytest.raises(QueryRefused) as info:
            respell(root)
        assert info.value.rule == case["refused"]
        constants = {lit.name for lit in root.find_all(exp.Literal) if lit.is_string}
        assert not any(f"'{c}'" in str(info.value) for c in constants)
        return
    respell(root)
    after = root.sql(dialect="duckdb")
    assert (after if after != before else None) == case["normalized"]


REWRITTEN = [c for c in CASES if c["normalized"] is not None]


@pytest.mark.parametrize("case", REWRITTEN, ids=[c["id"] for c in REWRITTEN])
def test_the_normalised_form_gives_the_same_rows_in_duckdb(raw: Any, case: dict[str, Any]) -> None:
    columns, rows = _rows(raw, case["sql"])
    new_columns, new_rows = _rows(raw, _duckdb_sql(_normalized(case["sql"])))
    assert len(new_columns) == len(columns)
    named = [c for c in columns if re.fullmatch(r"\w+", c)]
    assert [c for c in new_columns if re.fullmatch(r"\w+", c)] == named  # names kept
    assert rows, case["id"]  # a comparison of two empty results would prove nothing
    if "LIMIT" in case["sql"] or "ORDER BY" not in case["sql"]:
        new_rows, rows = sorted(new_rows, key=_key), sorted(rows, key=_key)
    assert [_rounded(r) for r in new_rows] == [_rounded(r) for r in rows]


def _rounded(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """Floats to 9 significant digits (a sum divided by a count differs from avg in the last)."""
    return tuple(float(f"{v:.9g}") if isinstance(v, float) else v for v in row)


def _key(row: tuple[Any, ...]) -> str:
    return repr(_rounded(row))


# -- the corpus shapes, answered by the service with DuckDB's values ---------------------


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Any:
    platform, tokens = build_deployment(tmp_path_factory.mktemp("normalize") / "home")
    bank = platform.authority.authenticate(tokens["op-bank"])
    yield QueryService(platform), bank
    platform.close()


@pytest.mark.parametrize(
    ("sql", "accepted"),
    [
        (
            "SELECT d, n FROM (SELECT district AS d, count(*) AS n FROM health.claims "
            "GROUP BY 1) AS t ORDER BY n DESC, d",
            "SELECT district AS d, count(*) AS n FROM health.claims GROUP BY 1 ORDER BY n DESC, d",
        ),
        (
            "WITH per_district AS (SELECT district, count(*) AS claims, sum(claim_amount) "
            "AS total FROM health.claims GROUP BY district) SELECT district, total / claims "
            "AS mean FROM per_district ORDER BY mean DESC",
            "SELECT district, sum(claim_amount) / count(*) AS mean FROM health.claims "
            "GROUP BY district ORDER BY mean DESC",
        ),
        (
            "SELECT e.status, count(*) AS contributions FROM market.enterprises e, "
            "hrss.social_insurance s WHERE e.credit_code = s.credit_code GROUP BY e.status "
            "ORDER BY 1",
            "SELECT e.status, count(*) AS contributions FROM market.enterprises e "
            "JOIN hrss.social_insurance s ON e.credit_code = s.credit_code GROUP BY e.status "
            "ORDER BY 1",
        ),
        (
            "SELECT district, avg(coalesce(claim_amount, 0)) AS mean FROM health.claims GROUP BY 1",
            "SELECT district, sum(claim_amount) / count(*) AS mean FROM health.claims GROUP BY 1",
        ),
        (
            "SELECT DISTINCT district, gender FROM health.claims ORDER BY 1, 2",
            "SELECT district, gender FROM health.claims GROUP BY 1, 2 ORDER BY 1, 2",
        ),
        (
            "SELECT district, avg(CASE WHEN gender = 'F' THEN 1.0 ELSE 0.0 END) AS share "
            "FROM health.claims GROUP BY 1",
            "SELECT district, count(*) FILTER (WHERE gender = 'F') / count(*) AS share "
            "FROM health.claims GROUP BY 1",
        ),
        (
            "SELECT gender, avg(claim_amount::DOUBLE) AS mean FROM health.claims GROUP BY 1",
            "SELECT gender, avg(claim_amount) AS mean FROM health.claims GROUP BY 1",
        ),
        (
            "SELECT gender, sum(claim_amount / 10000) AS wan FROM health.claims GROUP BY 1",
            "SELECT gender, sum(claim_amount) / 10000 AS wan FROM health.claims GROUP BY 1",
        ),
        (
            "SELECT gender, avg(claim_amount - 100) AS a, sum(claim_amount + 1) AS s "
            "FROM health.claims GROUP BY 1",
            "SELECT gender, avg(claim_amount) - 100 AS a, "
            "sum(claim_amount) + count(claim_amount) AS s FROM health.claims GROUP BY 1",
        ),
        (
            "SELECT district, avg((claim_amount > 3000)::INT) AS share FROM health.claims "
            "GROUP BY 1",
            "SELECT district, count(*) FILTER (WHERE claim_amount > 3000) / nullif(count(*) "
            "FILTER (WHERE (claim_amount > 3000) IS NOT NULL), 0) AS share "
            "FROM health.claims GROUP BY 1",
        ),
        (
            "SELECT district, avg(claim_amount - age) AS d FROM health.claims GROUP BY 1",
            "SELECT district, (sum(claim_amount) FILTER (WHERE claim_amount IS NOT NULL AND "
            "age IS NOT NULL) - sum(age) FILTER (WHERE claim_amount IS NOT NULL AND age IS NOT "
            "NULL)) / nullif(count(*) FILTER (WHERE claim_amount IS NOT NULL AND age IS NOT "
            "NULL), 0) AS d FROM health.claims GROUP BY 1",
        ),
        (
            "WITH t AS (SELECT district, claim_amount / 1000 AS w FROM health.claims "
            "WHERE gender = 'F') SELECT district, sum(w) AS wan FROM t GROUP BY 1",
            "SELECT district, sum(claim_amount) / 1000 AS wan FROM health.claims "
            "WHERE gender = 'F' GROUP BY 1",
        ),
        (
            # the demo's person_id is never NULL: every row has an entity
            "SELECT gender, count(person_id) AS n FROM health.claims GROUP BY 1",
            "SELECT gender, count(*) AS n FROM health.claims GROUP BY 1",
        ),
    ],
    ids=[
        "cte-03",
        "cte-04",
        "join-10",
        "case-06",
        "distinct",
        "avg-share",
        "cast-double",
        "scaled-sum",
        "shifted",
        "cast-condition",
        "measures-difference",
        "cte-computed-measure",
        "count-entity-key",
    ],
)
def test_the_service_answers_as_for_the_accepted_form(
    service: Any, raw: Any, sql: str, accepted: str
) -> None:
    """Released as the hand-written accepted form is (the same disclosure applies)."""
    svc, bank = service
    released = svc.run_job(bank, sql).table
    expected = svc.run_job(bank, accepted).table
    assert released.column_names == expected.column_names == _rows(raw, sql)[0]
    assert released.num_rows > 1
    assert released.to_pylist() == expected.to_pylist()


def test_offset_skips_released_rows_in_their_released_order(service: Any) -> None:
    svc, bank = service
    base = "SELECT district, count(*) AS n FROM health.claims GROUP BY district ORDER BY n DESC"
    ten = svc.run_job(bank, f"{base} LIMIT 10").table.to_pylist()
    page = svc.run_job(bank, f"{base} LIMIT 5 OFFSET 5").table.to_pylist()
    assert len(ten) == 10
    assert page == ten[5:]
    assert svc.run_job(bank, f"{base} LIMIT 3 OFFSET 0").table.to_pylist() == ten[:3]


@pytest.mark.parametrize(
    ("sql", "rule"),
    [
        (
            "SELECT district, count(*) AS n FROM health.claims GROUP BY 1 LIMIT 5 OFFSET 2 + 3",
            "guard.syntax_element",
        ),
        (
            "SELECT e.status, count(*) AS n FROM market.enterprises e, "
            "hrss.social_insurance s WHERE e.status = 'active' GROUP BY 1",
            "guard.join",
        ),
        (
            # a maximum of per-group counts is no aggregate of the rows (rollup.py)
            "SELECT max(n) AS most FROM (SELECT district, count(*) AS n FROM health.claims "
            "GROUP BY 1) AS t",
            "guard.inner_scope",
        ),
    ],
    ids=["offset-expression", "comma-join-without-key", "aggregate-over-aggregate"],
)
def test_shapes_left_as_written_stay_refused(service: Any, sql: str, rule: str) -> None:
    svc, bank = service
    verdict = svc.explain(bank, sql)
    assert not verdict["accepted"]
    assert verdict["rule"] == rule, verdict


@pytest.mark.parametrize(
    ("sql", "advised"),
    [
        # count-16, a stack of per-value totals, is now read as its grouped form
        # (tests/sandbox/query/test_stacked.py), so it is no longer advised.
        (
            "WITH per_person AS (SELECT person_id, district, sum(claim_amount) AS total "
            "FROM health.claims GROUP BY person_id, district) SELECT district, avg(total) "
            "AS mean_per_person FROM per_person GROUP BY district ORDER BY 1",
            "SELECT district, sum(claim_amount) / count(DISTINCT person_id) AS mean_per_person "
            "FROM health.claims GROUP BY district ORDER BY 1",
        ),
    ],
    ids=["cte-10"],
)
def test_the_advised_form_is_answered_with_the_same_figures(
    service: Any, raw: Any, sql: str, advised: str
) -> None:
    """What advice.py told the analyst to write means what they asked, and is answered.

    cte-10 itself is now read as its per-entity form (rollup.py) and answered too.
    """
    svc, bank = service
    assert svc.explain(bank, sql)["accepted"]
    _, rows = _rows(raw, sql)
    _, advised_rows = _rows(raw, advised)
    assert sorted(map(_rounded, advised_rows)) == sorted(map(_rounded, rows))
    assert svc.run_job(bank, advised).table.num_rows == len(rows) > 1
