"""Request limits and response headers, as ASGI middleware around the whole application.

- :class:`BodyLimit`: a body over its route's limit is refused ``413
  request_too_large`` whether it announces its length or streams chunked, and a
  body that stalls is refused ``408 request_timeout`` (``body_read_timeout_s``).
- :class:`ClientAddress`: ``X-Forwarded-For`` names the client only when the peer
  is a configured proxy (``trusted_proxies``); otherwise the peer is the client.
- :class:`ResponseHeaders`: ``X-Content-Type-Options: nosniff`` on every answer,
  ``Cache-Control: no-store`` on every ``/v1/`` answer (tokens, enrolment codes,
  receipts, results: nothing an API answer holds belongs in a cache).

The per-token rate limit (429) and failed sign-ins are :mod:`sandbox.ratelimit`
and :mod:`sandbox.api.context`.  Header size and idle keep-alive connections are
limited by uvicorn (``sandbox serve``); ``docs/deployment.md`` lists every limit
with the proxy settings that go with it.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Sequence
from typing import Any

import anyio

from sandbox.core.errors import InvalidInput, SandboxError

__all__ = [
    "UPLOAD_PATHS",
    "BodyLimit",
    "ClientAddress",
    "HeadersTooLarge",
    "RequestTimeout",
    "RequestTooLarge",
    "ResponseHeaders",
    "parse_proxies",
    "send_error",
]

UPLOAD_PATHS = ("/v1/uploads",)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class RequestTooLarge(SandboxError):
    """The request body is larger than the limit for its route."""

    code = "request_too_large"
    status = 413


class HeadersTooLarge(SandboxError):
    """The request line and headers are larger than ``max_header_bytes``."""

    code = "headers_too_large"
    status = 431


class RequestTimeout(SandboxError):
    """The request body stalled: nothing arrived for ``body_read_timeout_s``."""

    code = "request_timeout"
    status = 408


class BodyLimit:
    """ASGI middleware: refuse bodies over the limit (413) or stalling (408), announced or not,
    and headers over ``max_header_bytes`` (431; uvicorn also refuses a header block it is
    still waiting for once it passes that size).

    The check runs as the body streams, so a chunked body is refused as soon as it
    passes the limit, without being read to its end.  Whatever the application had
    made of the broken body (FastAPI answers a body it cannot read with 400) is
    replaced by the refusal.
    """

    def __init__(
        self,
        app: Any,
        limits: Callable[[str], int],
        timeout: Callable[[], float],
        header_bytes: int,
    ) -> None:
        self.app = app
        self.limits = limits
        self.timeout = timeout
        self.header_bytes = header_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers", ())
        size = len(scope.get("raw_path") or b"") + sum(len(n) + len(v) + 4 for n, v in headers)
        if size > self.header_bytes:
            await send_error(
                send,
                HeadersTooLarge(
                    f"the request headers are larger than {self.header_bytes} bytes",
                    rule="api.header_size",
                ),
            )
            return
        limit = self.limits(scope.get("path", ""))
        for name, value in headers:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await send_error(send, _too_large(limit))
                return
        seen = 0
        body_done = False
        refused: SandboxError | None = None
        started = False

        async def guarded() -> Any:
            nonlocal seen, body_done, refused
            if body_done:  # after the body: disconnect notices, never timed
                return await receive()
            try:
                with anyio.fail_after(self.timeout()):
                    message = await receive()
            except TimeoutError:
                refused = RequestTimeout(
                    f"the request body sent nothing for {self.timeout():g} s",
                    rule="api.body_timeout",
                )
                raise refused from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if seen > limit:
                    refused = _too_large(limit)
                    raise refused
            else:
                body_done = True
            return message

        async def guarded_send(message: Any) -> None:
            nonlocal started
            if refused is not None and not started:
                return  # the application's answer to a body it could not read
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, guarded, guarded_send)
        except Exception:
            if refused is None or started:
                raise
        if refused is not None and not started:
            await send_error(send, refused)


def _too_large(limit: int) -> RequestTooLarge:
    return RequestTooLarge(f"the request body is larger than {limit} bytes", rule="api.body_size")


async def send_error(send: Any, error: SandboxError) -> None:
    """Answer ``error`` in the one error shape, and close the connection (a body may remain)."""
    body = json.dumps(error.to_dict(), separators=(",", ":")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def parse_proxies(text: str) -> tuple[Network, ...]:
    """``trusted_proxies`` as networks (``10.0.0.5`` is ``10.0.0.5/32``); refused if malformed."""
    found = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            found.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise InvalidInput(
                "trusted_proxies: comma-separated addresses or networks, e.g. 10.0.0.0/24",
                rule="settings.parse",
            ) from None
    return tuple(found)


def _trusted(address: str, proxies: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in proxies)


class ClientAddress:
    """ASGI middleware: the client address, from ``X-Forwarded-For`` only behind a trusted proxy.

    Walking the header from the right, each address appended by a trusted proxy is
    skipped; the first one that is not a trusted proxy is the client.  A client can
    put anything to the left of that in the header: it is never read.  With no
    trusted proxy (the default) the header is ignored.
    """

    def __init__(self, app: Any, proxies: Sequence[Network]) -> None:
        self.app = app
        self.proxies = tuple(proxies)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.proxies and scope.get("client"):
            peer, port = scope["client"]
            if _trusted(peer, self.proxies):
                forwarded = [
                    value.decode("latin-1")
                    for name, value in scope.get("headers", ())
                    if name == b"x-forwarded-for"
                ]
                hops = [h.strip() for h in ",".join(forwarded).split(",") if h.strip()]
                client = peer
                for hop in reversed(hops):
                    client = hop
                    if not _trusted(hop, self.proxies):
                        break
                scope = {**scope, "client": (client, port)}
        await self.app(scope, receive, send)


class ResponseHeaders:
    """ASGI middleware: ``nosniff`` on every answer, ``no-store`` on every ``/v1/`` answer."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        private = scope.get("path", "").startswith("/v1/")

        async def stamped(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.lower() not in (b"x-content-type-options", b"cache-control")
                    or (k.lower() == b"cache-control" and not private)
                ]
                headers.append((b"x-content-type-options", b"nosniff"))
                if private:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, stamped)
