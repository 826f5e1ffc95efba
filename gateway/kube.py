"""The apiserver, from asyncio: list-then-watch of InferenceServices and EndpointSlices, and the
one write the gateway makes (asking an InferenceService scaled to zero for a replica).

Credentials come from the pod's service account, else KUBECONFIG (read by the kubernetes
client's own loaders); the calls themselves go through aiohttp so nothing blocks the loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import kubernetes

from pagoda.operator.spec import WAKE_ANNOTATION  # the operator scales 0 -> 1 when it is newer

log = logging.getLogger(__name__)

ISVC_API = "/apis/pagoda.dev/v1alpha1"
SLICE_API = "/apis/discovery.k8s.io/v1"
WATCH_SECONDS = 300  # the server ends a watch after this; we then resume from the last version


class ApiServer:
    def __init__(self) -> None:
        cfg = kubernetes.client.Configuration()
        try:
            kubernetes.config.load_incluster_config(client_configuration=cfg)
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config(
                config_file=os.environ.get("KUBECONFIG"), client_configuration=cfg
            )
        self._cfg = cfg
        self.base = cfg.host.rstrip("/")
        self._ssl: ssl.SSLContext | bool = False
        if self.base.startswith("https"):
            ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
            if cfg.cert_file:
                ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
            if not cfg.verify_ssl:
                ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            self._ssl = ctx
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """Made on first use: an aiohttp session belongs to the running event loop."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl),
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=10, sock_read=WATCH_SECONDS + 30
                ),
            )
        return self._session

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        h = {"Accept": "application/json"}
        token = (
            self._cfg.auth_settings().get("BearerToken", {}).get("value")
        )  # refreshes in-cluster
        if token:
            h["Authorization"] = token
        if content_type:
            h["Content-Type"] = content_type
        return h

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def follow(
        self,
        path: str,
        on_list: Callable[[list[dict[str, Any]]], None],
        on_event: Callable[[str, dict[str, Any]], None],
        params: dict[str, str] | None = None,
    ) -> None:
        """List, then watch from the list's version, forever; a gap (410 Gone, a dropped
        connection that cannot resume) lists again, so the caller's table is never stale."""
        params = params or {}
        while True:
            try:
                async with self.session.get(
                    self.base + path, params=params, headers=self._headers()
                ) as r:
                    r.raise_for_status()
                    listing = await r.json()
                version = listing["metadata"]["resourceVersion"]
                on_list(listing["items"])
                while version is not None:
                    version = await self._watch(path, params, version, on_event)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning(
                    "watch of %s failed (%s: %s); listing again in 1s", path, type(e).__name__, e
                )
                await asyncio.sleep(1)

    async def _watch(
        self,
        path: str,
        params: dict[str, str],
        version: str,
        on_event: Callable[[str, dict[str, Any]], None],
    ) -> str | None:
        """One watch request; the version to resume from, or None when a fresh list is needed."""
        query = params | {
            "watch": "1",
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_SECONDS),
        }
        async with self.session.get(self.base + path, params=query, headers=self._headers()) as r:
            r.raise_for_status()
            buffer = b""
            async for chunk in r.content.iter_any():
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if event["type"] == "ERROR":  # 410 Gone: our version is too old
                        log.info("watch of %s: %s", path, event["object"].get("message"))
                        return None
                    version = event["object"]["metadata"]["resourceVersion"]
                    if event["type"] != "BOOKMARK":
                        on_event(event["type"], event["object"])
        return version

    async def request_replica(self, namespace: str, name: str) -> None:
        """Ask the operator for a replica of an InferenceService scaled to zero."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        patch = {"metadata": {"annotations": {WAKE_ANNOTATION: now}}}
        async with self.session.patch(
            f"{self.base}{ISVC_API}/namespaces/{namespace}/inferenceservices/{name}",
            data=json.dumps(patch),
            headers=self._headers("application/merge-patch+json"),
            timeout=aiohttp.ClientTimeout(total=10),
        ) as r:
            r.raise_for_status()


def collection(api: str, plural: str, namespace: str | None) -> str:
    return f"{api}/{plural}" if namespace is None else f"{api}/namespaces/{namespace}/{plural}"
