"""The usage ledger, atomic budget spends, monthly statements: SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import threading
from datetime import timedelta

import pytest

from policies import UsagePart, record_usage, spend_budget
from policies.metering import budget_state
from sandbox.core.db import open_control_db
from sandbox.core.errors import BudgetExhausted, Forbidden, InvalidInput

from .conftest import World

CLAIMS = "health.claims"
JOIN = ["market.enterprises", "hrss.social_insurance"]


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_usage_ledger_and_statements(any_world: World) -> None:
    w = any_world
    bank, insurer = w.actor("op-bank"), w.actor("op-insurer")
    single = w.authority.require(bank, "dataset.query", datasets=[CLAIMS])
    charge = w.authority.record_usage(single, cpu_ms=120)
    assert charge.total == 500 + 20  # 10,000 rows at 20.00 CNY per million: 0.20 CNY
    joined = w.authority.require(bank, "dataset.query", datasets=JOIN)
    w.authority.record_usage(joined, cpu_ms=70, rows_scanned={"hrss.social_insurance": 3_000})
    w.authority.record_usage(w.authority.require(insurer, "dataset.query", datasets=[CLAIMS]))
    w.clock.advance(days=1)
    w.authority.record_usage(single, cpu_ms=30)

    ledger = w.admin.usage(bank)
    assert {(r.day, r.dataset, r.queries) for r in ledger} == {
        ("2026-11-24", CLAIMS, 1),
        ("2026-11-24", "market.enterprises", 1),
        ("2026-11-24", "hrss.social_insurance", 1),
        ("2026-11-25", CLAIMS, 1),
    }
    hrss = next(r for r in ledger if r.dataset == "hrss.social_insurance")
    assert (hrss.rows_scanned, hrss.joined_queries, hrss.query_fee) == (3_000, 1, 180)
    assert sum(r.cpu_ms for r in ledger if r.day == "2026-11-24" and r.dataset in JOIN) == 70
    assert {r.operator for r in w.admin.usage(w.actor("bureau-health"))} == {
        "op-bank",
        "op-insurer",
    }
    with pytest.raises(Forbidden):
        w.admin.usage(bank, operator="op-insurer")
    with pytest.raises(Forbidden):
        w.admin.usage(w.actor("bureau-health"), domain="market")

    owed = _rows(w.admin.statement(bank, "2026-11"))
    assert owed[-1]["grant"] == "TOTAL"
    by_dataset = {r["dataset"]: r for r in owed[:-1]}
    assert by_dataset[CLAIMS]["queries"] == "2" and by_dataset[CLAIMS]["charge_cny"] == "10.40"
    assert by_dataset["market.enterprises"]["query_fee_cny"] == "1.20"
    # one fee of 3.00 CNY for the join, split 2:3; rows 2,000 x 10/M and 3,000 x 15/M
    assert owed[-1]["charge_cny"] == "13.47"
    paid = sum(
        int(
            _rows(w.admin.statement(w.host, "2026-11", bureau=b))[-1]["charge_cny"].replace(".", "")
        )
        for b in ("bureau-health", "bureau-market", "bureau-hrss", "bureau-transport")
    )
    insurer_owes = _rows(w.admin.statement(insurer, "2026-11"))[-1]["charge_cny"]
    assert paid == 1347 + int(insurer_owes.replace(".", ""))  # owed by operators == owed to bureaus
    assert _rows(w.admin.statement(bank, "2026-10"))[-1]["charge_cny"] == "0.00"
    with pytest.raises(InvalidInput):
        w.admin.statement(bank, "2026-13")
    with pytest.raises(Forbidden):
        w.admin.statement(bank, "2026-11", operator="op-insurer")
    with pytest.raises(Forbidden):
        w.admin.statement(w.actor("bureau-market"), "2026-11", bureau="bureau-health")


def test_budget_spend_is_atomic_under_concurrency(any_world: World) -> None:
    """Twenty servers race to spend 0.7 each of a budget of 10: exactly 14 succeed."""
    w = any_world
    grant_id = w.grant_id("op-insurer", CLAIMS)
    engine = open_control_db(w.url)
    outcomes: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(20)

    def spend() -> None:
        start.wait()
        try:
            with engine.begin() as conn:
                spend_budget(conn, grant_id, 0.7, now=w.clock(), ref="race")
            result = "ok"
        except BudgetExhausted:
            result = "refused"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=spend) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    engine.dispose()
    assert outcomes.count("ok") == 14 and outcomes.count("refused") == 6
    with w.engine.connect() as conn:
        state = budget_state(conn, grant_id)
    assert state is not None and state.spent == pytest.approx(9.8)
    d = w.authority.decide(w.actor("op-insurer"), "dataset.query", datasets=[CLAIMS], epsilon=0.5)
    assert d.rule == "budget.exhausted"
    assert w.authority.decide(
        w.actor("op-insurer"), "dataset.query", datasets=[CLAIMS], epsilon=0.2
    ).allowed


def test_spend_refusals(world: World) -> None:
    w = world
    grant_id = w.grant_id("op-insurer", CLAIMS)
    with w.engine.begin() as conn:
        with pytest.raises(BudgetExhausted) as raised:
            spend_budget(conn, grant_id, 1.5, now=w.clock())
        assert raised.value.rule == "budget.per_query"
        with pytest.raises(InvalidInput):
            spend_budget(conn, w.grant_id("op-bank", CLAIMS), 0.1, now=w.clock())
        with pytest.raises(InvalidInput):
            spend_budget(conn, grant_id, 0.0, now=w.clock())
    w.admin.suspend_grant(w.actor("bureau-health"), grant_id)
    with w.engine.begin() as conn, pytest.raises(Forbidden) as raised:
        spend_budget(conn, grant_id, 0.1, now=w.clock())
    assert raised.value.rule == "grant.suspended"
    w.admin.resume_grant(w.actor("bureau-health"), grant_id)
    w.clock.advance(days=400)
    with w.engine.begin() as conn, pytest.raises(Forbidden):
        spend_budget(conn, grant_id, 0.1, now=w.clock())


def test_spend_rolls_back_with_its_release(world: World) -> None:
    """Spent in the caller's transaction: if the release fails, so does the spend."""
    w = world
    grant_id = w.grant_id("op-insurer", CLAIMS)
    with pytest.raises(RuntimeError), w.engine.begin() as conn:
        spend_budget(conn, grant_id, 1.0, now=w.clock())
        raise RuntimeError("release failed")
    with w.engine.connect() as conn:
        state = budget_state(conn, grant_id)
    assert state is not None and state.spent == 0
    with w.engine.begin() as conn:
        spend_budget(conn, grant_id, 1.0, now=w.clock())
    ledger = w.admin.usage(w.actor("op-insurer"))
    assert [r.epsilon_spent for r in ledger] == [1.0]


def test_narrowing_the_budget_below_spent_exhausts_it(world: World) -> None:
    w = world
    grant_id = w.grant_id("op-insurer", CLAIMS)
    with w.engine.begin() as conn:
        for _ in range(3):
            spend_budget(conn, grant_id, 1.0, now=w.clock())
    w.admin.narrow_grant(w.actor("bureau-health"), grant_id, epsilon_total=2.0)
    d = w.authority.decide(w.actor("op-insurer"), "dataset.query", datasets=[CLAIMS])
    assert d.rule == "budget.exhausted"


def test_usage_validation(world: World) -> None:
    bank = world.actor("op-bank")
    grants = world.admin.list_grants(bank)
    insurer_grant = world.admin.list_grants(world.actor("op-insurer"))[0]
    with world.engine.begin() as conn:
        with pytest.raises(InvalidInput):
            record_usage(conn, [], now=world.clock())
        with pytest.raises(InvalidInput):
            record_usage(
                conn, [UsagePart(grants[0], 1), UsagePart(insurer_grant, 1)], now=world.clock()
            )
        with pytest.raises(InvalidInput):
            record_usage(conn, [UsagePart(grants[0], -1)], now=world.clock())
    denied = world.authority.decide(bank, "dataset.query", datasets=["transport.trips"])
    with pytest.raises(InvalidInput):
        world.authority.record_usage(denied)
    assert world.clock() + timedelta(0) == world.clock()
