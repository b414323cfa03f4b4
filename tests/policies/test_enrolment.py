"""Tokens go only to their own account: self-service with a held token, or a one-time
enrolment code the admin issues and the holder redeems.  The admin never holds another
account's token, and every audit entry names the acting token and who issued it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from policies import Actor, Administration, Authority, MemoryRecorder, Role
from policies.enforcer import ensure_policy
from policies.enrolments import hash_code
from sandbox.core.db import open_control_db
from sandbox.core.errors import AuthenticationError, Forbidden
from sandbox.core.policy_tables import casbin_rule, enrolments, tokens

from .conftest import Clock, World


@pytest.mark.parametrize("who", ["host", "admin", "bureau-health", "op-insurer"])
def test_nobody_issues_a_token_of_another_account(world: World, who: str) -> None:
    actor = world.host if who == "host" else world.actor(who)
    with world.engine.connect() as conn:
        before = conn.execute(sa.select(sa.func.count()).select_from(tokens)).scalar_one()
    with pytest.raises(Forbidden) as refused:
        world.admin.issue_token(actor, "op-bank")
    assert refused.value.rule == "token.not_own"
    with world.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(tokens)).scalar_one() == before
    entry = world.recorder.entries[-1]
    assert (entry["action"], entry["decision"], entry["rule"]) == (
        "token.issue",
        "deny",
        "token.not_own",
    )
    assert entry["target"] == "account:op-bank" and entry["actor"] == actor.name


def test_an_account_asks_for_its_own_token_with_the_one_it_holds(world: World) -> None:
    bank = world.actor("op-bank")
    issued = world.admin.issue_token(bank, label="laptop", ttl=timedelta(days=1))
    assert issued.account == "op-bank"
    fresh = world.authority.authenticate(issued.token)
    assert (fresh.name, fresh.token_issued_by) == ("op-bank", "op-bank")
    with world.engine.connect() as conn:
        row = conn.execute(sa.select(tokens).where(tokens.c.id == issued.id)).one()
    assert (row.created_by, row.issued_via) == ("op-bank", f"token:{bank.token_id}")
    entry = world.recorder.entries[-1]
    assert entry["details"]["new_token_id"] == issued.id
    assert entry["details"]["token_id"] == bank.token_id  # the token that asked
    # Rotation: the asking token is revoked in the same act.
    rotated = world.admin.issue_token(fresh, replace_current=True)
    with pytest.raises(AuthenticationError) as raised:
        world.authority.authenticate(issued.token)
    assert raised.value.rule == "auth.token_revoked"
    assert world.authority.authenticate(rotated.token).name == "op-bank"
    assert world.authority.authenticate(world.tokens["op-bank"]).name == "op-bank"


def test_enrolment_code_is_random_single_use_and_stored_hashed(world: World) -> None:
    enrolment = world.admin.issue_enrolment(world.host, "auditor", label="new laptop")
    code = enrolment.code
    assert code.startswith("sbe_") and len(code) == 4 + 43
    with world.engine.connect() as conn:
        flat = repr(conn.execute(sa.select(enrolments)).all())
    assert code not in flat and code[4:] not in flat and str(hash_code(code)) in flat
    token = world.admin.redeem_enrolment(code, client="10.1.2.3")
    assert token.account == "auditor" and token.token.startswith("sbx_")
    audit_text = repr(world.recorder.entries)
    assert code not in audit_text and token.token not in audit_text
    redeemed = world.recorder.entries[-1]
    assert (redeemed["action"], redeemed["decision"], redeemed["rule"]) == (
        "enrolment.redeem",
        "allow",
        "allow.enrolment",
    )
    assert redeemed["details"]["enrolment_issued_by"] == "host:tester"
    assert redeemed["client"] == "10.1.2.3"
    actor = world.authority.authenticate(token.token)
    assert (actor.token_id, actor.token_issued_by) == (token.id, "host:tester")
    with world.engine.connect() as conn:
        row = conn.execute(sa.select(tokens).where(tokens.c.id == token.id)).one()
    assert row.issued_via == f"enrolment:{enrolment.id}" and row.label == "new laptop"
    with pytest.raises(AuthenticationError) as raised:
        world.admin.redeem_enrolment(code)
    assert raised.value.rule == "enrolment.used" and raised.value.status == 401
    assert world.recorder.entries[-1]["target"] == f"enrolment:{enrolment.id}"


def test_enrolment_expiry_voiding_and_disabled_account(world: World) -> None:
    first = world.admin.issue_enrolment(world.host, "op-planner", ttl=timedelta(hours=1))
    second = world.admin.issue_enrolment(world.host, "op-planner", ttl=timedelta(hours=1))
    with pytest.raises(AuthenticationError) as raised:
        world.admin.redeem_enrolment(first.code)
    assert raised.value.rule == "enrolment.used"  # voided by the newer code
    world.clock.advance(hours=1)
    with pytest.raises(AuthenticationError) as raised:
        world.admin.redeem_enrolment(second.code)
    assert raised.value.rule == "enrolment.expired"
    third = world.admin.issue_enrolment(world.host, "op-planner")
    world.admin.disable_account(world.host, "op-planner")
    with pytest.raises(AuthenticationError) as raised:
        world.admin.redeem_enrolment(third.code)
    assert raised.value.rule == "account.disabled"
    for code in ("", "sbe_short", "sbx_" + "A" * 43, "sbe_" + "A" * 43):
        with pytest.raises(AuthenticationError) as raised:
            world.admin.redeem_enrolment(code)
        assert raised.value.rule == "enrolment.unknown"
        assert world.recorder.entries[-1]["actor"] == "anonymous"


@pytest.mark.parametrize("who", ["op-bank", "auditor", "bureau-health"])
def test_only_the_admin_issues_enrolment_codes(world: World, who: str) -> None:
    with pytest.raises(Forbidden) as refused:
        world.admin.issue_enrolment(world.actor(who), "op-insurer")
    assert refused.value.rule == "role.not_permitted"
    assert world.admin.issue_enrolment(world.actor("admin"), "op-insurer").account == "op-insurer"


def test_a_policy_seeded_before_enrolments_gets_their_lines(tmp_path: Path) -> None:
    engine = open_control_db(f"sqlite:///{tmp_path / 'control.db'}")
    ensure_policy(engine)
    with engine.begin() as conn:  # as an older release seeded it: no enrolment line
        conn.execute(sa.delete(casbin_rule).where(casbin_rule.c.v2 == "enrolment"))
        conn.execute(
            sa.delete(casbin_rule).where(
                casbin_rule.c.v2 == "operator", casbin_rule.c.v3 == "freeze"
            )
        )
    authority = Authority(engine, recorder=MemoryRecorder(), clock=Clock())
    admin = Administration(authority)
    host = Actor.host("ops")
    try:
        admin.create_account(host, "auditor", role=Role.AUDITOR, organisation="A")
        assert admin.issue_enrolment(host, "auditor").account == "auditor"
        # An action the deployment configured away stays away.
        assert authority.decide(host, "operator.freeze", "account:auditor").rule == (
            "role.not_permitted"
        )
    finally:
        authority.close()
        engine.dispose()


# -- dual control: an admin account's code gives no token alone ------------------------------


def _holder_token() -> tuple[str, str]:
    """A token made by its holder, and the SHA-256 that is all the server gets."""
    from policies.bearer import new_secret
    from policies.tokens import TOKEN_PREFIX, hash_token

    token = new_secret(TOKEN_PREFIX)
    digest = hash_token(token)
    assert digest is not None
    return token, digest


def test_an_admin_accounts_code_needs_the_holders_token_and_a_second_admin(world: World) -> None:
    from policies.bearer import fingerprint

    admin = world.actor("admin")
    enrolment = world.admin.issue_enrolment(admin, "op-insurer", label="second laptop")
    assert enrolment.needs_approval
    # A token made by the server is refused, and the code is not spent by asking.
    with pytest.raises(AuthenticationError) as raised:
        world.admin.redeem_enrolment(enrolment.code)
    assert raised.value.rule == "enrolment.holder_token"
    with pytest.raises(AuthenticationError) as raised:
        world.admin.redeem_with_token(enrolment.code, "not-a-digest")
    assert raised.value.rule == "enrolment.token_hash"
    token, digest = _holder_token()
    pending = world.admin.redeem_with_token(enrolment.code, digest)
    assert pending.pending and pending.token is None and pending.account == "op-insurer"
    assert pending.fingerprint == fingerprint(digest)
    assert world.recorder.entries[-1]["rule"] == "allow.enrolment_pending"
    with pytest.raises(AuthenticationError) as raised:
        world.authority.authenticate(token)  # no token exists before the approval
    assert raised.value.rule == "auth.token_unknown"
    # The issuing admin cannot approve it, whatever fingerprint it gives.
    with pytest.raises(Forbidden) as refused:
        world.admin.approve_enrolment(admin, enrolment.id, pending.fingerprint or "")
    assert refused.value.rule == "enrolment.same_admin"
    assert world.recorder.entries[-1]["action"] == "enrolment.approve"
    # A second administrator must be told the right fingerprint.
    with pytest.raises(Forbidden) as refused:
        world.admin.approve_enrolment(world.host, enrolment.id, fingerprint("0" * 64))
    assert refused.value.rule == "enrolment.fingerprint"
    told = (pending.fingerprint or "").lower().replace("-", " ")  # as typed by a person
    approved = world.admin.approve_enrolment(world.host, enrolment.id, told)
    assert approved.token == "" and approved.account == "op-insurer"
    actor = world.authority.authenticate(token)
    assert (actor.name, actor.token_id, actor.token_issued_by) == (
        "op-insurer",
        approved.id,
        "admin",
    )
    entry = world.recorder.entries[-1]
    assert (entry["action"], entry["decision"], entry["actor"]) == (
        "enrolment.approve",
        "allow",
        "host:tester",
    )
    assert entry["details"]["enrolment_issued_by"] == "admin"
    assert token not in repr(world.recorder.entries) and digest not in repr(world.recorder.entries)
    with pytest.raises(Exception) as again:
        world.admin.approve_enrolment(world.host, enrolment.id, told)
    assert getattr(again.value, "rule", None) == "enrolment.not_pending"


def test_an_admin_cannot_enrol_an_admin_of_its_own_to_approve_for_it(world: World) -> None:
    admin = world.actor("admin")
    world.admin.create_account(admin, "admin-two", role=Role.ADMIN, organisation="sock puppet")
    code = world.admin.issue_enrolment(admin, "admin-two").code
    _, digest = _holder_token()
    pending = world.admin.redeem_with_token(code, digest)
    assert pending.pending  # admin accounts too: no token without a second administrator
    with pytest.raises(Forbidden) as refused:
        world.admin.approve_enrolment(admin, pending.enrolment, pending.fingerprint or "")
    assert refused.value.rule == "enrolment.same_admin"


def test_a_host_console_code_gives_the_holders_own_token_at_once(world: World) -> None:
    enrolment = world.admin.issue_enrolment(world.host, "op-planner")
    assert not enrolment.needs_approval
    token, digest = _holder_token()
    redeemed = world.admin.redeem_with_token(enrolment.code, digest)
    assert redeemed.token is not None and redeemed.token.token == ""  # never seen here
    assert world.authority.authenticate(token).name == "op-planner"
    with pytest.raises(Exception) as refused:
        world.admin.approve_enrolment(world.actor("admin"), enrolment.id, "x")
    assert getattr(refused.value, "rule", None) == "enrolment.not_pending"
