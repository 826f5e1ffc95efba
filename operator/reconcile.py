"""Make the cluster match one InferenceService: apply its children, prune the rest, write status.

Runs in a worker thread (the kubernetes client is synchronous), under a per-object lock that the
observe timer shares, so a reconcile and a scaling decision never interleave.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any, cast

import kopf
from kubernetes.client import ApiClient

from pagoda.operator import kube, metrics
from pagoda.operator.children import (
    DEPLOYMENT,
    HANDOVER_MANAGER,
    KINDS,
    SERVICEMONITOR,
    applies_replicas,
    desired,
    engine_image,
    handover,
    kind_of,
)
from pagoda.operator.config import CONFIG
from pagoda.operator.resources.deployment import deployment, revision
from pagoda.operator.resources.ingress import ingress_url
from pagoda.operator.resources.service import cluster_url
from pagoda.operator.spec import SELECTOR_LABEL, Spec, parse
from pagoda.operator.status import Facts, conditions, merge

LOCKS: defaultdict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)
_served_cache: dict[str, tuple[float, bool]] = {}


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def servicemonitors_served(api: ApiClient) -> bool:
    """Whether prometheus-operator's CRD is installed; asked at most once a minute."""
    at, served = _served_cache.get("sm", (0.0, False))
    if time.monotonic() - at > 60:
        served = kube.served(api, SERVICEMONITOR.api_version)
        _served_cache["sm"] = (time.monotonic(), served)
    return served


async def reconcile(api: ApiClient, namespace: str, name: str) -> None:
    async with LOCKS[(namespace, name)]:
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
    status = body.get("status") or {}
    rollout = dict(status.get("rollout") or {})
    pods = pod_spec(s, rollout)
    live = kube.get(api, DEPLOYMENT, namespace, name)
    replicas = replicas_to_apply(s, live)
    if replicas is None and live is not None and applies_replicas(live["metadata"]):
        kube.apply(api, DEPLOYMENT, handover(live), manager=HANDOVER_MANAGER)
    try:
        applied = apply_children(api, body, s, pods, replicas)
    except kube.ApiException as e:
        error = f"applying children failed: {e.status} {e.reason}: {_api_message(e)}"
        kube.event(body, type="Warning", reason="ApplyFailed", message=error)
        write_status(api, body, s, live, rollout, apply_error=error)
        raise kopf.TemporaryError(error, delay=15) from e
    deploy = next(o for o in applied if o["kind"] == "Deployment")
    rendered = revision(deploy)
    if rendered != rollout.get("revision"):
        rollout.update(revision=rendered, startedAt=now_iso())
        if rendered == rollout.get("stableRevision"):
            rollout.update(phase="Succeeded", message=f"back on stable revision {rendered}")
        else:
            rollout.update(phase="Progressing", message=f"rolling out revision {rendered}")
            kube.event(
                body,
                type="Normal",
                reason="RolloutStarted",
                message=f"rolling out revision {rendered}",
            )
    write_status(api, body, s, deploy, rollout)


def pod_spec(s: Spec, rollout: dict[str, Any]) -> Spec:
    """The spec that renders pods: the stable one while the current spec is the rolled-back revision."""
    stable = rollout.get("stableSpec")
    if stable and rollout.get("failedRevision") == spec_revision(s):
        return parse(s.name, s.namespace, json.loads(stable))
    return s


def spec_revision(s: Spec) -> str:
    return revision(
        deployment(s, engine_image(s, CONFIG.engine_image, CONFIG.engine_cpu_image), None)
    )


def replicas_to_apply(s: Spec, live: dict[str, Any] | None) -> int | None:
    """Spec mode: the spec. HPA mode: None (the HPA owns the field). Operator mode: the count the
    autoscaler last set on the Deployment, kept within [min, max]."""
    a = s.autoscaling
    if a is None:
        return s.replicas
    if a.mode == "HPA":
        return None
    current: int = (live or {}).get("spec", {}).get("replicas", a.min_replicas)
    return min(max(current, a.min_replicas), a.max_replicas)


def apply_children(
    api: ApiClient, body: dict[str, Any], s: Spec, pods: Spec, replicas: int | None
) -> list[dict[str, Any]]:
    sm = servicemonitors_served(api)
    new_generation = (body.get("status") or {}).get("observedGeneration") != body["metadata"].get(
        "generation"
    )
    if (
        s.service_monitor and not sm and new_generation
    ):  # said once per spec, not on every reconcile
        kube.event(
            body,
            type="Warning",
            reason="ServiceMonitorSkipped",
            message="monitoring.serviceMonitor.enabled, but the ServiceMonitor CRD is not installed",
        )
    image = engine_image(pods, CONFIG.engine_image, CONFIG.engine_cpu_image)
    want = desired(s, pods, image, replicas, sm)
    uid = body["metadata"]["uid"]
    selector = f"{SELECTOR_LABEL}={s.name}"
    existing: dict[tuple[str, str], str] = {}
    owned: list[tuple[Any, str]] = []
    for kind in KINDS:
        if kind is SERVICEMONITOR and not sm:
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
    apply_error: str | None = None,
    **extra: Any,
) -> None:
    """Status from the Deployment as it is and what the caller knows; `extra` adds fields (metrics, ...)."""
    old = body.get("status") or {}
    dstatus = (deploy or {}).get("status", {})
    desired_n = (deploy or {}).get("spec", {}).get("replicas", s.replicas or 0)
    pods_scraped = (extra.get("metrics") or old.get("metrics") or {}).get("podsScraped")
    facts = Facts(
        desired=desired_n,
        replicas=dstatus.get("replicas", 0),
        ready=dstatus.get("readyReplicas", 0),
        updated=dstatus.get("updatedReplicas", 0),
        deployment_conditions=dstatus.get("conditions", []),
        rollout_phase=rollout.get("phase"),
        rollout_message=rollout.get("message", ""),
        pods_scraped=pods_scraped,
        apply_error=apply_error,
    )
    generation = body["metadata"].get("generation", 0)
    status = {
        "observedGeneration": generation,
        "url": ingress_url(s) or cluster_url(s),
        "replicas": facts.replicas,
        "readyReplicas": facts.ready,
        "desiredReplicas": desired_n,
        "selector": f"{SELECTOR_LABEL}={s.name}",
        "replicasOwner": s.replicas_owner,
        "rollout": rollout,
        "conditions": merge(old.get("conditions", []), conditions(facts), now_iso(), generation),
        **extra,
    }
    kube.patch_status(api, s.namespace, s.name, status)
    metrics.track(s.namespace, s.name)
    metrics.desired_replicas.labels(s.namespace, s.name).set(desired_n)
    metrics.ready_replicas.labels(s.namespace, s.name).set(facts.ready)


def _api_message(e: kube.ApiException) -> str:
    try:
        message: str = json.loads(e.body or "").get("message", "")
        return message
    except (TypeError, ValueError):
        return str(e.body)
