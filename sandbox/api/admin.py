"""Admin routes (管理方): accounts, tokens, emergency freeze, key rotation, run-time settings.

The admin never grants data, reviews, reads results or gets another account's
token (管运分离): those routes refuse it by policy, with the deciding rule.  An
account enrols with a one-time code the admin issues (``sandbox/api/tokens.py``).
"""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter

from audit import KeyRingError
from policies import Licence, LicenceStatus, Role, Target
from policies.tokens import list_tokens
from sandbox.audit_errors import translate_audit_error
from sandbox.core.errors import InvalidInput

from .context import ActorDep, MetaDep, ServicesDep
from .models import (
    AccountIn,
    AccountOut,
    FreezeIn,
    LicenceIn,
    Reason,
    SettingsIn,
    SettingsOut,
    TokenIn,
    TokenIssued,
    TokenOut,
)
from .shared import settings_out

__all__ = ["SETTINGS_ACTION", "router"]

router = APIRouter(tags=["admin"])

SETTINGS_ACTION = "key.rotate"
"""Run-time settings are platform configuration, authorized like key rotation (admin only)
until the policy has an action of their own; they are audited as ``settings.update``."""


def _utc(moment: Any) -> Any:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@router.get("/v1/admin/accounts", response_model=list[AccountOut])
def accounts(actor: ActorDep, services: ServicesDep) -> Any:
    """Every account, with role, domains, status, freeze and licence."""
    return [a.to_dict() for a in services.administration().list_accounts(actor)]


@router.post("/v1/admin/accounts", response_model=AccountOut, status_code=201)
def create_account(body: AccountIn, actor: ActorDep, services: ServicesDep) -> Any:
    """Create an account (an operator needs a licence, a bureau its domains)."""
    licence = None
    if body.licence is not None:
        if body.licence.number is None or body.licence.valid_until is None:
            raise InvalidInput("a licence needs a number and an end", rule="api.licence")
        licence = Licence(number=body.licence.number, valid_until=_utc(body.licence.valid_until))
    account = services.administration().create_account(
        actor,
        body.name,
        role=Role(body.role),
        organisation=body.organisation,
        domains=body.domains,
        licence=licence,
    )
    return account.to_dict()


@router.post("/v1/admin/accounts/{name}/disable", response_model=AccountOut)
def disable_account(name: str, body: Reason, actor: ActorDep, services: ServicesDep) -> Any:
    """Disable an account: its tokens stop working at once, on every server."""
    return services.administration().disable_account(actor, name, reason=body.reason).to_dict()


@router.put("/v1/admin/accounts/{name}/licence", response_model=AccountOut)
def licence(name: str, body: LicenceIn, actor: ActorDep, services: ServicesDep) -> Any:
    """Change an operator's licence (准入与退出): number, end, status."""
    account = services.administration().set_licence(
        actor,
        name,
        number=body.number,
        valid_until=None if body.valid_until is None else _utc(body.valid_until),
        status=None if body.status is None else LicenceStatus(body.status),
    )
    return account.to_dict()


@router.get("/v1/admin/accounts/{name}/tokens", response_model=list[TokenOut])
def tokens(name: str, actor: ActorDep, meta: MetaDep, services: ServicesDep) -> Any:
    """An account's tokens (ids, labels, expiry; never the tokens)."""
    authority = services.platform.authority
    decision = authority.decide(actor, "account.list", Target.platform(), audit=False)
    if not decision.allowed:
        authority.record_decision(actor, decision, request_id=meta.request_id, client=meta.client)
        raise decision.error()
    from sandbox.core.policy_tables import tokens as table

    with services.platform.engine.connect() as conn:
        found = list_tokens(conn, name)
        revoked = {
            row.id
            for row in conn.execute(
                sa.select(table.c.id).where(
                    table.c.account == name, table.c.revoked_at.is_not(None)
                )
            )
        }
    authority.record_decision(
        actor,
        decision,
        details={"account": name, "rows": len(found)},
        request_id=meta.request_id,
        client=meta.client,
    )
    return [
        TokenOut(
            id=t.id,
            account=t.account,
            label=t.label,
            created_at=t.created_at,
            expires_at=t.expires_at.isoformat(),
            revoked=t.id in revoked,
        )
        for t in found
    ]


@router.post("/v1/admin/accounts/{name}/tokens", response_model=TokenIssued, status_code=201)
def issue_token(name: str, body: TokenIn, actor: ActorDep, services: ServicesDep) -> Any:
    """A token for an account: only your own (shown once, stored only as its SHA-256).

    For any other account it is refused (``token.not_own``), the admin included: that
    account enrols with a one-time code (``POST /v1/admin/accounts/{name}/enrolments``).
    """
    issued = services.administration().issue_token(
        actor, name, ttl=timedelta(days=body.days), label=body.label
    )
    return TokenIssued(
        id=issued.id,
        account=issued.account,
        token=issued.token,
        expires_at=issued.expires_at.isoformat(),
    )


@router.post("/v1/admin/tokens/{token_id}/revoke", response_model=TokenOut)
def revoke_token(token_id: str, actor: ActorDep, services: ServicesDep) -> Any:
    """Revoke a token by id: refused on the next request, on every server."""
    record = services.administration().revoke_token(actor, token_id)
    return TokenOut(
        id=record.id,
        account=record.account,
        label=record.label,
        created_at=record.created_at,
        expires_at=record.expires_at.isoformat(),
        revoked=True,
    )


def _freeze(body: FreezeIn, actor: Any, services: Any, frozen: bool) -> dict[str, Any]:
    if (body.dataset is None) == (body.operator is None):
        raise InvalidInput("name one dataset or one operator", rule="api.freeze")
    admin = services.administration()
    if body.dataset is not None:
        changed = admin.set_dataset_frozen(actor, body.dataset, frozen, reason=body.reason)
    else:
        changed = admin.set_operator_frozen(actor, body.operator, frozen, reason=body.reason)
    return {
        "dataset": body.dataset,
        "operator": body.operator,
        "frozen": frozen,
        "changed": changed,
    }


@router.post("/v1/admin/freeze", response_model=dict[str, Any])
def freeze(body: FreezeIn, actor: ActorDep, services: ServicesDep) -> Any:
    """Emergency freeze (应急处置) of a dataset or an operator: the next decision everywhere."""
    return _freeze(body, actor, services, True)


@router.post("/v1/admin/unfreeze", response_model=dict[str, Any])
def unfreeze(body: FreezeIn, actor: ActorDep, services: ServicesDep) -> Any:
    """Lift an emergency freeze."""
    return _freeze(body, actor, services, False)


@router.post("/v1/admin/keys/rotate", response_model=dict[str, str])
def rotate_key(actor: ActorDep, meta: MetaDep, services: ServicesDep) -> Any:
    """Make a new signing key active; old public keys stay, so old signatures still verify."""
    authority = services.platform.authority
    decision = authority.decide(actor, "key.rotate", Target.platform(), audit=False)
    if not decision.allowed:
        authority.record_decision(actor, decision, request_id=meta.request_id, client=meta.client)
        raise decision.error()
    ring = services.platform.keyring
    previous = ring.active().key_id
    try:
        key = ring.rotate()
        services.platform.audit.reload_key()
    except KeyRingError as exc:
        raise translate_audit_error(exc) from exc
    authority.record_decision(
        actor,
        decision,
        details={"previous_key_id": previous, "key_id": key.key_id},
        request_id=meta.request_id,
        client=meta.client,
    )
    return {"key_id": key.key_id, "previous_key_id": previous}


@router.put("/v1/admin/settings", response_model=SettingsOut)
def update_settings(body: SettingsIn, actor: ActorDep, meta: MetaDep, services: ServicesDep) -> Any:
    """Change the k floor or the API limits at run time (every server, within a second)."""
    authority = services.platform.authority
    decision = authority.decide(actor, SETTINGS_ACTION, Target.platform(), audit=False)
    entry = {
        "actor": actor.name,
        "role": actor.role.value,
        "action": "settings.update",
        "target": "platform",
        "request_id": meta.request_id,
        "client": meta.client,
    }
    changes = body.model_dump(exclude_none=True)
    if not decision.allowed:
        services.platform.record(
            **entry,
            decision="deny",
            rule=decision.rule,
            details={"reason": decision.reason, **actor.audit_details()},
        )
        raise decision.error()
    parsed = services.runtime.validate(changes)
    services.platform.record(
        **entry, decision="allow", rule=decision.rule, details={**parsed, **actor.audit_details()}
    )
    services.runtime.update(parsed, by=actor.name)
    return settings_out(services)
