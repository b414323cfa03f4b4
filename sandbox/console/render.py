"""Pages: the Jinja2 environment, the page response, and errors rendered as pages.

Autoescaping is on for every template, so a dataset name, a description, SQL or a
rule's message is shown as text, never as markup.  Every console answer carries a
strict Content-Security-Policy (nothing from outside the host, no inline script or
style), ``no-store`` and ``DENY`` framing (:class:`ConsoleHeaders`).  A refusal in a
page (:class:`~sandbox.core.errors.SandboxError`) is rendered as an error page with
its status, message and rule (:class:`ConsoleRoute`); an expired or missing session
goes to the sign-in form.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.responses import HTMLResponse, RedirectResponse, Response

from policies import Actor
from sandbox.api.errors import schema_problems
from sandbox.core.errors import AuthenticationError, SandboxError

from .i18n import LANGUAGES, choose, translator
from .session import PRE_COOKIE, SESSION_COOKIE, csrf_token, set_cookie

__all__ = ["CSP", "ConsoleHeaders", "ConsoleRoute", "page", "sign_in_redirect"]

TEMPLATES = Path(__file__).parent / "templates"
LANG_COOKIE = "sbx_lang"

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

ENV = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(["html", "svg"], default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)

NAVIGATION = {
    "operator": (
        ("/console/operator", "nav.catalog"),
        ("/console/operator/applications", "nav.applications"),
        ("/console/operator/query", "nav.query"),
        ("/console/operator/jobs", "nav.jobs"),
        ("/console/operator/products", "nav.products"),
        ("/console/operator/budget", "nav.budget"),
        ("/console/registrations", "nav.registrations"),
        ("/console/lists", "nav.lists"),
    ),
    "bureau": (
        ("/console/bureau", "nav.applications"),
        ("/console/bureau/grants", "nav.grants"),
        ("/console/bureau/reviews", "nav.reviews"),
        ("/console/bureau/datasets", "nav.datasets"),
        ("/console/bureau/registrations", "nav.registrations"),
        ("/console/bureau/alerts", "nav.alerts"),
        ("/console/bureau/alert-policies", "nav.policies"),
        ("/console/bureau/products", "nav.products"),
        ("/console/bureau/usage", "nav.usage"),
        ("/console/lists", "nav.lists"),
    ),
    "auditor": (
        ("/console/auditor", "nav.trail"),
        ("/console/auditor/heads", "nav.heads"),
        ("/console/auditor/verify", "nav.verify"),
        ("/console/auditor/alerts", "nav.alerts"),
        ("/console/registrations", "nav.registrations"),
        ("/console/lists", "nav.lists"),
    ),
    "admin": (
        ("/console/admin", "nav.accounts"),
        ("/console/admin/registrations", "nav.registrations"),
        ("/console/admin/applications", "nav.applications"),
        ("/console/admin/freeze", "nav.freeze"),
        ("/console/admin/settings", "nav.settings"),
        ("/console/lists", "nav.lists"),
    ),
}
"""Each role's menu: only its own pages."""
ENV.globals["navigation"] = NAVIGATION


def _lang(request: Request) -> str:
    return choose(request.query_params.get("lang"), request.cookies.get(LANG_COOKIE))


def page(
    request: Request,
    template: str,
    actor: Actor | None = None,
    *,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    """A page (or, for an htmx request, the template as it stands: a fragment)."""
    lang = _lang(request)
    secret = request.cookies.get(SESSION_COOKIE) or request.cookies.get(PRE_COOKIE) or ""
    here = request.url.path
    body = ENV.get_template(template).render(
        t=translator(lang),
        lang=lang,
        languages=LANGUAGES,
        actor=actor,
        csrf=csrf_token(secret) if secret else "",
        here=here,
        request=request,
        **context,
    )
    response = HTMLResponse(body, status_code=status)
    if request.query_params.get("lang") in LANGUAGES:
        set_cookie(request, response, LANG_COOKIE, lang)
    return response


def _htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def sign_in_redirect(request: Request) -> Response:
    """To the sign-in form (the whole page, also from an htmx request), session forgotten."""
    response: Response
    if _htmx(request):
        response = Response(status_code=200, headers={"HX-Redirect": "/console/sign-in"})
    else:
        response = RedirectResponse("/console/sign-in", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/console")
    return response


class ConsoleRoute(APIRoute):
    """A console route: refusals become error pages, a lost session the sign-in form."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except AuthenticationError as exc:
                if exc.status == 401:
                    return sign_in_redirect(request)
                return _error(request, exc.status, exc.code, exc.message, exc.rule)
            except SandboxError as exc:
                return _error(request, exc.status, exc.code, exc.message, exc.rule)
            except RequestValidationError as exc:
                message = f"the form does not match: {schema_problems(exc.errors())}"
                return _error(request, 422, "invalid_request", message, "api.schema")

        return handle


def _error(request: Request, status: int, code: str, message: str, rule: str | None) -> Response:
    headers = {}
    if status == 429:
        headers["Retry-After"] = "60"
    response = page(
        request,
        "refusal.html" if _htmx(request) else "error.html",
        None,
        status=status,
        code=code,
        message=message,
        rule=rule,
    )
    response.headers.update(headers)
    return response


class ConsoleHeaders:
    """ASGI middleware: the console's security headers on every ``/console`` answer."""

    HEADERS = (
        (b"content-security-policy", CSP.encode()),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"same-origin"),
        (b"cache-control", b"no-store"),
    )

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path == "/console" or path.startswith("/console/")):
            await self.app(scope, receive, send)
            return
        static = path.startswith("/console/static/")

        async def stamped(message: Any) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in self.HEADERS}
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                for name, value in self.HEADERS:
                    if static and name == b"cache-control":
                        value = b"public, max-age=3600"
                    headers.append((name, value))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, stamped)
