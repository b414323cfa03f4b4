"""Sign-in, sign-out and the console's front door (each role's main page)."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.security import HTTPAuthorizationCredentials
from starlette.responses import RedirectResponse, Response

from policies import Role
from sandbox.api import shared
from sandbox.api.context import ServicesDep, current_actor, request_meta
from sandbox.core.errors import AuthenticationError, InvalidInput

from .render import ConsoleRoute, page
from .session import PRE_COOKIE, SESSION_COOKIE, ConsoleActor, Form, set_cookie

__all__ = ["HOMES", "router"]

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

HOMES = {
    Role.OPERATOR: "/console/operator",
    Role.BUREAU: "/console/bureau",
    Role.AUDITOR: "/console/auditor",
    Role.ADMIN: "/console/admin",
}


@router.get("/console")
def home(actor: ConsoleActor) -> Response:
    """Each role's main page."""
    return RedirectResponse(HOMES[actor.role], status_code=303)


@router.get("/console/sign-in")
def sign_in_form(request: Request) -> Response:
    """The sign-in form; a fresh pre-session cookie carries its CSRF token."""
    if request.cookies.get(SESSION_COOKIE) or request.cookies.get(PRE_COOKIE):
        return page(request, "sign_in.html")
    pre = secrets.token_urlsafe(24)
    request.cookies[PRE_COOKIE] = pre  # the form below is rendered with this secret
    response = page(request, "sign_in.html")
    set_cookie(request, response, PRE_COOKIE, pre)
    return response


@router.post("/console/sign-in")
def sign_in(request: Request, form: Form) -> Response:
    """Authenticate the token as the API does; on success it becomes the session cookie."""
    token = form.get("token", "").strip()
    if not token:
        raise InvalidInput("enter your token", rule="console.sign_in")
    credentials = HTTPAuthorizationCredentials(scheme="Bearer", credentials=token)
    try:
        actor = current_actor(request, request_meta(request), credentials)
    except AuthenticationError as exc:
        return page(request, "sign_in.html", status=401, error=exc.message, rule=exc.rule)
    response = RedirectResponse(HOMES[actor.role], status_code=303)
    set_cookie(request, response, SESSION_COOKIE, token)
    response.delete_cookie(PRE_COOKIE, path="/console")
    return response


@router.post("/console/sign-out")
def sign_out(request: Request, form: Form) -> Response:
    """Forget the session (the token itself stays valid until it expires or is revoked)."""
    response = RedirectResponse("/console/sign-in", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/console")
    return response


@router.get("/console/statements")
def statement(
    request: Request,
    actor: ConsoleActor,
    services: ServicesDep,
    month: Annotated[str, Query(pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$")],
) -> Response:
    """A month's statement as CSV (GET /v1/statements/{month}): owed (operator) or owed to
    (bureau); the API's authorization decides."""
    response = shared.statement(month, actor, services)
    response.headers["Content-Disposition"] = f'attachment; filename="statement-{month}.csv"'
    return response
