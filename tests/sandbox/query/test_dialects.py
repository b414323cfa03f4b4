"""Other dialects' spellings: read as DuckDB's where unambiguous, else refused with the forms."""

from __future__ import annotations

import pytest
import sqlglot
from sqlglot import exp

from sandbox.core.errors import QueryRefused
from sandbox.query.dialects import alternatives, respell, top_to_limit
from tests.sandbox.query.test_guard import guard


def _respelled(expression: str) -> str:
    root = sqlglot.parse_one(f"SELECT {expression}", read="duckdb")
    respell(root)
    return root.sql(dialect="duckdb")


@pytest.mark.parametrize(
    ("written", "duckdb"),
    [
        ("std(x)", "SELECT STDDEV_POP(x)"),  # MySQL: the population standard deviation
        ("var(x)", "SELECT VARIANCE(x)"),  # T-SQL: the sample variance
        ("varp(x)", "SELECT VAR_POP(x)"),
        ("stdevp(x)", "SELECT STDDEV_POP(x)"),
        ("date_part('year', d)", "SELECT EXTRACT(YEAR FROM d)"),
        ("now()", "SELECT CURRENT_TIMESTAMP"),
        ("mean(x)", "SELECT AVG(x)"),  # DuckDB's own alias, unknown to sqlglot's reader
        ("count(1), count('x'), count()", "SELECT COUNT(*), COUNT(*), COUNT(*)"),
        ("percentile_cont(0.5) WITHIN GROUP (ORDER BY x)", "SELECT QUANTILE_CONT(x, 0.5)"),
        ("percentile_disc(0.9) WITHIN GROUP (ORDER BY x)", "SELECT QUANTILE_DISC(x, 0.9)"),
        ("std(a + b) + var(c || 'x')", "SELECT STDDEV_POP(a + b) + VARIANCE(c || 'x')"),
    ],
)
def test_an_unambiguous_spelling_is_read_as_duckdb(written: str, duckdb: str) -> None:
    assert _respelled(written) == duckdb


def test_arguments_stay_duckdb_expressions() -> None:
    """``||`` is OR in MySQL: the argument must not be read in the other dialect."""
    root = sqlglot.parse_one("SELECT std(a || b)", read="duckdb")
    respell(root)
    assert root.find(exp.DPipe) is not None and root.find(exp.Or) is None


@pytest.mark.parametrize("written", ["isnull(x)", "frobnicate(x)", "e()"])
def test_an_ambiguous_or_unknown_function_is_left_alone(written: str) -> None:
    assert _respelled(written) == f"SELECT {written.upper().split('(')[0]}({written.split('(')[1]}"


def test_an_ambiguous_function_is_refused_with_the_duckdb_forms() -> None:
    node = sqlglot.parse_one("SELECT isnull(x)", read="duckdb").expressions[0]
    assert isinstance(node, exp.Anonymous)
    assert "(x is null)" in alternatives(node)
    with pytest.raises(QueryRefused) as info:
        guard("SELECT count(*) FROM health.claims WHERE isnull(district)")
    assert info.value.rule == "guard.function"
    assert "function isnull()" in info.value.message and "(x is null)" in info.value.message


@pytest.mark.parametrize(
    ("written", "limited"),
    [
        ("SELECT TOP 10 a FROM t", "SELECT a FROM t LIMIT 10"),
        ("select top 5 a, b FROM t ORDER BY b DESC", "SELECT a, b FROM t ORDER BY b DESC LIMIT 5"),
        ("SELECT DISTINCT TOP 3 a FROM t", "SELECT DISTINCT a FROM t LIMIT 3"),
        (
            "WITH c AS (SELECT a FROM t) SELECT TOP 2 a FROM c",
            "WITH c AS (SELECT a FROM t) SELECT a FROM c LIMIT 2",
        ),
    ],
)
def test_top_is_read_as_limit(written: str, limited: str) -> None:
    assert top_to_limit(written) == limited


@pytest.mark.parametrize(
    "written",
    [
        "SELECT TOP 10 PERCENT a FROM t",
        "SELECT TOP 10 a FROM t LIMIT 3",
        "SELECT a FROM (SELECT TOP 10 a FROM t) s",
        "SELECT TOP 1 a FROM t UNION ALL SELECT TOP 1 a FROM t",
        "SELECT TOP x a FROM t",
        "SELECT a AS top FROM t",
    ],
)
def test_top_anywhere_else_is_not_rewritten(written: str) -> None:
    assert top_to_limit(written) is None


def test_respelled_functions_keep_every_guard_rule() -> None:
    with pytest.raises(QueryRefused) as info:
        guard("SELECT district, std(person_id) FROM health.claims GROUP BY 1")
    assert info.value.rule == "guard.identifier"
    assert "std()" in info.value.message  # named as written, not as stddev_pop()
    with pytest.raises(QueryRefused) as info:
        guard("SELECT count(*) FROM health.claims WHERE date_part('year', id_number) = 1990")
    assert info.value.rule == "guard.l4_column"


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT TOP 10 district, count(*) AS n FROM health.claims GROUP BY 1 ORDER BY n DESC",
        "SELECT district, var(claim_amount) AS v, std(claim_amount) AS s FROM health.claims "
        "GROUP BY 1",
        "SELECT date_part('year', claim_date) AS y, count(*) AS n FROM health.claims GROUP BY 1",
    ],
)
def test_analysts_dialect_queries_are_answered(sql: str) -> None:
    plan = guard(sql)
    assert plan.release_sql.startswith("SELECT")


def _function_names() -> list[str]:
    names: set[str] = set()
    stack: list[type] = [exp.Func]
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        try:
            names.update(n.lower() for n in cls.sql_names() if n.isidentifier())
        except NotImplementedError:  # an abstract function class
            continue
    return sorted(names | {"glob", "read_csv", "var", "std", "isnull", "e", "weekday"})


def test_no_function_name_makes_the_parser_fail_other_than_by_refusing() -> None:
    """Every function name sqlglot knows, called in WHERE and FROM: a refusal or a plan."""
    for name in _function_names():
        for sql in (
            f"SELECT count(*) FROM health.claims WHERE {name}(district) IS NULL",
            f"SELECT count(*) FROM health.claims WHERE {name}('x', district, 1) IS NULL",
            f"SELECT count(*) FROM {name}('/etc/passwd')",
        ):
            try:
                guard(sql)
            except QueryRefused:
                pass


@pytest.mark.parametrize(
    ("written", "limit"),
    [
        (
            "SELECT a FROM t ORDER BY a FETCH FIRST 5 ROWS ONLY",
            "SELECT a FROM t ORDER BY a LIMIT 5",
        ),
        ("SELECT a FROM t FETCH NEXT 2 ROWS ONLY", "SELECT a FROM t LIMIT 2"),
        ("SELECT a FROM t FETCH FIRST 5 ROWS WITH TIES", None),
        ("SELECT a FROM t FETCH FIRST 5 PERCENT ROWS ONLY", None),
    ],
)
def test_fetch_first_is_read_as_limit(written: str, limit: str | None) -> None:
    root = sqlglot.parse_one(written, read="duckdb")
    respell(root)
    if limit is None:
        assert root.find(exp.Fetch) is not None
    else:
        assert root.sql(dialect="duckdb") == limit


def test_a_descending_within_group_is_left_alone() -> None:
    root = sqlglot.parse_one(
        "SELECT percentile_disc(0.9) WITHIN GROUP (ORDER BY x DESC) FROM t", read="duckdb"
    )
    respell(root)
    assert root.find(exp.WithinGroup) is not None


@pytest.mark.parametrize(
    ("written", "filtered"),
    [
        ("sum(CASE WHEN a > 1 THEN 1 ELSE 0 END)", "SELECT COUNT(*) FILTER(WHERE a > 1)"),
        ("count(CASE WHEN a THEN 1 END)", "SELECT COUNT(*) FILTER(WHERE a)"),
        ("count(CASE WHEN a THEN x END)", "SELECT COUNT(x) FILTER(WHERE a)"),
        ("count(DISTINCT CASE WHEN a THEN p END)", "SELECT COUNT(DISTINCT p) FILTER(WHERE a)"),
        ("avg(CASE WHEN a THEN x ELSE NULL END)", "SELECT AVG(x) FILTER(WHERE a)"),
        ("sum(if(a, x, NULL))", "SELECT SUM(x) FILTER(WHERE a)"),
        (
            "count(CASE WHEN a THEN 1 END) FILTER (WHERE b OR c)",
            "SELECT COUNT(*) FILTER(WHERE (b OR c) AND (a))",
        ),
        # a sum's ELSE 0 adds nothing (where nothing matches: NULL, as a withheld cell)
        ("sum(CASE WHEN a THEN x ELSE 0 END)", "SELECT SUM(x) FILTER(WHERE a)"),
        # not equal to a FILTER (two branches; an average over zeros): left as written
        (
            "sum(CASE WHEN a THEN x WHEN b THEN y END)",
            "SELECT SUM(CASE WHEN a THEN x WHEN b THEN y END)",
        ),
        ("avg(CASE WHEN a THEN x ELSE 0 END)", "SELECT AVG(CASE WHEN a THEN x ELSE 0 END)"),
        # DuckDB's count_if (and countif): the rows where the condition is true
        ("count_if(a > 1)", "SELECT COUNT(*) FILTER(WHERE a > 1)"),
        ("countif(a)", "SELECT COUNT(*) FILTER(WHERE a)"),
        ("count_if(a) FILTER (WHERE b)", "SELECT COUNT(*) FILTER(WHERE (b) AND (a))"),
    ],
)
def test_a_conditional_aggregate_is_read_as_its_filter(written: str, filtered: str) -> None:
    assert _respelled(written) == filtered


def test_a_conditional_aggregate_keeps_every_guard_rule() -> None:
    with pytest.raises(QueryRefused) as info:
        guard("SELECT sum(CASE WHEN name = 'x' THEN 1 ELSE 0 END) FROM health.claims")
    assert info.value.rule == "guard.identifier"
    with pytest.raises(QueryRefused) as info:
        guard("SELECT count(CASE WHEN id_number LIKE '1101%' THEN 1 END) FROM health.claims")
    assert info.value.rule == "guard.l4_column"
    with pytest.raises(QueryRefused) as info:
        guard("SELECT count_if(id_number LIKE '1101%') FROM health.claims")
    assert info.value.rule == "guard.l4_column"
