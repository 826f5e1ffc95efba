"""Make the cluster match one InferenceService: read, plan (plan.py, pure), apply, prune, write
status.

Runs in a worker thread (the kubernetes client is synchronous), under the object's lock
(locks.py), which the observe timer shares.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Any, cast

import kopf
from kubernetes.client import ApiClient

from pagoda.operator import kube, locks, metrics, plan
from pagoda.operator.children import (
    DEPLOYMENT,
    HANDOVER_MANAGER,
    KINDS,
    LEADERWORKERSET,
    OPTIONAL,
    SERVICEMONITOR,
    Kind,
    kind_of,
    workload_kind,
    workload_name,
)
from pagoda.operator.config import CONFIG
from pagoda.operator.spec import SELECTOR_LABEL, Spec, parse
from pagoda.operator.trouble import Trouble

_served_cache: dict[str, tuple[float, bool]] = {}


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def served(api: ApiClient, kind: Kind) -> bool:
    """Whether an optional kind's CRD is installed (prometheus-operator's, LWS's); asked at most
    once a minute."""
    at, answer = _served_cache.get(kind.api_version, (0.0, False))
    if time.monotonic() - at > 60:
        answer = kube.served(api, kind.api_version)
        _served_cache[kind.api_version] = (time.monotonic(), answer)
    return answer


async def reconcile(api: ApiClient, namespace: str, name: str) -> None:
    async with locks.lock(namespace, name):
        try:
            await asyncio.to_thread(reconcile_now, api, namespace, name)
        except Exception:
            metrics.reconciles.labels(namespace, name, "error").inc()
            raise
        metrics.reconciles.labels(namespace, name, "ok").inc()


def reconcile_now(api: ApiClient, namespace: str, name: str) -> None:
    """Call with the object's lock held. Reads the object fresh: the caller's copy may be stale."""
    body = kube.get_isvc(api, namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return
    s = parse(name, namespace, body["spec"])
    old = body.get("status") or {}
    present = {k for k in OPTIONAL if served(api, k)}
    lws = LEADERWORKERSET in present
    live = (
        kube.get(api, workload_kind(s), namespace, workload_name(s))
        if s.nodes == 1 or lws
        else None
    )
    generation = body["metadata"].get("generation", 0)
    observed = plan.Observed(generation, old, live, SERVICEMONITOR in present, lws)
    p = plan.plan(s, observed, CONFIG, now_iso())
    try:
        if p.handover is not None:
            kube.apply(api, DEPLOYMENT, p.handover, manager=HANDOVER_MANAGER)
        applied = apply_children(api, body, s, p.objects, present)
    except kube.ApiException as e:
        error = f"applying children failed: {e.status} {e.reason}: {_api_message(e)}"
        kube.event(body, type="Warning", reason="ApplyFailed", message=error)
        rollout = dict(old.get("rollout") or {})
        write_status(
            api, body, s, live, rollout, None, apply_error=error, trouble=plan.trouble_of(old)
        )
        raise kopf.TemporaryError(error, delay=15) from e
    for ev in p.events:
        kube.event(body, type=ev.type, reason=ev.reason, message=ev.message)
    deploy = next((o for o in applied if o["kind"] == workload_kind(s).kind), None)
    write_status(
        api,
        body,
        s,
        deploy,
        p.rollout,
        generation,
        trouble=plan.trouble_of(old),
        missing=p.missing,
    )


def apply_children(
    api: ApiClient,
    body: dict[str, Any],
    s: Spec,
    want: list[dict[str, Any]],
    present: set[Kind],
) -> list[dict[str, Any]]:
    """`present`: the OPTIONAL kinds whose CRDs are served (the others are neither listed nor
    pruned)."""
    uid = body["metadata"]["uid"]
    selector = f"{SELECTOR_LABEL}={s.name}"
    existing: dict[tuple[str, str], str] = {}
    owned: list[tuple[Any, str]] = []
    for kind in KINDS:
        if kind in OPTIONAL and kind not in present:
            continue
        for o in kube.list_(api, kind, s.namespace, selector):
            if any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences", [])):
                existing[(kind.kind, o["metadata"]["name"])] = o["metadata"]["resourceVersion"]
                owned.append((kind, o["metadata"]["name"]))
    applied = []
    for obj in want:
        kopf.append_owner_reference(obj, owner=kopf.Body(cast(kopf.RawBody, body)))
        out = kube.apply(api, kind_of(obj), obj)
        applied.append(out)
        key = (obj["kind"], obj["metadata"]["name"])
        if key not in existing:
            kube.event(
                body, type="Normal", reason="Created", message=f"created {obj['kind']} {key[1]}"
            )
        elif existing[key] != out["metadata"]["resourceVersion"]:
            kube.event(
                body, type="Normal", reason="Updated", message=f"updated {obj['kind']} {key[1]}"
            )
    keep = {(o["kind"], o["metadata"]["name"]) for o in want}
    for kind, child in owned:
        if (kind.kind, child) not in keep:
            kube.delete(api, kind, s.namespace, child)
            kube.event(
                body,
                type="Normal",
                reason="Deleted",
                message=f"deleted {kind.kind} {child}: the spec no longer asks for it",
            )
    return applied


def write_status(
    api: ApiClient,
    body: dict[str, Any],
    s: Spec,
    deploy: dict[str, Any] | None,
    rollout: dict[str, Any],
    generation: int | None,
    apply_error: str | None = None,
    trouble: Trouble | None = None,
    resource_version: str | None = None,
    missing: str | None = None,
    **extra: Any,
) -> None:
    """Writes the status only where it changed: a steady state costs no API call.
    `resource_version`: write only if `body` is still current (else a 409 ApiException)."""
    old = body.get("status") or {}
    new = plan.status(
        s, old, deploy, rollout, generation, now_iso(), apply_error, trouble, missing, **extra
    )
    patch = plan.status_patch(old, new)
    if patch:
        kube.patch_status(api, s.namespace, s.name, patch, resource_version)
    metrics.track(s.namespace, s.name)
    metrics.desired_replicas.labels(s.namespace, s.name).set(new["desiredReplicas"])
    metrics.ready_replicas.labels(s.namespace, s.name).set(new["readyReplicas"])


def _api_message(e: kube.ApiException) -> str:
    try:
        message: str = json.loads(e.body or "").get("message", "")
        return message
    except (TypeError, ValueError):
        return str(e.body)
