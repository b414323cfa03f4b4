"""The Casbin model and policy: readable files, seeded into the DB, loaded through the adapter."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from policies import Actor, Authority, MemoryRecorder
from policies.enforcer import (
    FIRST_RELEASE_ACTIONS,
    MODEL_PATH,
    POLICY_PATH,
    RoleEnforcer,
    added_actions,
    check_separation,
    ensure_policy,
    read_policy_file,
)
from sandbox.core.db import open_control_db
from sandbox.core.errors import InvalidInput
from sandbox.core.policy_tables import bump_policy_version, casbin_rule

from .conftest import World


def test_files_are_the_readable_source() -> None:
    assert "[matchers]" in MODEL_PATH.read_text()
    lines = read_policy_file(POLICY_PATH)
    assert ("p", "operator", "*", "dataset", "query") in lines
    assert ("g", "host", "admin", "*") in lines
    assert len([line for line in lines if line[0] == "p"]) < 60  # few lines: enforcement stays fast
    check_separation(lines)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (("p", "admin", "*", "grant", "issue"), "admin may never grant.issue"),
        (("p", "admin", "platform", "result", "read"), "admin may never result.read"),
        (("p", "bureau", "*", "dataset", "query"), "bureau may never dataset.query"),
        (("p", "operator", "*", "grant", "revoke"), "operator may never grant.revoke"),
        (("p", "auditor", "platform", "account", "disable"), "auditor may only read"),
    ],
)
def test_separation_of_duties_is_enforced_on_the_policy(
    line: tuple[str, ...], problem: str
) -> None:
    with pytest.raises(InvalidInput, match=problem) as raised:
        check_separation([*read_policy_file(), line])
    assert raised.value.rule == "policy.separation_of_duties"


def test_one_account_one_role() -> None:
    with pytest.raises(InvalidInput, match="several roles"):
        check_separation([("g", "x", "admin", "*"), ("g", "x", "bureau", "health")])


def test_policy_is_seeded_once_and_loaded_through_the_adapter(control_url: str) -> None:
    engine = open_control_db(control_url)
    try:
        assert ensure_policy(engine) is True
        assert ensure_policy(engine) is False
        with engine.connect() as conn:
            count = conn.execute(sa.select(sa.func.count()).select_from(casbin_rule)).scalar()
        assert count == len(read_policy_file())
        enforcer = RoleEnforcer(engine)
        assert enforcer.permit("host", "platform", "account", "create") == (
            True,
            "p, admin, platform, account, create",
        )
        assert enforcer.permit("host", "health", "grant", "issue") == (False, None)
        assert set(enforcer.lines()) == set(read_policy_file())
    finally:
        engine.dispose()


def test_a_policy_line_added_in_the_database_applies_everywhere(world: World) -> None:
    other = world.server()
    auditor = world.actor("auditor")
    assert other.decide(auditor, "usage.read", "platform").rule == "role.not_permitted"
    with world.engine.begin() as conn:
        conn.execute(
            sa.insert(casbin_rule).values(ptype="p", v0="auditor", v1="*", v2="usage", v3="read")
        )
        bump_policy_version(conn, rules=True)
    assert other.decide(auditor, "usage.read", "platform").allowed


def test_a_hand_edited_policy_breaking_separation_fails_closed(world: World) -> None:
    with world.engine.begin() as conn:
        conn.execute(
            sa.insert(casbin_rule).values(ptype="p", v0="admin", v1="*", v2="grant", v3="issue")
        )
        bump_policy_version(conn, rules=True)
    with pytest.raises(InvalidInput) as raised:
        world.authority.decide(world.actor("admin"), "grant.issue", "dataset:health.claims")
    assert raised.value.rule == "policy.separation_of_duties"
    with pytest.raises(InvalidInput):  # a server starting now refuses too
        Authority(world.engine, recorder=MemoryRecorder())


def test_role_links_live_in_casbin(world: World) -> None:
    with world.engine.connect() as conn:
        rows = conn.execute(
            sa.select(casbin_rule.c.v0, casbin_rule.c.v1, casbin_rule.c.v2).where(
                casbin_rule.c.ptype == "g"
            )
        ).all()
    links = {tuple(r) for r in rows}
    assert ("bureau-health", "bureau", "health") in links
    assert ("op-bank", "operator", "*") in links
    assert ("admin", "admin", "*") in links


def test_host_console_is_an_admin_only_through_the_policy(world: World) -> None:
    host = Actor.host("root")
    assert world.authority.decide(host, "account.list", "platform").policy == (
        "p, admin, platform, account, list"
    )


def test_an_older_policy_table_gets_every_action_added_since(control_url: str) -> None:
    """A table seeded by the first release gains each later action's default lines."""
    engine = open_control_db(control_url)
    try:
        first = [
            line
            for line in read_policy_file()
            if line[0] == "g" or line[3:5] in FIRST_RELEASE_ACTIONS
        ]
        with engine.begin() as conn:
            conn.execute(
                sa.insert(casbin_rule),
                [
                    {"ptype": line[0]} | {f"v{i}": (*line[1:], *[None] * 6)[i] for i in range(6)}
                    for line in first
                ],
            )
        added = added_actions(read_policy_file())
        assert ("grant", "release_mode") in added and ("registration", "decide") in added
        assert ensure_policy(engine) is True
        enforcer = RoleEnforcer(engine)
        assert set(enforcer.lines()) == set(read_policy_file())
        assert ensure_policy(engine) is False
    finally:
        engine.dispose()
