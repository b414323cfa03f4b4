"""One error shape for every response: ``{"code", "message", "rule"}``, mapped in one place.

:class:`~sandbox.core.errors.SandboxError` carries its code, status and rule;
FastAPI's validation errors and Starlette's own HTTP errors (unknown route,
method not allowed) are rendered in the same shape; anything unexpected becomes
``500 internal_error`` with the request id and no traceback (the traceback goes to
the server log only) and is audited as ``api.internal_error`` with the exception's
type name, never its text (which may quote a value).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from sandbox.core.errors import ControlPlaneUnavailable, RateLimited, SandboxError

__all__ = [
    "ERROR_RESPONSES",
    "ErrorBody",
    "error_response",
    "install_error_handlers",
    "schema_problems",
]

log = logging.getLogger("sandbox.api")


class ErrorBody(BaseModel):
    """Every error: a stable machine-readable code, a human message, the refusing rule."""

    code: str
    message: str
    rule: str | None = None


def _described(status: int, text: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": text}


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _described(400, "Invalid input (`invalid_input` and its kinds)."),
    401: _described(401, "Unknown, expired or revoked token (`unauthenticated`)."),
    403: _described(403, "Known but not allowed, with the deciding rule (`forbidden`, …)."),
    404: _described(404, "No such resource, or not yours (`not_found`)."),
    405: _described(405, "Method not allowed on this route (`method_not_allowed`)."),
    408: _described(
        408, "The query ran out of time (`query_timeout`), or the body stalled (`request_timeout`)."
    ),
    409: _described(409, "Conflicts with the resource's state (`conflict`)."),
    413: _described(413, "Request, result or staged uploads too large."),
    422: _described(422, "Refused by a rule, or not matching the API schema."),
    429: _described(429, "Rate limit, concurrent jobs or quota; see `Retry-After`."),
    431: _described(431, "Request headers too large (`headers_too_large`)."),
    500: _described(500, "Internal error (`internal_error`, `enclave_error`)."),
    503: _described(
        503, "Audit trail, control-plane database or enclave unavailable; nothing was released."
    ),
    507: _described(507, "The staging area for uploads is full (`staging_full`)."),
}
"""Documented on every route, so the OpenAPI document covers every status we send."""


def error_response(
    status: int, code: str, message: str, rule: str | None = None, **headers: str
) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if rule:
        body["rule"] = rule
    return JSONResponse(body, status_code=status, headers=headers or None)


def _http_code(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "http_error"


def _methods(request: Request) -> list[str]:
    methods: set[str] = set()
    for route in request.app.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match is not Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SandboxError)
    async def sandbox_error(_request: Request, exc: SandboxError) -> JSONResponse:
        headers = {}
        if isinstance(exc, RateLimited):
            headers["Retry-After"] = str(int(getattr(exc, "retry_after", 60)))
        if exc.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return error_response(exc.status, exc.code, exc.message, exc.rule, **headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(
            422,
            "invalid_request",
            f"request does not match the API schema: {schema_problems(exc.errors())}",
            "api.schema",
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # every method of the path, not only the first route's
            headers["Allow"] = ", ".join(_methods(request))
        return error_response(
            exc.status_code, _http_code(exc.status_code), message, "api.http", **headers
        )

    @app.exception_handler(sa_exc.OperationalError)
    async def control_plane_error(request: Request, exc: sa_exc.OperationalError) -> JSONResponse:
        # The database's own text may quote SQL or values: only its kind is returned.
        rid = getattr(request.state, "request_id", "-")
        log.warning("control-plane database error in request %s: %s", rid, type(exc.orig))
        failed = ControlPlaneUnavailable(
            f"the control-plane database is unavailable ({type(exc.orig).__name__}); "
            "nothing was changed or released",
            rule="control_plane.unavailable",
        )
        return error_response(failed.status, failed.code, failed.message, failed.rule)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        # Starlette runs this handler outermost (ServerErrorMiddleware), outside RequestId:
        # the header is set here.  The exception is re-raised afterwards for the server's log.
        rid = getattr(request.state, "request_id", None) or uuid.uuid4().hex
        log.error("unhandled error in request %s", rid, exc_info=exc)
        try:
            await run_in_threadpool(_record_internal_error, request, rid, exc)
        except Exception:  # the trail or its database is down too: still a clean 500
            log.exception("could not audit the internal error of request %s", rid)
        body = {
            "code": "internal_error",
            "message": f"internal error (request id {rid}); the details are in the server log",
            "rule": None,
        }
        # Outside every middleware too: the headers ResponseHeaders gives the other answers.
        headers = {"X-Request-ID": rid, "X-Content-Type-Options": "nosniff"}
        if request.url.path.startswith("/v1/"):
            headers["Cache-Control"] = "no-store"
        return JSONResponse(body, status_code=500, headers=headers)


MAX_SCHEMA_PROBLEMS = 5


def schema_problems(errors: Sequence[Any]) -> str:
    """Each field pydantic rejected and why, ``body.sql: Field required``; never the value.

    Pydantic's messages name the expected type, bound or choices, not the input; a
    message that quotes the input anyway (a custom validator) is replaced by the
    error's type.  The first problem of each field, at most :data:`MAX_SCHEMA_PROBLEMS`.
    """
    problems: dict[str, str] = {}
    for err in errors:
        loc = [str(p) for p in err.get("loc", ())]
        kind = str(err.get("type", "invalid"))
        if kind == "json_invalid":  # FastAPI puts the character position last
            where = loc[0] if loc else "body"
            why = f"not valid JSON ({err.get('ctx', {}).get('error', 'decode error')})"
            if len(loc) > 1:
                why += f" at character {loc[-1]}"
        elif loc == ["body"] and kind == "missing":
            where, why = "body", "a JSON body is required"
        else:
            where = ".".join(loc) or "request"
            why = str(err.get("msg", "invalid value"))
            value = err.get("input")
            if isinstance(value, str | int | float) and len(str(value)) >= 3 and str(value) in why:
                why = kind.replace("_", " ")
        problems.setdefault(where, why)
    shown = [f"{where}: {why}" for where, why in list(problems.items())[:MAX_SCHEMA_PROBLEMS]]
    more = len(problems) - len(shown)
    return "; ".join(shown) + (f" (and {more} more)" if more > 0 else "")


def _record_internal_error(request: Request, rid: str, exc: Exception) -> None:
    """One ``api.internal_error`` entry: who, which route, the exception's type name only."""
    actor = getattr(request.state, "actor", None)  # set once the token was authenticated
    route = getattr(request.scope.get("route"), "path", None) or request.url.path
    request.app.state.services.platform.record(
        actor=actor.name if actor is not None else "anonymous",
        role=actor.role.value if actor is not None else "-",
        action="api.internal_error",
        target=f"api:{request.method} {route}",
        decision="deny",
        rule="api.internal_error",
        request_id=rid,
        client=request.client.host if request.client else None,
        details={
            "method": request.method,
            "route": route,
            "error": type(exc).__name__,
            **(actor.audit_details() if actor is not None else {}),
        },
    )
