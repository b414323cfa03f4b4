"""The HTTP service: a thin wiring of routes to the packages.

Every error a route raises is a :class:`sandbox.errors.SandboxError` and is
rendered by one handler as ``{"code", "message", "rule"}`` with the class's
status code.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from sandbox import __version__
from sandbox.errors import SandboxError
from sandbox.platform import Platform
from sandbox.settings import Settings, load_settings

__all__ = ["create_app"]


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the application for one deployment home."""
    settings = settings or load_settings()
    platform = Platform(settings)
    app = FastAPI(title="Sandbox", version=__version__)
    app.state.platform = platform

    @app.exception_handler(SandboxError)
    async def sandbox_error(_request: Request, exc: SandboxError) -> JSONResponse:
        return JSONResponse(exc.to_dict(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = sorted({".".join(str(p) for p in err.get("loc", ())) for err in exc.errors()})
        body = {
            "code": "invalid_request",
            "message": f"request does not match the API schema at: {', '.join(fields)}",
            "rule": "api.schema",
        }
        return JSONResponse(body, status_code=422)

    @app.get("/health")
    def health() -> dict[str, object]:
        """Liveness: the service answers and can see its enclave."""
        return {
            "status": "ok",
            "version": __version__,
            "datasets": len(platform.catalog.list()),
        }

    return app
