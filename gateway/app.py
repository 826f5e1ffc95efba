"""The gateway's aiohttp application: routes, and the background tasks that keep its tables
(the two watches, the engines' load scrape) alive for as long as it runs."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pagoda.gateway import metrics
from pagoda.gateway.errors import GatewayError
from pagoda.gateway.hold import Hold
from pagoda.gateway.kube import ISVC_API, SLICE_API, ApiServer, collection
from pagoda.gateway.proxy import Proxy, ProxySettings
from pagoda.gateway.registry import SERVICE_NAME_LABEL, Backend, Registry
from pagoda.gateway.scrape import scrape_forever

log = logging.getLogger(__name__)
# After the drain's deadline, the time open requests get to write their last events.
CUT_GRACE_S = 2.0
# Under the engine's keep-alive timeout (uvicorn's timeout_keep_alive=5 in api_server.py).
UPSTREAM_KEEPALIVE_SECONDS = 3.0
SESSION = web.AppKey("session", aiohttp.ClientSession)
PROXY = web.AppKey("proxy", Proxy)


@dataclass(frozen=True)
class GatewaySettings:
    namespaces: list[str] | None = None  # None: every namespace
    max_body_bytes: int = 8 * 1024 * 1024
    queue_size: int = 100  # requests held per model while it has no Ready pod
    queue_timeout: float = 300.0
    scrape_interval: float = 2.0
    drain_timeout: float = 30.0  # at shutdown, seconds open requests get to finish
    proxy: ProxySettings = field(default_factory=ProxySettings)


def build(settings: GatewaySettings, registry: Registry, api: ApiServer | None) -> web.Application:
    """`api` None: no apiserver (unit tests fill the registry themselves)."""
    app = web.Application(client_max_size=settings.max_body_bytes)
    synced: dict[str, bool] = {}  # each watched collection: listed at least once
    tasks: list[asyncio.Task[None]] = []
    last_wake: dict[tuple[str, str], float] = {}

    async def wake(b: Backend) -> None:
        key = (b.namespace, b.name)
        if api is None or time.monotonic() - last_wake.get(key, -1e9) < settings.proxy.wake_every:
            return
        last_wake[key] = time.monotonic()
        metrics.wakeups.labels(b.model).inc()
        try:
            await api.request_replica(b.namespace, b.name)
            log.info("asked for a replica of %s/%s (model %s)", b.namespace, b.name, b.model)
        except aiohttp.ClientError as e:
            log.warning("could not ask for a replica of %s/%s: %s", b.namespace, b.name, e)

    hold = Hold(settings.queue_size, settings.queue_timeout, wake)

    async def start(app: web.Application) -> None:
        # No read timeout upstream: a long generation is not a failure. Connecting is bounded.
        # An idle connection is dropped before the engine's own keep-alive timeout (5 s) can
        # close it under a request this side has just sent on it.
        app[SESSION] = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=UPSTREAM_KEEPALIVE_SECONDS),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),  # a proxy keeps no cookies (and skips their cost)
            skip_auto_headers=("Accept-Encoding", "User-Agent"),
        )
        app[PROXY] = Proxy(registry, hold, app[SESSION], settings.proxy, settings.max_body_bytes)
        tasks.append(
            asyncio.create_task(scrape_forever(app[SESSION], registry, settings.scrape_interval))
        )
        if api is not None:
            tasks.extend(_follow_all(api, registry, settings.namespaces, synced))

    async def shutdown(app: web.Application) -> None:
        # aiohttp has stopped listening; this runs before it waits on the open connections.
        hold.close()  # held requests are answered now, not left to a dying process
        proxy = app[PROXY]
        if not await _until_idle(proxy, settings.drain_timeout):
            log.warning(
                "drain timeout (%gs): ending %d open request(s) with finish_reason abort",
                settings.drain_timeout,
                proxy.cut(),
            )
            await _until_idle(proxy, CUT_GRACE_S)

    async def cleanup(app: web.Application) -> None:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await app[SESSION].close()
        if api is not None:
            await api.close()

    async def health(request: web.Request) -> web.Response:
        missing = [what for what, done in synced.items() if not done]
        if missing:
            return web.json_response({"status": "syncing", "waiting_for": missing}, status=503)
        ready = {b.model: len(b.endpoints) for b in registry.backends()}
        return web.json_response({"status": "ok", "ready_pods": ready})

    async def prometheus(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def forward(request: web.Request) -> web.StreamResponse:
        return await request.app[PROXY].forward(request)

    async def models(request: web.Request) -> web.Response:
        return await request.app[PROXY].models(request)

    async def not_found(request: web.Request) -> web.Response:
        return GatewayError(404, f"No route {request.method} {request.path}").response()

    app.on_startup.append(start)
    app.on_shutdown.append(shutdown)
    app.on_cleanup.append(cleanup)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", prometheus)
    app.router.add_get("/v1/models", models)
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
        app.router.add_post(path, forward)
    app.router.add_route("*", "/{tail:.*}", not_found)
    return app


async def _until_idle(proxy: Proxy, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while proxy.in_flight() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return not proxy.in_flight()


def _follow_all(
    api: ApiServer, registry: Registry, namespaces: list[str] | None, synced: dict[str, bool]
) -> list[asyncio.Task[None]]:
    """A list-then-watch of InferenceServices and of EndpointSlices per namespace watched."""

    def isvc_event(kind: str, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        if kind == "DELETED":
            registry.delete_isvc(meta["namespace"], meta["name"])
        else:
            registry.upsert_isvc(obj)

    def slice_event(kind: str, obj: dict[str, Any]) -> None:
        if kind == "DELETED":
            registry.delete_slice(obj)
        else:
            registry.upsert_slice(obj)

    def listed(
        path: str, reset: Callable[[list[dict[str, Any]], str | None], None], ns: str | None
    ) -> Callable[[list[dict[str, Any]]], None]:
        def on_list(items: list[dict[str, Any]]) -> None:
            reset(items, ns)  # scoped to its namespace: another one's entries stay
            synced[path] = True

        return on_list

    tasks = []
    scopes: list[str | None] = list(namespaces) if namespaces else [None]  # None: every namespace
    for ns in scopes:
        for path, reset, on_event, params in (
            (collection(ISVC_API, "inferenceservices", ns), registry.reset_isvcs, isvc_event, {}),
            (
                collection(SLICE_API, "endpointslices", ns),
                registry.reset_slices,
                slice_event,
                {"labelSelector": SERVICE_NAME_LABEL},
            ),
        ):
            synced[path] = False
            follow = api.follow(path, listed(path, reset, ns), on_event, params)
            tasks.append(asyncio.create_task(follow))
    return tasks
