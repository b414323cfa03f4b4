"""How an account gets a token: with a token it holds, or by redeeming an enrolment code.

Tokens go only to their own account (管运分离): the admin issues one-time
enrolment codes, never another account's token (``docs/policy.md``).  Every
answer that carries a token or a code is ``Cache-Control: no-store``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from sandbox.core.errors import AuthenticationError

from .context import ActorDep, MetaDep, ServicesDep, sign_in_failed, sign_ins_blocked
from .models import TokenIssued

__all__ = ["EnrolIn", "EnrolmentIn", "EnrolmentIssued", "OwnTokenIn", "router"]

router = APIRouter(tags=["tokens"])


class OwnTokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    days: float = Field(default=90, gt=0, le=366)
    label: str = Field(default="", max_length=200)
    replace_current: bool = Field(
        default=False, description="Revoke the token this request is made with, in the same act."
    )


class EnrolmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hours: float = Field(default=24, gt=0, le=168, description="How long the code may wait.")
    days: float = Field(default=90, gt=0, le=366, description="Lifetime of the token it gives.")
    label: str = Field(default="", max_length=200)


class EnrolmentIssued(BaseModel):
    id: str
    account: str
    code: str = Field(description="Shown once, for the account's holder; single-use.")
    expires_at: str
    token_days: float


class EnrolIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(min_length=1, max_length=100, description="The enrolment code (sbe_…).")


@router.post("/v1/me/tokens", response_model=TokenIssued, status_code=201)
def issue_own_token(body: OwnTokenIn, actor: ActorDep, services: ServicesDep) -> Any:
    """A new token for your own account, asked for with the one you hold (shown once)."""
    issued = services.administration().issue_token(
        actor,
        ttl=timedelta(days=body.days),
        label=body.label,
        replace_current=body.replace_current,
    )
    return TokenIssued(
        id=issued.id,
        account=issued.account,
        token=issued.token,
        expires_at=issued.expires_at.isoformat(),
    )


@router.post(
    "/v1/admin/accounts/{name}/enrolments", response_model=EnrolmentIssued, status_code=201
)
def issue_enrolment(name: str, body: EnrolmentIn, actor: ActorDep, services: ServicesDep) -> Any:
    """A one-time enrolment code for an account (admin): its holder redeems it for a token.

    The admin never sees the account's token; a newer code voids the unused ones.
    """
    issued = services.administration().issue_enrolment(
        actor,
        name,
        ttl=timedelta(hours=body.hours),
        token_ttl=timedelta(days=body.days),
        label=body.label,
    )
    return EnrolmentIssued(
        id=issued.id,
        account=issued.account,
        code=issued.code,
        expires_at=issued.expires_at.isoformat(),
        token_days=issued.token_ttl.total_seconds() / 86_400,
    )


@router.post("/v1/enrol", response_model=TokenIssued, status_code=201)
async def enrol(body: EnrolIn, meta: MetaDep, services: ServicesDep) -> Any:
    """Redeem an enrolment code for your account's token (no bearer token: the code is the
    credential).  Failed redemptions count as failed sign-ins of your address."""
    await run_in_threadpool(sign_ins_blocked, services, meta, body.code)
    admin = services.administration()
    try:
        issued = await run_in_threadpool(
            admin.redeem_enrolment, body.code, request_id=meta.request_id, client=meta.client
        )
    except AuthenticationError:
        await run_in_threadpool(sign_in_failed, services, meta, body.code)
        raise
    return TokenIssued(
        id=issued.id,
        account=issued.account,
        token=issued.token,
        expires_at=issued.expires_at.isoformat(),
    )
