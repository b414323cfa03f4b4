"""Predicates left without TRY cannot raise on any row (``sandbox/query/cannot_raise.py``).

Three layers: the listed forms (``cannot_raise_cases/predicates.jsonl``), a property
that whatever :func:`cannot_raise` accepts runs in DuckDB without an error over a
table of every extreme value and NULL, and the rewrite on the demo catalog (its real
column types): bare where the list allows, TRY elsewhere, the same rows either way.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
import sqlglot
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlglot import exp

from sandbox.core.access import DatasetAccess
from sandbox.core.classification import Level
from sandbox.enclave.demo_data import DEMO_DATASETS
from sandbox.query.cannot_raise import cannot_raise, column_types, split_and
from sandbox.query.guard import check_query
from sandbox.query.parse import parse_query
from sandbox.query.rewrite import build_plan
from tests.sandbox.query.test_guard import GROUPABLE, MAX_SQL_LENGTH

CASES = Path(__file__).parent / "cannot_raise_cases" / "predicates.jsonl"

#: The test table ``d.t``: a column of each kind, named by its type.
TYPES = {
    "ti": "TINYINT",
    "i": "INTEGER",
    "b": "BIGINT",
    "h": "HUGEINT",
    "u": "UBIGINT",
    "s": "VARCHAR",
    "m": "DECIMAL(12,2)",
    "f": "DOUBLE",
    "dt": "DATE",
}
#: Every extreme of each column, and NULL.
ROWS = [
    ("-128", "-2147483648", "-9223372036854775808", "-170141183460469231731687303715884105728",
     "0", "abc", "-9999999999.99", "-1e308", "0001-01-01"),
    ("127", "2147483647", "9223372036854775807", "170141183460469231731687303715884105727",
     "18446744073709551615", "", "9999999999.99", "1e308", "9999-12-31"),
    ("0", "0", "0", "0", "1", "0", "0.01", "0", "2025-06-01"),
]  # fmt: skip


def _where(sql: str) -> exp.Where:
    where = sqlglot.parse_one(sql, read="duckdb").find(exp.Where)
    assert where is not None
    return where


def _accepts(sql: str) -> bool:
    where = _where(sql)
    select = where.find_ancestor(exp.Select)
    assert select is not None
    return cannot_raise(where.this, column_types(select, {"d.t": TYPES}))


@pytest.mark.parametrize(
    "case", [json.loads(line) for line in CASES.read_text().splitlines()], ids=lambda c: c["why"]
)
def test_the_listed_forms(case: dict) -> None:
    with_ = f"WITH {case['with']} " if "with" in case else ""
    sql = f"{with_}SELECT count(*) FROM {case.get('from', 'd.t AS t')} WHERE {case['where']}"
    assert _accepts(sql) is case["bare"]


@pytest.fixture(scope="module")
def hostile() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("CREATE SCHEMA d")
    columns = ", ".join(f"{name} {kind}" for name, kind in TYPES.items())
    con.execute(f"CREATE TABLE d.t ({columns})")
    for row in ROWS:
        con.execute(f"INSERT INTO d.t VALUES ({', '.join('?' * len(row))})", list(row))
    con.execute(f"INSERT INTO d.t VALUES ({', '.join(['NULL'] * len(TYPES))})")
    return con


LITERALS = st.sampled_from(
    ["0", "-1", "127", "128", "-129", "2147483648", "-9223372036854775808",
     "9223372036854775807", "9223372036854775808", "007", "1.5", "1e3", "'x'", "''",
     "'0'", "'abc'", "'2025-01-01'", "NULL", "-(-5)"]
)  # fmt: skip
COLUMNS = st.sampled_from([f"t.{name}" for name in TYPES])
OPS = st.sampled_from(["=", "<>", "<", "<=", ">", ">="])


def predicates() -> st.SearchStrategy[str]:
    comparison = st.one_of(
        st.builds(lambda c, o, v: f"{c} {o} {v}", COLUMNS, OPS, LITERALS),
        st.builds(lambda c, o, v: f"{v} {o} {c}", COLUMNS, OPS, LITERALS),
        st.builds(lambda c, a, b: f"{c} BETWEEN {a} AND {b}", COLUMNS, LITERALS, LITERALS),
        st.builds(
            lambda c, vs: f"{c} IN ({', '.join(vs)})", COLUMNS, st.lists(LITERALS, min_size=1)
        ),
        st.builds(lambda c: f"{c} IS NULL", COLUMNS),
        st.builds(lambda c: f"{c} + 1 > 0", COLUMNS),
    )
    return st.recursive(
        comparison,
        lambda inner: st.one_of(
            st.builds(lambda a, b: f"({a} AND {b})", inner, inner),
            st.builds(lambda a, b: f"({a} OR {b})", inner, inner),
            st.builds(lambda a: f"NOT ({a})", inner),
        ),
        max_leaves=4,
    )


@settings(max_examples=400, deadline=None)
@given(predicate=predicates())
def test_whatever_it_accepts_runs_without_an_error(hostile, predicate: str) -> None:
    sql = f"SELECT count(*) FROM d.t AS t WHERE {predicate}"
    if not _accepts(sql):
        return
    hostile.execute(sql).fetchall()  # an error here would be a bit about the rows


def test_a_top_level_and_splits_through_parentheses() -> None:
    where = _where(
        "SELECT 1 FROM d.t AS t WHERE ((t.i = 1 AND t.s = 'a') AND (t.b > 2 OR t.f > 1))"
    )
    assert [p.sql() for p in split_and(where.this)] == [
        "t.i = 1",
        "t.s = 'a'",
        "(t.b > 2 OR t.f > 1)",
    ]


# -- the rewrite, on the demo catalog's real column types ----------------------------------


@pytest.fixture(scope="module")
def catalog_access(demo_platform) -> dict[str, DatasetAccess]:
    return {
        d: DatasetAccess(demo_platform.catalog.get(d).spec, Level.L3, None, GROUPABLE)
        for d in DEMO_DATASETS
    }


def _stats_sql(sql: str, grants: dict[str, DatasetAccess]) -> str:
    checked = check_query(parse_query(sql, max_length=MAX_SQL_LENGTH), grants)
    return build_plan(checked, grants).stats_sql


@pytest.mark.parametrize(
    ("where", "bare", "tried"),
    [
        ("founded = 2001", '"enterprises"."founded" = 2001', None),
        ("status IN ('active', 'revoked') AND founded BETWEEN 1995 AND 2005",
         "\"enterprises\".\"status\" IN ('active', 'revoked')", None),
        ("founded > 2000 AND registered_capital > 1000000",
         '"enterprises"."founded" > 2000', 'TRY("enterprises"."registered_capital" > 1000000)'),
        ("founded > 2000 OR registered_capital > 1000000", None, "TRY("),
        ("district = 'x' OR founded = '2001'", None, "TRY("),
    ],
)  # fmt: skip
def test_the_rewrite_leaves_bare_only_what_cannot_raise(
    demo_platform, catalog_access, where: str, bare: str | None, tried: str | None
) -> None:
    sql = f"SELECT status, count(*) FROM market.enterprises WHERE {where} GROUP BY 1"
    stats = _stats_sql(sql, catalog_access)
    clause = stats.split(" WHERE ", 1)[1]
    if bare is not None:
        assert bare in clause and f"TRY({bare}" not in clause
    if tried is not None:
        assert tried in clause
    else:
        assert "TRY(" not in clause.split(" GROUP BY ")[0]
    # The same rows with TRY around everything: counts per status equal the raw query's.
    with demo_platform.enclave.cursor() as cur:
        expected = sorted(cur.sql(sql).fetchall())
        got = sorted(
            (row[0], row[2]) for row in cur.sql(stats).fetchall()
        )  # __k0, __entities, __r1
    assert [(k, int(n)) for k, n in got] == [(k, int(n)) for k, n in expected]


def test_without_typed_columns_everything_keeps_try() -> None:
    """The shipped demo classifications declare few types: nothing is trusted untyped."""
    from tests.sandbox.query.test_guard import access

    stats = _stats_sql(
        "SELECT status, count(*) FROM market.enterprises WHERE founded = 2001 GROUP BY 1",
        access(),
    )
    assert 'TRY("enterprises"."founded" = 2001)' in stats


def test_a_plan_with_a_bare_predicate_runs_only_on_its_version(tmp_path) -> None:
    """Its predicate stands bare because of the column types of the version it was planned
    on: after a new version (whose types may differ) it is refused before any row is read,
    and planned afresh it runs."""
    from sandbox.core.errors import QueryRefused
    from sandbox.enclave.demo_data import demo_sources
    from sandbox.query.service import QueryService
    from tests.conftest import build_deployment

    platform, tokens = build_deployment(tmp_path / "home")
    try:
        service = QueryService(platform)
        bank = platform.authority.authenticate(tokens["op-bank"])
        sql = (
            "SELECT industry, count(*) FROM market.enterprises "
            "WHERE status = 'active' AND founded > 2000 GROUP BY 1"
        )
        auth = service._authorize(bank, sql, "r-1", None, None)
        assert auth.prepared.plan.typed
        assert "TRY(" not in auth.prepared.plan.stats_sql.split(" WHERE ", 1)[1]
        spec, source = next(
            (s, src) for s, src in demo_sources(0.01) if s.id == "market.enterprises"
        )
        platform.register(spec, source, registered_by="test")
        ran: list[str] = []
        original = platform.enclave.cursor

        def watched():  # the stats query must not run at all
            ran.append("cursor")
            return original()

        platform.enclave.cursor = watched  # type: ignore[method-assign]
        with pytest.raises(QueryRefused) as info:
            service._run(bank, sql, None, "r-2", None, hold=True, auth=auth)
        assert info.value.rule == "catalog.version_changed"
        platform.enclave.cursor = original  # type: ignore[method-assign]
        assert ran == ["cursor"]  # the cursor was taken, and the check refused under it
        assert service.run_job(bank, sql) is not None
    finally:
        platform.close()


def test_declared_join_keys_of_different_types_are_refused(catalog_access) -> None:
    """A key equality runs bare: a text key against a number would be converted value by
    value (one that does not convert fails the run), so such a pair does not join."""
    import dataclasses

    from sandbox.core.errors import QueryRefused

    sql = (
        "SELECT e.industry, count(*) FROM market.enterprises e "
        "JOIN hrss.social_insurance s ON s.credit_code = e.credit_code GROUP BY 1"
    )
    assert _stats_sql(sql, catalog_access)  # the demo's pair: both VARCHAR, it joins
    grants = dict(catalog_access)
    hrss = grants["hrss.social_insurance"]
    columns = tuple(
        dataclasses.replace(c, type="BIGINT") if c.name.lower() == "credit_code" else c
        for c in hrss.spec.columns
    )
    grants["hrss.social_insurance"] = dataclasses.replace(
        hrss, spec=dataclasses.replace(hrss.spec, columns=columns)
    )
    with pytest.raises(QueryRefused) as info:
        _stats_sql(sql, grants)
    assert info.value.rule == "guard.join"
    assert "different types" in info.value.message


def test_a_table_whose_columns_differ_from_its_version_is_not_read(tmp_path) -> None:
    """The catalog says the plan's version, but the table's columns are not what that
    version recorded (a registration whose control-plane commit failed after the
    table's): refused on the cursor the run would read, before any row."""
    from sandbox.core.errors import QueryRefused
    from sandbox.query.service import QueryService
    from tests.conftest import build_deployment

    platform, tokens = build_deployment(tmp_path / "home")
    try:
        service = QueryService(platform)
        bank = platform.authority.authenticate(tokens["op-bank"])
        sql = "SELECT industry, count(*) FROM market.enterprises WHERE founded > 2000 GROUP BY 1"
        auth = service._authorize(bank, sql, "r-1", None, None)
        assert auth.prepared.plan.typed
        assert service.run_job(bank, sql) is not None  # as recorded: it runs
        with platform.enclave.writer() as con:
            con.execute("ALTER TABLE market.enterprises ALTER founded TYPE VARCHAR")
            con.execute("UPDATE market.enterprises SET founded = 'unknown' WHERE founded = '2003'")
        with pytest.raises(QueryRefused) as info:
            service._run(bank, sql, None, "r-2", None, hold=True, auth=auth)
        assert info.value.rule == "catalog.version_changed"
    finally:
        platform.close()


def test_startup_refuses_a_table_whose_columns_the_catalog_does_not_describe(tmp_path) -> None:
    """What a registration whose control-plane commit failed after the table's leaves."""
    from sandbox.core.errors import EnclaveError
    from sandbox.startup import check_enclave_contents
    from tests.conftest import build_deployment

    platform, _tokens = build_deployment(tmp_path / "home")
    try:
        check_enclave_contents(platform)  # as registered: it opens
        with platform.enclave.writer() as con:
            con.execute("ALTER TABLE market.enterprises ALTER founded TYPE VARCHAR")
        with pytest.raises(EnclaveError) as info:
            check_enclave_contents(platform)
        assert "other columns for market.enterprises" in info.value.message
    finally:
        platform.close()


def test_a_catalog_commit_failing_after_the_table_is_reported_not_rolled_back(tmp_path) -> None:
    """The table's transaction committed, the catalog's did not: a clear refusal naming what
    to do (before: a ROLLBACK of the committed transaction raised DuckDB's own error)."""
    from contextlib import contextmanager

    from sandbox.core.errors import ConnectorError
    from sandbox.enclave.demo_data import demo_sources
    from sandbox.enclave.registry import register_dataset
    from tests.conftest import build_deployment

    platform, _tokens = build_deployment(tmp_path / "home")
    try:
        real = platform.engine

        class FailingCommit:
            """The control plane, whose transactions fail as they commit."""

            def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
                return getattr(real, name)

            @contextmanager
            def begin(self):  # type: ignore[no-untyped-def]
                with real.begin() as conn:
                    yield conn
                    raise OSError("disk full")  # rolls the catalog's transaction back

        spec, source = next(
            (s, src) for s, src in demo_sources(0.01) if s.id == "market.enterprises"
        )
        with pytest.raises(ConnectorError) as info:
            register_dataset(
                settings=platform.settings,
                control=FailingCommit(),  # type: ignore[arg-type]
                enclave=platform.enclave,
                key=platform.signing_key(),
                spec=spec,
                source=source,
                registered_by="test",
            )
        assert info.value.rule == "registry.catalog"
        assert "register it again" in info.value.message
    finally:
        platform.close()
