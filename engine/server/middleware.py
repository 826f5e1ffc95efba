"""The gate every HTTP request passes: draining (503), the API key (401), the in-flight count.

Plain ASGI rather than Starlette's BaseHTTPMiddleware, so that a streamed response counts as in
flight until its last byte, which is what a graceful drain waits for.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from pagoda.engine.server.errors import error_response

# Probes and scrapes carry no key: kubelet and Prometheus do not have it.
OPEN_PATHS = {"/health", "/metrics", "/version"}


@dataclass
class Lifecycle:
    draining: bool = False
    in_flight: int = 0


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
