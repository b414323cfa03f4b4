"""The total-rows bound T (docs/disclosure.md, "The total-rows bound T").

Where the data declares ``T < C·G``, a query with a budget keeps, per entity, its first
``G`` cells (in the order of their hashes) for entity counts, and for row counts and sums
its first ``T`` rows of cells (at most ``C`` per cell) in that order: the cell that
crosses ``T`` in part (each count cut to what is left, each sum scaled to the values its
count keeps, so an average over the part is the cell's).  These
tests hold the rewrite's real stats query, run on DuckDB, to a Python reference, check
that removing one entity moves rows by at most ``T``, sums by at most ``T·M``, in at
most ``T`` cells, and entity counts by at most ``G``, and check the parameters and the
classification that carry ``T``.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from decimal import Decimal
from fractions import Fraction

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.core.classification import Contribution, parse_classification
from sandbox.core.errors import ClassificationError
from sandbox.enclave.demo_data import demo_spec
from sandbox.query.disclosure import DisclosureParams, StatColumn, noise_plan, sensitivity
from sandbox.query.entity_caps import total_cap
from sandbox.query.release import with_total
from sandbox.query.rewrite import ENTITIES, ContributionBounds
from tests.sandbox.query.test_rewrite_cap import GROUPED, HIGH, LOW, Row, _database, plan_of

rows_strategy = st.lists(
    st.tuples(
        st.one_of(st.sampled_from(["P1", "P2", "P3"]), st.none()),
        st.one_of(st.sampled_from(["A", "B", "C", "D", "E", "F", "G", "H"]), st.none()),
        st.one_of(
            st.decimals(min_value=-1_000, max_value=300_000, places=2, allow_nan=False),
            st.none(),
        ),
    ),
    max_size=60,
)
caps = st.tuples(
    st.integers(min_value=1, max_value=3),  # C
    st.integers(min_value=2, max_value=5),  # G
    st.integers(min_value=1, max_value=8),  # T
).filter(lambda b: b[2] < b[0] * b[1])


def _bounds(c: int, g: int, t: int) -> ContributionBounds:
    return ContributionBounds(
        max_rows_per_entity=c, max_groups_per_entity=g, max_total_rows_per_entity=t
    )


def _stats(con: duckdb.DuckDBPyConnection, sql: str, bounds: ContributionBounds) -> dict:
    plan = plan_of(sql, bounds)
    kinds = {s.kind: s.name for s in plan.stats if s.kind in ("rows", "sum")}
    table = con.sql(plan.stats_sql).to_arrow_table().to_pylist()
    return {
        row[plan.keys[0]]: {
            "entities": row[ENTITIES],
            "rows": row[kinds["rows"]],
            "sum": row[kinds["sum"]] or 0.0,
        }
        for row in table
    }


def _reference(con: duckdb.DuckDBPyConnection, rows: list[Row], c: int, g: int, t: int) -> dict:
    cells: dict[tuple[object, str], list[Decimal | None]] = defaultdict(list)
    for entity, key, amount in rows:
        if entity is not None:
            cells[(key, entity)].append(amount)
    by_entity: dict[str, list[tuple[object, str]]] = defaultdict(list)
    for cell in cells:
        by_entity[cell[1]].append(cell)

    def order(cell: tuple[object, str]) -> int:
        ((h,),) = con.execute("SELECT hash(?::VARCHAR, ?::VARCHAR)", cell).fetchall()
        return int(h)

    out: dict[object, dict[str, float]] = {}
    exists: set[object] = set()  # a cell kept for entity counts or for row statistics
    for entity_cells in by_entity.values():
        ordered = sorted(entity_cells, key=order)
        running = 0
        for i, (key, entity) in enumerate(ordered):
            amounts = cells[(key, entity)]
            before, r = running, min(len(amounts), c)
            running += r
            if i < g:  # counted among its entities: its first G cells
                out.setdefault(key, {"entities": 0, "rows": 0, "sum": 0.0})["entities"] += 1
                exists.add(key)
            if before < t:  # its rows within the first T: whole, or the crossing cell in part
                kept = min(r, t - before)
                exists.add(key)
                group = out.setdefault(key, {"entities": 0, "rows": 0, "sum": 0.0})
                group["rows"] += kept
                values = [float(a) for a in amounts if a is not None]
                n = min(len(values), c)  # its count(x): the sum is scaled to m of its n
                # its mean clamped, times its values capped at C (entity_caps.mean_clamped)
                mean = min(HIGH, max(LOW, sum(values) / len(values))) if values else 0.0
                share = min(n, kept) / n if n else 0.0
                group["sum"] += mean * n * share
    return {k: v for k, v in out.items() if k in exists}


@settings(max_examples=60, deadline=None)
@given(rows=rows_strategy, bounds=caps)
def test_the_total_cap_equals_the_reference(rows: list[Row], bounds: tuple[int, int, int]) -> None:
    con = _database(rows)
    got = _stats(con, GROUPED, _bounds(*bounds))
    want = _reference(con, rows, *bounds)
    assert got.keys() == want.keys()
    for key, stats in want.items():
        assert got[key]["entities"] == stats["entities"], key
        assert got[key]["rows"] == stats["rows"], key
        assert got[key]["sum"] == pytest.approx(stats["sum"], abs=1e-6), key


@settings(max_examples=60, deadline=None)
@given(rows=rows_strategy, bounds=caps, who=st.sampled_from(["P1", "P2", "P3"]))
def test_one_entity_moves_rows_by_t_and_entities_by_g(
    rows: list[Row], bounds: tuple[int, int, int], who: str
) -> None:
    """What ``disclosure.sensitivity`` and ``_units`` assume of the real stats query."""
    c, g, t = bounds
    con = _database(rows)
    before = _stats(con, GROUPED, _bounds(c, g, t))
    con = _database([r for r in rows if r[0] != who])
    after = _stats(con, GROUPED, _bounds(c, g, t))
    zero = {"entities": 0, "rows": 0, "sum": 0.0}
    groups = set(before) | set(after)
    moved = {
        kind: [abs(before.get(k, zero)[kind] - after.get(k, zero)[kind]) for k in groups]
        for kind in ("entities", "rows", "sum")
    }
    assert sum(moved["entities"]) <= g
    # A group appears or disappears only through the entity's own kept cells (at most
    # max(G, T), disclosure's groups_alone): one where nobody else keeps a cell, so it
    # holds at most that entity and min(C, T) of its rows (what the release threshold on
    # either count covers, with probability δ).
    vanished = set(before) ^ set(after)
    assert len(vanished) <= max(g, t) and set(after) <= set(before)
    assert all(before[k]["entities"] <= 1 for k in vanished)
    assert all(before[k]["rows"] <= min(c, t) for k in vanished)
    both = [k for k in groups if k not in vanished]
    rows = [abs(before[k]["rows"] - after[k]["rows"]) for k in both]
    sums = [abs(before[k]["sum"] - after[k]["sum"]) for k in both]
    assert sum(rows) <= t
    assert sum(1 for m in rows if m) <= t
    assert sum(sums) <= t * max(abs(LOW), abs(HIGH)) * (1 + 1e-9)


def test_an_entity_keeps_every_group_for_counts_within_t() -> None:
    """Four persons with one claim in each of six diagnoses: G = 2 cells each make the
    groups appear, but T = 6 keeps all of each person's claims in the row counts of every
    group that exists (G alone keeps 2 per person)."""
    rows: list[Row] = [(f"P{i}", key, Decimal(10)) for i in range(4) for key in "ABCDEF"]
    con = _database(rows)
    capped = _stats(con, GROUPED, ContributionBounds(1, 2))
    total = _stats(con, GROUPED, _bounds(1, 2, 6))
    assert total.keys() == capped.keys()
    assert [s["entities"] for s in total.values()] == [s["entities"] for s in capped.values()]
    assert sum(s["rows"] for s in capped.values()) == 4 * 2
    assert all(s["rows"] == 4 for s in total.values())


def test_the_portable_total_cap_keeps_cells_by_md5_within_t() -> None:
    """The form a distributed engine runs (windows partitioned by entity), on DuckDB:
    each entity's cells in the order of the MD5 of their canonical string, the first G
    flagged for entity counts, rows kept up to T in all (the crossing cell in part)."""

    def canonical(*values: str) -> str:
        return hashlib.md5("".join(f"{len(v)}:{v}" for v in values).encode()).hexdigest()

    con = duckdb.connect()
    rows = [(f"P{e}", f"D{d}") for e in range(1, 5) for d in range(6) for _ in range(d % 3 + 1)]
    con.execute("CREATE TABLE t (e VARCHAR, d VARCHAR)")
    con.executemany("INSERT INTO t VALUES (?, ?)", rows)
    inner = (
        'SELECT d AS "__k0", e AS "__sbx_e", least(count(*), 2) AS "__r1", '
        'least(count(*), 2) AS "__sbx_r", 1 AS "__e2" FROM t GROUP BY d, e'
    )
    columns = [("__r1", "rows"), ("__e2", "entities")]
    ctes = total_cap(inner, ['"__k0"'], 2, 5, columns, portable=["text", "text"])
    assert "PARTITION BY" in ctes[-2]
    sql = f'WITH {", ".join(ctes)} SELECT "__k0", "__sbx_gk", "__r1", "__e2" FROM __sbx_pe'
    got = sorted(con.sql(sql).fetchall())
    want = []
    for e in sorted({r[0] for r in rows}):
        mine = sorted({r[1] for r in rows if r[0] == e}, key=lambda d: canonical(d, e))
        running = 0
        for i, d in enumerate(mine):
            n = min(2, sum(1 for r in rows if r == (e, d)))
            kept = max(0, min(n, 5 - running))  # the cell crossing T = 5 in part
            running += n
            want.append((d, i < 2, kept, 1 if i < 2 else 0))
    assert got == sorted(want)


def test_with_total_keeps_t_only_where_it_binds() -> None:
    def params(c: int, g: int, t: int | None) -> DisclosureParams:
        return DisclosureParams(
            k=1,
            epsilon=1.0,
            max_rows_per_entity=c,
            max_groups_per_entity=g,
            max_total_rows_per_entity=t,
        )

    assert with_total(params(9, 4, 9)).total_bound == 9
    assert with_total(params(9, 4, 36)).max_total_rows_per_entity is None  # T = C·G
    assert with_total(params(9, 4, None)).max_total_rows_per_entity is None
    # C above T is T: no cell holds more than T of one entity's rows.
    narrowed = with_total(params(12, 4, 5))
    assert (narrowed.max_rows_per_entity, narrowed.total_bound) == (5, 5)
    # One group (an ungrouped query folds C·G into C): T caps C, and cannot bind beyond.
    folded = with_total(params(36, 1, 9))
    assert (folded.max_rows_per_entity, folded.total_bound) == (9, None)


def test_row_columns_pay_for_t_rows_and_entity_counts_for_g() -> None:
    plain = DisclosureParams(k=1, epsilon=1.0, max_rows_per_entity=9, max_groups_per_entity=4)
    bound = DisclosureParams(
        k=1,
        epsilon=1.0,
        max_rows_per_entity=9,
        max_groups_per_entity=4,
        max_total_rows_per_entity=9,
    )
    amount = StatColumn("__s2", "sum", 0.0, 100.0)
    assert sensitivity(StatColumn("__r1", "rows"), plain) == 36
    assert sensitivity(StatColumn("__r1", "rows"), bound) == 9
    assert sensitivity(amount, bound) == 900
    assert sensitivity(StatColumn(ENTITIES, "entities"), bound) == 4
    columns = [StatColumn("__r1", "rows"), amount]
    scale = {p.column: p.scale * p.resolution for p in noise_plan(columns, bound)}
    wider = {p.column: p.scale * p.resolution for p in noise_plan(columns, plain)}
    # Four times less sensitivity: well under half the noise on both (ε split alike).
    assert scale["__r1"] < wider["__r1"] / 2
    assert scale["__s2"] < wider["__s2"] / 2
    assert all(isinstance(v, Fraction) for v in scale.values())


CLASSIFICATION = """
[dataset]
id = "health.mini"
entity_key = "person_id"

[columns.person_id]
level = "L3"
role = "identifier"

[columns.amount]
level = "L2"
role = "measure"
bounds = [0, 100]

[contribution]
max_rows_per_entity = 3
max_groups_per_entity = 4
"""


def test_the_classification_declares_t_optionally_and_keeps_its_digest_without() -> None:
    without = parse_classification(CLASSIFICATION)
    declared = parse_classification(CLASSIFICATION + "max_total_rows_per_entity = 6\n")
    assert without.contribution == Contribution(3, 4)
    assert declared.contribution == Contribution(3, 4, 6)
    assert "max_total_rows_per_entity" not in without.to_dict()["contribution"]
    assert without.sha256() != declared.sha256()
    # A grant narrows C and G; T stays the data's.
    assert declared.contribution.narrowed(2, 2) == Contribution(2, 2, 6)


@pytest.mark.parametrize("value", ["0", "1001", "true", "2.5", '"6"'])
def test_a_bad_t_is_refused_by_its_key_without_its_value(value: str) -> None:
    with pytest.raises(ClassificationError) as refused:
        parse_classification(CLASSIFICATION + f"max_total_rows_per_entity = {value}\n")
    assert "max_total_rows_per_entity" in refused.value.message
    assert value.strip('"') not in refused.value.message.replace("1000", "")


def test_the_demo_claims_declare_t() -> None:
    contribution = demo_spec("health.claims").contribution
    assert contribution is not None and contribution.max_total_rows_per_entity == 9
