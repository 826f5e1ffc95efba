"""Status conditions from observed facts (pure): Ready, Progressing, Degraded, MetricsAvailable."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Facts:
    desired: int
    replicas: int  # pods the Deployment has
    ready: int
    updated: int  # pods of the Deployment's current template
    deployment_conditions: list[dict[str, Any]] = field(default_factory=list)
    rollout_phase: str | None = None
    rollout_message: str = ""
    pods_scraped: int | None = None  # None: not scraped yet
    apply_error: str | None = None
    trouble: tuple[str, str] | None = None  # (reason, message): what is wrong with the pods
    missing: tuple[str, str] | None = None  # (reason, message): a CRD the workload needs is absent


def condition(type_: str, status: bool, reason: str, message: str) -> dict[str, Any]:
    return {
        "type": type_,
        "status": "True" if status else "False",
        "reason": reason,
        "message": message,
    }


def conditions(f: Facts) -> list[dict[str, Any]]:
    pods = f"{f.ready}/{f.desired} pods ready"
    if f.apply_error:
        ready = condition("Ready", False, "ApplyFailed", f.apply_error)
    elif f.missing:
        ready = condition("Ready", False, *f.missing)
    elif f.ready > 0:
        ready = condition("Ready", True, "Serving", pods)
    else:
        ready = condition("Ready", False, "ScaledToZero" if f.desired == 0 else "NoReadyPods", pods)

    if f.rollout_phase == "Progressing":
        progressing = condition("Progressing", True, "RollingOut", f.rollout_message or pods)
    elif f.updated < f.desired or f.replicas != f.desired or f.ready < f.desired:
        progressing = condition(
            "Progressing", True, "Scaling", f"{pods}, {f.updated} updated, {f.replicas} exist"
        )
    else:
        progressing = condition("Progressing", False, "Stable", pods)

    deploy = {c.get("type"): c for c in f.deployment_conditions}
    stuck = deploy.get("Progressing", {})
    failure = deploy.get("ReplicaFailure", {})
    if f.apply_error:
        degraded = condition("Degraded", True, "ApplyFailed", f.apply_error)
    elif f.missing:
        degraded = condition("Degraded", True, *f.missing)
    elif f.trouble:
        degraded = condition("Degraded", True, *f.trouble)
    elif f.rollout_phase == "RolledBack":
        degraded = condition("Degraded", True, "RolledBack", f.rollout_message)
    elif f.rollout_phase == "Failed":
        degraded = condition("Degraded", True, "RolloutFailed", f.rollout_message)
    elif stuck.get("status") == "False" and stuck.get("reason") == "ProgressDeadlineExceeded":
        degraded = condition("Degraded", True, "ProgressDeadlineExceeded", stuck.get("message", ""))
    elif failure.get("status") == "True":
        degraded = condition("Degraded", True, "ReplicaFailure", failure.get("message", ""))
    else:
        degraded = condition("Degraded", False, "AsExpected", pods)

    if f.pods_scraped is None:
        metrics = condition("MetricsAvailable", False, "NotScrapedYet", "no scrape has run yet")
    elif f.pods_scraped > 0:
        metrics = condition(
            "MetricsAvailable",
            True,
            "Scraped",
            f"{f.pods_scraped}/{f.ready} ready pods answered /metrics",
        )
    elif f.ready == 0:
        metrics = condition("MetricsAvailable", False, "NoReadyPods", "no ready pod to scrape")
    else:
        metrics = condition(
            "MetricsAvailable", False, "ScrapeFailed", f"0/{f.ready} ready pods answered /metrics"
        )
    return [ready, progressing, degraded, metrics]


def merge(
    old: list[dict[str, Any]], new: list[dict[str, Any]], now: str, generation: int | None
) -> list[dict[str, Any]]:
    """New conditions, keeping lastTransitionTime where a condition's status did not change.
    `generation`: the observedGeneration they speak for (None before any was applied)."""
    before = {c["type"]: c for c in old}
    out = []
    for c in new:
        prev = before.get(c["type"], {})
        held = prev.get("status") == c["status"] and "lastTransitionTime" in prev
        since = prev["lastTransitionTime"] if held else now
        stamped = {**c, "lastTransitionTime": since}
        if generation is not None:
            stamped["observedGeneration"] = generation
        out.append(stamped)
    return out
