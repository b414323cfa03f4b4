"""Channels that single out one person inside an answer that passes the low-count filter.

Each test picks a real person of the demo data who is alone in a (district, age band,
gender) cell (exact ages are refused in filters: age is declared in bands of 10), then
asks a question whose answer would differ with that one person's diagnosis, and checks
the answer is the same either way (or refused the same way).
"""

from __future__ import annotations

import pytest

from sandbox.core.errors import SandboxError
from sandbox.query.service import QueryService
from tests.conftest import build_deployment


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    platform, tokens = build_deployment(tmp_path_factory.mktemp("channels") / "home")
    service = QueryService(platform)
    yield platform, service, {n: platform.authority.authenticate(t) for n, t in tokens.items()}
    platform.close()


@pytest.fixture(scope="module")
def target(world) -> tuple[str, str, int, str, str, str]:
    """(predicate singling the person out, their district, age, gender, a code they have, one
    they have not)."""
    platform, _, _ = world
    with platform.enclave.cursor() as cur:
        district, age, gender, persons = cur.sql(
            "SELECT district, age // 10 * 10, gender, count(DISTINCT person_id) FROM health.claims "
            "WHERE district >= 'D10' GROUP BY ALL HAVING count(DISTINCT person_id) = 1 "
            "ORDER BY ALL LIMIT 1"
        ).fetchall()[0]
        band = f"age >= {age} AND age < {age + 10}"
        cell = f"district = '{district}' AND {band} AND gender = '{gender}'"
        (has,) = cur.sql(f"SELECT min(diagnosis_code) FROM health.claims WHERE {cell}").fetchall()[
            0
        ]
        (lacks,) = cur.sql(
            "SELECT min(diagnosis_code) FROM health.claims WHERE diagnosis_code NOT IN ("
            "SELECT diagnosis_code FROM health.claims "
            f"WHERE {cell})"
        ).fetchall()[0]
    assert persons == 1
    where = cell
    return where, district, age, gender, has, lacks


def outcome(service, actor, sql: str) -> object:
    """What the operator learns: the released rows, or the refusal's rule."""
    try:
        return service.run_job(actor, sql).table.to_pylist()  # held, under a reviewed grant
    except SandboxError as exc:
        return exc.rule


def test_an_extreme_is_never_one_persons_value(world, target) -> None:
    """max(district) over a crowd plus one person's row: the k-th largest, not hers."""
    _, service, actors = world
    where, district, *_ = target
    crowd = "district < 'D05'"
    sql = (
        f"SELECT gender, max(district) AS top FROM health.claims WHERE {crowd} OR ({where}) "
        "GROUP BY 1"
    )
    rows = service.run_job(actors["op-bank"], sql).table.to_pylist()
    assert rows and all(r["top"] is None or r["top"] < "D05" for r in rows), district
    with pytest.raises(SandboxError) as info:
        service.run(
            actors["op-insurer"], "SELECT gender, max(district) FROM health.claims GROUP BY 1"
        )
    assert info.value.rule == "disclosure.extreme"


def test_a_runtime_error_cannot_depend_on_one_persons_row(world, target) -> None:
    """CASE WHEN <her and code> THEN overflow: the same answer whichever code is asked."""
    _, service, actors = world
    where, _, _, _, has, lacks = target
    answers = [
        outcome(
            service,
            actors["op-bank"],
            "SELECT count(*) AS n FROM health.claims WHERE CASE WHEN "
            f"{where} AND diagnosis_code = '{code}' THEN "
            "CAST(claim_amount AS BIGINT) * 9223372036854775807 ELSE 0 END = 0",
        )
        for code in (has, lacks)
    ]
    assert isinstance(answers[0], list) and isinstance(answers[1], list), answers


def test_an_overflow_in_the_released_outputs_is_null_not_a_refusal(world) -> None:
    _, service, actors = world
    rows = service.run_job(
        actors["op-bank"],
        "SELECT gender, count(*) * 9223372036854775807 AS x FROM health.claims GROUP BY 1",
    ).table.to_pylist()
    assert rows and all(r["x"] is None for r in rows)


def test_a_conditional_column_is_a_filter_in_disguise(world, target) -> None:
    """count(f) over CASE WHEN <code> THEN 1 END counts entities with f: cells under k NULL."""
    platform, service, actors = world
    code = target[4]
    sql = (
        f"WITH t AS (SELECT district, CASE WHEN diagnosis_code = '{code}' THEN 1 END AS f "
        "FROM health.claims) SELECT district, count(*) AS n, count(f) AS c FROM t GROUP BY 1"
    )
    rows = service.run_job(actors["op-bank"], sql).table.to_pylist()
    with platform.enclave.cursor() as cur:
        truth = dict(
            cur.sql(
                "SELECT district, count(DISTINCT person_id) FILTER (WHERE diagnosis_code = "
                f"'{code}') FROM health.claims GROUP BY 1"
            ).fetchall()
        )
    for row in rows:
        assert (row["c"] is None) == (truth[row["district"]] < 10), row


def test_released_rows_follow_the_keys_not_the_engine(world) -> None:
    """A LIMIT without ORDER BY takes the first groups by key, not by hash-table order."""
    _, service, actors = world
    rows = service.run_job(
        actors["op-bank"], "SELECT district, count(*) AS n FROM health.claims GROUP BY 1 LIMIT 3"
    ).table.to_pylist()
    assert [r["district"] for r in rows] == ["D01", "D02", "D03"]
