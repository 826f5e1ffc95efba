"""The request path: validate, find the model's InferenceService, hold while it has no Ready pod,
choose a pod, forward, and pass the answer back chunk by chunk.

A connection that fails before the engine's first byte (refused, reset, or a 503 from a draining
pod) is tried once more on another pod; once bytes have flowed, a failure ends that stream only.
A client that goes away cancels this handler (aiohttp's handler cancellation), which closes the
upstream connection, and the engine aborts the request and frees its KV blocks. At the drain's
deadline (`cut`) every request still open is ended with a reason (drain.py) and its upstream
connection closed, so the engine aborts it too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from pagoda.gateway import drain, metrics
from pagoda.gateway.errors import GatewayError
from pagoda.gateway.hold import Hold
from pagoda.gateway.prefix import prefix_key
from pagoda.gateway.registry import Backend, Endpoint, Registry
from pagoda.gateway.routing import Router

log = logging.getLogger(__name__)

# Hop-by-hop headers (RFC 9110 7.6.1) and the ones the client library sets itself.
_NOT_FORWARDED = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
}
# A served model name: what vLLM's --served-model-name accepts in practice (org/name included),
# never a path that climbs or starts at the root, never whitespace or control characters.
_MODEL_NAME = re.compile(r"^(?!/)(?!.*(^|/)\.\.?(/|$))[\w.:@+-]+(/[\w.:@+-]+)*$")
MAX_MODEL_NAME = 256
EJECT_SECONDS = 5.0
# An answer of known length up to this size is read whole and sent in one write (headers and
# body together); longer ones, and streams, pass through chunk by chunk.
BUFFERED_BYTES = 1 << 20


@dataclass(frozen=True)
class ProxySettings:
    prefix_chars: int = 256
    epsilon: float = 0.25
    wake_every: float = 10.0  # seconds between two asks for a replica of one model


@dataclass(eq=False)
class Flight:
    """One request on its way through the gateway: what the drain's deadline must end."""

    task: asyncio.Task[object] | None
    upstream: aiohttp.ClientResponse | None = None  # set once the engine's answer is relayed
    cut: bool = False


class Proxy:
    def __init__(
        self,
        registry: Registry,
        hold: Hold,
        session: aiohttp.ClientSession,
        settings: ProxySettings,
        max_body_bytes: int,
    ) -> None:
        self.registry, self.hold, self.session, self.settings = registry, hold, session, settings
        self.max_body_bytes = max_body_bytes
        self._routers: dict[tuple[str, str], Router] = {}
        self._flights: set[Flight] = set()

    def in_flight(self) -> int:
        return len(self._flights)

    def cut(self) -> int:
        """The drain's deadline: end every request still open; how many there were. One being
        relayed loses its upstream connection (the relay then writes its last events); one not
        answered yet (waiting for a pod or for the engine's headers) is cancelled into a 503."""
        for f in self._flights:
            f.cut = True
            if f.upstream is not None:
                f.upstream.close()
            elif f.task is not None:
                f.task.cancel()
        return len(self._flights)

    async def models(self, request: web.Request) -> web.Response:
        data = [
            {
                "id": b.model,
                "object": "model",
                "created": _epoch(b.created),
                "owned_by": "pagoda",
                "root": b.model,
            }
            for b in self.registry.backends()
        ]
        return web.json_response({"object": "list", "data": data})

    async def forward(self, request: web.Request) -> web.StreamResponse:
        model, pod = "", ""
        flight = Flight(asyncio.current_task())
        self._flights.add(flight)
        try:
            raw, body = await _read_json(request, self.max_body_bytes)
            name = _model_name(body)
            b = self.registry.lookup(name)
            if b is None:
                raise GatewayError(
                    404, f"The model `{name}` does not exist.", "model", "model_not_found"
                )
            model = b.model
            metrics.child(metrics.in_flight, model).inc()
            try:
                response, pod = await self._send(request, b, raw, body, flight)
            finally:
                metrics.child(metrics.in_flight, model).dec()
            status = response.status
        except GatewayError as e:
            response, status = e.response(), e.status
        except asyncio.CancelledError:
            if not flight.cut:  # the client went away
                metrics.child(metrics.requests, model, pod, "499").inc()
                raise
            if flight.task is not None:
                flight.task.uncancel()
            cut = drain.shutting_down()
            response, status = cut.response(), cut.status
        finally:
            self._flights.discard(flight)
        metrics.child(metrics.requests, model, pod, str(status)).inc()
        return response

    async def _send(
        self, request: web.Request, b: Backend, raw: bytes, body: dict[str, Any], flight: Flight
    ) -> tuple[web.StreamResponse, str]:
        router = self._routers.setdefault((b.namespace, b.name), Router(self.settings.epsilon))
        key = prefix_key(body, self.settings.prefix_chars) if b.routing == "prefix" else None
        headers = CIMultiDict(
            (k, v) for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED
        )
        forwarded = [request.headers.get("X-Forwarded-For"), request.remote]
        headers["X-Forwarded-For"] = ", ".join(x for x in forwarded if x)
        tried: set[str] = set()
        failure = "no pod was tried"
        for attempt in range(2):
            if attempt == 0 and not b.endpoints:
                await self._hold(b)
            untried = [e for e in b.endpoints if e.pod not in tried]
            if not untried:
                break
            if attempt == 1:
                metrics.child(metrics.retries, b.model).inc()
            # A pod that just refused a connection waits out EJECT_SECONDS (its EndpointSlice
            # update is usually on the way), unless no other pod is left.
            now = time.monotonic()
            candidates = [e for e in untried if e.failed_until <= now] or untried
            endpoint, decision = router.choose(b.routing, candidates, key)
            metrics.child(metrics.routing_decisions, b.model, b.routing, decision).inc()
            tried.add(endpoint.pod)
            endpoint.in_flight += 1
            try:
                upstream = await self._open(endpoint, request.path_qs, raw, headers, b.model)
                if upstream.status == 503 and attempt == 0 and len(b.endpoints) > 1:
                    upstream.close()  # a pod draining or not ready yet: nothing was done there
                    failure = f"pod {endpoint.pod} answered 503"
                    continue
                flight.upstream = upstream
                return await _relay(request, upstream, flight, body), endpoint.pod
            except (aiohttp.ClientConnectionError, TimeoutError) as e:
                failure = f"pod {endpoint.pod}: {type(e).__name__}: {e}"
                endpoint.failed_until = time.monotonic() + EJECT_SECONDS
            finally:
                endpoint.in_flight -= 1
        raise GatewayError(
            502, f"No pod of model {b.model!r} answered ({failure})", code="upstream_unreachable"
        )

    async def _open(
        self, e: Endpoint, path: str, raw: bytes, headers: CIMultiDict[str], model: str
    ) -> aiohttp.ClientResponse:
        started = time.monotonic()
        upstream = await self.session.post(e.url + path, data=raw, headers=headers)
        metrics.child(metrics.upstream_header_seconds, model).observe(time.monotonic() - started)
        return upstream

    async def _hold(self, b: Backend) -> None:
        metrics.child(metrics.queue_depth, b.model).inc()
        started = time.monotonic()
        try:
            await self.hold.until_ready(b)
        finally:
            metrics.child(metrics.queue_depth, b.model).dec()
            metrics.child(metrics.queue_seconds, b.model).observe(time.monotonic() - started)


async def _relay(
    request: web.Request, upstream: aiohttp.ClientResponse, flight: Flight, body: dict[str, Any]
) -> web.StreamResponse:
    """The engine's answer: a short one of known length whole, anything else as it comes. A
    failure after the first byte cuts the client's connection (an unfinished chunked body), so
    the client sees an error, never a short answer that looks whole; the drain's deadline ends a
    stream with its last events instead (drain.py)."""
    finished = False
    try:
        headers = CIMultiDict(
            (k, v) for k, v in upstream.headers.items() if k.lower() not in _NOT_FORWARDED
        )
        length = upstream.content_length
        if length is not None and length <= BUFFERED_BYTES:
            try:
                whole = await upstream.read()
            except aiohttp.ClientError as e:
                if flight.cut:
                    return drain.shutting_down().response()
                metrics.broken_streams.inc()  # not retried: the engine did the work
                return GatewayError(
                    502, f"The engine's answer broke off: {e}", code="upstream_broken"
                ).response()
            finished = True
            return web.Response(status=upstream.status, headers=headers, body=whole)
        response = web.StreamResponse(status=upstream.status, headers=headers)
        if length is not None:
            response.content_length = length
        await response.prepare(request)
        first = last = b""
        try:
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
                last = chunk
                if not first:
                    first = chunk
        except aiohttp.ClientError as e:
            if not flight.cut:
                log.warning("the answer from %s broke off: %r", upstream.url.host, e)
                if request.transport is not None:
                    request.transport.close()
                metrics.broken_streams.inc()
                return response
        if flight.cut and not last.endswith(b"data: [DONE]\n\n"):
            if upstream.content_type != "text/event-stream":  # a long whole answer: cut it
                if request.transport is not None:
                    request.transport.close()
                return response
            await response.write(drain.last_events(first, last, drain.choices(body)))
        await response.write_eof()
        finished = not flight.cut
        return response
    finally:
        if finished:
            upstream.release()  # read to the end: the connection goes back to the pool
        else:
            upstream.close()  # the engine sees the disconnect and aborts the request


async def _read_json(request: web.Request, limit: int) -> tuple[bytes, dict[str, Any]]:
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge as e:
        raise GatewayError(
            413,
            f"The request body is larger than this gateway accepts ({limit} "
            "bytes; --max-body-bytes)",
            code="body_too_large",
        ) from e
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GatewayError(400, f"The request body is not valid JSON: {e}") from e
    if not isinstance(body, dict):
        raise GatewayError(400, "The request body must be a JSON object")
    return raw, body


def _epoch(timestamp: str) -> int:
    """An InferenceService's creationTimestamp as OpenAI's `created` (0 when unknown)."""
    try:
        return int(datetime.fromisoformat(timestamp).timestamp())
    except ValueError:
        return 0


def _model_name(body: dict[str, Any]) -> str:
    name = body.get("model")
    if name is None:
        raise GatewayError(400, "The request has no `model`: say which model to use", "model")
    if not isinstance(name, str) or not name:
        raise GatewayError(400, "`model` must be a non-empty string", "model")
    if len(name) > MAX_MODEL_NAME or not _MODEL_NAME.match(name):
        raise GatewayError(
            400,
            f"`model` is not a model name: {name[:80]!r} (letters, digits, . _ - : @ +, and / "
            "between name parts; no leading /, no . or .. parts)",
            "model",
        )
    return name
