"""Request limits: body size (413); the per-token rate limit (429) is :mod:`sandbox.ratelimit`.

The rate limit is a token bucket per API token (capacity and refill from
``rate_limit_per_minute``), kept in the server process: with several server
processes a client spreading its connections over them can reach that many
times the rate (``docs/deployment.md``).  Failed authentications are limited
per client address the same way, so unknown tokens cannot flood the audit trail:
a refused streak is recorded on its first refusal and every hundredth.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sandbox.core.errors import SandboxError

__all__ = ["UPLOAD_PATHS", "BodyLimit", "RequestTooLarge"]

UPLOAD_PATHS = ("/v1/uploads",)


class RequestTooLarge(SandboxError):
    """The request body is larger than the limit for its route."""

    code = "request_too_large"
    status = 413


class BodyLimit:
    """ASGI middleware: refuse bodies over the limit, by Content-Length or as they stream."""

    def __init__(self, app: Any, limits: Callable[[str], int]) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits(scope.get("path", ""))
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await _send_413(send, limit)
                return
        seen = 0

        async def guarded() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise RequestTooLarge(
                        f"the request body is larger than {limit} bytes", rule="api.body_size"
                    )
            return message

        await self.app(scope, guarded, send)


async def _send_413(send: Any, limit: int) -> None:
    body = (
        '{"code":"request_too_large","message":"the request body is larger than '
        f'{limit} bytes","rule":"api.body_size"}}'
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": body})
