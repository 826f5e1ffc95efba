"""The periodic look at one InferenceService's pods: scrape /metrics once, then use it three ways:
live figures in the status, the operator-mode autoscaler, and the rollout gate.

State that must survive between looks (metric history, the autoscaler's memory) lives in the
object's kopf memo: with peering only one operator replica acts, and a restarted one starts over
conservatively (an empty history never scales down before the stabilization window has passed).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import kopf
from kubernetes.client import ApiClient

from pagoda.operator import autoscale, kube, metrics, scale_to_zero
from pagoda.operator.autoscale import ScalerState
from pagoda.operator.children import DEPLOYMENT, Kind
from pagoda.operator.metrics_scrape import History, Sample, scrape
from pagoda.operator.reconcile import LOCKS, now_iso, reconcile_now, spec_revision, write_status
from pagoda.operator.rollout import Observation, judge
from pagoda.operator.spec import ENGINE_PORT, REVISION_LABEL, SELECTOR_LABEL, Spec, parse

POD = Kind("v1", "Pod", "pods")
LIVE_WINDOW = 60.0  # seconds behind the status' tokens/s and TTFT p95


@dataclass
class ObjectState:
    history: History = field(default_factory=lambda: History(keep_seconds=LIVE_WINDOW))
    scaler: ScalerState = field(default_factory=ScalerState)
    idle: scale_to_zero.IdleState = field(default_factory=scale_to_zero.IdleState)
    started: float = field(default_factory=time.time)


async def observe(
    api: ApiClient, http: httpx.AsyncClient, state: ObjectState, namespace: str, name: str
) -> None:
    async with LOCKS[(namespace, name)]:
        body = await asyncio.to_thread(kube.get_isvc, api, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return
        s = parse(name, namespace, body["spec"])
        pods = await asyncio.to_thread(kube.list_, api, POD, namespace, f"{SELECTOR_LABEL}={name}")
        ready = {p["metadata"]["name"]: p for p in pods if _ready(p)}
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
        await asyncio.to_thread(_act, api, body, s, state, pods, samples, now)


def _act(
    api: ApiClient,
    body: dict[str, Any],
    s: Spec,
    state: ObjectState,
    pods: list[dict[str, Any]],
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
    deploy = kube.get(api, DEPLOYMENT, s.namespace, s.name)
    extra: dict[str, Any] = {"metrics": figures}
    if deploy is not None and s.autoscaling is not None and s.autoscaling.mode == "Operator":
        if _autoscale(api, body, s, state, deploy, scraped, now):
            extra["lastScaleTime"] = now_iso()
            deploy = kube.get(api, DEPLOYMENT, s.namespace, s.name)
    rollout = dict((body.get("status") or {}).get("rollout") or {})
    if deploy is not None and rollout.get("phase") == "Progressing":
        if _gate(api, body, s, state, rollout, deploy, pods, now):
            return  # rolled back: the reconcile wrote the status
    write_status(api, body, s, deploy, rollout, **extra)


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
    current = deploy["spec"].get("replicas", a.min_replicas)
    if a.min_replicas == 0:
        wake_at = scale_to_zero.wake_time(body)
        scale_to_zero.observe(state.idle, scraped, wake_at, now)
        move = scale_to_zero.decide(a, current, state.idle, wake_at, now)
        if move is not None:
            if move.replicas != current:
                kube.scale(api, s.namespace, s.name, move.replicas)
                kopf.event(body, type="Normal", reason=move.reason, message=move.message)
            return move.replicas != current
        a = dataclasses.replace(a, min_replicas=1)
    if a.metric == "TTFTSecondsP95":
        p95 = state.history.window(list(scraped), a.window_seconds, now).ttft_p95
        values: list[float | None] = [p95] if scraped else []
    else:
        per_pod = {
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
    kopf.event(
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
    now: float,
) -> bool:
    """Judge the new revision; returns True when it rolled back (and reconciled)."""
    new = [
        p
        for p in pods
        if p["metadata"].get("labels", {}).get(REVISION_LABEL) == rollout["revision"]
    ]
    window = s.analysis.window_seconds if s.analysis else LIVE_WINDOW
    stats = state.history.window([p["metadata"]["name"] for p in new if _ready(p)], window, now)
    started = datetime.fromisoformat(rollout["startedAt"].replace("Z", "+00:00")).timestamp()
    o = Observation(
        elapsed_seconds=now - started,
        desired=deploy["spec"].get("replicas", 1),
        ready=sum(_ready(p) for p in new),
        restarts=sum(
            c.get("restartCount", 0)
            for p in new
            for c in p.get("status", {}).get("containerStatuses", [])
        ),
        requests=stats.requests,
        errors=stats.errors,
        ttft_p95=stats.ttft_p95,
        covered_seconds=stats.covered_seconds,
    )
    v = judge(s.analysis, s.startup_timeout_seconds, o)
    if v.action == "wait":
        rollout["message"] = v.message
        return False
    if v.action == "promote":
        if spec_revision(s) != rollout["revision"]:
            return False  # the spec moved on; the reconcile it triggered starts the next rollout
        rollout.update(
            phase="Succeeded",
            stableRevision=rollout["revision"],
            message=f"{v.reason}: {v.message}",
            stableSpec=json.dumps(s.raw, sort_keys=True),
        )
        kopf.event(
            body,
            type="Normal",
            reason="RolloutSucceeded",
            message=f"revision {rollout['revision']}: {v.message}",
        )
        return False
    if not rollout.get("stableSpec") or rollout.get("stableRevision") == rollout["revision"]:
        rollout.update(
            phase="Failed", message=f"{v.reason}: {v.message} (no earlier revision to roll back to)"
        )
        kopf.event(body, type="Warning", reason="RolloutFailed", message=rollout["message"])
        return False
    rollout.update(
        phase="RolledBack",
        failedRevision=rollout["revision"],
        revision=rollout["stableRevision"],
        message=f"{v.reason}: {v.message}; rolled back to revision {rollout['stableRevision']}",
    )
    metrics.rollbacks.labels(s.namespace, s.name).inc()
    kopf.event(
        body,
        type="Warning",
        reason="RolledBack",
        message=f"revision {rollout['failedRevision']}: {rollout['message']}",
    )
    kube.patch_status(api, s.namespace, s.name, {"rollout": rollout})
    reconcile_now(api, s.namespace, s.name)
    return True


def _ready(pod: dict[str, Any]) -> bool:
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
