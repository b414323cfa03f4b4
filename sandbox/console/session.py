"""Who is signed in to the console, and the CSRF token that goes with the sign-in.

The console holds the account's API token in one cookie (:data:`SESSION_COOKIE`:
HttpOnly, SameSite=Strict, Secure when the request came over https, path
``/console``) and authenticates it exactly as the API authenticates a bearer token
(:func:`sandbox.api.context.current_actor`: the same failed-sign-in limits, rate
limit and audit entries).  Every form carries a CSRF token derived from the
session's token (an HMAC keyed by it), so it is stable for a session, differs
between sessions and cannot be computed without the cookie; the sign-in form, which
has no session yet, uses a random pre-session cookie (double submit).

A page of one role's console is refused to every other role (rule ``console.role``)
and the refusal is audited like the API's (action ``console.page``, target
``console:<route>``): :data:`Operator`, :data:`Bureau`, :data:`Auditor`, :data:`Admin`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from typing import Annotated
from urllib.parse import parse_qs

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials
from starlette.responses import Response

from policies import Actor, Role
from sandbox.api.context import Services, ServicesDep, current_actor, request_meta
from sandbox.core.errors import AuthenticationError, Forbidden, InvalidInput

__all__ = [
    "PRE_COOKIE",
    "SESSION_COOKIE",
    "Admin",
    "Auditor",
    "Bureau",
    "ConsoleActor",
    "Form",
    "Operator",
    "csrf_token",
    "form_of",
    "over_https",
    "require_role",
    "set_cookie",
    "signed_in",
]

SESSION_COOKIE = "sbx_console"
PRE_COOKIE = "sbx_console_pre"
CSRF_FIELD = "csrf"
MAX_FORM_BYTES = 256 * 1024


def csrf_token(secret: str) -> str:
    """The CSRF token of a session (or pre-session) secret: HMAC-SHA256, 32 hex characters."""
    return hmac.new(secret.encode(), b"sandbox-console-csrf", hashlib.sha256).hexdigest()[:32]


def over_https(request: Request) -> bool:
    """The request came over https: to this server, or to a TLS proxy in front of it
    (``X-Forwarded-Proto: https``; ``sandbox serve`` runs uvicorn without proxy headers).

    The header is believed from anyone: it can only add ``Secure``, and a browser then
    sends the cookie over https only, which takes nothing from anybody else.
    """
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.scope.get("scheme") == "https" or forwarded == "https"


def set_cookie(request: Request, response: Response, name: str, value: str) -> None:
    """A console cookie: HttpOnly, SameSite=Strict, Secure when the request came over https."""
    response.set_cookie(
        name,
        value,
        httponly=True,
        samesite="strict",
        secure=over_https(request),
        path="/console",
    )


class SignInNeeded(AuthenticationError):
    """No console session: the page sends the browser to the sign-in form."""


def signed_in(request: Request) -> Actor:
    """The account whose token the session cookie holds, authenticated as the API does."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise SignInNeeded("sign in first", rule="console.sign_in")
    credentials = HTTPAuthorizationCredentials(scheme="Bearer", credentials=token)
    return current_actor(request, request_meta(request), credentials)


ConsoleActor = Annotated[Actor, Depends(signed_in)]


def require_role(request: Request, services: Services, actor: Actor, role: Role) -> None:
    """A page of one role's console, refused for every other role (rule ``console.role``)
    and the refusal recorded: action ``console.page``, target ``console:<route>`` (the
    page's route, never a value from its path)."""
    if actor.role is role:
        return
    route = getattr(request.scope.get("route"), "path", None) or request.url.path
    entry = {
        "actor": actor.name,
        "role": actor.role.value,
        "action": "console.page",
        "target": f"console:{route}",
        "request_id": actor.request_id,
        "client": actor.client,
    }
    with services.platform.refusal_recorded(actor, entry):
        raise Forbidden(
            f"this page belongs to the {role.value} console; you are signed in as "
            f"{actor.role.value}",
            rule="console.role",
        )


def _signed_in_as(role: Role) -> Callable[[Request, Actor, Services], Actor]:
    def signed_in_as(request: Request, actor: ConsoleActor, services: ServicesDep) -> Actor:
        require_role(request, services, actor, role)
        return actor

    return signed_in_as


Operator = Annotated[Actor, Depends(_signed_in_as(Role.OPERATOR))]
Bureau = Annotated[Actor, Depends(_signed_in_as(Role.BUREAU))]
Auditor = Annotated[Actor, Depends(_signed_in_as(Role.AUDITOR))]
Admin = Annotated[Actor, Depends(_signed_in_as(Role.ADMIN))]


async def form_of(request: Request) -> dict[str, str]:
    """The posted form's fields (first value of each), after its CSRF token is checked.

    A form without the token of this session (or, for the sign-in form, of the
    pre-session cookie) is refused with rule ``console.csrf`` before anything is read.
    """
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise InvalidInput("the form is too large", rule="console.form")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise InvalidInput("send the form as the page does", rule="console.form")
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=500)
    except (UnicodeDecodeError, ValueError):
        raise InvalidInput("the form could not be read", rule="console.form") from None
    fields = {name: values[0] for name, values in parsed.items()}
    secret = request.cookies.get(SESSION_COOKIE) or request.cookies.get(PRE_COOKIE) or ""
    sent = fields.pop(CSRF_FIELD, "")
    if not secret or not hmac.compare_digest(sent.encode(), csrf_token(secret).encode()):
        raise Forbidden(
            "the form is missing its security token (or it is from an older session): "
            "reload the page and send it again",
            rule="console.csrf",
        )
    return fields


Form = Annotated[dict[str, str], Depends(form_of)]


def new_pre_session() -> str:
    return secrets.token_urlsafe(24)
