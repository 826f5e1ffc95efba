"""Brings every ready engine pod's adapters to spec.lora through the engine's endpoints (vLLM's):
GET /v1/models (adapters are the entries with a `parent`), POST /v1/load_lora_adapter and
/v1/unload_lora_adapter; then writes status.lora. The decisions are lora.py's pure functions."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from typing import Any

import httpx
from kubernetes.client import ApiClient

from pagoda.operator import kube, lora
from pagoda.operator.children import Kind
from pagoda.operator.spec import ENGINE_PORT

SECRET = Kind("v1", "Secret", "secrets")
LOAD_TIMEOUT = httpx.Timeout(120.0, connect=3.0)  # an hf:// adapter is downloaded during the load


class EngineError(Exception):
    """An endpoint's refusal, with the engine's message."""


class Engine:
    """One engine pod's adapter endpoints."""

    def __init__(self, http: httpx.AsyncClient, ip: str, api_key: str | None) -> None:
        self.http, self.base = http, f"http://{ip}:{ENGINE_PORT}/v1"
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    async def served(self) -> list[lora.Served]:
        r = await self.http.get(f"{self.base}/models", headers=self.headers)
        _check(r)
        return [
            lora.Served(m["id"], m.get("root") or "")
            for m in r.json().get("data", [])
            if m.get("parent")
        ]

    async def load(self, a: lora.Adapter) -> None:
        body = {"lora_name": a.name, "lora_path": a.path}
        r = await self.http.post(
            f"{self.base}/load_lora_adapter", json=body, headers=self.headers, timeout=LOAD_TIMEOUT
        )
        _check(r)

    async def unload(self, name: str) -> None:
        r = await self.http.post(
            f"{self.base}/unload_lora_adapter", json={"lora_name": name}, headers=self.headers
        )
        if r.status_code != 404:  # already gone is what we wanted
            _check(r)


def _check(r: httpx.Response) -> None:
    if r.is_success:
        return
    try:
        message = r.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = r.text.strip()[:300]
    raise EngineError(f"HTTP {r.status_code}: {message}")


async def sync_pod(engine: Engine, wanted: list[lora.Adapter]) -> dict[str, lora.PodResult]:
    """One pod to the spec: unload first (frees slots), then load; each adapter's outcome."""
    try:
        served = await engine.served()
    except (httpx.HTTPError, EngineError) as e:
        return {a.name: lora.PodResult(False, f"/v1/models: {e}") for a in wanted}
    todo = lora.diff(wanted, served)
    for name in todo.unload:
        # One still served after a failure is unloaded again on the next sync.
        with contextlib.suppress(httpx.HTTPError, EngineError):
            await engine.unload(name)
    results = {a.name: lora.PodResult(True) for a in wanted}
    for a in todo.load:
        try:
            await engine.load(a)
        except (httpx.HTTPError, EngineError) as e:
            results[a.name] = lora.PodResult(False, str(e) or type(e).__name__)
    return results


class NoApiKey(Exception):
    """engine.apiKeySecret names a key the operator cannot read."""


def api_key(api: ApiClient, namespace: str, engine: dict[str, Any]) -> str | None:
    """The engine's API key, for a service with engine.apiKeySecret. The chart grants no access
    to Secrets: such a service needs `get` on its Secret granted to the operator (docs/lora.md)."""
    ref = engine.get("apiKeySecret")
    if ref is None:
        return None
    where = f"Secret {namespace}/{ref['name']} key {ref['key']}"
    try:
        secret = kube.get(api, SECRET, namespace, ref["name"]) or {}
    except kube.ApiException as e:
        raise NoApiKey(f"the operator cannot read {where} (HTTP {e.status})") from e
    value = (secret.get("data") or {}).get(ref["key"])
    if not value:
        raise NoApiKey(f"{where} is missing")
    return base64.b64decode(value).decode()


async def sync(
    api: ApiClient,
    http: httpx.AsyncClient,
    body: dict[str, Any],
    pod_ips: dict[str, str],
) -> None:
    """Every ready pod (`pod_ips`: name -> IP) to spec.lora, then status.lora where it changed."""
    meta, spec = body["metadata"], body["spec"]
    wanted = lora.adapters(spec.get("lora", {}))
    names = sorted(pod_ips)
    try:
        key = await asyncio.to_thread(api_key, api, meta["namespace"], spec.get("engine", {}))
        per_pod = await asyncio.gather(
            *(sync_pod(Engine(http, pod_ips[n], key), wanted) for n in names)
        )
    except NoApiKey as e:
        per_pod = [{a.name: lora.PodResult(False, str(e)) for a in wanted} for _ in names]
    status = {"adapters": lora.adapter_status(wanted, dict(zip(names, per_pod, strict=True)))}
    if (body.get("status") or {}).get("lora") != status:
        await asyncio.to_thread(
            kube.patch_status, api, meta["namespace"], meta["name"], {"lora": status}
        )
