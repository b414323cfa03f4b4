"""Separation of duties (管运分离): the role table of DESIGN.md, one decision per data line."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies import ACTIONS, Actor, Decision
from policies.enforcer import read_policy_file
from sandbox.core.errors import InvalidInput

from .conftest import World

CASES = [
    row
    for row in csv.reader(
        (Path(__file__).parent / "cases" / "roles.csv").read_text("utf-8").splitlines()
    )
    if row and not row[0].startswith("#")
]


def decide(w: World, actor_name: str, action: str, target: str) -> Decision:
    actor = w.host if actor_name == "host" else w.actor(actor_name)
    if target == "query":
        return w.authority.decide(actor, action, datasets=["health.claims"])
    if target.startswith("grant:") and "/" in target:
        operator, dataset = target.removeprefix("grant:").split("/")
        target = f"grant:{w.grant_id(operator, dataset)}"
    return w.authority.decide(actor, action, target)


@pytest.mark.parametrize(
    ("actor", "action", "target", "rule"), CASES, ids=["-".join(c[:3]) for c in CASES]
)
def test_role_table(shared_world: World, actor: str, action: str, target: str, rule: str) -> None:
    decision = decide(shared_world, actor, action, target)
    assert decision.rule == rule, decision.reason
    assert decision.allowed == rule.startswith("allow.")


def test_every_action_is_in_the_table() -> None:
    acted = {(a, act) for a, act, _, _ in CASES}
    for action in ACTIONS:
        assert any(
            (name, action) in acted for name in ("op-bank", "bureau-health", "auditor", "admin")
        ), action


def test_stale_actor_cannot_borrow_a_role(world: World) -> None:
    """The Casbin subject decides; a forged role on the Actor object changes nothing."""
    bank = world.actor("op-bank")
    forged = Actor(name=bank.name, role=bank.role.__class__("admin"), subject=bank.subject)
    assert (
        world.authority.decide(forged, "account.create", "account:op-x").rule
        == "role.not_permitted"
    )


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    actor=st.sampled_from(["op-bank", "bureau-health", "auditor", "admin", "host"]),
    action=st.one_of(st.sampled_from(sorted(ACTIONS)), st.text(max_size=20)),
    kind=st.sampled_from(["platform", "dataset", "domain", "grant", "account", "token", "x"]),
    ident=st.text(alphabet="abcdefghijklmnopqrstuvwxyz._-:", max_size=20),
)
def test_deny_by_default(
    shared_world: World, actor: str, action: str, kind: str, ident: str
) -> None:
    """Whatever is asked, an allow needs a policy line, and anything unknown is a deny."""
    who = shared_world.host if actor == "host" else shared_world.actor(actor)
    target = kind if kind == "platform" else f"{kind}:{ident}"
    try:
        decision = shared_world.authority.decide(who, action, target, audit=False)
    except InvalidInput:
        return  # a malformed target is refused before any decision
    if decision.allowed:
        assert action in ACTIONS and decision.policy and decision.rule == "allow.role"
        obj, act = action.split(".")
        role = "admin" if actor == "host" else who.role.value
        line = [
            p for p in read_policy_file() if p[0] == "p" and p[1] == role and p[3:5] == (obj, act)
        ]
        assert line, (actor, action, target)
    elif action not in ACTIONS:
        assert decision.rule == "action.unknown"
