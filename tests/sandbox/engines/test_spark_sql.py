"""spark_sql.to_spark: the closed transpile (pure; no Spark needed)."""

from __future__ import annotations

import pytest
import sqlglot

from sandbox.core.errors import QueryRefused
from sandbox.engines.spark_sql import to_spark

SCHEMA = {
    "health.claims": {
        "person_id": "VARCHAR",
        "district": "VARCHAR",
        "claim_amount": "DECIMAL(12,2)",
        "age": "INTEGER",
        "ratio": "DOUBLE",
        "paid_at": "TIMESTAMP",
    }
}
VIEWS = {"health.claims": "__sbx_health_claims_v1"}


def spark(sql: str) -> str:
    return to_spark(sqlglot.parse_one(sql, read="duckdb"), VIEWS, SCHEMA)


def refused(sql: str) -> QueryRefused:
    with pytest.raises(QueryRefused) as caught:
        spark(sql)
    assert caught.value.rule == "engine.unsupported"
    return caught.value


def test_tables_become_the_warehouse_views_and_ctes_stay() -> None:
    out = spark(
        'WITH p AS (SELECT "c"."district" AS k FROM "health"."claims" AS "c") '
        "SELECT k, count(*) FROM p GROUP BY k"
    )
    assert "__sbx_health_claims_v1 AS `c`" in out
    assert "FROM p" in out


def test_top_n_and_kth_extreme_in_spark_words() -> None:
    out = spark(
        'SELECT max("c"."ratio", 2) FILTER (WHERE "c"."age" > 1), '
        'list_extract(min("c"."ratio", 3), 3) FROM "health"."claims" AS "c"'
    )
    assert "SLICE(SORT_ARRAY(COLLECT_LIST(`c`.`ratio`) FILTER(WHERE `c`.`age` > 1), FALSE)" in out
    assert "TRY_ELEMENT_AT(IF(COUNT(`c`.`ratio`) = 0, NULL," in out


def test_try_is_dropped_and_arithmetic_cannot_wrap() -> None:
    out = spark('SELECT TRY("c"."age" * 2 + 1) FROM "health"."claims" AS "c"')
    assert "TRY(" not in out.replace("TRY_", "")
    assert "TRY_ADD(TRY_MULTIPLY(`c`.`age`, 2), 1)" in out


def test_the_portable_hash_renders_alike() -> None:
    text = 'CAST(epoch_us("c"."paid_at") AS VARCHAR)'
    out = spark(
        f"SELECT md5(coalesce(CAST(length({text}) AS VARCHAR) || ':' || {text}, 'n')) "
        'FROM "health"."claims" AS "c"'
    )
    assert "MD5(" in out and "UNIX_MICROS(`c`.`paid_at`)" in out


@pytest.mark.parametrize(
    ("sql", "named"),
    [
        ('SELECT hash("c"."age") FROM "health"."claims" AS "c"', "hash()"),
        ('SELECT "c"."age" / "c"."age" FROM "health"."claims" AS "c"', "division"),
        ('SELECT CAST("c"."ratio" AS INTEGER) FROM "health"."claims" AS "c"', "double to int"),
        ('SELECT CAST("c"."ratio" AS VARCHAR) FROM "health"."claims" AS "c"', "double to text"),
        (
            'SELECT CAST("c"."paid_at" AS VARCHAR) FROM "health"."claims" AS "c"',
            "timestamp to text",
        ),
        (
            'SELECT list_slice(list("c"."age"), 1, 2) FROM "health"."claims" AS "c"',
            "list_slice()",
        ),
        ('SELECT extract(dow FROM "c"."paid_at") FROM "health"."claims" AS "c"', "dow"),
        ('SELECT round("c"."ratio", 1) FROM "health"."claims" AS "c"', "round()"),
        ('SELECT count(*) FROM "other"."table"', "table"),
        ('SELECT "c"."district" LIKE \'a\\_%\' FROM "health"."claims" AS "c"', "LIKE"),
        ('SELECT substr("c"."district", 0, 2) FROM "health"."claims" AS "c"', "substr()"),
        ('SELECT concat("c"."ratio", \'x\') FROM "health"."claims" AS "c"', "concat()"),
        ('SELECT "c"."ratio" // 2 FROM "health"."claims" AS "c"', "//"),
        ('SELECT strftime("c"."paid_at", \'%A\') FROM "health"."claims" AS "c"', "strftime()"),
        (
            'SELECT sum("c"."age") OVER (ORDER BY "c"."age" ROWS UNBOUNDED PRECEDING) '
            'FROM "health"."claims" AS "c"',
            "window",
        ),
        (
            'SELECT sum("__sbx_r") OVER (ORDER BY "__sbx_r" ROWS BETWEEN 1 PRECEDING AND '
            'CURRENT ROW) FROM (SELECT 1 AS "__sbx_r" FROM "health"."claims") AS "c"',
            "window frame",
        ),
    ],
)
def test_what_is_not_known_to_agree_is_refused_by_name(sql: str, named: str) -> None:
    assert named in refused(sql).message


def test_day_of_week_and_month_name_as_duckdb_counts_and_names_them() -> None:
    out = spark(
        'SELECT dayofweek("c"."paid_at"), monthname("c"."paid_at") FROM "health"."claims" AS "c"'
    )
    assert "TRY_SUBTRACT(DAYOFWEEK(`c`.`paid_at`), 1)" in out
    assert "DATE_FORMAT(`c`.`paid_at`, 'MMMM')" in out


def test_only_a_select_runs() -> None:
    for sql in ('DELETE FROM "health"."claims"', "SET threads = 1", "SELECT 1 UNION SELECT 2"):
        tree = sqlglot.parse_one(sql, read="duckdb")
        with pytest.raises(QueryRefused) as caught:
            to_spark(tree, VIEWS, SCHEMA)
        assert caught.value.rule == "engine.unsupported"
        assert "only a SELECT runs" in caught.value.message


def test_the_refusal_echoes_no_literal() -> None:
    message = refused(
        'SELECT round("c"."ratio", 1) FROM "health"."claims" AS "c" '
        'WHERE "c"."district" = \'D-4711-secret\''
    ).message
    assert "4711" not in message


def test_the_query_is_not_changed() -> None:
    tree = sqlglot.parse_one(
        'SELECT TRY("c"."age" + 1) FROM "health"."claims" AS "c"', read="duckdb"
    )
    before = tree.sql(dialect="duckdb")
    to_spark(tree, VIEWS, SCHEMA)
    assert tree.sql(dialect="duckdb") == before


def test_the_total_caps_running_row_total_renders() -> None:
    """The one window sum allowed: the rewrite's whole-number per-cell rows, from the
    start of the entity's cells (``entity_caps.total_cap``)."""
    out = spark(
        'SELECT sum("__sbx_r") OVER (PARTITION BY "e" ORDER BY "h" ROWS BETWEEN UNBOUNDED '
        'PRECEDING AND CURRENT ROW) FROM (SELECT 1 AS "__sbx_r", "c"."person_id" AS "e", '
        '"c"."age" AS "h" FROM "health"."claims" AS "c") AS "x"'
    )
    assert "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW" in out
