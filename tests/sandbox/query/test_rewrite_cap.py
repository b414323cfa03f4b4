"""The per-entity contribution cap of the stats query against a plain Python reference.

Under a budget each entity keeps the G (group, entity) cells whose DuckDB ``hash(keys,
entity)`` is smallest, counts at most C rows in each, and sums its mean clamped to the
column's bounds times its rows capped at C (``entity_caps.mean_clamped``); where the query
also has a variance of the measure, each value is clamped instead and the cell's sum
scaled to C of its rows (its mean times C).  The reference
below does that cell by cell in Python; DuckDB is asked only for the hash of each cell's
key and entity (the order that defines "smallest").
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.enclave.demo_data import demo_spec
from sandbox.query.guard import check_query
from sandbox.query.parse import parse_query
from sandbox.query.rewrite import ENTITIES, ContributionBounds, Plan, build_plan
from tests.sandbox.query.test_guard import MAX_SQL_LENGTH, access

LOW, HIGH = demo_spec("health.claims").column("claim_amount").bounds or (0.0, 0.0)
GROUPED = (
    "SELECT diagnosis_code, count(*), count(DISTINCT person_id), sum(claim_amount) "
    "FROM health.claims GROUP BY 1"
)
TOTAL = "SELECT count(*), count(DISTINCT person_id), sum(claim_amount) FROM health.claims"
#: With a variance of the same measure: each value clamped (``rewrite._Stats._by_mean``).
SQUARED = GROUPED.replace(" FROM", ", stddev(claim_amount) FROM")

Row = tuple[str | None, str | None, Decimal | None]  # person_id, diagnosis_code, amount

rows_strategy = st.lists(
    st.tuples(
        st.one_of(st.sampled_from(["P1", "P2", "P3", "P4"]), st.none()),
        st.one_of(st.sampled_from(["A", "B", "C", "D", "E", "F"]), st.none()),
        st.one_of(
            st.decimals(min_value=-1_000, max_value=300_000, places=2, allow_nan=False),
            st.none(),
        ),
    ),
    max_size=40,
)


def plan_of(sql: str, bounds: ContributionBounds | None) -> Plan:
    grants = access()
    checked = check_query(parse_query(sql, max_length=MAX_SQL_LENGTH), grants)
    return build_plan(checked, grants, bounds=bounds, k=1)


def _database(rows: list[Row]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("CREATE SCHEMA health")
    con.execute(
        "CREATE TABLE health.claims (person_id VARCHAR, diagnosis_code VARCHAR, "
        "claim_amount DECIMAL(12, 2))"
    )
    if rows:
        con.executemany("INSERT INTO health.claims VALUES (?, ?, ?)", rows)
    return con


def _stats(con: duckdb.DuckDBPyConnection, plan: Plan) -> dict[object, dict[str, float]]:
    """Per group key: entities, capped rows, clamped sum (as the plan's stats name them)."""
    kinds = {s.kind: s.name for s in plan.stats if s.kind in ("rows", "sum")}
    table = con.sql(plan.stats_sql).to_arrow_table().to_pylist()
    key = plan.keys[0] if plan.keys else None
    return {
        (row[key] if key else None): {
            "entities": row[ENTITIES],
            "rows": row[kinds["rows"]],
            "sum": row[kinds["sum"]],
        }
        for row in table
    }


def _reference(
    con: duckdb.DuckDBPyConnection,
    rows: list[Row],
    bounds: ContributionBounds,
    grouped: bool,
    *,
    by_mean: bool = True,
) -> dict[object, dict[str, float]]:
    cells: dict[tuple[object, str], list[Decimal | None]] = defaultdict(list)
    for entity, key, amount in rows:
        if entity is not None:  # rows without an entity are no entity's
            cells[(key if grouped else None, entity)].append(amount)
    kept: list[tuple[object, str]] = []
    by_entity: dict[str, list[tuple[object, str]]] = defaultdict(list)
    for cell in cells:
        by_entity[cell[1]].append(cell)
    for entity_cells in by_entity.values():
        if grouped:

            def order(cell: tuple[object, str]) -> int:
                ((h,),) = con.execute("SELECT hash(?::VARCHAR, ?::VARCHAR)", cell).fetchall()
                return int(h)

            entity_cells = sorted(entity_cells, key=order)[: bounds.max_groups_per_entity]
        kept += entity_cells
    c = bounds.max_rows_per_entity
    out: dict[object, dict[str, float]] = {}
    for key, entity in kept:
        amounts = cells[(key, entity)]
        values = [float(a) for a in amounts if a is not None]
        group = out.setdefault(key, {"entities": 0, "rows": 0, "sum": 0.0})
        group["entities"] += 1
        group["rows"] += min(len(amounts), c)
        if not values:
            continue
        if by_mean:  # the entity's mean clamped, times its values capped at C
            mean = min(HIGH, max(LOW, sum(values) / len(values)))
            group["sum"] += mean * min(len(values), c)
            continue
        clamped = [min(HIGH, max(LOW, v)) for v in values]
        # Scaled to C of its rows where it has more (its mean times C), as counts are.
        scaled = sum(clamped) * min(1.0, c / len(clamped))
        group["sum"] += min(HIGH * c, max(LOW * c, scaled))
    return out


def _assert_equal(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for key, stats in want.items():
        assert got[key]["entities"] == stats["entities"], key
        assert got[key]["rows"] == stats["rows"], key
        assert (got[key]["sum"] or 0.0) == pytest.approx(stats["sum"], abs=1e-6), key


@settings(max_examples=60, deadline=None)
@given(
    rows=rows_strategy,
    c=st.integers(min_value=1, max_value=3),
    g=st.integers(min_value=1, max_value=4),
)
def test_grouped_cap_equals_reference(rows: list[Row], c: int, g: int) -> None:
    bounds = ContributionBounds(max_rows_per_entity=c, max_groups_per_entity=g)
    con = _database(rows)
    _assert_equal(_stats(con, plan_of(GROUPED, bounds)), _reference(con, rows, bounds, True))


@settings(max_examples=40, deadline=None)
@given(
    rows=rows_strategy,
    c=st.integers(min_value=1, max_value=3),
    g=st.integers(min_value=1, max_value=4),
)
def test_with_a_variance_each_value_is_clamped(rows: list[Row], c: int, g: int) -> None:
    """A variance sums clamped squares, centred with the sum of the same values: both
    clamp each value, or the centred squares could leave their bounds."""
    bounds = ContributionBounds(max_rows_per_entity=c, max_groups_per_entity=g)
    con = _database(rows)
    want = _reference(con, rows, bounds, True, by_mean=False)
    _assert_equal(_stats(con, plan_of(SQUARED, bounds)), want)


def test_an_entitys_mean_is_clamped_not_each_value() -> None:
    """One person with a claim above the bound and one below keeps the total their mean
    allows; clamping each value would lose what lies above the bound."""
    above = Decimal(HIGH) + 5_000
    rows: list[Row] = [("P1", "A", above), ("P1", "A", Decimal(1_000))]
    con = _database(rows)
    got = _stats(con, plan_of(GROUPED, ContributionBounds(2, 1)))
    assert got["A"]["sum"] == pytest.approx(float(above) + 1_000)
    squared = _stats(con, plan_of(SQUARED, ContributionBounds(2, 1)))
    assert squared["A"]["sum"] == pytest.approx(HIGH + 1_000)


@settings(max_examples=30, deadline=None)
@given(rows=rows_strategy, c=st.integers(min_value=1, max_value=3))
def test_total_without_keys_equals_reference(rows: list[Row], c: int) -> None:
    """One group: the cap cannot bind and is skipped; rows and sums are still capped."""
    bounds = ContributionBounds(max_rows_per_entity=c, max_groups_per_entity=1)
    con = _database(rows)
    got = _stats(con, plan_of(TOTAL, bounds))
    want = _reference(con, rows, bounds, False)
    if not want:  # no entity at all: the global aggregate has one row of nothing
        assert all(s["entities"] == 0 for s in got.values())
        return
    _assert_equal(got, want)


def test_the_cap_binds_on_an_entity_with_many_groups() -> None:
    """One person in six groups keeps exactly G of them; the stats carry no other."""
    rows: list[Row] = [("P1", key, Decimal(10)) for key in "ABCDEF"]
    bounds = ContributionBounds(max_rows_per_entity=1, max_groups_per_entity=2)
    con = _database(rows)
    got = _stats(con, plan_of(GROUPED, bounds))
    assert sum(s["entities"] for s in got.values()) == 2
    _assert_equal(got, _reference(con, rows, bounds, True))


def test_total_without_keys_has_no_cap_stage() -> None:
    assert "__sbx_h" not in plan_of(TOTAL, ContributionBounds(2, 1)).stats_sql
    assert "__sbx_h" in plan_of(GROUPED, ContributionBounds(2, 1)).stats_sql
    assert "QUALIFY" in plan_of(GROUPED, ContributionBounds(2, 2)).stats_sql


def test_no_groups_per_entity_fails_closed() -> None:
    with pytest.raises(ValueError, match="max_groups_per_entity"):
        plan_of(GROUPED, ContributionBounds(2, 0))


@pytest.mark.parametrize(
    ("also", "by_mean"),
    [
        ("", True),
        (", count(claim_amount)", True),
        (", stddev(claim_amount)", False),
        (", var_pop(claim_amount)", False),
        (", corr(claim_amount, age)", False),
        (", covar_samp(age, claim_amount)", False),
        (", regr_slope(claim_amount, age)", False),
        (", sum(claim_amount * claim_amount)", False),
        (", stddev(claim_amount) FILTER (WHERE age >= 40)", False),
        (", avg(age), stddev(age)", True),  # another measure's square: this one by mean
    ],
)
def test_a_square_or_product_of_the_measure_anywhere_clamps_each_value(
    also: str, by_mean: bool
) -> None:
    """``rewrite._Stats._by_mean``'s scan of the whole query: a variance, co-moment or
    product of the same measure (in SELECT, HAVING or ORDER BY, under any FILTER) makes
    its sums clamp each value, so its centred squares stay within their bounds."""
    above = Decimal(HIGH) + 5_000
    con = duckdb.connect()
    con.execute("CREATE SCHEMA health")
    con.execute(
        "CREATE TABLE health.claims (person_id VARCHAR, diagnosis_code VARCHAR, "
        "claim_amount DECIMAL(12, 2), age INTEGER)"
    )
    con.executemany(
        "INSERT INTO health.claims VALUES (?, ?, ?, ?)",
        [("P1", "A", above, 40), ("P1", "A", Decimal(1_000), 41)],
    )
    sql = f"SELECT diagnosis_code, avg(claim_amount){also} FROM health.claims GROUP BY 1"
    want = float(above) + 1_000 if by_mean else HIGH + 1_000
    for tail in ("", " HAVING stddev(claim_amount) >= 0", " ORDER BY stddev(claim_amount)"):
        plan = plan_of(sql + tail, ContributionBounds(2, 1))
        rows = con.sql(plan.stats_sql).to_arrow_table().to_pylist()
        sums = [s.name for s in plan.stats if s.kind == "sum"]
        got = {row[name] for row in rows for name in sums if row[name] is not None}
        expected = want if not tail else HIGH + 1_000
        assert any(g == pytest.approx(expected) for g in got), (also, tail, got)
