"""The status on a real apiserver: written only when it changes, observedGeneration only by the
reconcile that applied a generation, a standing apply failure kept, pod trouble shown (issue 21)."""

from __future__ import annotations

import time

import kubernetes
import pytest
from isvc_helpers import block_service, condition, create_isvc, events, isvc, patch_isvc, wait_for

pytestmark = pytest.mark.integration

SPEC = {"model": {"uri": "default"}, "replicas": 1}


def converged(api, ns, name):
    obj = isvc(api, ns, name)
    st = (obj or {}).get("status") or {}
    return obj if st.get("observedGeneration") == obj["metadata"]["generation"] else None


def settled(api, ns, name, seconds=4.0):
    """The object once its resourceVersion held still for `seconds` (the observe interval is 1 s
    in these tests: several looks)."""
    last, since = None, time.monotonic()
    deadline = since + 60
    while time.monotonic() < deadline:
        rv = isvc(api, ns, name)["metadata"]["resourceVersion"]
        if rv != last:
            last, since = rv, time.monotonic()
        elif time.monotonic() - since >= seconds:
            return isvc(api, ns, name)
        time.sleep(0.25)
    pytest.fail(f"{name} was still being written after 60 s")


def test_steady_state_writes_no_status(api, kube_ns, operator):
    create_isvc(api, kube_ns, "calm", SPEC)
    wait_for("the first status", lambda: converged(api, kube_ns, "calm"))
    # settled() fails unless five looks in a row leave the object as it is.
    obj = settled(api, kube_ns, "calm", seconds=5.0)
    assert condition(obj, "Ready")["reason"] == "NoReadyPods"  # no kubelet: Pending pods


def test_an_apply_failure_stands_and_is_not_called_observed(api, kube, kube_ns, operator):
    create_isvc(api, kube_ns, "stuck", SPEC)
    first = wait_for("generation 1 applied", lambda: converged(api, kube_ns, "stuck"))
    policy = block_service(kube, kube_ns, "stuck")
    try:
        patch_isvc(api, kube_ns, "stuck", {"spec": {"exposure": {"ingress": {"host": "a.b"}}}})
        wait_for(
            "ApplyFailed",
            lambda: (
                condition(isvc(api, kube_ns, "stuck"), "Degraded").get("reason") == "ApplyFailed"
            ),
        )
        obj = settled(api, kube_ns, "stuck", seconds=3.0)  # the looks went on meanwhile
        assert obj["metadata"]["generation"] == 2
        assert obj["status"]["observedGeneration"] == first["metadata"]["generation"] == 1
        assert condition(obj, "Degraded")["reason"] == "ApplyFailed"
        assert "blocked by the test" in condition(obj, "Degraded")["message"]
    finally:
        kube.kubectl("delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", policy)
    obj = wait_for("generation 2 applied", lambda: converged(api, kube_ns, "stuck"), timeout=60)
    assert condition(obj, "Degraded")["status"] == "False"


def test_pod_trouble_is_degraded_with_its_reason_and_one_event(api, kube_ns, operator):
    create_isvc(
        api, kube_ns, "nokey", {**SPEC, "engine": {"apiKeySecret": {"name": "absent", "key": "k"}}}
    )
    core = kubernetes.client.CoreV1Api(api)
    pod = wait_for(
        "the pod",
        lambda: (
            core.list_namespaced_pod(
                kube_ns, label_selector="pagoda.dev/inferenceservice=nokey"
            ).items
        ),
    )[0]
    # What the kubelet writes when the Secret an env var reads does not exist.
    waiting = {"reason": "CreateContainerConfigError", "message": 'secret "absent" not found'}
    status = {
        "phase": "Pending",
        "containerStatuses": [
            {
                "name": "engine",
                "image": "x",
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": {"waiting": waiting},
            }
        ],
    }
    core.patch_namespaced_pod_status(pod.metadata.name, kube_ns, {"status": status})
    deg = wait_for(
        "Degraded=ContainerConfigError",
        lambda: (
            (c := condition(isvc(api, kube_ns, "nokey"), "Degraded")).get("reason")
            == "ContainerConfigError"
            and c
        ),
    )
    assert 'secret "absent" not found' in deg["message"] and deg["status"] == "True"
    settled(api, kube_ns, "nokey", seconds=3.0)
    said = [m for _, r, m in events(api, kube_ns, "nokey") if r == "ContainerConfigError"]
    assert len(said) == 1, said
