"""A query's charge in one write per grant: the ε spend and the usage count together."""

from __future__ import annotations

import pytest

from policies import UsagePart, record_usage, spend_budget
from policies.metering import budget_state
from sandbox.core.errors import BudgetExhausted, InvalidInput

from .conftest import World

CLAIMS = "health.claims"


def _ledger(w: World, operator: str) -> list[tuple[int, int, float, int]]:
    return [
        (r.queries, r.rows_scanned, r.epsilon_spent, r.query_fee + r.row_fee)
        for r in w.admin.usage(w.actor(operator))
    ]


def test_charge_spends_and_counts_as_the_two_separate_calls_do(world: World) -> None:
    w = world
    insurer = w.actor("op-insurer")
    grant = next(g for g in w.admin.list_grants(insurer) if g.dataset == CLAIMS)
    with w.engine.begin() as conn:
        record_usage(conn, [UsagePart(grant, 40)], now=w.clock(), epsilon=0.5, ref="q1")
    once = _ledger(w, "op-insurer")
    with w.engine.begin() as conn:
        spend_budget(conn, grant.id, 0.5, now=w.clock(), ref="q2")
        record_usage(conn, [UsagePart(grant, 40)], now=w.clock())
    twice = _ledger(w, "op-insurer")
    assert len(once) == len(twice) == 1
    queries, rows, epsilon, fees = once[0]
    assert (queries, rows, epsilon) == (1, 40, 0.5)
    assert twice[0] == (2, 80, 1.0, 2 * fees)
    with w.engine.connect() as conn:
        state = budget_state(conn, grant.id)
    assert state is not None and state.spent == pytest.approx(1.0)


def test_a_charge_the_budget_cannot_pay_counts_nothing(world: World) -> None:
    w = world
    grant = next(g for g in w.admin.list_grants(w.actor("op-insurer")) if g.dataset == CLAIMS)
    with pytest.raises(BudgetExhausted) as raised, w.engine.begin() as conn:
        record_usage(conn, [UsagePart(grant, 40)], now=w.clock(), epsilon=1.5)
    assert raised.value.rule == "budget.per_query"
    assert _ledger(w, "op-insurer") == []
    with w.engine.connect() as conn:
        state = budget_state(conn, grant.id)
    assert state is not None and state.spent == 0


def test_a_spend_is_part_of_a_count(world: World) -> None:
    w = world
    grant = next(g for g in w.admin.list_grants(w.actor("op-insurer")) if g.dataset == CLAIMS)
    with w.engine.begin() as conn:
        for epsilon, count in ((0.5, False), (-0.1, True)):
            with pytest.raises(InvalidInput) as raised:
                record_usage(
                    conn, [UsagePart(grant, 1)], now=w.clock(), count=count, epsilon=epsilon
                )
            assert raised.value.rule == "budget.epsilon"
