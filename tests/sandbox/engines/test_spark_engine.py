"""The Spark engine itself: limits, refusals, and what it is handed (Spark local[2])."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa
import sqlglot
from sqlglot import exp

from sandbox.core.errors import QueryRefused, QueryTimeout, ResultTooLarge
from sandbox.engines.spark import SparkEngine
from sandbox.platform import Platform
from sandbox.query.service import QueryService
from tests.conftest import build_deployment
from tests.sandbox.engines.spark_setup import move_to_warehouse, require_spark

W2 = (
    "SELECT e.industry, s.month, count(DISTINCT e.credit_code), sum(s.wage_total) "
    "FROM market.enterprises e JOIN hrss.social_insurance s ON s.credit_code = e.credit_code "
    "GROUP BY 1, 2"
)


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Platform, dict[str, str]]]:
    require_spark()
    platform, tokens = build_deployment(tmp_path_factory.mktemp("spark-engine") / "home")
    move_to_warehouse(platform)
    yield platform, tokens
    platform.close()


def engine(platform: Platform, **limits: Any) -> SparkEngine:
    return SparkEngine(replace(platform.settings, **limits), platform.catalog, shuffle_partitions=2)


def parsed(sql: str) -> exp.Expression:
    return sqlglot.parse_one(sql, read="duckdb")


def test_a_run_past_its_time_is_cancelled_and_says_nothing_of_why(deployment: Any) -> None:
    platform, _ = deployment
    spark = engine(platform, query_timeout_s=2.0)
    # The test's own data made slow: every claim with every claim of the same gender, twice.
    slow = parsed(
        'SELECT count(*) AS n FROM "health"."claims" AS "a" '
        'JOIN "health"."claims" AS "b" ON "a"."gender" = "b"."gender" '
        'JOIN "health"."claims" AS "c" ON "b"."gender" = "c"."gender"'
    )
    started = time.monotonic()
    with pytest.raises(QueryTimeout) as caught:
        spark.run(slow, max_rows=10)
    assert caught.value.rule == "enclave.limits"
    assert time.monotonic() - started < 60
    # The session is still usable after the cancellation (with the usual time: 2 s is
    # tight for any query on a loaded two-core machine, where CI saw the count time out).
    spark.close()
    again = engine(platform)
    table = again.run(parsed('SELECT count(*) AS n FROM "health"."claims" AS "c"'), max_rows=10)
    assert table.column("n")[0].as_py() > 0
    again.close()


def test_more_rows_than_the_cap_are_refused_not_truncated(deployment: Any) -> None:
    platform, _ = deployment
    spark = engine(platform)
    query = parsed('SELECT "c"."person_id" FROM "health"."claims" AS "c"')
    with pytest.raises(ResultTooLarge) as caught:
        spark.run(query, max_rows=5)
    assert caught.value.rule == "enclave.max_result_rows"
    assert spark.run(query, max_rows=1_000_000).num_rows > 5
    spark.close()


def test_only_a_select_runs(deployment: Any) -> None:
    platform, _ = deployment
    spark = engine(platform)
    for sql in ('DELETE FROM "health"."claims"', "SET threads = 1"):
        with pytest.raises(QueryRefused) as caught:
            spark.run(parsed(sql), max_rows=10)
        assert caught.value.rule == "engine.unsupported"
    spark.close()


def test_the_result_has_duckdbs_types(deployment: Any) -> None:
    platform, _ = deployment
    spark = engine(platform)
    query = parsed(
        'SELECT "c"."gender" AS "k", count(*) AS "n", sum(count(*)) OVER () AS "t" '
        'FROM "health"."claims" AS "c" GROUP BY "k"'
    )
    with pytest.raises(QueryRefused):  # a window other than lag is not allowed
        spark.run(query, max_rows=10)
    query = parsed(
        'WITH p AS (SELECT "c"."gender" AS "k", count(*) AS "r" FROM "health"."claims" AS "c" '
        'GROUP BY "k") SELECT "k", sum("r") AS "s" FROM p GROUP BY "k"'
    )
    table = spark.run(query, max_rows=10)
    assert table.schema.field("s").type == pa.decimal128(38, 0)  # DuckDB's HUGEINT sum
    spark.close()


def test_a_query_over_two_engines_is_refused(deployment: Any, tmp_path: Path) -> None:
    platform, tokens = build_deployment(tmp_path / "home")
    try:
        with platform.engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE datasets SET engine = 'spark' WHERE id = 'market.enterprises'")
            )
        service = QueryService(platform)
        actor = platform.authority.authenticate(tokens["op-bank"])
        answer = service.explain(actor, W2)
        assert answer["accepted"] is False
        assert answer["rule"] == "engine.mixed"
    finally:
        platform.close()


def test_the_engine_receives_the_rewritten_query_never_operator_text(deployment: Any) -> None:
    platform, tokens = deployment
    received: list[Any] = []
    spark = platform.query_engine("spark")

    class Recording:
        name = "spark"

        def run(self, query: Any, *, max_rows: int | None, before: Any = None) -> pa.Table:
            received.append(query)
            return spark.run(query, max_rows=max_rows, before=before)

        def close(self) -> None:
            pass

    original = platform.query_engine
    platform.query_engine = lambda name="duckdb": Recording()  # type: ignore[method-assign]
    try:
        actor = platform.authority.authenticate(tokens["op-bank"])
        sql = "SELECT district, count(*) AS claims FROM health.claims GROUP BY district"
        QueryService(platform).run_job(actor, sql)
    finally:
        platform.query_engine = original  # type: ignore[method-assign]
    # The rewrite's DuckDB text (the engine transpiles its AST), not what the operator wrote.
    assert received and all(isinstance(q, str) for q in received)
    rendered = received[0]
    assert "__sbx_pe" in rendered and "__entities" in rendered and sql not in rendered
