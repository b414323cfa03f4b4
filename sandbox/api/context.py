"""The dependencies routes share: the services, the actor, the request's id and client.

The components themselves are :class:`sandbox.services.Services` (no FastAPI in
them; the CLI uses the same container).  Routes get
the authenticated :class:`~policies.Actor` from :func:`current_actor` (the
bearer token is the only source of identity and role) and the request's id and
client address from :func:`request_meta`.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from policies import Actor
from sandbox.core.errors import AuthenticationError, RateLimited
from sandbox.services import Services

from .ids import new_request_id

__all__ = [
    "ActorDep",
    "Meta",
    "MetaDep",
    "Services",
    "ServicesDep",
    "current_actor",
    "sign_in_failed",
    "sign_ins_blocked",
]


@dataclass(frozen=True)
class Meta:
    """Who asks from where: the request id (also in ``X-Request-ID``) and client address."""

    request_id: str
    client: str | None


def request_meta(request: Request) -> Meta:
    rid = getattr(request.state, "request_id", None) or new_request_id()
    return Meta(rid, request.client.host if request.client else None)


async def _meta(request: Request) -> Meta:
    # ``async``: FastAPI runs a plain ``def`` dependency in the thread pool, a hop (and a
    # wait for a pool thread) per request for what touches nothing but the request.
    return request_meta(request)


MetaDep = Annotated[Meta, Depends(_meta)]

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="An API token of your account (enrolled with the admin's one-time code, or "
    "asked for with a token you hold): `Authorization: Bearer sbx_…`.",
)


def _credential_key(credential: str) -> str | None:
    """The failure bucket of a presented token or code: its first 16 characters, hashed.

    Sixteen characters carry 72 secret bits of a real token, so nobody who does not
    hold a token can fill its bucket; shorter or missing credentials have none.
    """
    if len(credential) < 16:
        return None
    return "cred:" + hashlib.sha256(credential[:16].encode("utf-8", "replace")).hexdigest()[:32]


def sign_ins_blocked(services: Services, meta: Meta, credential: str) -> None:
    """429 at once for a credential that failed too often (before it is looked up again).

    Only this credential's own bucket is consulted, never the address's: a valid token
    authenticates whatever other clients behind the same address do.
    """
    key = _credential_key(credential)
    if key is None:
        return
    per_minute = services.settings().sign_in_failures_per_minute
    try:
        services.limiter.blocked(key, per_minute, "failed sign-ins with this credential")
    except RateLimited as exc:
        _record_limited(services, "anonymous", "-", exc, meta)
        raise


def sign_in_failed(services: Services, meta: Meta, credential: str) -> None:
    """Count a failed sign-in against its address and its credential.

    Once either bucket is empty the answer is 429 instead of 401: the address bucket
    throttles further failures from there, it never holds back a valid token.
    """
    per_minute = services.settings().sign_in_failures_per_minute
    refusals = []
    for key in (f"addr:{meta.client}", _credential_key(credential)):
        if key is None:
            continue
        try:
            services.limiter.check(key, per_minute, "failed sign-ins")
        except RateLimited as exc:
            refusals.append(exc)
    if refusals:
        worst = max(refusals, key=lambda e: int(getattr(e, "retry_after", 1)))
        _record_limited(services, "anonymous", "-", worst, meta)
        raise worst


def current_actor(
    request: Request,
    meta: MetaDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
) -> Actor:
    """Authenticate the bearer token (audited when refused), then apply the rate limit.

    Failed sign-ins are counted per client address and per presented credential
    (:func:`sign_in_failed`); a valid token is checked before either, so it is never
    locked out by failures of others behind the same address.
    """
    services: Services = request.app.state.services
    limits = services.settings()
    authority = services.platform.authority
    token = credentials.credentials if credentials is not None else ""
    sign_ins_blocked(services, meta, token)
    try:
        actor = authority.authenticate(token, request_id=meta.request_id, client=meta.client)
    except AuthenticationError:
        sign_in_failed(services, meta, token)
        raise
    key = actor.token_id or actor.name
    try:
        services.limiter.check(key, limits.rate_limit_per_minute, "this token")
    except RateLimited as exc:
        _record_limited(services, actor.name, actor.role.value, exc, meta, actor)
        raise
    request.state.actor = actor
    return actor


def _record_limited(
    services: Services,
    name: str,
    role: str,
    exc: RateLimited,
    meta: Meta,
    actor: Actor | None = None,
) -> None:
    refused = getattr(exc, "refused", 1)
    acting = actor.audit_details() if actor is not None else {}
    if refused == 1 or refused % 100 == 0:
        services.platform.record(
            actor=name,
            role=role,
            action="api.rate_limit",
            target="platform",
            decision="deny",
            rule=exc.rule or "api.rate_limit",
            request_id=meta.request_id,
            client=meta.client,
            details={
                "reason": exc.message,
                "refused_in_a_row": refused,
                "pid": os.getpid(),
                **acting,
            },
        )


ActorDep = Annotated[Actor, Depends(current_actor)]


async def services_of(request: Request) -> Services:
    """``async`` for the reason of :func:`_meta`: it only reads the application's state."""
    return request.app.state.services  # type: ignore[no-any-return]


ServicesDep = Annotated[Services, Depends(services_of)]
