"""What one InferenceService should look like, decided from what was observed: pure.

`plan(spec, observed)` gives the children to apply, the rollout's next step and the Events to post;
`gate(...)` turns the rollout gate's verdict into the rollout's next step; `status(...)` is the
status those lead to. reconcile.py and observe.py read the cluster, call these, and write back.

The operator's default engine image is pinned per InferenceService: a spec keeps the image its
stable revision ran with until the spec's pods change, so an operator upgrade rolls nothing by
itself, and a rollback renders exactly the revision that was stable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pagoda.operator.children import (
    Child,
    applies_replicas,
    desired,
    engine_image,
    handover,
    revision,
    workload,
)
from pagoda.operator.config import OperatorConfig
from pagoda.operator.resources.ingress import ingress_url
from pagoda.operator.resources.service import cluster_url
from pagoda.operator.rollout import Verdict
from pagoda.operator.spec import SELECTOR_LABEL, Spec, parse
from pagoda.operator.status import Facts, conditions, merge
from pagoda.operator.trouble import REASONS as TROUBLE_REASONS
from pagoda.operator.trouble import Trouble


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Observed:
    """What the read layer saw of one InferenceService and its world."""

    generation: int
    status: dict[str, Any]  # the InferenceService's status as stored
    deployment: dict[str, Any] | None  # the live Deployment (LeaderWorkerSet when nodes > 1)
    servicemonitors: bool  # whether prometheus-operator's CRD is served
    leaderworkersets: bool = True  # whether LWS's CRD is served (nodes > 1 needs it)


@dataclass(frozen=True)
class Render:
    """The spec the pods come from, the image they run, and the revision the two make."""

    pods: Spec
    image: str
    revision: str


@dataclass(frozen=True)
class Plan:
    objects: list[dict[str, Any]]  # children, in apply order, without owner references
    handover: dict[str, Any] | None  # applied first, under HANDOVER_MANAGER (see children.handover)
    rollout: dict[str, Any]  # status.rollout once the objects are applied
    events: list[Event] = field(default_factory=list)
    missing: str | None = None  # why the engine's workload cannot be made (the status says it)


LWS_MISSING = "LeaderWorkerSetMissing"
LWS_MISSING_MESSAGE = (
    "nodes > 1 needs the LeaderWorkerSet CRD (leaderworkerset.x-k8s.io/v1) and its controller: "
    "install LWS (docs/operator.md, Multi-node engines) or set nodes to 1"
)


def revision_of(s: Spec, image: str) -> str:
    return revision(workload(s, image, None))


def render(s: Spec, rollout: dict[str, Any], generation: int, config: OperatorConfig) -> Render:
    stable = rollout.get("stableSpec")
    if stable and rollout.get("failedGeneration") == generation:
        # This spec's revision was rolled back: its pods come from the stable spec and image.
        back = parse(s.name, s.namespace, json.loads(stable))
        image = rollout.get("stableImage") or _default_image(back, config)
        return Render(back, image, revision_of(back, image))
    if "image" in s.engine:
        return Render(s, s.engine["image"], revision_of(s, s.engine["image"]))
    pinned = rollout.get("stableImage")
    if pinned and revision_of(s, pinned) == rollout.get("stableRevision"):
        return Render(s, pinned, rollout["stableRevision"])
    image = _default_image(s, config)
    return Render(s, image, revision_of(s, image))


def _default_image(s: Spec, config: OperatorConfig) -> str:
    return engine_image(s, config.engine_image, config.engine_cpu_image)


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


def plan(s: Spec, o: Observed, config: OperatorConfig, now: str) -> Plan:
    rollout = dict(o.status.get("rollout") or {})
    r = render(s, rollout, o.generation, config)
    replicas = replicas_to_apply(s, o.deployment)
    hand = None
    if replicas is None and o.deployment is not None and applies_replicas(o.deployment["metadata"]):
        hand = handover(o.deployment)
    events = []
    if (
        s.service_monitor
        and not o.servicemonitors
        and o.status.get("observedGeneration") != (o.generation)
    ):  # said once per spec, not on every reconcile
        events.append(
            Event(
                "Warning",
                "ServiceMonitorSkipped",
                "monitoring.serviceMonitor.enabled, but the ServiceMonitor CRD is not installed",
            )
        )
    objects = desired(
        s, r.pods, r.image, replicas, o.servicemonitors, config.namespace, o.leaderworkersets
    )
    if s.nodes > 1 and not o.leaderworkersets:
        # Nothing rolls out; said once per spec, and the status stands until the CRD is served.
        if o.status.get("observedGeneration") != o.generation:
            events.append(Event("Warning", LWS_MISSING, LWS_MISSING_MESSAGE))
        return Plan(objects, hand, rollout, events, missing=LWS_MISSING_MESSAGE)
    rollout, started = advance(rollout, r, o.generation, now)
    if started:
        events.append(Event("Normal", "RolloutStarted", f"rolling out revision {r.revision}"))
    return Plan(objects, hand, rollout, events)


def prune(known: list[Child], uid: str, want: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The children of the InferenceService `uid` that `want` no longer has, as (kind, name)."""
    keep = {(o["kind"], o["metadata"]["name"]) for o in want}
    return sorted({(c.kind, c.name) for c in known if c.owner_uid == uid} - keep)


def applied_events(known: list[Child], uid: str, applied: list[dict[str, Any]]) -> list[Event]:
    """One Event for the children an apply created and one for those it changed (not one per
    child: a create makes three to six). A child is new when no copy of it was seen, changed
    when the apply answered with a resourceVersion no copy had."""
    versions: dict[tuple[str, str], set[str]] = {}
    for c in known:
        if c.owner_uid == uid:
            versions.setdefault((c.kind, c.name), set()).add(c.resource_version)
    created, updated = [], []
    for o in applied:
        key = (o["kind"], o["metadata"]["name"])
        if key not in versions:
            created.append(f"{key[0]} {key[1]}")
        elif o["metadata"]["resourceVersion"] not in versions[key]:
            updated.append(f"{key[0]} {key[1]}")
    events = []
    if created:
        events.append(Event("Normal", "Created", "created " + ", ".join(created)))
    if updated:
        events.append(Event("Normal", "Updated", "updated " + ", ".join(updated)))
    return events


def advance(
    rollout: dict[str, Any], r: Render, generation: int, now: str
) -> tuple[dict[str, Any], bool]:
    """The rollout once `r` is applied; True when that starts a new rollout."""
    out = dict(rollout)
    if out.get("failedGeneration") not in (None, generation):
        # The spec changed since its revision failed: asking for that spec again tries it again.
        out.pop("failedGeneration")
        out.pop("failedRevision", None)
        if r.revision == out.get("revision") == out.get("stableRevision"):
            out.update(phase="Succeeded", message=f"back on stable revision {r.revision}")
    if r.revision == out.get("revision"):
        return out, False
    out.update(revision=r.revision, image=r.image, startedAt=now)
    if r.revision == out.get("stableRevision"):
        out.update(phase="Succeeded", message=f"back on stable revision {r.revision}")
        return out, False
    out.update(phase="Progressing", message=f"rolling out revision {r.revision}")
    return out, True


@dataclass(frozen=True)
class GateStep:
    rollout: dict[str, Any]
    event: Event | None
    rolled_back: bool  # the pods must be rendered again (from the stable spec)


def gate(
    s: Spec, generation: int, rollout: dict[str, Any], v: Verdict, config: OperatorConfig
) -> GateStep:
    """The rollout after the gate's verdict on the revision `rollout` is rolling out."""
    out = dict(rollout)
    if v.action == "wait":
        out["message"] = v.message
        return GateStep(out, None, False)
    if render(s, rollout, generation, config).revision != rollout["revision"]:
        return GateStep(out, None, False)  # the spec moved on: its reconcile starts the next one
    if v.action == "promote":
        out.update(
            phase="Succeeded",
            stableRevision=out["revision"],
            stableSpec=json.dumps(s.raw, sort_keys=True),
            stableImage=out.get("image") or render(s, rollout, generation, config).image,
            message=f"{v.reason}: {v.message}",
        )
        out.pop("failedRevision", None)
        out.pop("failedGeneration", None)
        msg = f"revision {out['revision']}: {v.message}"
        return GateStep(out, Event("Normal", "RolloutSucceeded", msg), False)
    back = None
    if out.get("stableSpec"):
        back = render(s, {**out, "failedGeneration": generation}, generation, config)
    if back is None or back.revision == out["revision"]:
        # Nothing different to go back to: stop here, said once (the phase leaves Progressing).
        why = "no earlier revision" if back is None else "the stable revision renders the same pods"
        out.update(phase="Failed", message=f"{v.reason}: {v.message} ({why} to roll back to)")
        return GateStep(out, Event("Warning", "RolloutFailed", out["message"]), False)
    failed = out["revision"]
    out.update(
        phase="RolledBack",
        failedRevision=failed,
        failedGeneration=generation,
        revision=back.revision,
        image=back.image,
        message=f"{v.reason}: {v.message}; rolled back to revision {back.revision}",
    )
    return GateStep(
        out, Event("Warning", "RolledBack", f"revision {failed}: {out['message']}"), True
    )


def status(
    s: Spec,
    old: dict[str, Any],
    deploy: dict[str, Any] | None,
    rollout: dict[str, Any],
    generation: int | None,
    now: str,
    apply_error: str | None = None,
    trouble: Trouble | None = None,
    missing: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The status to write. `generation` is the one whose children were just applied, or None
    (an observation, or a failed apply) to keep the observedGeneration already there: only the
    reconcile that applied a generation may say it was observed. `extra` adds fields (metrics)."""
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
        trouble=(trouble.reason, trouble.message) if trouble else None,
        missing=(LWS_MISSING, missing) if missing else None,
    )
    observed = generation if generation is not None else old.get("observedGeneration")
    out: dict[str, Any] = {
        "url": ingress_url(s) or cluster_url(s),
        "replicas": facts.replicas,
        "readyReplicas": facts.ready,
        "desiredReplicas": desired_n,
        "selector": f"{SELECTOR_LABEL}={s.name}",
        "replicasOwner": s.replicas_owner,
        "rollout": rollout,
        "conditions": merge(old.get("conditions", []), conditions(facts), now, observed),
        **extra,
    }
    if observed is not None:
        out["observedGeneration"] = observed
    return out


def apply_error_of(old: dict[str, Any]) -> str | None:
    """The apply failure the last reconcile reported: it stands until a reconcile succeeds."""
    for c in old.get("conditions", []):
        if c.get("type") == "Degraded" and c.get("reason") == "ApplyFailed":
            message: str = c.get("message", "")
            return message
    return None


def trouble_of(old: dict[str, Any]) -> Trouble | None:
    """The pods' trouble the last look reported: a reconcile, which does not look at pods, keeps it
    until the next look."""
    for c in old.get("conditions", []):
        if c.get("type") == "Degraded" and c.get("reason") in TROUBLE_REASONS:
            return Trouble(c["reason"], c.get("message", ""))
    return None


def status_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The JSON merge patch that makes the stored status `old` say `new` ({} when it already does).
    Top-level fields `new` leaves out stay; a key gone from a nested object (rollout's
    failedRevision) is sent as null, the only way a merge patch removes it."""
    out: dict[str, Any] = {}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            sub: dict[str, Any] = {k: None for k in before if k not in value}
            sub.update(status_patch(before, value))
            if sub:
                out[key] = sub
        elif before != value:
            out[key] = value
    return out
