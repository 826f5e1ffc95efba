"""The periodic look at one InferenceService's pods: scrape /metrics once, then use it three ways:
live figures in the status, the operator-mode autoscaler, and the rollout gate.

State that must survive between looks (metric history, the autoscaler's memory) lives in the
object's kopf memo: with peering only one operator replica acts, and a restarted one starts over
conservatively (an empty history never scales down before the stabilization window has passed).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
from kubernetes.client import ApiClient

from pagoda.operator import autoscale, kube, locks, metrics, plan, scale_to_zero
from pagoda.operator.autoscale import ScalerState
from pagoda.operator.children import DEPLOYMENT, LEADERWORKERSET, Child, workload_name
from pagoda.operator.config import CONFIG
from pagoda.operator.metrics_scrape import History, Sample, scrape
from pagoda.operator.reconcile import now_iso, reconcile_now, served, write_status
from pagoda.operator.rollout import NewPod, Observation, judge
from pagoda.operator.spec import ENGINE_PORT, REVISION_LABEL, Spec, parse
from pagoda.operator.trouble import trouble

LIVE_WINDOW = 60.0  # seconds behind the status' tokens/s and TTFT p95


@dataclass
class ObjectState:
    history: History = field(default_factory=lambda: History(keep_seconds=LIVE_WINDOW))
    scaler: ScalerState = field(default_factory=ScalerState)
    idle: scale_to_zero.IdleState = field(default_factory=scale_to_zero.IdleState)
    started: float = field(default_factory=time.time)


async def observe(
    api: ApiClient,
    http: httpx.AsyncClient,
    state: ObjectState,
    body: dict[str, Any],
    pods: list[dict[str, Any]],
    deploy: dict[str, Any] | None,
    children: list[Child],
) -> None:
    """`body`, `pods`, `deploy` and `children` are copies of what kopf's watches hold: a look at
    an InferenceService makes no API call unless it has something to write (or to reconcile:
    `children` is for that)."""
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    async with locks.lock(namespace, name):
        if meta.get("deletionTimestamp"):
            return
        s = parse(name, namespace, body["spec"])
        if s.nodes > 1:
            # kopf's watches hold no LeaderWorkerSets (their CRD may be missing): read it.
            found, deploy = await asyncio.to_thread(_leaderworkerset, api, body, s, children)
            if not found:
                return
        ready = {p["metadata"]["name"]: p for p in pods if is_ready(p)}
        now = time.time()
        samples = await scrape(
            http,
            {n: f"http://{p['status']['podIP']}:{ENGINE_PORT}/metrics" for n, p in ready.items()},
            now,
        )
        state.history.keep_seconds = _keep_seconds(s)
        for pod, sample in samples.items():
            if sample is not None:
                state.history.add(pod, sample)
        state.history.forget_except({p["metadata"]["name"] for p in pods})
        try:
            await asyncio.to_thread(_act, api, body, s, state, pods, deploy, children, samples, now)
        except kube.ApiException as e:
            if e.status != 409:
                raise
            # Our copy of the object predates our own last write: look again next tick.


def _leaderworkerset(
    api: ApiClient, body: dict[str, Any], s: Spec, children: list[Child]
) -> tuple[bool, dict[str, Any] | None]:
    """(whether to look on, the live LeaderWorkerSet). Without its CRD the reconcile's status
    stands; once the CRD is served, a reconcile makes the LeaderWorkerSet and says so."""
    if not served(api, LEADERWORKERSET):
        return False, None
    old = body.get("status") or {}
    if any(c.get("reason") == plan.LWS_MISSING for c in old.get("conditions", [])):
        reconcile_now(api, s.namespace, s.name, children)
        return False, None
    return True, kube.get(api, LEADERWORKERSET, s.namespace, workload_name(s))


def pod_facts(pod: dict[str, Any]) -> dict[str, Any]:
    """The part of a pod that observe and trouble() read, in the pod's own shape (kept in kopf's
    index)."""
    meta, st = pod["metadata"], pod.get("status") or {}
    return {
        "metadata": {
            "name": meta["name"],
            "labels": {REVISION_LABEL: (meta.get("labels") or {}).get(REVISION_LABEL)},
            "creationTimestamp": meta.get("creationTimestamp"),
        },
        "status": {
            "podIP": st.get("podIP"),
            "startTime": st.get("startTime"),
            "conditions": [
                c for c in st.get("conditions") or [] if c.get("type") in ("Ready", "PodScheduled")
            ],
            "initContainerStatuses": [_container(c) for c in st.get("initContainerStatuses") or []],
            "containerStatuses": [_container(c) for c in st.get("containerStatuses") or []],
        },
    }


def _container(c: dict[str, Any]) -> dict[str, Any]:
    keep = ("exitCode", "reason", "message")
    state, last = c.get("state") or {}, c.get("lastState") or {}
    out: dict[str, Any] = {"name": c.get("name"), "restartCount": c.get("restartCount", 0)}
    out["state"] = {
        k: {f: v[f] for f in keep if f in v}
        for k, v in state.items()
        if k in ("waiting", "terminated")
    }
    if "terminated" in last:
        out["lastState"] = {
            "terminated": {f: last["terminated"][f] for f in keep if f in last["terminated"]}
        }
    return out


def deployment_facts(deploy: dict[str, Any]) -> dict[str, Any]:
    """The part of a Deployment that observe reads (kept in kopf's index)."""
    return {
        "spec": {"replicas": deploy["spec"].get("replicas")},
        "status": deploy.get("status") or {},
    }


def _act(
    api: ApiClient,
    body: dict[str, Any],
    s: Spec,
    state: ObjectState,
    pods: list[dict[str, Any]],
    deploy: dict[str, Any] | None,
    children: list[Child],
    samples: dict[str, Sample | None],
    now: float,
) -> None:
    scraped = {n: smp for n, smp in samples.items() if smp is not None}
    live = state.history.window(list(scraped), LIVE_WINDOW, now)
    figures: dict[str, Any] = {
        "podsScraped": len(scraped),
        "requestsRunning": sum(x.running for x in scraped.values()),
        "requestsWaiting": sum(x.waiting for x in scraped.values()),
        "generationTokensPerSecond": round(live.tokens_per_second, 2),
    }
    if scraped:
        figures["kvCacheUsage"] = round(sum(x.kv_usage for x in scraped.values()) / len(scraped), 4)
    if live.ttft_p95 is not None:
        figures["ttftSecondsP95"] = round(live.ttft_p95, 4)
    extra: dict[str, Any] = {"metrics": figures}
    if (
        deploy is not None
        and s.autoscaling is not None
        and s.autoscaling.mode == "Operator"
        and _autoscale(api, body, s, state, deploy, scraped, now)
    ):
        extra["lastScaleTime"] = now_iso()
        deploy = kube.get(api, DEPLOYMENT, s.namespace, s.name)
    old = body.get("status") or {}
    found = trouble(pods)
    if found is not None and found != plan.trouble_of(old):
        kube.event(body, type="Warning", reason=found.reason, message=found.message)
    rollout = dict(old.get("rollout") or {})
    if deploy is not None and rollout.get("phase") == "Progressing":
        gated = _gate(api, body, s, state, rollout, deploy, pods, children, now)
        if gated is None:
            return  # rolled back: the reconcile wrote the status
        rollout = gated
    # An observation neither stamps observedGeneration nor clears a standing apply failure.
    write_status(
        api,
        body,
        s,
        deploy,
        rollout,
        generation=None,
        apply_error=plan.apply_error_of(old),
        trouble=found,
        resource_version=body["metadata"]["resourceVersion"],
        **extra,
    )


def _autoscale(
    api: ApiClient,
    body: dict[str, Any],
    s: Spec,
    state: ObjectState,
    deploy: dict[str, Any],
    scraped: dict[str, Sample],
    now: float,
) -> bool:
    a = s.autoscaling
    assert a is not None, "called only for an InferenceService that autoscales"
    current: int = deploy["spec"].get("replicas", a.min_replicas)
    if a.min_replicas == 0:
        wake_at = scale_to_zero.wake_time(body)
        scale_to_zero.observe(state.idle, scraped, wake_at, now)
        move = scale_to_zero.decide(a, current, state.idle, wake_at, now)
        if move is not None:
            if move.replicas != current:
                kube.scale(api, s.namespace, s.name, move.replicas)
                kube.event(body, type="Normal", reason=move.reason, message=move.message)
            return move.replicas != current
        a = dataclasses.replace(a, min_replicas=1)
    if a.metric == "TTFTSecondsP95":
        p95 = state.history.window(list(scraped), a.window_seconds, now).ttft_p95
        values: list[float | None] = [p95] if scraped else []
    else:
        per_pod: Callable[[Sample], float] = {
            "WaitingRequests": lambda x: x.waiting,
            "InFlightRequests": lambda x: x.running + x.waiting,
            "KVCacheUsage": lambda x: x.kv_usage,
        }[a.metric]
        # Every pod that should exist gets a slot; those that did not report are None.
        values = [per_pod(x) for x in scraped.values()]
        values += [None] * (current - len(values))
    decision = autoscale.decide(a, current, values, now, state.scaler)
    direction = decision.direction(current)
    if direction is None:
        return False
    kube.scale(api, s.namespace, s.name, decision.replicas)
    longest = max(a.scale_up.period_seconds, a.scale_down.period_seconds)
    autoscale.record(state.scaler, now, decision.replicas - current, longest)
    metrics.scaling_decisions.labels(s.namespace, s.name, direction).inc()
    kube.event(
        body,
        type="Normal",
        reason="Scaled",
        message=f"{current} -> {decision.replicas}: {decision.reason}",
    )
    return True


def _gate(
    api: ApiClient,
    body: dict[str, Any],
    s: Spec,
    state: ObjectState,
    rollout: dict[str, Any],
    deploy: dict[str, Any],
    pods: list[dict[str, Any]],
    children: list[Child],
    now: float,
) -> dict[str, Any] | None:
    """Judge the new revision: the rollout to write, or None when it rolled back (and reconciled)."""
    new = [
        p
        for p in pods
        if p["metadata"].get("labels", {}).get(REVISION_LABEL) == rollout["revision"]
    ]
    window = s.analysis.window_seconds if s.analysis else LIVE_WINDOW
    stats = state.history.window([p["metadata"]["name"] for p in new if is_ready(p)], window, now)
    o = Observation(
        desired=deploy["spec"].get("replicas", 1),
        pods=tuple(_new_pod(p, now) for p in new),
        requests=stats.requests,
        errors=stats.errors,
        ttft_p95=stats.ttft_p95,
        covered_seconds=stats.covered_seconds,
    )
    v = judge(s.analysis, s.startup_timeout_seconds, o)
    step = plan.gate(s, body["metadata"].get("generation", 0), rollout, v, CONFIG)
    if step.event is not None:
        kube.event(body, type=step.event.type, reason=step.event.reason, message=step.event.message)
    if not step.rolled_back:
        return step.rollout
    metrics.rollbacks.labels(s.namespace, s.name).inc()
    old = body.get("status") or {}
    patch = plan.status_patch(old, {"rollout": step.rollout})
    kube.patch_status(api, s.namespace, s.name, patch, body["metadata"]["resourceVersion"])
    reconcile_now(api, s.namespace, s.name, children)
    return None


def _new_pod(pod: dict[str, Any], now: float) -> NewPod:
    meta, st = pod["metadata"], pod.get("status", {})
    started = st.get("startTime") or meta["creationTimestamp"]
    return NewPod(
        name=meta["name"],
        age_seconds=now - datetime.fromisoformat(started).timestamp(),
        ready=is_ready(pod),
        restarts=sum(c.get("restartCount", 0) for c in st.get("containerStatuses", [])),
    )


def is_ready(pod: dict[str, Any]) -> bool:
    st = pod.get("status", {})
    return bool(st.get("podIP")) and any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions", [])
    )


def _keep_seconds(s: Spec) -> float:
    windows = [LIVE_WINDOW]
    if s.analysis:
        windows.append(s.analysis.window_seconds)
    if s.autoscaling:
        windows.append(s.autoscaling.window_seconds)
    return max(windows)
