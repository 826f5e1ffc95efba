"""The pure parts of children.py and plan.py: who sets replicas, which child is whose."""

from pagoda.operator import metrics
from pagoda.operator.children import (
    DEPLOYMENT,
    KINDS,
    Child,
    applies_replicas,
    child_of,
    edited_by_others,
    handover,
    kind_named,
    kind_of,
    owner_of,
)
from pagoda.operator.plan import Event, applied_events, prune, replicas_to_apply
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


def test_child_of():
    ref = {
        "apiVersion": "pagoda.dev/v1alpha1",
        "kind": "InferenceService",
        "name": "m",
        "uid": "u1",
        "controller": True,
    }
    obj = {
        "kind": "Service",
        "metadata": {"name": "m", "resourceVersion": "7", "ownerReferences": [ref]},
    }
    assert child_of(obj) == Child("Service", "m", "u1", "7")
    not_controlled = {**obj["metadata"], "ownerReferences": [{**ref, "controller": False}]}
    assert child_of({**obj, "metadata": not_controlled}) is None
    assert kind_named("Service").plural == "services"


def applied(kind, name, rv):
    return {"kind": kind, "metadata": {"name": name, "resourceVersion": rv}}


def test_a_first_apply_is_one_created_event():
    out = [applied("ConfigMap", "m-engine", "1"), applied("Service", "m", "2")]
    assert applied_events([], "u1", out) == [
        Event("Normal", "Created", "created ConfigMap m-engine, Service m")
    ]
    # Children of an earlier InferenceService of the same name are not this one's.
    old = [Child("Service", "m", "u0", "2")]
    assert [e.reason for e in applied_events(old, "u1", out)] == ["Created"]


def test_updated_only_when_the_apply_changed_a_child():
    # The watch's copy (rv 5) and the last apply's answer (rv 6, not watched yet) are both known:
    # an apply answering either changed nothing; one answering a new version changed it.
    known = [Child("Service", "m", "u1", "5"), Child("Service", "m", "u1", "6")]
    assert applied_events(known, "u1", [applied("Service", "m", "6")]) == []
    assert applied_events(known, "u1", [applied("Service", "m", "5")]) == []
    assert applied_events(known, "u1", [applied("Service", "m", "9")]) == [
        Event("Normal", "Updated", "updated Service m")
    ]


def test_prune_takes_what_the_spec_dropped_of_this_owner_only():
    known = [
        Child("Service", "m", "u1", "1"),
        Child("Ingress", "m", "u1", "2"),
        Child("Ingress", "m", "u1", "3"),  # seen twice (watch and apply): pruned once
        Child("PodDisruptionBudget", "m", "u0", "4"),  # an earlier owner's: the GC's
    ]
    want = [applied("Service", "m", "")]
    assert prune(known, "u1", want) == [("Ingress", "m")]
    assert prune([], "u1", want) == []


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
