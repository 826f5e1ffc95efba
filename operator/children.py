"""The full set of child objects an InferenceService asks for, and the kinds the operator prunes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from pagoda.operator.resources.configmap import configmap
from pagoda.operator.resources.deployment import deployment
from pagoda.operator.resources.hpa import hpa
from pagoda.operator.resources.ingress import ingress
from pagoda.operator.resources.leaderworkerset import leaderworkerset, lws_name
from pagoda.operator.resources.networkpolicy import networkpolicy
from pagoda.operator.resources.pdb import pdb
from pagoda.operator.resources.service import service
from pagoda.operator.resources.servicemonitor import servicemonitor
from pagoda.operator.spec import FIELD_MANAGER, GROUP, KIND, REVISION_LABEL, VERSION, Spec


@dataclass(frozen=True)
class Kind:
    api_version: str
    kind: str
    plural: str

    def path(self, namespace: str, name: str | None = None) -> str:
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        return f"{base}/namespaces/{namespace}/{self.plural}" + (f"/{name}" if name else "")


CONFIGMAP = Kind("v1", "ConfigMap", "configmaps")
SERVICE = Kind("v1", "Service", "services")
DEPLOYMENT = Kind("apps/v1", "Deployment", "deployments")
LEADERWORKERSET = Kind("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet", "leaderworkersets")
INGRESS = Kind("networking.k8s.io/v1", "Ingress", "ingresses")
PDB = Kind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets")
HPA = Kind("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers")
SERVICEMONITOR = Kind("monitoring.coreos.com/v1", "ServiceMonitor", "servicemonitors")
NETWORKPOLICY = Kind("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies")
# Apply order: what the Deployment's pods read first, what reads the Deployment or its pods last.
# The Service after the workload: its apply is the slowest under many creates (the apiserver
# allocates its ClusterIP), and the pods need not wait for it.
KINDS = [
    CONFIGMAP,
    NETWORKPOLICY,
    DEPLOYMENT,
    LEADERWORKERSET,
    SERVICE,
    INGRESS,
    PDB,
    HPA,
    SERVICEMONITOR,
]
# Kinds whose CRDs the cluster may lack: listed, pruned and applied only where served.
OPTIONAL = (LEADERWORKERSET, SERVICEMONITOR)


def kind_of(obj: dict[str, Any]) -> Kind:
    return next(k for k in KINDS if k.kind == obj["kind"] and k.api_version == obj["apiVersion"])


def kind_named(kind: str) -> Kind:
    """The child kind of this name (no two share one)."""
    return next(k for k in KINDS if k.kind == kind)


def engine_image(s: Spec, gpu_image: str, cpu_image: str) -> str:
    return s.engine.get("image") or (gpu_image if s.gpus else cpu_image)


def workload(s: Spec, image: str, replicas: int | None) -> dict[str, Any]:
    """What runs the engine pods: a Deployment, or a LeaderWorkerSet when an engine spans nodes."""
    if s.nodes > 1:
        return leaderworkerset(s, image, replicas)
    return deployment(s, image, replicas)


def workload_kind(s: Spec) -> Kind:
    return LEADERWORKERSET if s.nodes > 1 else DEPLOYMENT


def workload_name(s: Spec) -> str:
    return lws_name(s) if s.nodes > 1 else s.name


def revision(work: dict[str, Any]) -> str:
    """The pod template's revision label (a LeaderWorkerSet's two templates share one)."""
    spec = work["spec"]
    template = (
        spec["template"] if "template" in spec else spec["leaderWorkerTemplate"]["leaderTemplate"]
    )
    label: str = template["metadata"]["labels"][REVISION_LABEL]
    return label


def desired(
    s: Spec,
    pods: Spec,
    image: str,
    replicas: int | None,
    servicemonitors: bool,
    operator_namespace: str | None = None,
    leaderworkersets: bool = True,
) -> list[dict[str, Any]]:
    """`pods` is the spec the pods come from: `s` itself, or the stable spec after a rollback.
    `operator_namespace`: where the operator runs (the NetworkPolicy lets it in).
    `leaderworkersets`: whether LWS's CRD is served; without it a multi-node engine gets no
    workload (the status says why) but keeps its other children."""
    work = workload(pods, image, replicas)
    objs = [
        configmap(pods),
        networkpolicy(s, operator_namespace),
        work if work["kind"] == "Deployment" or leaderworkersets else None,
        service(s),
        ingress(s),
        pdb(s),
        hpa(s),
        servicemonitor(s) if servicemonitors else None,
    ]
    return [o for o in objs if o is not None]


def _controller(meta: dict[str, Any]) -> dict[str, Any] | None:
    """The owner reference of the InferenceService that controls a child."""
    for ref in meta.get("ownerReferences", []):
        if (
            ref.get("kind") == KIND
            and ref.get("apiVersion") == f"{GROUP}/{VERSION}"
            and ref.get("controller")
        ):
            return cast(dict[str, Any], ref)
    return None


def owner_of(meta: dict[str, Any]) -> str | None:
    """The InferenceService that controls a child, by its owner reference."""
    ref = _controller(meta)
    return ref["name"] if ref else None


@dataclass(frozen=True)
class Child:
    """A child as last seen, in a watch (handlers.py indexes them by owner) or in the answer to
    an apply: what a reconcile prunes, and what tells its Events a creation from an update."""

    kind: str
    name: str
    owner_uid: str  # a new InferenceService of the same name owns none of the old one's children
    resource_version: str


def child_of(obj: dict[str, Any]) -> Child | None:
    """`obj` as a Child, if an InferenceService controls it."""
    meta = obj["metadata"]
    ref = _controller(meta)
    if ref is None:
        return None
    return Child(obj["kind"], meta["name"], ref["uid"], meta["resourceVersion"])


def edited_by_others(meta: dict[str, Any]) -> bool:
    """Whether a child's latest write came from someone else than the operator and was not a mere
    status update: the writes worth undoing. (Ours, and controllers' status reports, are not.)"""
    entries = meta.get("managedFields") or []
    if not entries:
        return True
    latest = max(e.get("time", "") for e in entries)
    return any(
        e.get("manager") != FIELD_MANAGER and e.get("subresource") != "status"
        for e in entries
        if e.get("time", "") == latest
    )


HANDOVER_MANAGER = "pagoda-operator-handover"


def applies_replicas(meta: dict[str, Any]) -> bool:
    """Whether the operator's applies own a Deployment's spec.replicas (see handover)."""
    return any(
        e.get("manager") == FIELD_MANAGER
        and e.get("operation") == "Apply"
        and "f:replicas" in (e.get("fieldsV1") or {}).get("f:spec", {})
        for e in meta.get("managedFields") or []
    )


def handover(deploy: dict[str, Any]) -> dict[str, Any]:
    """The replica count alone, applied under a second manager before an HPA takes the field over:
    dropping it from the operator's apply would otherwise reset it to the default, 1."""
    meta = deploy["metadata"]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
        "spec": {"replicas": deploy["spec"]["replicas"]},
    }
