"""Caches filled while another process changes the policy: a change is never missed.

Each test makes the race happen at the worst moment: the other server reads a row (or
asks Casbin) under the old policy, then the change commits and that server adopts the
new policy state (a concurrent request of its own would), and only then does the first
lookup store what it read.  The next decision must see the change.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from policies import Target
from sandbox.core.policy_tables import bump_policy_version, casbin_rule
from tests.policies.conftest import World

CLAIMS = "health.claims"


def test_a_freeze_racing_another_servers_dataset_read_is_seen_next(world: World) -> None:
    other = world.server()
    bank = world.actor("op-bank")
    ask: dict[str, Any] = {"datasets": [CLAIMS], "columns": {CLAIMS: ["age"]}}
    fired: list[str] = []

    def freeze_meanwhile(*args: Any) -> None:
        statement = args[2]
        if fired or "datasets.classification" not in statement:
            return
        fired.append(statement)  # the dataset row (not frozen) is read: now freeze it
        world.admin.set_dataset_frozen(world.host, CLAIMS, True, reason="leak suspected")
        other.sync()

    sa.event.listen(other.engine, "after_cursor_execute", freeze_meanwhile)
    try:
        other.decide(bank, "dataset.query", **ask)  # concurrent with the freeze: either answer
    finally:
        sa.event.remove(other.engine, "after_cursor_execute", freeze_meanwhile)
    assert fired, "the dataset row was never read"
    assert other.decide(bank, "dataset.query", **ask).rule == "dataset.frozen"
    # And the cache still works: unfreezing is seen too.
    world.admin.set_dataset_frozen(world.host, CLAIMS, False, reason="cleared")
    assert other.decide(bank, "dataset.query", **ask).allowed


def test_a_casbin_change_racing_another_servers_lookup_is_seen_next(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = world.server()
    auditor = world.actor("auditor")
    assert world.authority.decide(auditor, "audit.read", Target.platform()).allowed
    casbin = other.enforcer.casbin
    lookup = casbin.enforce_ex
    fired: list[bool] = []

    def withdraw_meanwhile() -> None:
        with world.engine.begin() as conn:
            conn.execute(
                sa.delete(casbin_rule).where(
                    casbin_rule.c.ptype == "p",
                    casbin_rule.c.v0 == "auditor",
                    casbin_rule.c.v2 == "audit",
                    casbin_rule.c.v3 == "read",
                )
            )
            bump_policy_version(conn, rules=True)
        other.sync()

    class MatchedRule(list[str]):
        """The rule Casbin matched, read once the lookup is done: the change lands then."""

        def __iter__(self) -> Any:
            if not fired:
                fired.append(True)
                withdraw_meanwhile()
            return super().__iter__()

    def enforce_ex(*request: str) -> tuple[bool, list[str]]:
        allowed, explain = lookup(*request)
        return allowed, MatchedRule(explain)

    monkeypatch.setattr(casbin, "enforce_ex", enforce_ex)
    other.decide(auditor, "audit.read", Target.platform())  # concurrent with the change
    assert fired, "Casbin was never asked"
    monkeypatch.undo()
    decision = other.decide(auditor, "audit.read", Target.platform())
    assert not decision.allowed and decision.rule == "role.not_permitted"
