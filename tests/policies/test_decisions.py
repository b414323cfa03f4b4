"""Every reason for a deny, each its own rule; joins; cache invalidation; SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from policies import (
    RULES,
    Actor,
    GrantTerms,
    LicenceStatus,
    Role,
    UsagePart,
    record_usage,
    spend_budget,
)
from sandbox.core.classification import Level
from sandbox.core.errors import (
    AuthenticationError,
    BudgetExhausted,
    Forbidden,
    NotFound,
    QuotaExceeded,
    Withheld,
)
from sandbox.core.policy_tables import accounts, bump_policy_version

from .conftest import NOW, World

Setup = Callable[[World], dict[str, Any]]

CLAIMS = "health.claims"
AGE_GENDER = frozenset({"age", "gender"})


def query(operator: str = "op-bank", **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "actor": operator,
        "action": "dataset.query",
        "datasets": [CLAIMS],
        "columns": {CLAIMS: ["age", "person_id"]},
    }
    base.update(kw)
    return base


def _bank_claims(w: World) -> str:
    return w.grant_id("op-bank", CLAIMS)


def _narrow(**changes: Any) -> Setup:
    def setup(w: World) -> dict[str, Any]:
        w.admin.narrow_grant(w.actor("bureau-health"), _bank_claims(w), **changes)
        return query()

    return setup


def _status(change: str) -> Setup:
    def setup(w: World) -> dict[str, Any]:
        method = getattr(w.admin, f"{change}_grant")
        method(w.actor("bureau-health"), _bank_claims(w), reason="test")
        return query()

    return setup


def _licence(**changes: Any) -> Setup:
    def setup(w: World) -> dict[str, Any]:
        w.admin.set_licence(w.host, "op-bank", **changes)
        return query()

    return setup


def _licence_expired(w: World) -> dict[str, Any]:
    w.admin.set_licence(w.host, "op-bank", valid_until=NOW + timedelta(hours=1))
    w.clock.advance(hours=2)
    return query()


def _licence_missing(w: World) -> dict[str, Any]:
    with w.engine.begin() as conn:  # only a hand-edited database can lose a licence
        conn.execute(
            sa.update(accounts).where(accounts.c.name == "op-bank").values(licence_number=None)
        )
        bump_policy_version(conn)
    return query()


def _grant_expired(w: World) -> dict[str, Any]:
    w.admin.narrow_grant(
        w.actor("bureau-health"), _bank_claims(w), valid_until=NOW + timedelta(hours=1)
    )
    w.clock.advance(hours=2)
    return query()


def _not_yet_valid(w: World) -> dict[str, Any]:
    terms = GrantTerms(
        purpose_code="mobility-health",
        purpose_text="later study",
        valid_from=NOW + timedelta(days=1),
        valid_until=NOW + timedelta(days=30),
        max_level=Level.L2,
    )
    w.admin.issue_grant(w.actor("bureau-health"), CLAIMS, "op-planner", terms)
    return query("op-planner", columns={CLAIMS: ["district"]})


def _used(times: int) -> Callable[[World], None]:
    def use(w: World) -> None:
        grant = next(g for g in w.admin.list_grants(w.actor("op-bank")) if g.dataset == CLAIMS)
        with w.engine.begin() as conn:
            for _ in range(times):
                record_usage(conn, [UsagePart(grant, 10_000)], cpu_ms=5, now=w.clock())

    return use


def _quota_queries(w: World) -> dict[str, Any]:
    _narrow(queries_per_day=2)(w)
    _used(2)(w)
    return query()


def _quota_rows(w: World) -> dict[str, Any]:
    _narrow(rows_per_day=15_000)(w)
    _used(1)(w)  # 10,000 scanned; the next full scan would make 20,000
    return query()


def _budget_exhausted(w: World) -> dict[str, Any]:
    grant_id = w.grant_id("op-insurer", CLAIMS)
    with w.engine.begin() as conn:
        for _ in range(10):
            spend_budget(conn, grant_id, 1.0, now=w.clock())
    return query("op-insurer")


def _disabled(w: World) -> dict[str, Any]:
    actor = w.actor("op-bank")
    w.admin.disable_account(w.host, "op-bank")
    return query(actor)


def _frozen_dataset(w: World) -> dict[str, Any]:
    w.admin.set_dataset_frozen(w.host, CLAIMS, True, reason="incident")
    return query()


def _frozen_operator(w: World) -> dict[str, Any]:
    w.admin.set_operator_frozen(w.host, "op-bank", True, reason="incident")
    return query()


CASES: list[tuple[str, Setup]] = [
    ("licence.expired", _licence_expired),
    ("licence.suspended", _licence(status=LicenceStatus.SUSPENDED)),
    ("licence.withdrawn", _licence(status=LicenceStatus.WITHDRAWN)),
    ("licence.missing", _licence_missing),
    ("operator.frozen", _frozen_operator),
    ("dataset.frozen", _frozen_dataset),
    ("dataset.unknown", lambda w: query(datasets=["health.nothing"], columns={})),
    ("grant.missing", lambda w: query(datasets=["transport.trips"], columns={})),
    ("grant.purpose_mismatch", lambda w: query(purpose="marketing")),
    ("grant.suspended", _status("suspend")),
    ("grant.revoked", _status("revoke")),
    ("grant.expired", _grant_expired),
    ("grant.not_yet_valid", _not_yet_valid),
    ("column.unknown", lambda w: query(columns={CLAIMS: ["salary"]})),
    ("column.l4", lambda w: query(columns={CLAIMS: ["id_number"]})),
    (
        "column.above_ceiling",
        lambda w: (
            _narrow(max_level=Level.L2, groupable=AGE_GENDER)(w)
            | {"columns": {CLAIMS: ["diagnosis_code"]}}
        ),
    ),
    (
        "column.not_listed",
        lambda w: (
            _narrow(columns=frozenset({"age", "person_id"}), groupable=frozenset({"age"}))(w)
            | {"columns": {CLAIMS: ["district"]}}
        ),
    ),
    (
        "column.not_groupable",
        lambda w: _narrow(groupable=frozenset({"age"}))(w) | {"group_by": {CLAIMS: ["gender"]}},
    ),
    ("quota.queries_per_day", _quota_queries),
    ("quota.rows_per_day", _quota_rows),
    ("budget.per_query", lambda w: query("op-insurer", epsilon=2.0)),
    ("budget.exhausted", _budget_exhausted),
    ("account.disabled", _disabled),
    ("account.unknown", lambda w: query(Actor(name="ghost", role=Role.OPERATOR, subject="ghost"))),
    ("role.not_permitted", lambda w: query("bureau-health")),
    (
        "domain.outside",
        lambda w: {
            "actor": "bureau-market",
            "action": "grant.issue",
            "target": f"dataset:{CLAIMS}",
        },
    ),
    (
        "owner.mismatch",
        lambda w: {"actor": "op-bank", "action": "job.read", "target": "account:op-insurer"},
    ),
    (
        "grant.not_own",
        lambda w: {
            "actor": "op-bank",
            "action": "grant.read",
            "target": f"grant:{w.grant_id('op-insurer', CLAIMS)}",
        },
    ),
    (
        "grant.unknown",
        lambda w: {"actor": "bureau-health", "action": "grant.suspend", "target": "grant:gr_0000"},
    ),
    (
        "action.unknown",
        lambda w: {"actor": "admin", "action": "dataset.delete", "target": f"dataset:{CLAIMS}"},
    ),
    (
        "target.invalid",
        lambda w: {"actor": "bureau-health", "action": "grant.issue", "target": "platform"},
    ),
    ("query.no_datasets", lambda w: query(datasets=[], columns={})),
    (
        "token.not_own",
        lambda w: {"actor": w.host, "action": "token.issue", "target": "account:op-bank"},
    ),
]

ERRORS = {
    "quota.queries_per_day": QuotaExceeded,
    "quota.rows_per_day": QuotaExceeded,
    "budget.exhausted": BudgetExhausted,
    "budget.per_query": BudgetExhausted,
    "dataset.unknown": NotFound,
    "grant.unknown": NotFound,
    # "Not yours" is answered as "does not exist" (Withheld, a NotFound; real rule audited).
    "grant.missing": Withheld,
    "grant.not_own": Withheld,
}


def _decide(w: World, request: dict[str, Any]):  # type: ignore[no-untyped-def]
    request = dict(request)
    actor = request.pop("actor")
    if isinstance(actor, str):
        actor = w.actor(actor)
    return w.authority.decide(actor, request.pop("action"), request.pop("target", None), **request)


def test_every_deny_rule_has_a_case() -> None:
    named = {rule for rule, _ in CASES}
    auth_rules = {r for r in RULES if r.startswith(("auth.", "allow.", "enrolment."))}
    assert named == set(RULES) - auth_rules


@pytest.mark.parametrize(("rule", "setup"), CASES, ids=[c[0] for c in CASES])
def test_deny_reason(any_world: World, rule: str, setup: Setup) -> None:
    w = any_world
    baseline = _decide(w, query())
    assert baseline.allowed, baseline  # the same request was allowed before the setup
    decision = _decide(w, setup(w))
    assert not decision.allowed
    assert decision.rule == rule, decision.reason
    assert decision.reason and decision.grants == ()
    assert isinstance(decision.error(), ERRORS.get(rule, Forbidden))
    last = w.recorder.entries[-1]
    assert (last["decision"], last["rule"], last["action"]) == ("deny", rule, decision.action)


def test_allow_names_grant_and_policy_line(world: World) -> None:
    d = world.authority.decide(
        world.actor("op-bank"),
        "dataset.query",
        "query:job-1",
        datasets=[CLAIMS],
        columns={CLAIMS: ["age", "diagnosis_code", "person_id"]},
        group_by={CLAIMS: ["age", "diagnosis_code"]},
    )
    assert (d.allowed, d.rule, d.target) == (True, "allow.grant", "query:job-1")
    assert d.policy == "p, operator, *, dataset, query"
    assert d.grant is not None and d.grant.operator == "op-bank" and d.k == 10
    assert d.usage[d.grant.id].queries == 0 and d.dataset_rows == {CLAIMS: 10_000}
    entry = world.recorder.entries[-1]
    assert entry["dataset"] == CLAIMS and entry["details"]["grants"][0]["id"] == d.grant.id


def test_join_needs_a_grant_on_every_dataset(any_world: World) -> None:
    w = any_world
    bank, planner = w.actor("op-bank"), w.actor("op-planner")
    both = ["market.enterprises", "hrss.social_insurance"]
    d = w.authority.decide(
        bank,
        "dataset.query",
        datasets=both,
        columns={
            "market.enterprises": ["industry", "credit_code"],
            "hrss.social_insurance": ["employees", "credit_code"],
        },
    )
    assert d.allowed and {g.dataset for g in d.grants} == set(both)
    assert d.grant_for("hrss.social_insurance").operator == "op-bank"
    d = w.authority.decide(bank, "dataset.query", datasets=["market.enterprises", CLAIMS])
    assert d.allowed
    d = w.authority.decide(planner, "dataset.query", datasets=["transport.trips", CLAIMS])
    assert (d.allowed, d.rule) == (False, "grant.missing") and CLAIMS in d.reason
    w.admin.revoke_grant(w.actor("bureau-hrss"), w.grant_id("op-bank", both[1]))
    d = w.authority.decide(bank, "dataset.query", datasets=both)
    assert (d.allowed, d.rule) == (False, "grant.revoked")


def test_best_grant_wins_and_reason_is_the_most_specific(world: World) -> None:
    w = world
    bureau = w.actor("bureau-health")
    first = _bank_claims(w)
    second = w.admin.issue_grant(
        bureau,
        CLAIMS,
        "op-bank",
        GrantTerms(
            purpose_code="credit-risk",
            purpose_text="second grant, narrow",
            valid_from=NOW,
            valid_until=NOW + timedelta(days=10),
            max_level=Level.L2,
        ),
    )
    w.admin.suspend_grant(bureau, first)
    d = w.authority.decide(
        w.actor("op-bank"), "dataset.query", datasets=[CLAIMS], columns={CLAIMS: ["district"]}
    )
    assert d.allowed and d.grant is not None and d.grant.id == second.id
    d = w.authority.decide(
        w.actor("op-bank"), "dataset.query", datasets=[CLAIMS], columns={CLAIMS: ["diagnosis_code"]}
    )
    assert d.rule == "column.above_ceiling"  # got further than the suspended grant


def test_freeze_applies_on_every_server_without_restart(any_world: World) -> None:
    w = any_world
    other = w.server()
    bank = w.actor("op-bank")
    ask = {"datasets": [CLAIMS], "columns": {CLAIMS: ["age"]}}
    assert other.decide(bank, "dataset.query", **ask).allowed  # cached on the other server
    assert other.decide(bank, "dataset.query", **ask).allowed
    w.admin.set_dataset_frozen(w.host, CLAIMS, True, reason="leak suspected")
    assert other.decide(bank, "dataset.query", **ask).rule == "dataset.frozen"
    w.admin.set_dataset_frozen(w.host, CLAIMS, False)
    assert other.decide(bank, "dataset.query", **ask).allowed
    w.admin.set_operator_frozen(w.host, "op-bank", True)
    assert other.decide(bank, "dataset.query", **ask).rule == "operator.frozen"
    assert other.decide(bank, "job.read", "account:op-bank").allowed  # reads go on


def test_changes_on_one_server_invalidate_caches_on_another(any_world: World) -> None:
    w = any_world
    other = w.server()
    bank = w.actor("op-bank")
    assert other.decide(bank, "dataset.query", datasets=[CLAIMS]).allowed
    w.admin.narrow_grant(
        w.actor("bureau-health"), _bank_claims(w), max_level=Level.L2, groupable=AGE_GENDER
    )
    d = other.decide(bank, "dataset.query", datasets=[CLAIMS], columns={CLAIMS: ["diagnosis_code"]})
    assert d.rule == "column.above_ceiling"
    token = w.tokens["op-bank"]
    assert other.authenticate(token).name == "op-bank"
    w.admin.revoke_token(w.host, bank.token_id or "")
    with pytest.raises(AuthenticationError) as raised:
        other.authenticate(token)
    assert raised.value.rule == "auth.token_revoked"


def test_cached_allow_expires_with_the_grant(world: World) -> None:
    w = world
    w.admin.narrow_grant(
        w.actor("bureau-health"), _bank_claims(w), valid_until=NOW + timedelta(minutes=30)
    )
    bank = w.actor("op-bank")
    assert w.authority.decide(bank, "dataset.query", datasets=[CLAIMS]).allowed
    w.clock.advance(minutes=29, seconds=59)
    assert w.authority.decide(bank, "dataset.query", datasets=[CLAIMS]).allowed
    w.clock.advance(seconds=1)
    assert w.authority.decide(bank, "dataset.query", datasets=[CLAIMS]).rule == "grant.expired"


def test_quota_counts_are_read_fresh_each_decision(world: World) -> None:
    w = world
    _narrow(queries_per_day=3)(w)
    bank = w.actor("op-bank")
    for used in range(3):
        d = w.authority.require(bank, "dataset.query", datasets=[CLAIMS])
        assert d.usage[d.grants[0].id].queries == used
        w.authority.record_usage(d, cpu_ms=10)
    with pytest.raises(QuotaExceeded):
        w.authority.require(bank, "dataset.query", datasets=[CLAIMS])
    w.clock.advance(days=1)  # a new UTC day
    assert w.authority.decide(bank, "dataset.query", datasets=[CLAIMS]).allowed


def test_budget_remaining_is_reported(world: World) -> None:
    w = world
    insurer = w.actor("op-insurer")
    d = w.authority.require(insurer, "dataset.query", datasets=[CLAIMS], epsilon=1.0)
    grant_id = d.grants[0].id
    assert d.budgets[grant_id].remaining == 10.0 and d.budgets[grant_id].per_query == 1.0
    with w.engine.begin() as conn:
        spend_budget(conn, grant_id, 0.75, now=w.clock())
    d = w.authority.require(insurer, "dataset.query", datasets=[CLAIMS])
    assert d.budgets[grant_id].remaining == pytest.approx(9.25)
