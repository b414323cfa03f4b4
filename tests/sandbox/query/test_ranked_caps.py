"""Caps ranked at registration (docs/disclosure.md, "Caps ranked at registration").

A dataset declaring ``caps_at = "registration"`` is copied at registration with each
entity's rows ranked (``sandbox.enclave.ranked_rows``).  A query with a budget and no
WHERE or FILTER but on what is one value per entity then keeps each entity's rows
ranked at most ``T`` and counts it in the groups of its rows ranked at most ``G``
(``rewrite._ranked_stats``).  These tests hold
the real stats query on DuckDB to a Python reference over the copy's ranks, check that
an entity's ranks depend on its own rows only, that removing one entity moves the
statistics by no more than the sensitivities the noise is calibrated to, which queries
take the ranked plan, and that the cells it leaves NULL change no release.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from decimal import Decimal
from unittest.mock import patch

import duckdb
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.core.classification import parse_classification
from sandbox.core.errors import ClassificationError, EnclaveError, QueryRefused
from sandbox.enclave.demo_data import demo_spec
from sandbox.enclave.ranked_rows import RANK, build_ranked, ranked_name, ranked_rows_present
from sandbox.query import rewrite
from sandbox.query.disclosure import DisclosureParams, reads_group_entities
from sandbox.query.guard import check_query
from sandbox.query.noise import seeded_noise
from sandbox.query.parse import parse_query
from sandbox.query.release import prepare, release
from sandbox.query.rewrite import ENTITIES, ContributionBounds, Plan, build_plan
from tests.sandbox.query.test_guard import MAX_SQL_LENGTH, access
from tests.sandbox.query.test_rewrite_cap import GROUPED, HIGH, LOW, Row

CLAIMS = "health.claims"
SPEC = demo_spec(CLAIMS)

rows_strategy = st.lists(
    st.tuples(
        st.one_of(st.sampled_from(["P1", "P2", "P3"]), st.none()),
        st.one_of(st.sampled_from(["A", "B", "C", "D", "E", "F"]), st.none()),
        st.one_of(
            st.decimals(min_value=-1_000, max_value=300_000, places=2, allow_nan=False),
            st.none(),
        ),
    ),
    max_size=50,
)
caps = st.tuples(
    st.integers(min_value=2, max_value=5),  # G
    st.integers(min_value=1, max_value=8),  # T (= C)
)


def _database(rows: list[Row], ids: list[int] | None = None) -> duckdb.DuckDBPyConnection:
    """The demo claims' columns (the ranks hash them all), these rows' values in three;
    ``ids``: each row's claim number (its position by default)."""
    con = duckdb.connect()
    con.execute("CREATE SCHEMA health")
    columns = ", ".join(f'"{c.name}" {c.type or "VARCHAR"}' for c in SPEC.columns)
    con.execute(f"CREATE TABLE health.claims ({columns})")
    for i, (person, diagnosis, amount) in zip(ids or range(len(rows)), rows, strict=True):
        district = None if person is None else "D0" + person[1:]  # one per person, as declared
        con.execute(
            "INSERT INTO health.claims (claim_id, person_id, district, diagnosis_code, "
            "claim_amount) VALUES (?, ?, ?, ?, ?)",
            [f"C{i}", person, district, diagnosis, amount],
        )
    build_ranked(con, SPEC, "health.claims")
    return con


def _access(ranked: bool = True) -> dict:
    grants = access()
    grants[CLAIMS] = replace(grants[CLAIMS], ranked=ranked)
    return grants


def _plan(sql: str, bounds: ContributionBounds, ranked: bool = True) -> Plan:
    grants = _access(ranked)
    checked = check_query(parse_query(sql, max_length=MAX_SQL_LENGTH), grants)
    return build_plan(checked, grants, bounds=bounds, k=1)


def _bounds(g: int, t: int, c: int | None = None) -> ContributionBounds:
    return ContributionBounds(
        max_rows_per_entity=t if c is None else c,
        max_groups_per_entity=g,
        max_total_rows_per_entity=t,
    )


#: A budget under which T binds (T = C = 4 < C·G) and every plan reads the ranked copy.
BUDGET = DisclosureParams(
    k=2, epsilon=1.0, max_rows_per_entity=4, max_groups_per_entity=3, max_total_rows_per_entity=4
)
#: A WHERE on what is one value per person (district, declared values_per_entity = 1).
IN_D01_D03 = GROUPED.replace(" GROUP BY", " WHERE district <> 'D02' GROUP BY")


def _stats(con: duckdb.DuckDBPyConnection, g: int, t: int, sql: str = GROUPED) -> dict:
    plan = _plan(sql, _bounds(g, t))
    assert plan.ranked
    kinds = {s.kind: s.name for s in plan.stats if s.kind in ("rows", "sum")}
    return {
        row[plan.keys[0]]: {
            "entities": row[ENTITIES],
            "rows": row[kinds["rows"]],
            "sum": row[kinds["sum"]] or 0.0,
        }
        for row in con.sql(plan.stats_sql).to_arrow_table().to_pylist()
    }


def _reference(con: duckdb.DuckDBPyConnection, g: int, t: int, without: str | None = None) -> dict:
    """Per group: entities with a row ranked ≤ G there; rows ranked ≤ T; their clamped sum
    (``without``: that person's rows left out, as a WHERE on the district does)."""
    ranked = con.execute(
        f"SELECT person_id, diagnosis_code, claim_amount, {RANK} FROM {ranked_name(SPEC)} "
        "WHERE person_id IS DISTINCT FROM ?",
        [without],
    ).fetchall()
    out: dict[object, dict] = {}
    counted: dict[object, set[str]] = defaultdict(set)
    for person, key, amount, rank in ranked:
        if rank > max(g, t):
            continue
        group = out.setdefault(key, {"entities": 0, "rows": 0, "sum": 0.0})
        if rank <= g:
            counted[key].add(person)
        if rank <= t:
            group["rows"] += 1
            if amount is not None:
                group["sum"] += min(HIGH, max(LOW, float(amount)))
    for key, people in counted.items():
        out[key]["entities"] = len(people)
    return out


def _ranks(con: duckdb.DuckDBPyConnection) -> dict[str, list[tuple[str, int]]]:
    found: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for person, claim, rank in con.execute(
        f"SELECT person_id, claim_id, {RANK} FROM {ranked_name(SPEC)}"
    ).fetchall():
        found[person].append((claim, rank))
    return found


@settings(max_examples=60, deadline=None)
@given(rows=rows_strategy, bounds=caps)
def test_the_ranked_stats_equal_the_reference(rows: list[Row], bounds: tuple[int, int]) -> None:
    con = _database(rows)
    got, want = _stats(con, *bounds), _reference(con, *bounds)
    assert got.keys() == want.keys()
    for key, stats in want.items():
        assert got[key]["entities"] == stats["entities"], key
        assert got[key]["rows"] == stats["rows"], key
        assert got[key]["sum"] == pytest.approx(stats["sum"], abs=1e-6), key


@settings(max_examples=40, deadline=None)
@given(rows=rows_strategy, bounds=caps)
def test_a_where_on_one_value_per_entity_keeps_the_ranks(
    rows: list[Row], bounds: tuple[int, int]
) -> None:
    """``district <> 'D02'`` keeps all of a person's rows or none: the ranked plan gives
    the reference without P2, whose rows the filter drops."""
    con = _database(rows)
    got = _stats(con, *bounds, sql=IN_D01_D03)
    want = _reference(con, *bounds, without="P2")
    assert got.keys() == want.keys()
    for key, stats in want.items():
        assert got[key]["entities"] == stats["entities"], key
        assert got[key]["rows"] == stats["rows"], key
        assert got[key]["sum"] == pytest.approx(stats["sum"], abs=1e-6), key


FILTERED = (
    "SELECT diagnosis_code, count(*) FILTER (WHERE district <> 'D02') AS n, "
    "count(DISTINCT person_id) FILTER (WHERE district <> 'D02') AS people, "
    "sum(claim_amount) FILTER (WHERE district <> 'D02') AS total, count(*) AS all_rows "
    "FROM health.claims GROUP BY 1"
)


@settings(max_examples=40, deadline=None)
@given(rows=rows_strategy, bounds=caps)
def test_a_filter_on_one_value_per_entity_keeps_the_ranks(
    rows: list[Row], bounds: tuple[int, int]
) -> None:
    """A FILTER on the district (one per person) reads the copy; its cells equal the
    reference without P2, the unfiltered count the whole reference."""
    g, t = bounds
    con = _database(rows)
    plan = _plan(FILTERED, _bounds(g, t))
    assert plan.ranked
    release = con.sql(f"WITH __sbx_stats AS ({plan.stats_sql}) {plan.release_sql}").fetchall()
    got = {row[0]: row[1:] for row in release}
    whole, without = _reference(con, g, t), _reference(con, g, t, without="P2")
    assert set(got) == set(whole)
    for key, (n, people, total, all_rows) in got.items():
        want = without.get(key, {"entities": 0, "rows": 0, "sum": 0.0})
        assert all_rows == whole[key]["rows"], key
        assert n == want["rows"] and people == want["entities"], key
        assert (total or 0.0) == pytest.approx(want["sum"], abs=1e-6), key


@settings(max_examples=60, deadline=None)
@given(rows=rows_strategy)
def test_each_entity_is_ranked_one_to_n_by_its_own_rows(rows: list[Row]) -> None:
    """Ranks are 1..n within each entity, no row without a key is copied, and removing
    one entity leaves every other entity's ranks (claim by claim) as they were."""
    con = _database(rows)
    ranks = _ranks(con)
    keyed = [r for r in rows if r[0] is not None]
    assert sum(len(v) for v in ranks.values()) == len(keyed)
    for person, ranked in ranks.items():
        assert sorted(r for _, r in ranked) == list(range(1, len(ranked) + 1)), person
    for who in list(ranks):
        kept = [i for i, r in enumerate(rows) if r[0] != who]
        after = _ranks(_database([rows[i] for i in kept], kept))
        assert {p: sorted(v) for p, v in after.items()} == {
            p: sorted(v) for p, v in ranks.items() if p != who
        }


@settings(max_examples=60, deadline=None)
@given(rows=rows_strategy, bounds=caps, who=st.sampled_from(["P1", "P2", "P3"]))
def test_one_entity_moves_rows_by_t_and_entities_by_g(
    rows: list[Row], bounds: tuple[int, int], who: str
) -> None:
    """The per-query caps' sensitivities (test_total_cap) hold of the ranked plan."""
    g, t = bounds
    before = _stats(_database(rows), g, t)
    kept = [i for i, r in enumerate(rows) if r[0] != who]  # the others' rows unchanged
    after = _stats(_database([rows[i] for i in kept], kept), g, t)
    zero = {"entities": 0, "rows": 0, "sum": 0.0}
    groups = set(before) | set(after)
    moved = {
        kind: [abs(before.get(k, zero)[kind] - after.get(k, zero)[kind]) for k in groups]
        for kind in ("entities", "rows", "sum")
    }
    assert sum(moved["entities"]) <= g
    assert max(moved["entities"], default=0) <= 1
    assert sum(moved["rows"]) <= t
    assert sum(moved["sum"]) <= t * max(abs(LOW), abs(HIGH)) + 1e-6
    vanished = set(before) ^ set(after)
    assert len(vanished) <= max(g, t)
    for key in vanished:
        alone = before.get(key) or after.get(key) or zero
        assert alone["entities"] <= 1 and alone["rows"] <= t


@pytest.mark.parametrize(
    "sql",
    [
        GROUPED,
        "SELECT diagnosis_code, count(DISTINCT hospital_id) FROM health.claims GROUP BY 1",
        "SELECT district, diagnosis_code, count(*), count(DISTINCT person_id), "
        "avg(claim_amount) FROM health.claims c GROUP BY 1, 2",
        "SELECT diagnosis_code, stddev(claim_amount) FROM health.claims GROUP BY 1",
        IN_D01_D03,
        "SELECT diagnosis_code, count(*) FROM health.claims "
        "WHERE district = 'D01' AND gender = 'F' GROUP BY 1",
        FILTERED,
        "SELECT diagnosis_code, count_if(gender = 'F') AS women FROM health.claims GROUP BY 1",
    ],
)
def test_plain_grouped_queries_read_the_ranks(sql: str) -> None:
    plan = _plan(sql, _bounds(4, 9))
    assert plan.ranked and "__sbx_ranked" in plan.stats_sql
    assert "OVER" not in plan.stats_sql  # no window: the point of the ranks


@pytest.mark.parametrize(
    ("sql", "bounds", "ranked"),
    [
        # a filter keeps fewer rows of a heavy entity than the per-query caps
        (
            "SELECT diagnosis_code, count(*) FROM health.claims "
            "WHERE district = 'D01' AND hospital_id = 'H001' GROUP BY 1",
            _bounds(4, 9),
            True,
        ),
        (  # age is declared two values per person (a birthday in the year)
            "SELECT diagnosis_code, count(*) FROM health.claims WHERE age >= 60 GROUP BY 1",
            _bounds(4, 9),
            True,
        ),
        (
            "SELECT diagnosis_code, count(*) FROM health.claims "
            "WHERE diagnosis_code <> 'A' GROUP BY 1",
            _bounds(4, 9),
            True,
        ),
        (
            "SELECT diagnosis_code, count(*) FILTER (WHERE claim_amount > 100) "
            "FROM health.claims GROUP BY 1",
            _bounds(4, 9),
            True,
        ),
        # a quantile's per-entity sample
        (
            "SELECT diagnosis_code, median(claim_amount) FROM health.claims GROUP BY 1",
            _bounds(4, 9),
            True,
        ),
        # T above C: a group could hold more than C of the first T rows
        (GROUPED, _bounds(4, 9, c=3), True),
        # no T declared
        (
            GROUPED,
            ContributionBounds(max_rows_per_entity=9, max_groups_per_entity=4),
            True,
        ),
        # the version is not ranked in the enclave
        (GROUPED, _bounds(4, 9), False),
        # a join
        (
            "SELECT c.diagnosis_code, count(*) FROM health.claims c "
            "JOIN health.claims d ON c.person_id = d.person_id GROUP BY 1",
            _bounds(4, 9),
            True,
        ),
    ],
)
def test_other_queries_cap_per_query(sql: str, bounds: ContributionBounds, ranked: bool) -> None:
    try:
        plan = _plan(sql, bounds, ranked=ranked)
    except QueryRefused:
        return  # refused for its own reasons: no plan reads the ranks either
    assert not plan.ranked and "__sbx_ranked" not in plan.stats_sql


def test_the_ranked_copy_is_no_dataset_an_operator_can_name() -> None:
    for sql in (
        'SELECT count(*) FROM "__sbx_ranked"."health.claims"',
        "SELECT count(*) FROM __sbx_ranked.claims",
    ):
        with pytest.raises(QueryRefused):
            check_query(parse_query(sql, max_length=MAX_SQL_LENGTH), _access())


@settings(max_examples=30, deadline=None)
@given(rows=rows_strategy, seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_presence_cells_left_null_change_no_release(rows: list[Row], seed: int) -> None:
    """Under a budget a cell (a measure's presence, a FILTER's entities) that a count of
    the same values stands in for is never read (``disclosure._counted_cells``): the
    ranked plan leaves it NULL.  The same stats with those columns true (the plan written
    as if every cell were shown) or NULL release the same table under the same draws."""
    con = _database(rows)
    sql = (
        "SELECT diagnosis_code, count(*), avg(claim_amount), sum(claim_amount), "
        "count(*) FILTER (WHERE district <> 'D02') AS n, "
        "avg(claim_amount) FILTER (WHERE district <> 'D02') AS m, "
        "count(claim_amount) FILTER (WHERE district <> 'D01') AS dead_cell "
        "FROM health.claims GROUP BY 1"
    )
    params = BUDGET
    prepared = prepare(sql, _access(), params, max_sql_length=MAX_SQL_LENGTH)
    plan = prepared.plan
    assert plan.ranked
    nulled = [
        n
        for n in (s.name for s in plan.stats)
        if f'CAST(NULL AS HUGEINT) AS "{n}"' in plan.stats_sql
    ]
    # x's presence, the FILTER's entities, x's presence under it; the second FILTER's
    # entities, which no column reads (disclosure._dead_cells); the groups' entity count,
    # which the row count selecting the groups stands in for (reads_group_entities)
    assert len(nulled) >= 5
    assert ENTITIES in nulled
    real = rewrite._ranked_stats

    def every_cell(stats, bounds, rank, **_unread):  # type: ignore[no-untyped-def]
        # every cell counted, the groups' own entity count too (group_entities ignored)
        shown, stats.stats = stats.stats, [replace(st, shown=True) for st in stats.stats]
        try:
            return real(stats, bounds, rank)
        finally:
            stats.stats = shown

    with patch.object(rewrite, "_ranked_stats", every_cell):
        whole = prepare(sql, _access(), params, max_sql_length=MAX_SQL_LENGTH).plan.stats_sql
    assert "CAST(NULL AS HUGEINT)" not in whole
    order = [(plan.keys[0], "ascending")]
    table = con.sql(plan.stats_sql).to_arrow_table().sort_by(order)
    true = con.sql(whole).to_arrow_table().sort_by(order)
    filled = table
    for name in nulled:
        index = filled.schema.get_field_index(name)
        filled = filled.set_column(index, name, true.column(name))
    assert not filled.equals(table) or not len(table)
    one = release(table, prepared, noise=seeded_noise(seed)).table
    two = release(filled, prepared, noise=seeded_noise(seed)).table
    assert one.equals(two)


def _classification(extra: str) -> str:
    return f"""
[dataset]
id = "health.claims"
entity_key = "person_id"

[columns.person_id]
level = "L4"
role = "identifier"

[columns.amount]
level = "L2"
role = "measure"
bounds = [0, 100]

[contribution]
max_rows_per_entity = 4
max_groups_per_entity = 2
{extra}
"""


def test_caps_at_registration_is_declared_with_t_at_most_c() -> None:
    spec = parse_classification(
        _classification('max_total_rows_per_entity = 4\ncaps_at = "registration"'),
        source_name="x.toml",
    )
    assert spec.contribution is not None and spec.contribution.ranked
    assert spec.contribution.to_dict()["caps_at"] == "registration"
    plain = parse_classification(
        _classification("max_total_rows_per_entity = 4"), source_name="x.toml"
    )
    assert plain.contribution is not None and not plain.contribution.ranked
    assert "caps_at" not in plain.contribution.to_dict()  # digests before ranks unchanged
    for extra in (
        'caps_at = "registration"',  # no T
        'max_total_rows_per_entity = 5\ncaps_at = "registration"',  # T above C
        'max_total_rows_per_entity = 4\ncaps_at = "never"',
    ):
        with pytest.raises(ClassificationError) as info:
            parse_classification(_classification(extra), source_name="x.toml")
        assert "caps_at" in info.value.message
    ranked = _classification('max_total_rows_per_entity = 4\ncaps_at = "registration"')
    for name in ("rowid", "ROWID", "__sbx_rank", "__other"):
        # the copy adds __sbx_rank beside the columns and joins on DuckDB's rowid
        text = ranked + f'\n[columns."{name}"]\nlevel = "L1"\nrole = "dimension"\n'
        with pytest.raises(ClassificationError) as info:
            parse_classification(text, source_name="x.toml")
        assert "caps_at" in info.value.message and "rowid" in info.value.message
        assert name not in info.value.message.replace("rowid", "")  # names the rule, not the column


def test_the_copy_follows_the_declaration() -> None:
    con = _database([("P1", "A", Decimal("1.00")), (None, "B", None)])
    assert ranked_rows_present(con, SPEC)
    assert con.execute(f"SELECT count(*) FROM {ranked_name(SPEC)}").fetchone() == (1,)
    # a reclassification naming another entity key finds no copy ranked by that key
    assert not ranked_rows_present(con, replace(SPEC, entity_key="hospital_id"))
    build_ranked(con, replace(SPEC, entity_key="hospital_id"), "health.claims")
    assert not ranked_rows_present(con, SPEC)  # replaced, not kept beside it
    assert con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE schema_name = '__sbx_ranked'"
    ).fetchone() == (1,)
    build_ranked(con, SPEC, "health.claims")
    assert ranked_rows_present(con, SPEC)
    unranked = replace(SPEC, contribution=replace(SPEC.contribution, ranked=False))
    build_ranked(con, unranked, "health.claims")
    assert not ranked_rows_present(con, SPEC)
    build_ranked(con, SPEC, "health.claims", in_enclave=False)  # Spark: caps per query
    assert not ranked_rows_present(con, SPEC)
    build_ranked(con, SPEC, "health.claims")
    con.execute("INSERT INTO health.claims (claim_id, person_id) VALUES ('C9', 'P2')")
    assert not ranked_rows_present(con, SPEC)  # not this table's rows: not used


def test_a_copy_with_a_repeated_or_missing_rank_is_refused() -> None:
    """The registration's last check (``_check_ranks``): each entity's ranks distinct
    from 1, every keyed row there; anything else rolls the registration back."""
    from sandbox.core.errors import EnclaveError
    from sandbox.enclave.ranked_rows import _check_ranks

    con = duckdb.connect()
    for ranks in ([1, 1], [0, 1]):
        con.execute(f"CREATE OR REPLACE TABLE c (person_id VARCHAR, {RANK} BIGINT)")
        con.executemany("INSERT INTO c VALUES ('P1', ?)", [[r] for r in ranks])
        with pytest.raises(EnclaveError) as info:
            _check_ranks(con, "c", "person_id")
        assert info.value.rule == "registry.ranks"
    con.execute(f"CREATE OR REPLACE TABLE c (person_id VARCHAR, {RANK} BIGINT)")
    con.executemany("INSERT INTO c VALUES (?, ?)", [["P1", 1], ["P1", 2], ["P2", 1]])
    assert _check_ranks(con, "c", "person_id") == 3
    assert _check_ranks(con, "c", "person_id", "person_id = 'P2'") == 1


@pytest.mark.parametrize("alias", ['"a""b"', '"q"" OR true OR ""q"', "c"])
def test_any_alias_the_guard_accepts_reads_the_copy(alias: str) -> None:
    """The copy and its rank are written as quoted identifiers (helper's attack, December
    2026: an alias holding a quote was pasted raw and failed to parse)."""
    plan = _plan(
        f"SELECT diagnosis_code, count(*) FROM health.claims AS {alias} GROUP BY 1", _bounds(4, 9)
    )
    assert plan.ranked
    con = _database([("P1", "A", Decimal(1))] * 30)
    assert con.sql(plan.stats_sql).fetchall() == [("A", 1, 9)]  # 9 of one person's 30 rows


@pytest.mark.parametrize(
    ("sql", "counted"),
    [
        # a row count selects the groups: their entity count is never read
        ("SELECT diagnosis_code, count(*), avg(claim_amount) FROM health.claims GROUP BY 1", False),
        # shown: noised and released
        ("SELECT diagnosis_code, count(DISTINCT person_id) FROM health.claims GROUP BY 1", True),
    ],
)
def test_the_groups_entity_count_is_counted_only_where_read(sql: str, counted: bool) -> None:
    """Over a ranked copy the groups' entity count is a distinct count, most of the stats
    query's time (W3 with ε): it is left NULL where the release does not read it."""
    params = BUDGET
    prepared = prepare(sql, _access(), params, max_sql_length=MAX_SQL_LENGTH)
    assert prepared.plan.ranked
    grouped = bool(prepared.plan.keys)
    assert reads_group_entities(prepared.columns, params, grouped=grouped) is counted
    assert (f'CAST(NULL AS HUGEINT) AS "{ENTITIES}"' in prepared.plan.stats_sql) is not counted
    without_budget = replace(params, epsilon=None)
    assert reads_group_entities(prepared.columns, without_budget, grouped=grouped)


def test_a_selecting_count_left_null_is_refused_not_read_as_zero() -> None:
    """Were a plan ever to leave the count that selects the groups unread, every group
    would look empty: the release refuses instead of withholding them all."""
    con = _database([("P1", "A", Decimal(1))] * 12 + [("P2", "B", Decimal(2))] * 12)
    params = replace(BUDGET, k=1)
    sql = "SELECT diagnosis_code, count(*) FROM health.claims GROUP BY 1"
    prepared = prepare(sql, _access(), params, max_sql_length=MAX_SQL_LENGTH)
    stats = con.sql(prepared.plan.stats_sql).to_arrow_table()
    gate = next(s.name for s in prepared.plan.stats if s.kind == "rows")
    nulled = stats.set_column(
        stats.schema.get_field_index(gate), gate, pa.nulls(stats.num_rows, pa.int64())
    )
    release(stats, prepared, noise=seeded_noise(1))  # as planned: released
    with pytest.raises(EnclaveError) as info:
        release(nulled, prepared, noise=seeded_noise(1))
    assert info.value.rule == "disclosure.stats"
