"""Make the cluster match one InferenceService: read, plan (plan.py, pure), apply, prune, write
status.

Runs in a worker thread (the kubernetes client is synchronous), under the object's lock
(locks.py), which the observe timer shares.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, cast

import kopf
from kubernetes.client import ApiClient

from pagoda.operator import kube, locks, metrics, plan
from pagoda.operator.children import (
    DEPLOYMENT,
    HANDOVER_MANAGER,
    LEADERWORKERSET,
    OPTIONAL,
    SERVICEMONITOR,
    Child,
    Kind,
    child_of,
    kind_named,
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


async def reconcile(
    api: ApiClient, namespace: str, name: str, seen: Mapping[tuple[str, str], Iterable[Child]]
) -> None:
    """`seen`: kopf's index of the children its watches hold, by owner (handlers.py)."""
    async with locks.lock(namespace, name):
        # Read here, in the event loop that updates the index, after any reconcile before us.
        children = list(seen.get((namespace, name), ()))
        try:
            await asyncio.to_thread(reconcile_now, api, namespace, name, children)
        except Exception:
            metrics.reconciles.labels(namespace, name, "error").inc()
            raise
        metrics.reconciles.labels(namespace, name, "ok").inc()


def reconcile_now(api: ApiClient, namespace: str, name: str, seen: list[Child]) -> None:
    """Call with the object's lock held. Reads the object fresh: the caller's copy may be stale.
    `seen`: its children as kopf's watches hold them."""
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
        applied = apply_children(api, body, s, p.objects, present, seen)
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


# Per InferenceService, the children its reconciles applied, as their answers said: a watch may
# bring a child after the next reconcile has begun, which must still prune it and not call it new.
_applied: dict[tuple[str, str], dict[tuple[str, str], Child]] = {}


def forget(namespace: str, name: str) -> None:
    _applied.pop((namespace, name), None)


def reset() -> None:
    """A second operator run in this process (tests) knows only what its watches bring."""
    _applied.clear()


def apply_children(
    api: ApiClient,
    body: dict[str, Any],
    s: Spec,
    want: list[dict[str, Any]],
    present: set[Kind],
    seen: list[Child],
) -> list[dict[str, Any]]:
    """`present`: the OPTIONAL kinds whose CRDs are served (the others are neither listed nor
    pruned). `seen`: the children kopf's watches hold; the OPTIONAL kinds are not watched (their
    CRDs may be missing), so they are listed."""
    uid = body["metadata"]["uid"]
    mine = _applied.setdefault((s.namespace, s.name), {})
    known = [*seen, *mine.values()]
    for kind in OPTIONAL:
        if kind in present:
            listed = kube.list_(api, kind, s.namespace, f"{SELECTOR_LABEL}={s.name}")
            # A list's items need not carry their kind (built-in kinds' do not).
            known += [c for o in listed if (c := child_of({**o, "kind": kind.kind}))]
    applied: list[dict[str, Any]] = []
    try:
        for obj in want:
            kopf.append_owner_reference(obj, owner=kopf.Body(cast(kopf.RawBody, body)))
            out = kube.apply(api, kind_of(obj), obj)
            applied.append(out)
            child = child_of(out)
            if child is not None:
                mine[(child.kind, child.name)] = child
    finally:
        for ev in plan.applied_events(known, uid, applied):
            kube.event(body, type=ev.type, reason=ev.reason, message=ev.message)
    for gone, child_name in plan.prune(known, uid, want):
        if kube.delete(api, kind_named(gone), s.namespace, child_name):
            kube.event(
                body,
                type="Normal",
                reason="Deleted",
                message=f"deleted {gone} {child_name}: the spec no longer asks for it",
            )
        mine.pop((gone, child_name), None)
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
