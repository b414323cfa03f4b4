"""Accounts, licences and tokens: 256-bit tokens shown once, stored hashed, expiring, revocable."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from policies import Licence, LicenceStatus, Role
from policies.tokens import TOKEN_BYTES, hash_token
from sandbox.core.errors import AuthenticationError, Conflict, Forbidden, InvalidInput

from .conftest import NOW, World


@pytest.mark.parametrize(
    ("kwargs", "rule"),
    [
        ({"name": "op-x", "role": Role.OPERATOR, "organisation": "X"}, "account.licence"),
        ({"name": "b-x", "role": Role.BUREAU, "organisation": "X"}, "account.domain"),
        (
            {"name": "a-x", "role": Role.AUDITOR, "organisation": "X", "domains": ["health"]},
            "account.domain",
        ),
        ({"name": "host", "role": Role.ADMIN, "organisation": "X"}, "account.name"),
        ({"name": "Op X", "role": Role.ADMIN, "organisation": "X"}, "account.name"),
        (
            {"name": "b-y", "role": Role.BUREAU, "organisation": "X", "domains": ["platform"]},
            "account.domain",
        ),
        ({"name": "a-y", "role": Role.ADMIN, "organisation": " "}, "account.organisation"),
        (
            {
                "name": "a-z",
                "role": Role.ADMIN,
                "organisation": "X",
                "licence": Licence(number="L", valid_until=NOW),
            },
            "account.licence",
        ),
    ],
)
def test_account_rules(world: World, kwargs: dict[str, object], rule: str) -> None:
    name = kwargs.pop("name")
    with pytest.raises(InvalidInput) as raised:
        world.admin.create_account(world.host, name, **kwargs)  # type: ignore[arg-type]
    assert raised.value.rule == rule


def test_create_list_and_duplicate(world: World) -> None:
    created = world.admin.create_account(
        world.host,
        "bureau-multi",
        role=Role.BUREAU,
        organisation="Two domains",
        domains=["transport", "health"],
    )
    assert created.domains == ("health", "transport")
    with pytest.raises(Conflict):
        world.admin.create_account(world.host, "op-bank", role=Role.ADMIN, organisation="x")
    names = [a.name for a in world.admin.list_accounts(world.host)]
    assert "bureau-multi" in names and names == sorted(names)
    with pytest.raises(Forbidden):
        world.admin.list_accounts(world.actor("auditor"))
    entry = next(e for e in world.recorder.entries if e["target"] == "account:bureau-multi")
    assert entry["action"] == "account.create" and entry["details"]["account"]["role"] == "bureau"


def test_multi_domain_bureau_acts_in_each_domain(world: World) -> None:
    world.admin.create_account(
        world.host,
        "bureau-multi",
        role=Role.BUREAU,
        organisation="Two",
        domains=["transport", "health"],
    )
    token = world.enrol("bureau-multi").token
    actor = world.authority.authenticate(token)
    for target in ("dataset:health.claims", "dataset:transport.trips"):
        assert world.authority.decide(actor, "grant.issue", target).allowed
    assert world.authority.decide(actor, "grant.issue", "dataset:market.enterprises").rule == (
        "domain.outside"
    )


def test_token_is_random_shown_once_and_stored_hashed(world: World) -> None:
    bank = world.actor("op-bank")
    issued = world.admin.issue_token(bank, label="ci")
    assert issued.token.startswith("sbx_") and len(issued.token) == 4 + 43
    assert TOKEN_BYTES * 8 >= 256
    other = world.enrol("op-bank")
    assert other.token != issued.token
    with world.engine.connect() as conn:
        dump = [tuple(map(str, row)) for row in conn.execute(sa.text("SELECT * FROM tokens"))]
    flat = " ".join(" ".join(row) for row in dump)
    assert issued.token not in flat and issued.token[4:] not in flat
    assert hash_token(issued.token) in flat
    audit_text = repr(world.recorder.entries)
    assert issued.token not in audit_text and issued.id in audit_text
    assert world.authority.authenticate(issued.token).token_id == issued.id


def test_token_expiry_revocation_and_disabled_account(world: World) -> None:
    issued = world.enrol("op-insurer", ttl=timedelta(hours=1))
    assert world.authority.authenticate(issued.token).name == "op-insurer"
    world.clock.advance(hours=1)
    with pytest.raises(AuthenticationError) as raised:
        world.authority.authenticate(issued.token)
    assert raised.value.rule == "auth.token_expired"
    token = world.tokens["op-planner"]
    world.admin.disable_account(world.host, "op-planner", reason="left the programme")
    with pytest.raises(AuthenticationError) as raised:
        world.authority.authenticate(token)
    assert raised.value.rule == "account.disabled"
    with pytest.raises(InvalidInput) as refused:
        world.admin.issue_enrolment(world.host, "op-planner")
    assert refused.value.rule == "account.disabled"
    bank = world.actor("op-bank")
    world.admin.revoke_token(world.host, bank.token_id or "")
    with pytest.raises(AuthenticationError) as raised:
        world.authority.authenticate(world.tokens["op-bank"])
    assert raised.value.rule == "auth.token_revoked"
    denials = [e for e in world.recorder.entries if e["action"] == "auth.authenticate"]
    assert [e["rule"] for e in denials] == [
        "auth.token_expired",
        "account.disabled",
        "auth.token_revoked",
    ]


@pytest.mark.parametrize("token", ["nope", "sbx_" + "A" * 43, "sbx_" + "A" * 44, "Bearer x"])
def test_unknown_and_malformed_tokens(world: World, token: str) -> None:
    with pytest.raises(AuthenticationError) as raised:
        world.authority.authenticate(token)
    assert raised.value.rule == "auth.token_unknown" and raised.value.status == 401
    assert world.recorder.entries[-1]["actor"] == "anonymous"


def test_token_lifetime_is_bounded(world: World) -> None:
    bank = world.actor("op-bank")
    with pytest.raises(InvalidInput):
        world.admin.issue_token(bank, ttl=timedelta(days=400))
    with pytest.raises(InvalidInput):
        world.admin.issue_token(bank, ttl=timedelta(0))
    with pytest.raises(InvalidInput):
        world.admin.issue_enrolment(world.host, "op-bank", token_ttl=timedelta(days=400))
    with pytest.raises(InvalidInput):
        world.admin.issue_enrolment(world.host, "op-bank", ttl=timedelta(days=8))


def test_licence_changes(world: World) -> None:
    account = world.admin.set_licence(
        world.host, "op-bank", status=LicenceStatus.SUSPENDED, number="SZ-2027-1"
    )
    assert account.licence is not None
    assert (account.licence.status, account.licence.number) == (
        LicenceStatus.SUSPENDED,
        "SZ-2027-1",
    )
    with pytest.raises(InvalidInput):
        world.admin.set_licence(world.host, "bureau-health", status=LicenceStatus.ACTIVE)
    with pytest.raises(Forbidden):
        world.admin.set_licence(
            world.actor("bureau-health"), "op-bank", status=LicenceStatus.ACTIVE
        )
