"""The G cap's window (one sort, ``lag``) against the join it replaced, stats table by table.

The previous form kept each entity's cells up to its ``G``-th smallest cell hash, found
by an aggregate per entity (``min(h, G)``) joined back to its cells.  Both must choose
the same cells, so every column of the stats table must agree, on data with NULL
entities, NULL keys, NULL values and entities over both caps.
"""

from __future__ import annotations

import hashlib
import math
from decimal import Decimal

import duckdb
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.query.entity_caps import group_cap
from sandbox.query.guard import check_query
from sandbox.query.parse import parse_query
from sandbox.query.rewrite import ContributionBounds, build_plan
from tests.sandbox.query.test_guard import MAX_SQL_LENGTH, access

QUERIES = (
    "SELECT diagnosis_code, count(*), count(DISTINCT person_id), avg(claim_amount), "
    "stddev(claim_amount), count(claim_amount) FILTER (WHERE claim_amount > 100) "
    "FROM health.claims GROUP BY 1",
    "SELECT district, diagnosis_code, count(*), sum(claim_amount) FROM health.claims GROUP BY 1, 2",
)

rows_strategy = st.lists(
    st.tuples(
        st.one_of(st.sampled_from([f"P{i}" for i in range(6)]), st.none()),
        st.one_of(st.sampled_from(["D1", "D2", "D3"]), st.none()),
        st.one_of(st.sampled_from(["A", "B", "C", "D", "E"]), st.none()),
        st.one_of(
            st.decimals(min_value=-1_000, max_value=300_000, places=2, allow_nan=False),
            st.none(),
        ),
    ),
    max_size=60,
)


def _joined_cap(inner_sql: str, group_cols: list[str], g: int) -> list[str]:
    """The form before the window (``rewrite._group_cap`` until December 2026)."""
    h = f"hash({', '.join([*group_cols, '__sbx_e'])})"
    return [
        f'__sbx_pg AS (SELECT *, {h} AS "__sbx_h" FROM ({inner_sql}))',
        f'__sbx_cut AS (SELECT "__sbx_e", list_max(min("__sbx_h", {g})) AS "__sbx_t" '
        f'FROM __sbx_pg GROUP BY "__sbx_e" HAVING count(*) > {g})',
        '__sbx_pe AS (SELECT __sbx_pg.* FROM __sbx_pg LEFT JOIN __sbx_cut USING ("__sbx_e") '
        'WHERE "__sbx_e" IS NOT NULL AND ("__sbx_t" IS NULL OR "__sbx_h" <= "__sbx_t"))',
    ]


def _old_sql(new_sql: str, n_keys: int, g: int) -> str:
    """The same stats query with the joined cap in place of the window."""
    group_cols = [f'"__k{i}"' for i in range(n_keys)]
    new = group_cap("@@", group_cols, g)
    if g == 1:  # its own form: a plain min per entity, joined back
        head, rest = new_sql.split(new[0].split("@@")[0], 1)
        inner, tail = rest.split(new[0].split("@@")[1] + ", " + ", ".join(new[1:]), 1)
        return head + ", ".join(_joined_cap(inner, group_cols, g)) + tail
    head, rest = new_sql.split(new[0].split("@@")[0], 1)
    inner, tail = rest.split(new[0].split("@@")[1] + ", " + new[1], 1)
    return head + ", ".join(_joined_cap(inner, group_cols, g)) + tail


def _database(rows: list[tuple[str | None, str | None, str | None, Decimal | None]]):
    con = duckdb.connect()
    con.execute("CREATE SCHEMA health")
    con.execute(
        "CREATE TABLE health.claims (person_id VARCHAR, district VARCHAR, "
        "diagnosis_code VARCHAR, claim_amount DECIMAL(12, 2))"
    )
    if rows:
        con.executemany("INSERT INTO health.claims VALUES (?, ?, ?, ?)", rows)
    return con


def _table(con: duckdb.DuckDBPyConnection, sql: str, keys: list[str]) -> list[dict]:
    rows = con.sql(sql).to_arrow_table().to_pylist()
    return sorted(rows, key=lambda r: tuple(str(r[k]) for k in keys))


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@settings(max_examples=60, deadline=None)
@given(
    rows=rows_strategy,
    query=st.sampled_from(QUERIES),
    c=st.integers(min_value=1, max_value=3),
    g=st.integers(min_value=1, max_value=4),
)
def test_window_cap_releases_what_the_joined_cap_did(rows, query, c, g) -> None:
    grants = access()
    checked = check_query(parse_query(query, max_length=MAX_SQL_LENGTH), grants)
    plan = build_plan(checked, grants, bounds=ContributionBounds(c, g), k=1)
    con = _database(rows)
    new = _table(con, plan.stats_sql, plan.keys)
    old = _table(con, _old_sql(plan.stats_sql, len(plan.keys), g), plan.keys)
    assert len(new) == len(old)
    for got, want in zip(new, old, strict=True):
        assert got.keys() == want.keys()
        for column in want:
            assert _same(got[column], want[column]), (column, got, want)


def test_an_entity_keeps_exactly_g_of_its_cells_and_no_other_entity_is_touched() -> None:
    """P1 in all 15 (district, diagnosis) cells keeps G of them; P2 in 2 cells keeps min(G, 2)."""
    rows = [("P1", d, x, Decimal(1)) for d in ("D1", "D2", "D3") for x in "ABCDE"]
    rows += [("P2", "D1", "A", Decimal(1)), ("P2", "D2", "B", Decimal(1))]
    grants = access()
    checked = check_query(parse_query(QUERIES[1], max_length=MAX_SQL_LENGTH), grants)
    for g in (1, 3, 14, 15, 16):
        plan = build_plan(checked, grants, bounds=ContributionBounds(1, g), k=1)
        table = _database(rows).sql(plan.stats_sql).to_arrow_table().to_pylist()
        assert sum(r["__entities"] for r in table) == min(g, 15) + min(g, 2)


def test_the_portable_cap_keeps_each_entitys_g_smallest_cell_hashes() -> None:
    """The portable cap (a window partitioned by entity: Spark runs it in parallel)
    keeps, per entity, the g cells whose MD5 of the canonical string is smallest."""

    def canonical(*values: str) -> str:
        return hashlib.md5("".join(f"{len(v)}:{v}" for v in values).encode()).hexdigest()

    con = duckdb.connect()
    cells = [(f"P{e}", f"D{d}", f"X{x}") for e in range(1, 6) for d in range(3) for x in range(e)]
    con.execute("CREATE TABLE t (e VARCHAR, d VARCHAR, x VARCHAR)")
    con.executemany("INSERT INTO t VALUES (?, ?, ?)", cells)
    inner = 'SELECT d AS "__k0", x AS "__k1", e AS "__sbx_e" FROM t'
    for g in (2, 3, 5):
        ctes = group_cap(inner, ['"__k0"', '"__k1"'], g, portable=["text", "text", "text"])
        assert "PARTITION BY" in ctes[-1]
        sql = f'WITH {", ".join(ctes)} SELECT "__sbx_e", "__k0", "__k1" FROM __sbx_pe'
        kept = sorted(con.sql(sql).fetchall())
        want = []
        for e in sorted({c[0] for c in cells}):
            mine = sorted((c for c in cells if c[0] == e), key=lambda c: canonical(c[1], c[2], e))
            want += [(e, d, x) for e, d, x in mine[:g]]
        assert kept == sorted(want)
