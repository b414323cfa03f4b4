"""How an account gets a token: with a token it holds, or by redeeming an enrolment code.

Tokens go only to their own account (管运分离): the admin issues one-time
enrolment codes, never another account's token (``docs/policy.md``).  A code an
admin account issued is redeemed with the SHA-256 of a token the holder made and
gives that token only once a second administrator approves it
(``POST /v1/admin/enrolments/{id}/approve``).  Every answer that carries a token or
a code is ``Cache-Control: no-store``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from sandbox.core.errors import AuthenticationError

from .context import ActorDep, MetaDep, ServicesDep, sign_in_failed, sign_ins_blocked
from .models import TokenIssued

__all__ = [
    "ApproveIn",
    "Approved",
    "EnrolIn",
    "Enrolled",
    "EnrolmentIn",
    "EnrolmentIssued",
    "OwnTokenIn",
    "router",
]

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
    needs_approval: bool = Field(
        description="Its redemption waits for a second administrator (an admin account's code)."
    )


class EnrolIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(min_length=1, max_length=100, description="The enrolment code (sbe_…).")
    token_sha256: str | None = Field(
        default=None,
        max_length=100,
        description="SHA-256 (hex) of an sbx_ token you made yourself; required for a code "
        "an admin account issued. The server never sees the token.",
    )


class Enrolled(BaseModel):
    status: Literal["active", "pending"] = Field(
        description="pending: a second administrator approves it, told the fingerprint."
    )
    enrolment: str
    account: str
    id: str | None = Field(description="The token's id (null while pending).")
    token: str | None = Field(description="Shown once; null when you made the token yourself.")
    expires_at: str | None
    fingerprint: str | None = Field(
        description="Of the token you made: read it to the approving administrator."
    )


class ApproveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fingerprint: str = Field(
        min_length=1, max_length=64, description="As the holder read it to you (XXXX-XXXX-…)."
    )


class Approved(BaseModel):
    id: str = Field(description="The new token's id (the token itself is the holder's).")
    account: str
    enrolment: str
    expires_at: str


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
        needs_approval=issued.needs_approval,
    )


@router.post(
    "/v1/enrol",
    response_model=Enrolled,
    status_code=201,
    responses={202: {"model": Enrolled, "description": "Pending a second administrator."}},
)
async def enrol(body: EnrolIn, meta: MetaDep, services: ServicesDep, response: Response) -> Any:
    """Redeem an enrolment code for your account's token (no bearer token: the code is the
    credential).  With ``token_sha256`` the token is one you made (the server never sees
    it); an admin account's code needs it, and answers 202 ``pending`` until a second
    administrator approves.  Failed redemptions count as failed sign-ins of your address."""
    await run_in_threadpool(sign_ins_blocked, services, meta, body.code)
    admin = services.administration()
    try:
        redeemed = await run_in_threadpool(
            admin.redeem_with_token,
            body.code,
            body.token_sha256,
            request_id=meta.request_id,
            client=meta.client,
        )
    except AuthenticationError:
        await run_in_threadpool(sign_in_failed, services, meta, body.code)
        raise
    token = redeemed.token
    if token is None:
        response.status_code = 202
    return Enrolled(
        status="pending" if token is None else "active",
        enrolment=redeemed.enrolment,
        account=redeemed.account,
        id=token.id if token else None,
        token=(token.token or None) if token else None,
        expires_at=token.expires_at.isoformat() if token else None,
        fingerprint=redeemed.fingerprint,
    )


@router.post(
    "/v1/admin/enrolments/{enrolment_id}/approve", response_model=Approved, status_code=201
)
def approve_enrolment(
    enrolment_id: str, body: ApproveIn, actor: ActorDep, services: ServicesDep
) -> Any:
    """Approve a redeemed enrolment as the second administrator (not the code's issuer:
    ``enrolment.same_admin``), with the fingerprint its holder read to you; the holder's
    own token then works.  Nobody but the holder ever holds that token."""
    issued = services.administration().approve_enrolment(actor, enrolment_id, body.fingerprint)
    return Approved(
        id=issued.id,
        account=issued.account,
        enrolment=enrolment_id,
        expires_at=issued.expires_at.isoformat(),
    )
