"""The HTTP API: routers per role, one error shape, limits, and the per-process services.

``sandbox.api.app.create_app`` wires these together; nothing here holds request logic
that belongs to the packages (authorization, jobs, audit).
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI

from sandbox.services import Services

from . import admin, auditor, bureau, operator, shared, tokens
from . import catalog as catalog_routes
from . import data_lists as data_list_routes
from . import products as product_routes
from . import quality as quality_routes
from . import registration as registration_routes
from . import witness as witness_routes
from .errors import ERROR_RESPONSES, install_error_handlers
from .ids import new_request_id
from .limits import UPLOAD_PATHS, BodyLimit, ClientAddress, ResponseHeaders, parse_proxies

__all__ = ["ROUTERS", "Services", "install"]

ROUTERS = (
    shared.router,
    tokens.router,
    operator.router,
    bureau.router,
    auditor.router,
    admin.router,
    catalog_routes.router,
    registration_routes.router,
    quality_routes.router,
    product_routes.router,
    data_list_routes.router,
    witness_routes.router,
)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9_.-]{8,64}$")


class RequestId:
    """ASGI middleware: a request id per request (a sane incoming ``X-Request-ID`` is kept)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = None
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                text = value.decode("latin-1")
                rid = text if _REQUEST_ID.match(text) else None
        rid = rid or new_request_id()
        scope.setdefault("state", {})["request_id"] = rid

        async def stamped(message: Any) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        await self.app(scope, receive, stamped)


def install(app: FastAPI, services: Services) -> None:
    """Routers, error handlers and limits on ``app``, for ``services``."""
    app.state.services = services
    install_error_handlers(app)

    def body_limit(path: str) -> int:
        limits = services.settings()
        return limits.max_upload_bytes if path in UPLOAD_PATHS else limits.max_body_bytes

    app.add_middleware(
        BodyLimit,
        limits=body_limit,
        timeout=lambda: services.settings().body_read_timeout_s,
        header_bytes=services.base_settings.max_header_bytes,
    )
    app.add_middleware(ResponseHeaders)
    app.add_middleware(RequestId)
    # Outermost: everything inside sees the client address it establishes.
    app.add_middleware(ClientAddress, proxies=parse_proxies(services.base_settings.trusted_proxies))
    for router in ROUTERS:
        app.include_router(router, responses=ERROR_RESPONSES)
