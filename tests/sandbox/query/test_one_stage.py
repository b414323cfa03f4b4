"""One stage where each (group, entity) cell is one row: the same stats as two stages.

Where a dataset's every row is a distinct entity (``DatasetAccess.entity_is_row``), a query
straight over its table aggregates once per group (``rewrite.one_row_per_cell``).  Each of
these queries' stats tables must equal, column for column, what the per-entity stage
computes, with and without a budget's caps; anything else keeps the two stages.
"""

from __future__ import annotations

import dataclasses

import duckdb
import pytest

from sandbox.enclave.entity_rows import entity_is_row
from sandbox.query.guard import check_query
from sandbox.query.parse import parse_query
from sandbox.query.rewrite import ContributionBounds, Plan, build_plan
from tests.sandbox.query.test_entity_caps import _same
from tests.sandbox.query.test_guard import MAX_SQL_LENGTH, access

E = "market.enterprises"
QUERIES = [
    "SELECT status, count(*) FROM market.enterprises WHERE founded = 2001 GROUP BY 1",
    "SELECT count(*), count(DISTINCT credit_code) FROM market.enterprises",
    "SELECT industry, district, count(*), sum(registered_capital), avg(registered_capital) "
    "FROM market.enterprises GROUP BY 1, 2",
    "SELECT status, variance(registered_capital), stddev(registered_capital), "
    "min(founded), max(founded) FROM market.enterprises GROUP BY 1",
    "SELECT district, count(*) FILTER (WHERE status = 'active'), "
    "sum(registered_capital) FILTER (WHERE founded > 2010), count(registered_capital) "
    "FROM market.enterprises GROUP BY 1 HAVING count(*) > 3 ORDER BY 2 DESC LIMIT 5",
    "SELECT founded, count(*) FROM market.enterprises WHERE district IS NOT NULL GROUP BY 1",
    "SELECT avg(registered_capital), stddev_pop(registered_capital) FROM market.enterprises",
]
BOUNDS = [None, ContributionBounds(1, 1), ContributionBounds(2, 3)]


def _grants(fact: bool):
    grants = access(groupable=frozenset({"founded", "industry", "district", "status"}))
    grants[E] = dataclasses.replace(grants[E], entity_is_row=fact)
    return grants


def _plan(sql: str, fact: bool, bounds: ContributionBounds | None, k: int = 3) -> Plan:
    grants = _grants(fact)
    checked = check_query(parse_query(sql, max_length=MAX_SQL_LENGTH), grants)
    return build_plan(checked, grants, bounds=bounds, k=k)


def _rows(con: duckdb.DuckDBPyConnection, plan: Plan) -> tuple[object, list[dict]]:
    table = con.sql(plan.stats_sql).to_arrow_table()
    rows = sorted(table.to_pylist(), key=lambda r: tuple(str(r[k]) for k in plan.keys))
    return table.schema, rows


@pytest.mark.parametrize("bounds", BOUNDS, ids=["exact", "C1G1", "C2G3"])
@pytest.mark.parametrize("sql", QUERIES, ids=range(len(QUERIES)))
def test_one_stage_equals_two_stages(
    raw_demo: duckdb.DuckDBPyConnection, sql: str, bounds: ContributionBounds | None
) -> None:
    one, two = _plan(sql, True, bounds), _plan(sql, False, bounds)
    assert one.one_stage and not two.one_stage
    assert "__sbx_pe" not in one.stats_sql and "__sbx_pe" in two.stats_sql
    assert [s.name for s in one.stats] == [s.name for s in two.stats]
    (got_schema, got), (want_schema, want) = _rows(raw_demo, one), _rows(raw_demo, two)
    assert got_schema == want_schema  # the same types: released outputs keep theirs
    assert got, sql  # the demo has rows for every query here
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.keys() == w.keys()
        for column in w:
            assert _same(g[column], w[column]), (column, g[column], w[column])


@pytest.mark.parametrize(
    "sql",
    [
        # a derived table could repeat rows; a join does; a quantile samples per entity
        "SELECT status, count(*) FROM (SELECT * FROM market.enterprises) t GROUP BY 1",
        "SELECT e.status, count(*) FROM market.enterprises e JOIN hrss.social_insurance s "
        "ON s.credit_code = e.credit_code GROUP BY 1",
    ],
)
def test_two_stages_where_a_cell_may_hold_several_rows(sql: str) -> None:
    assert not _plan(sql, True, None).one_stage


def test_a_quantile_keeps_the_per_entity_sample() -> None:
    sql = "SELECT status, median(registered_capital) FROM market.enterprises GROUP BY 1"
    assert not _plan(sql, True, ContributionBounds(1, 1)).one_stage


def test_without_the_fact_two_stages(raw_demo: duckdb.DuckDBPyConnection) -> None:
    assert not _plan(QUERIES[0], False, None).one_stage


class _Rows:
    """The enclave's query call over a plain DuckDB (what entity_is_row asks of it)."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    def query(self, sql: str):
        return self.con.sql(sql).to_arrow_table()


def test_the_fact_is_counted_not_declared() -> None:
    con = duckdb.connect()
    con.execute("CREATE SCHEMA market")
    con.execute(
        "CREATE TABLE market.enterprises AS SELECT 'c' || i AS credit_code FROM range(5) t(i)"
    )
    spec = _grants(False)[E].spec
    assert entity_is_row(_Rows(con), spec)  # type: ignore[arg-type]
    con.execute("INSERT INTO market.enterprises VALUES ('c1')")  # a duplicate key
    assert not entity_is_row(_Rows(con), spec)  # type: ignore[arg-type]
    con.execute("DELETE FROM market.enterprises WHERE credit_code = 'c1'")
    con.execute("INSERT INTO market.enterprises VALUES (NULL)")  # a row without a key
    assert not entity_is_row(_Rows(con), spec)  # type: ignore[arg-type]
    undeclared = dataclasses.replace(spec, one_row_per_entity=False)
    con.execute("DELETE FROM market.enterprises WHERE credit_code IS NULL")
    assert not entity_is_row(_Rows(con), undeclared)  # type: ignore[arg-type]


def test_a_run_over_a_version_replaced_meanwhile_is_refused(tmp_path) -> None:
    """The one-stage plan rests on a fact of the version it was prepared for: a run whose
    dataset got a new version between authorization and the run releases nothing."""
    from sandbox.core.errors import QueryRefused
    from sandbox.enclave.demo_data import demo_sources
    from sandbox.query.service import QueryService
    from tests.conftest import build_deployment

    platform, tokens = build_deployment(tmp_path / "home")
    try:
        service = QueryService(platform)
        bank = platform.authority.authenticate(tokens["op-bank"])
        sql = QUERIES[0]
        auth = service._authorize(bank, sql, "r-1", None, None)
        assert auth.prepared.plan.one_stage  # the demo's enterprises: one row each
        assert service.run_job(bank, sql) is not None  # unchanged: it runs
        spec, source = next((s, src) for s, src in demo_sources(0.01) if s.id == E)
        platform.register(spec, source, registered_by="test")
        before = platform.audit.size()
        with pytest.raises(QueryRefused) as info:
            service._run(bank, sql, None, "r-2", None, hold=True, auth=auth)
        assert info.value.rule == "catalog.version_changed"
        assert platform.audit.size() == before + 1  # the refusal is on the trail
        # Prepared afresh for the new version, it runs (and the fact is counted again).
        assert service.run_job(bank, sql) is not None
        assert (E, auth.records[E].version + 1) in service._entity_rows
    finally:
        platform.close()


def test_a_dataset_of_one_row_per_entity_without_bounds_runs_under_c_g_one(tmp_path) -> None:
    """Declared one row per entity, verified, no [contribution]: a query over it alone runs
    under C = G = 1 (its data's bounds), a join under the platform's default; without the
    verified fact, the default."""
    from sandbox.enclave.demo_data import demo_sources
    from sandbox.query.service import QueryService
    from tests.conftest import build_deployment

    platform, tokens = build_deployment(tmp_path / "home")
    try:
        service = QueryService(platform)
        bank = platform.authority.authenticate(tokens["op-bank"])
        spec, source = next((s, src) for s, src in demo_sources(0.01) if s.id == E)
        default = (
            service.contribution.max_rows_per_entity,
            service.contribution.max_groups_per_entity,
        )
        assert default == (2, 3)
        join = (
            "SELECT e.status, count(*) FROM market.enterprises e JOIN hrss.social_insurance s "
            "ON s.credit_code = e.credit_code GROUP BY 1"
        )

        def bounds(sql: str, rid: str) -> tuple[int, int]:
            params = service._authorize(bank, sql, rid, None, None).prepared.params
            return params.max_rows_per_entity, params.max_groups_per_entity

        platform.register(
            dataclasses.replace(spec, contribution=None), source, registered_by="test"
        )
        assert bounds(QUERIES[0], "r-1") == (1, 1)
        assert bounds(join, "r-2") == default  # least of the default and hrss's 12, 12
        undeclared = dataclasses.replace(spec, contribution=None, one_row_per_entity=False)
        platform.register(undeclared, source, registered_by="test")
        assert bounds(QUERIES[0], "r-3") == default  # not declared: not counted, not assumed
        platform.register(spec, source, registered_by="test")  # its own [contribution] again
        assert spec.contribution is not None
        assert bounds(QUERIES[0], "r-4") == (
            spec.contribution.max_rows_per_entity,
            spec.contribution.max_groups_per_entity,
        )
    finally:
        platform.close()
