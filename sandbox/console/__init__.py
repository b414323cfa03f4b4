"""The web console (网页控制台): server-rendered pages for the four roles under ``/console``.

Pages are Jinja2 templates (``templates/``) with assets from the package
(``static/``: the stylesheet and a vendored htmx), in Chinese or English
(``i18n/``).  Each page calls the same function the API route it mirrors calls,
with the same authorization and audit entries (see docs/api.md, "The web console",
for each page and the routes it uses).  The console sits above the API: it imports
``sandbox.api`` (routes and dependencies), never the other way round, except the
one composition line in ``sandbox.api.app`` that mounts it.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from . import admin, auditor, bureau, common, governance, lists, operator, products, registrations
from .render import ConsoleHeaders

__all__ = ["ROUTERS", "install_console"]

ROUTERS = (
    common.router,
    operator.router,
    bureau.router,
    auditor.router,
    admin.router,
    lists.router,
    registrations.router,
    products.router,
    governance.router,
)
STATIC = Path(__file__).parent / "static"


def install_console(app: FastAPI) -> None:
    """The console's pages, its static assets and its security headers, on ``app``."""
    app.add_middleware(ConsoleHeaders)
    app.mount("/console/static", StaticFiles(directory=STATIC), name="console-static")
    for router in ROUTERS:
        app.include_router(router)
