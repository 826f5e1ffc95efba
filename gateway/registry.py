"""What the gateway knows: served model name -> the InferenceService behind it and its Ready pods.

Filled from two watches (kube.py): InferenceServices give the model names and routing policies,
EndpointSlices (written by Kubernetes for each InferenceService's Service) give the Ready pods.
Nothing here calls the apiserver; a request only reads these tables.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

POLICIES = ("round-robin", "least-load", "prefix")
DEFAULT_POLICY = "round-robin"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


@dataclass
class Endpoint:
    """One Ready engine pod, with the load the gateway sees (in_flight) and the engine reports."""

    pod: str
    address: str
    port: int
    in_flight: int = 0
    waiting: float = 0.0  # vllm:num_requests_waiting, last scrape
    kv_usage: float = 0.0  # vllm:kv_cache_usage_perc (0..1), last scrape
    failed_until: float = 0.0  # monotonic time; after a refused connection, tried last till then

    @property
    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}"


@dataclass
class Backend:
    """The InferenceService serving one model name."""

    namespace: str
    name: str
    model: str
    routing: str = DEFAULT_POLICY
    scales_to_zero: bool = False  # autoscaling.minReplicas == 0: a request may have to wake it
    created: str = ""
    slices: dict[str, list[Endpoint]] = field(default_factory=dict)  # EndpointSlice name -> pods
    endpoints: list[Endpoint] = field(default_factory=list)  # every slice's, kept current
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def set_slice(self, slice_name: str, endpoints: list[Endpoint]) -> None:
        # Keep each surviving pod's Endpoint object: its in-flight count belongs to live requests.
        known = {(e.address, e.port): e for e in self.endpoints}
        kept = []
        for new in endpoints:
            old = known.get((new.address, new.port))
            if old is not None:
                old.pod = new.pod
            kept.append(old or new)
        if kept:
            self.slices[slice_name] = kept
        else:
            self.slices.pop(slice_name, None)
        self._signal()

    def drop_slice(self, slice_name: str) -> None:
        self.slices.pop(slice_name, None)
        self._signal()

    def _signal(self) -> None:
        self.endpoints = [e for eps in self.slices.values() for e in eps]
        if self.endpoints:
            self.ready.set()
        else:
            self.ready.clear()


class Registry:
    def __init__(self) -> None:
        self._by_isvc: dict[tuple[str, str], Backend] = {}
        self._by_model: dict[str, Backend] = {}
        self._pending_slices: dict[tuple[str, str], dict[str, list[Endpoint]]] = {}

    def lookup(self, model: str) -> Backend | None:
        return self._by_model.get(model)

    def _reindex(self) -> None:
        # Two InferenceServices claiming one name: the older one keeps it (a stable answer).
        self._by_model = {}
        for b in sorted(self._by_isvc.values(), key=lambda b: (b.created, b.namespace, b.name)):
            self._by_model.setdefault(b.model, b)

    def backends(self) -> list[Backend]:
        return sorted(self._by_isvc.values(), key=lambda b: b.model)

    # --- InferenceServices -------------------------------------------------------------------

    def upsert_isvc(self, obj: dict[str, Any]) -> None:
        meta, spec = obj["metadata"], obj.get("spec") or {}
        key = (meta["namespace"], meta["name"])
        model = (spec.get("model") or {}).get("servedName") or meta["name"]
        routing = spec.get("routing", DEFAULT_POLICY)
        autoscaling = spec.get("autoscaling")
        b = self._by_isvc.get(key)
        if b is None:
            b = Backend(meta["namespace"], meta["name"], model)
            self._by_isvc[key] = b
            for slice_name, eps in self._pending_slices.pop(key, {}).items():
                b.set_slice(slice_name, eps)
        b.model = model
        b.routing = routing if routing in POLICIES else DEFAULT_POLICY
        b.scales_to_zero = autoscaling is not None and autoscaling.get("minReplicas") == 0
        b.created = meta.get("creationTimestamp", "")
        self._reindex()

    def delete_isvc(self, namespace: str, name: str) -> None:
        self._by_isvc.pop((namespace, name), None)
        self._reindex()

    def reset_isvcs(self, items: list[dict[str, Any]], namespace: str | None) -> None:
        """A fresh listing of `namespace` (None: all): what it lacks was deleted meanwhile."""
        seen = set()
        for obj in items:
            self.upsert_isvc(obj)
            seen.add((obj["metadata"]["namespace"], obj["metadata"]["name"]))
        for key in set(self._by_isvc) - seen:
            if namespace in (None, key[0]):
                self.delete_isvc(*key)

    # --- EndpointSlices ----------------------------------------------------------------------

    def upsert_slice(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        service = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if not service:
            return
        key, endpoints = (meta["namespace"], service), ready_endpoints(obj)
        b = self._by_isvc.get(key)
        if b is None:  # the slice came before its InferenceService: keep it for when it comes
            self._pending_slices.setdefault(key, {})[meta["name"]] = endpoints
        else:
            b.set_slice(meta["name"], endpoints)

    def delete_slice(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        service = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL, "")
        key = (meta["namespace"], service)
        self._pending_slices.get(key, {}).pop(meta["name"], None)
        if key in self._by_isvc:
            self._by_isvc[key].drop_slice(meta["name"])

    def reset_slices(self, items: list[dict[str, Any]], namespace: str | None) -> None:
        listed: dict[tuple[str, str], set[str]] = {}
        for obj in items:
            self.upsert_slice(obj)
            meta = obj["metadata"]
            service = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL, "")
            listed.setdefault((meta["namespace"], service), set()).add(meta["name"])
        for key, b in self._by_isvc.items():
            if namespace not in (None, key[0]):
                continue
            for slice_name in set(b.slices) - listed.get(key, set()):
                b.drop_slice(slice_name)


def ready_endpoints(obj: dict[str, Any]) -> list[Endpoint]:
    """The Ready endpoints of one EndpointSlice (a missing `ready` means ready, as the API says)."""
    ports = obj.get("ports") or []
    port = next((p["port"] for p in ports if p.get("name") == "http"), None)
    if port is None and ports:
        port = ports[0].get("port")
    if port is None:
        return []
    out = []
    for ep in obj.get("endpoints") or []:
        if (ep.get("conditions") or {}).get("ready") is False or not ep.get("addresses"):
            continue
        address = ep["addresses"][0]
        pod = (ep.get("targetRef") or {}).get("name") or address
        out.append(Endpoint(pod=pod, address=address, port=port))
    return out
