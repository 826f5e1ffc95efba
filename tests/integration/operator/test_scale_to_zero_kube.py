"""Scale to zero against a real kube-apiserver: the operator wakes an InferenceService at zero
when the gateway's annotation asks, and puts it back to zero after the idle window."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import kubernetes
import pytest
from isvc_helpers import condition, create_isvc, events, isvc, patch_isvc, wait_for

pytestmark = pytest.mark.integration

SPEC = {
    "model": {"uri": "default"},
    "autoscaling": {
        "minReplicas": 0,
        "maxReplicas": 2,
        "metric": {"type": "WaitingRequests", "target": 1},
        "scaleToZeroAfterSeconds": 30,
    },
}


def replicas(api, ns: str, name: str) -> int | None:
    try:
        d = kubernetes.client.AppsV1Api(api).read_namespaced_deployment(name, ns)
    except kubernetes.client.ApiException as e:
        if e.status == 404:
            return None
        raise
    return d.spec.replicas


def test_minreplicas_zero_needs_operator_mode(api, isvc_crd, kube_ns):
    hpa = {**SPEC, "autoscaling": {**SPEC["autoscaling"], "mode": "HPA"}}
    hpa["autoscaling"].pop("scaleToZeroAfterSeconds")
    with pytest.raises(kubernetes.client.ApiException) as e:
        create_isvc(api, kube_ns, "hpa", hpa)
    assert "minReplicas 0 needs mode Operator" in e.value.body
    alone = {**SPEC, "autoscaling": {**SPEC["autoscaling"], "minReplicas": 1}}
    with pytest.raises(kubernetes.client.ApiException) as e:
        create_isvc(api, kube_ns, "alone", alone)
    assert "scaleToZeroAfterSeconds needs autoscaling.minReplicas 0" in e.value.body


def test_woken_by_the_annotation_then_back_to_zero_when_idle(api, operator, kube_ns):
    create_isvc(api, kube_ns, "sleepy", SPEC)
    wait_for("a Deployment at 0 replicas", lambda: replicas(api, kube_ns, "sleepy") == 0)
    wait_for(
        "Ready=False ScaledToZero",
        lambda: condition(isvc(api, kube_ns, "sleepy"), "Ready").get("reason") == "ScaledToZero",
    )
    asked = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    started = time.monotonic()
    patch_isvc(
        api,
        kube_ns,
        "sleepy",
        {"metadata": {"annotations": {"gateway.pagoda.dev/wake-requested": asked}}},
    )
    wait_for("a replica after the wake request", lambda: replicas(api, kube_ns, "sleepy") == 1, 10)
    assert time.monotonic() - started < 5  # the annotation is handled at once, not at a tick
    wait_for(
        "a ScaledFromZero event",
        lambda: any(r == "ScaledFromZero" for _, r, _ in events(api, kube_ns, "sleepy")),
    )
    # No pod ever runs (no kubelet): nothing is busy, so after 30 s it goes back to zero.
    wait_for("back to zero when idle", lambda: replicas(api, kube_ns, "sleepy") == 0, 60, 1)
    assert any(r == "ScaledToZero" for _, r, _ in events(api, kube_ns, "sleepy"))
