"""The dependencies routes share: the services, the actor, the request's id and client.

The components themselves are :class:`sandbox.services.Services` (no FastAPI in
them; the CLI uses the same container).  Routes get
the authenticated :class:`~policies.Actor` from :func:`current_actor` (the
bearer token is the only source of identity and role) and the request's id and
client address from :func:`request_meta`.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from policies import Actor
from sandbox.core.errors import AuthenticationError, RateLimited
from sandbox.services import Services

__all__ = ["ActorDep", "Meta", "MetaDep", "Services", "ServicesDep", "current_actor"]


@dataclass(frozen=True)
class Meta:
    """Who asks from where: the request id (also in ``X-Request-ID``) and client address."""

    request_id: str
    client: str | None


def request_meta(request: Request) -> Meta:
    rid = getattr(request.state, "request_id", None) or uuid.uuid4().hex
    return Meta(rid, request.client.host if request.client else None)


MetaDep = Annotated[Meta, Depends(request_meta)]

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="An API token issued by the admin: `Authorization: Bearer sbx_…`.",
)


def current_actor(
    request: Request,
    meta: MetaDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
) -> Actor:
    """Authenticate the bearer token (audited when refused), then apply the rate limit."""
    services: Services = request.app.state.services
    limits = services.settings()
    authority = services.platform.authority
    address = f"addr:{meta.client}"
    token = credentials.credentials if credentials is not None else ""
    try:
        services.limiter.blocked(address, limits.rate_limit_per_minute, "failed sign-ins")
    except RateLimited as exc:
        _record_limited(services, "anonymous", "-", exc, meta)
        raise
    try:
        actor = authority.authenticate(token, request_id=meta.request_id, client=meta.client)
    except AuthenticationError:
        services.limiter.take(address, limits.rate_limit_per_minute)
        raise
    key = actor.token_id or actor.name
    try:
        services.limiter.check(key, limits.rate_limit_per_minute, "this token")
    except RateLimited as exc:
        _record_limited(services, actor.name, actor.role.value, exc, meta)
        raise
    request.state.actor = actor
    return actor


def _record_limited(services: Services, name: str, role: str, exc: RateLimited, meta: Meta) -> None:
    refused = getattr(exc, "refused", 1)
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
            details={"reason": exc.message, "refused_in_a_row": refused, "pid": os.getpid()},
        )


ActorDep = Annotated[Actor, Depends(current_actor)]


def services_of(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


ServicesDep = Annotated[Services, Depends(services_of)]
