"""The count that selects a grouped query's released groups: at C = 1 it weighs more than
one output (``_GATE_WEIGHT``); at C > 1 an entity count that only selects weighs less
(``_GATE_WEIGHT_ROWS``), and a row count of the whole group selects instead where it can
(``disclosure._gate``, ``tests/sandbox/query/test_row_gate.py``).

Its noise sets the release threshold τ (``selection_threshold``), so a sum or an average
by group used to give it the share of one output and release a group of 41 persons
almost never (τ = 52); weighed ``_GATE_WEIGHT`` times it takes more of ε, τ = 38 (``docs/
disclosure.md``, "Splitting ε").  The allocation is a function of the plan, not of data.
"""

from __future__ import annotations

from fractions import Fraction

import pytest

from sandbox.query import disclosure
from sandbox.query.disclosure import (
    ENTITIES,
    DisclosureParams,
    StatColumn,
    noise_plan,
    selection_threshold,
)
from sandbox.query.guard import check_query
from sandbox.query.parse import parse_query
from sandbox.query.rewrite import ContributionBounds, build_plan
from tests.sandbox.query.test_guard import MAX_SQL_LENGTH, access

SUM = [
    StatColumn(ENTITIES, "entities"),
    StatColumn("__e1", "entities"),
    StatColumn("__s2", "sum", 0, 10, cell="__e1"),
    StatColumn("__n3", "count", cell="__e1"),
]


@pytest.fixture(autouse=True)
def _forget_plans():
    """Plans are remembered (``disclosure._noise_plan``); these tests change the weights,
    so none is kept from before a test, nor after it (its patches undone)."""
    disclosure._noise_plan.cache_clear()
    yield
    disclosure._noise_plan.cache_clear()


def _reweigh(monkeypatch: pytest.MonkeyPatch, name: str, value: object) -> None:
    monkeypatch.setattr(disclosure, name, value)
    disclosure._noise_plan.cache_clear()


def _plans(params: DisclosureParams, grouped: bool = True) -> dict[str, disclosure.NoisePlan]:
    return {p.column: p for p in noise_plan(SUM, params, grouped=grouped)}


def _selecting(plans: dict[str, disclosure.NoisePlan]) -> disclosure.NoisePlan:
    (plan,) = [p for p in plans.values() if p.selects]
    return plan


def _share(plan: disclosure.NoisePlan) -> Fraction:
    """A column's share of the query's budget: its epsilon (Laplace) or its rho (Gaussian)."""
    return plan.epsilon if plan.mechanism == "laplace" else plan.rho


def _tau(params: DisclosureParams) -> int:
    return selection_threshold(_selecting(_plans(params)), params)


ONE = DisclosureParams(k=10, epsilon=1.0, max_rows_per_entity=1, max_groups_per_entity=1)


def test_the_gate_takes_more_of_epsilon_and_lowers_the_threshold(monkeypatch) -> None:
    weighed = _plans(ONE)
    tau = _tau(ONE)
    gate = _selecting(weighed).column
    assert gate == "__n3" and ENTITIES not in weighed  # count(x) selects: C = 1, no count(*)
    _reweigh(monkeypatch, "_GATE_WEIGHT", 1.0)
    plain = _plans(ONE)
    assert weighed[gate].epsilon > plain[gate].epsilon * Fraction(5, 4)
    assert weighed["__s2"].epsilon < plain["__s2"].epsilon  # paid for by the outputs
    assert tau < 41 and tau < _tau(ONE)  # a group of 41 persons: above τ
    for plans in (weighed, plain):
        assert sum(p.epsilon for p in plans.values()) <= Fraction(1)


@pytest.mark.parametrize(
    ("params", "grouped"),
    [
        (DisclosureParams(k=10, epsilon=1.0, max_rows_per_entity=2), True),  # C > 1
        (ONE, False),  # one group: nothing is selected, its count checks k only
    ],
    ids=["two-rows-per-cell", "ungrouped"],
)
def test_elsewhere_the_split_is_unchanged(monkeypatch, params, grouped) -> None:
    weighed = _plans(params, grouped)
    _reweigh(monkeypatch, "_GATE_WEIGHT", 1.0)
    assert weighed == _plans(params, grouped)


ROWS = [StatColumn(ENTITIES, "entities"), StatColumn("__r1", "rows")]


def test_row_counts_weigh_a_typical_entity_of_half_its_c_rows(monkeypatch) -> None:
    """At C > 1 a row count's typical entity has (C + 1)/2 rows, not C: it takes more of ε
    from the (shown) entity count than before; at C = 1 nothing changes."""
    nine = DisclosureParams(k=10, epsilon=1.0, max_rows_per_entity=9, max_groups_per_entity=4)
    rows = [StatColumn(ENTITIES, "entities", shown=True), StatColumn("__r1", "rows")]
    shares = {p.column: p.epsilon for p in noise_plan(rows, nine)}
    one = {p.column: p.epsilon for p in noise_plan(SUM, ONE)}
    _reweigh(monkeypatch, "_row_share", lambda column, params: 1.0)
    before = {p.column: p.epsilon for p in noise_plan(rows, nine)}
    assert shares["__r1"] > before["__r1"] and shares[ENTITIES] < before[ENTITIES]
    assert one == {p.column: p.epsilon for p in noise_plan(SUM, ONE)}
    assert sum(shares.values()) <= Fraction(1)


NINE = DisclosureParams(k=10, epsilon=1.0, max_rows_per_entity=9, max_groups_per_entity=4)
BY_ROWS = [StatColumn(ENTITIES, "entities"), StatColumn("__r1", "rows")]
#: No row count of the whole group, only FILTERed ones of two FILTERs: the entity count
#: selects (of one FILTER alone its row count would: disclosure._filter_gate).
BY_FILTERED = [
    StatColumn(ENTITIES, "entities"),
    StatColumn("__e1", "entities"),
    StatColumn("__r2", "rows", cell="__e1", filtered=True),
    StatColumn("__e3", "entities"),
    StatColumn("__r4", "rows", cell="__e3", filtered=True),
]


def test_at_c_above_one_the_gate_gives_epsilon_to_the_outputs(monkeypatch) -> None:
    """At C > 1 no output copies the entity count: where it selects it weighs less, the
    outputs more."""
    lighter = {p.column: p for p in noise_plan(BY_FILTERED, NINE)}
    assert lighter[ENTITIES].selects
    tau = selection_threshold(lighter[ENTITIES], NINE)
    assert disclosure._GATE_WEIGHT_ROWS < 1
    _reweigh(monkeypatch, "_GATE_WEIGHT_ROWS", 1.0)
    even = {p.column: p for p in noise_plan(BY_FILTERED, NINE)}
    assert _share(lighter["__r2"]) > _share(even["__r2"]) * Fraction(11, 10)
    assert lighter["__r2"].scale < even["__r2"].scale  # less noise on the released count
    assert tau > selection_threshold(even[ENTITIES], NINE)  # paid for by the threshold
    for plans in (lighter, even):
        assert sum(p.epsilon for p in plans.values()) <= Fraction(1)


def test_without_keys_the_entity_count_that_only_meets_k_weighs_little(monkeypatch) -> None:
    """One group: its entity count is held against k alone (a margin on a noisy count,
    no threshold): unless shown, or copied by count(*) at C = 1, it weighs as little as
    a gate that is no output."""
    ungrouped = {p.column: p for p in noise_plan(BY_ROWS, NINE, grouped=False)}
    assert ungrouped[ENTITIES].selects and "__r1" in ungrouped
    _reweigh(monkeypatch, "_GATE_WEIGHT_ROWS", 1.0)
    even = {p.column: p for p in noise_plan(BY_ROWS, NINE, grouped=False)}
    assert ungrouped["__r1"].epsilon > even["__r1"].epsilon
    shown = [StatColumn(ENTITIES, "entities", shown=True), BY_ROWS[1]]
    _reweigh(monkeypatch, "_GATE_WEIGHT_ROWS", 0.01)
    assert noise_plan(shown, NINE, grouped=False) == noise_plan(
        [*shown[:1], BY_ROWS[1]], NINE, grouped=False
    )
    copied = noise_plan(BY_ROWS, ONE, grouped=False)  # count(*) is the entity count
    _reweigh(monkeypatch, "_GATE_WEIGHT_ROWS", 0.5)
    assert noise_plan(BY_ROWS, ONE, grouped=False) == copied


def test_an_entity_count_the_query_shows_is_weighed_as_an_output(monkeypatch) -> None:
    """count(DISTINCT key) is the entities column released as it is: at C > 1 it keeps
    an output's weight (1), not the lighter one of a count that only selects groups."""
    shown = [StatColumn(ENTITIES, "entities", shown=True), *BY_FILTERED[1:]]
    lighter = {p.column: p for p in noise_plan(BY_FILTERED, NINE)}
    output = {p.column: p for p in noise_plan(shown, NINE)}
    assert _share(output[ENTITIES]) > _share(lighter[ENTITIES])
    assert output[ENTITIES].selects  # shown: noised anyway, so it selects
    _reweigh(monkeypatch, "_GATE_WEIGHT_ROWS", 1.0)
    assert {p.column: _share(p) for p in noise_plan(BY_FILTERED, NINE)} == {
        p.column: _share(p) for p in noise_plan(shown, NINE)
    }


@pytest.mark.parametrize(
    ("sql", "shown"),
    [
        ("SELECT diagnosis_code, count(DISTINCT person_id) FROM health.claims GROUP BY 1", True),
        (
            "SELECT diagnosis_code, count(*), count(DISTINCT person_id) FROM health.claims "
            "GROUP BY 1",
            True,
        ),
        ("SELECT diagnosis_code, count(*) FROM health.claims GROUP BY 1", False),
        (  # a filtered distinct count is its cell's own column, not the groups' count
            "SELECT diagnosis_code, count(DISTINCT person_id) FILTER (WHERE age >= 60) "
            "FROM health.claims GROUP BY 1",
            False,
        ),
    ],
)
def test_the_rewrite_marks_the_entities_column_a_distinct_count_shows(sql, shown) -> None:
    checked = check_query(parse_query(sql, max_length=MAX_SQL_LENGTH), access())
    plan = build_plan(checked, access(), bounds=ContributionBounds(9, 4), k=10)
    entities = next(s for s in plan.stats if s.name == ENTITIES)
    assert entities.shown is shown
    # A FILTER's entity count shown as count(DISTINCT key) FILTER is marked too: no count
    # of its rows may stand in for it (disclosure._counted_cells).
    cells = [s for s in plan.stats if s.name != ENTITIES and s.shown]
    assert [s.kind for s in cells] == (["entities"] if "FILTER" in sql else [])
