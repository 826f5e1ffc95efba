"""The gate every HTTP request passes: draining (503), the API key (401), the in-flight count;
then the body's size (413).

Plain ASGI rather than Starlette's BaseHTTPMiddleware, so that a streamed response counts as in
flight until its last byte, which is what a graceful drain waits for.
"""

from __future__ import annotations

import asyncio
import hmac
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pagoda.engine.server.errors import APIError, error_response

# Probes and scrapes carry no key: kubelet and Prometheus do not have it.
OPEN_PATHS = {"/health", "/metrics", "/version"}


@dataclass
class Lifecycle:
    draining: bool = False
    in_flight: int = 0
    # Set at the drain's deadline: open requests end with a reason (streams.DrainCut).
    cut: asyncio.Event = field(default_factory=asyncio.Event)


class GateMiddleware:
    def __init__(self, app: ASGIApp, lifecycle: Lifecycle, api_key: str | None) -> None:
        self.app, self.lifecycle = app, lifecycle
        self.expected = f"Bearer {api_key}".encode() if api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        if self.lifecycle.draining and path != "/metrics":
            response = error_response(
                503,
                "The server is shutting down",
                code="shutting_down",
                headers={"Connection": "close"},
            )
            return await response(scope, receive, send)
        if self.expected and path not in OPEN_PATHS and not self.authorized(scope):
            response = error_response(
                401,
                "Invalid or missing API key (Authorization: Bearer <key>)",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},  # RFC 6750: how to authenticate
            )
            return await response(scope, receive, send)
        self.lifecycle.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.lifecycle.in_flight -= 1

    def authorized(self, scope: Scope) -> bool:
        given = dict(scope["headers"]).get(b"authorization", b"")
        return hmac.compare_digest(given, self.expected)


class BodyLimitMiddleware:
    """413 for a body over max_bytes: at once when Content-Length says so (nothing is read), else
    when the bytes read so far pass it (a chunked body), raised from the app's own read."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            response = error_response(
                413, self.too_large(), code="request_too_large", headers={"Connection": "close"}
            )
            return await response(scope, receive, send)
        received = 0

        async def counting() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise APIError(413, self.too_large(), code="request_too_large")
            return message

        await self.app(scope, counting, send)

    def too_large(self) -> str:
        return f"The request body is larger than the server's limit of {self.max_bytes} bytes"
