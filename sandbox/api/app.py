"""The FastAPI application: a thin wiring of routes to the packages.

Every error a route raises is a :class:`sandbox.core.errors.SandboxError` and is
rendered by one handler as ``{"code", "message", "rule"}`` with the class's
status code (``sandbox/api/errors.py``).  Routes per role live beside this
module; jobs in ``sandbox/jobs/``.  Run it with ``sandbox serve``
(docs/deployment.md), or ``uvicorn server:app`` (``server.py`` is a shim).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from sandbox import __version__
from sandbox.api import alerts, install
from sandbox.api.docs_ui import install_docs
from sandbox.api.errors import ERROR_RESPONSES
from sandbox.api.metrics import install_metrics
from sandbox.api.pool import bound_threads
from sandbox.console import install_console  # the composition root mounts the console
from sandbox.core.settings import Settings, load_settings
from sandbox.services import Services

__all__ = ["create_app"]

DESCRIPTION = """\
Sandbox puts the governed enclave, the grants and the audit trail behind HTTP.
Every route but `/health` and the OpenAPI documents needs `Authorization: Bearer
<token>`; identity and role come from the token only.  Errors are always
`{"code", "message", "rule"}`.  See docs/api.md for the tour per role.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the application for one deployment home (jobs start with the app's lifespan)."""
    settings = settings or load_settings()
    services = Services(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        bound_threads(settings.http_threads)  # sandbox/api/pool.py
        await run_in_threadpool(services.start)
        try:
            yield
        finally:
            await run_in_threadpool(services.stop)

    app = FastAPI(
        title="Sandbox",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # the CDN pages: install_docs serves them from the package instead
        redoc_url=None,
    )
    install(app, services)
    app.include_router(alerts.router, responses=ERROR_RESPONSES)
    install_metrics(app, services)
    install_docs(app)
    install_console(app)

    @app.get("/health", tags=["health"])
    def health() -> dict[str, object]:
        """Liveness: the service answers and can see its catalog."""
        return {
            "status": "ok",
            "version": __version__,
            "datasets": len(services.platform.catalog.list()),
        }

    return app
