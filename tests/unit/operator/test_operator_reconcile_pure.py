"""The pure parts of children.py and plan.py: who sets replicas, which child is whose."""

from pagoda.operator import metrics
from pagoda.operator.children import (
    DEPLOYMENT,
    KINDS,
    applies_replicas,
    edited_by_others,
    handover,
    kind_of,
    owner_of,
)
from pagoda.operator.plan import replicas_to_apply
from pagoda.operator.spec import parse

AUTO = {"minReplicas": 2, "maxReplicas": 5, "metric": {"type": "WaitingRequests", "target": 4}}


def spec(**over):
    return parse("m", "ns", {"model": {"uri": "default"}, **over})


def live(replicas):
    return {"spec": {"replicas": replicas}}


def test_replicas_per_owner():
    assert replicas_to_apply(spec(replicas=3), live(7)) == 3  # the spec wins over a hand edit
    assert replicas_to_apply(spec(), None) == 1
    assert replicas_to_apply(spec(autoscaling={**AUTO, "mode": "HPA"}), live(4)) is None
    auto = spec(autoscaling=AUTO)
    assert replicas_to_apply(auto, None) == 2  # a new Deployment starts at minReplicas
    assert replicas_to_apply(auto, live(4)) == 4  # the autoscaler's count is kept
    assert replicas_to_apply(auto, live(9)) == 5  # ... within the bounds
    assert replicas_to_apply(auto, live(1)) == 2


def test_kinds():
    assert DEPLOYMENT.path("ns", "m") == "/apis/apps/v1/namespaces/ns/deployments/m"
    assert (
        kind_of({"apiVersion": "v1", "kind": "Service"}).path("ns")
        == "/api/v1/namespaces/ns/services"
    )
    assert len({k.kind for k in KINDS}) == len(KINDS)


def test_forget_drops_series():
    metrics.desired_replicas.labels("ns-f", "m").set(3)
    metrics.scaling_decisions.labels("ns-f", "m", "up").inc()
    metrics.forget("ns-f", "m")
    metrics.forget("ns-f", "m")  # twice is fine
    samples = [
        s
        for m in (metrics.desired_replicas, metrics.scaling_decisions)
        for f in m.collect()
        for s in f.samples
        if s.labels.get("namespace") == "ns-f"
    ]
    assert samples == []


def entry(manager, time, subresource=None):
    e = {
        "manager": manager,
        "operation": "Apply" if manager == "pagoda-operator" else "Update",
        "time": time,
    }
    return {**e, "subresource": subresource} if subresource else e


def test_owner_of():
    ref = {
        "apiVersion": "pagoda.dev/v1alpha1",
        "kind": "InferenceService",
        "name": "m",
        "uid": "u",
        "controller": True,
    }
    assert owner_of({"ownerReferences": [ref]}) == "m"
    assert owner_of({"ownerReferences": [{**ref, "controller": False}]}) is None
    assert owner_of({"ownerReferences": [{**ref, "kind": "Deployment"}]}) is None
    assert owner_of({}) is None


def test_edited_by_others():
    ours = entry("pagoda-operator", "2026-01-01T00:00:01Z")
    assert not edited_by_others({"managedFields": [ours]})
    status = entry("kube-controller-manager", "2026-01-01T00:00:02Z", "status")
    assert not edited_by_others({"managedFields": [ours, status]})
    by_hand = entry("kubectl-edit", "2026-01-01T00:00:03Z")
    assert edited_by_others({"managedFields": [ours, status, by_hand]})
    assert not edited_by_others(
        {"managedFields": [by_hand, {**ours, "time": "2026-01-01T00:00:04Z"}]}
    )
    assert edited_by_others(
        {"managedFields": [entry("kubectl", "2026-01-01T00:00:05Z", "scale"), ours]}
    )
    assert edited_by_others({})  # no record: assume the worst


def test_handover_of_replicas():
    ours = {
        "manager": "pagoda-operator",
        "operation": "Apply",
        "fieldsV1": {"f:spec": {"f:replicas": {}}},
    }
    theirs = {
        "manager": "kube-controller-manager",
        "operation": "Update",
        "fieldsV1": {"f:spec": {"f:replicas": {}}},
    }
    no_replicas = {**ours, "fieldsV1": {"f:spec": {"f:template": {}}}}
    assert applies_replicas({"managedFields": [theirs, ours]})
    assert not applies_replicas({"managedFields": [theirs, no_replicas]})
    assert not applies_replicas({})
    live = {
        "metadata": {"name": "m", "namespace": "ns", "uid": "x"},
        "spec": {"replicas": 4, "template": {}},
    }
    assert handover(live) == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "m", "namespace": "ns"},
        "spec": {"replicas": 4},
    }
