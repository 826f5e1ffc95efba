"""spec.nodes > 1 against a real kube-apiserver and the real LeaderWorkerSet controller
(kubernetes-sigs/lws, built from its Go module by e2e/cluster/build.sh lws, run as a process).

LWS's webhooks (defaulting, validation, and the pod webhook that puts LWS_LEADER_ADDRESS and
LWS_WORKER_INDEX into the pods) need the apiserver to reach a TLS server; this tier has no
Service network, so the controller runs with them off (ENABLE_WEBHOOKS=false, no internal cert
management): the LeaderWorkerSet and its leader StatefulSet are made as in a cluster, the pods
stay Pending (no kubelet) and lack the injected env. The e2e tier runs LWS whole.
"""

from __future__ import annotations

import os
import time

import kubernetes
import pytest
from isvc_helpers import condition, create_isvc, isvc, wait_for
from process_harness import LoggedProcess

from pagoda.operator import reconcile

pytestmark = pytest.mark.integration

LWS = ("leaderworkerset.x-k8s.io", "v1", "leaderworkersets")
SPEC = {
    "model": {"uri": "default", "servedName": "smol"},
    "engine": {"pipelineParallelSize": 2, "maxNumSeqs": 8},
    "resources": {"cpu": "1", "memory": "1Gi"},
    "nodes": 2,
    "replicas": 1,
}
CONFIG = """apiVersion: config.lws.x-k8s.io/v1alpha1
kind: Configuration
leaderElection:
  leaderElect: false
internalCertManagement:
  enable: false
metrics:
  bindAddress: "0"
health:
  healthProbeBindAddress: "0"
"""


def lws_dir(kube):
    import pagoda_e2e_controlplane as cp  # loaded by ../conftest.py's kube fixture

    return cp.bin_dirs()["lws-controller"]


def install_crd(kube) -> None:
    # Server-side: the CRD (two pod templates' schemas) is too large for the last-applied annotation.
    kube.kubectl("apply", "--server-side", "-f", str(lws_dir(kube) / "crd.yaml"))
    wait_for(
        "the LeaderWorkerSet API",
        lambda: kube.kubectl("get", "leaderworkersets", "-A", check=False).returncode == 0,
    )
    reconcile._served_cache.clear()


def remove_crd(kube) -> None:
    kube.kubectl("delete", "crd", "leaderworkersets.leaderworkerset.x-k8s.io", "--wait=true")
    reconcile._served_cache.clear()


@pytest.fixture
def lws_controller(kube, tmp_path):
    binary = lws_dir(kube) / "lws-controller"
    if not os.access(binary, os.X_OK):
        pytest.fail(f"{binary} is missing: bash e2e/cluster/build.sh lws", pytrace=False)
    install_crd(kube)
    (tmp_path / "config.yaml").write_text(CONFIG)
    proc = LoggedProcess(
        "lws-controller",
        [str(binary), f"--config={tmp_path / 'config.yaml'}", f"--kubeconfig={kube.kubeconfig}"],
        tmp_path / "lws.log",
        env={"ENABLE_WEBHOOKS": "false"},
    )
    yield proc
    remove_crd(kube)  # first: the controller takes its finalizers off the LeaderWorkerSets
    proc.stop()


def get_lws(api, ns, name):
    try:
        return kubernetes.client.CustomObjectsApi(api).get_namespaced_custom_object(
            *LWS[:2], ns, LWS[2], name
        )
    except kubernetes.client.ApiException as e:
        if e.status == 404:
            return None
        raise


def statefulset(api, ns, name):
    try:
        return kubernetes.client.AppsV1Api(api).read_namespaced_stateful_set(name, ns)
    except kubernetes.client.ApiException as e:
        if e.status == 404:
            return None
        raise


def lws_events(api, ns, name):
    items = (
        kubernetes.client.CoreV1Api(api)
        .list_namespaced_event(
            ns, field_selector=f"involvedObject.name={name},reason=LeaderWorkerSetMissing"
        )
        .items
    )
    return [(e.type, e.count or 1) for e in items]


def test_nodes_2_is_a_leaderworkerset_whose_controller_makes_the_leaders(
    api, kube, kube_ns, lws_controller, operator
):
    obj = create_isvc(api, kube_ns, "multi", SPEC)
    lws = wait_for(
        "the LeaderWorkerSet", lambda: get_lws(api, kube_ns, "multi"), process=lws_controller
    )
    assert lws["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"]
    assert lws["spec"]["replicas"] == 1 and lws["spec"]["leaderWorkerTemplate"]["size"] == 2
    assert kubernetes.client.AppsV1Api(api).list_namespaced_deployment(kube_ns).items == []
    # The LWS controller's part: the leaders' StatefulSet, from our leader template.
    sts = wait_for(
        "the leader StatefulSet",
        lambda: statefulset(api, kube_ns, "multi"),
        timeout=60,
        process=lws_controller,
    )
    assert sts.spec.replicas == 1
    labels = sts.spec.template.metadata.labels
    assert (
        labels["pagoda.dev/role"] == "leader" and labels["pagoda.dev/inferenceservice"] == "multi"
    )
    args = sts.spec.template.spec.containers[0].args
    assert args[args.index("--nnodes") + 1] == "2" and args[args.index("--node-rank") + 1] == "0"
    assert args[args.index("--master-addr") + 1] == "$(LWS_LEADER_ADDRESS)"
    svc = kubernetes.client.CoreV1Api(api).read_namespaced_service("multi", kube_ns)
    assert svc.spec.selector == {
        "pagoda.dev/inferenceservice": "multi",
        "pagoda.dev/role": "leader",
    }
    # The LWS controller reports on it (replicas exist, none ready: no kubelet here); the
    # status reads the LeaderWorkerSet as it would a Deployment.
    done = wait_for(
        "a status from the LeaderWorkerSet",
        lambda: (
            (o := isvc(api, kube_ns, "multi"))
            and condition(o, "Degraded").get("reason") == "AsExpected"
            and (o["status"].get("desiredReplicas") == 1)
            and o
        ),
        timeout=60,
    )
    assert condition(done, "Ready")["reason"] == "NoReadyPods"
    assert lws_events(api, kube_ns, "multi") == []


def test_a_missing_leaderworkerset_crd_is_a_condition_and_one_event(api, kube, kube_ns, operator):
    assert (
        kube.kubectl(
            "get", "crd", "leaderworkersets.leaderworkerset.x-k8s.io", check=False
        ).returncode
        != 0
    )
    reconcile._served_cache.clear()
    create_isvc(api, kube_ns, "nolws", SPEC)
    obj = wait_for(
        "the LeaderWorkerSetMissing condition",
        lambda: (
            (o := isvc(api, kube_ns, "nolws"))
            and condition(o, "Degraded").get("reason") == "LeaderWorkerSetMissing"
            and o
        ),
        timeout=60,
    )
    assert condition(obj, "Degraded")["status"] == "True"
    assert "leaderworkerset.x-k8s.io" in condition(obj, "Degraded")["message"]
    assert condition(obj, "Ready")["reason"] == "LeaderWorkerSetMissing"
    # The rest of the children are there; the operator keeps running (the fixture checks its exit).
    kubernetes.client.CoreV1Api(api).read_namespaced_service("nolws", kube_ns)
    # Several observe ticks later (1 s each here), still one Event, posted once.
    time.sleep(4)
    assert lws_events(api, kube_ns, "nolws") == [("Warning", 1)]
    assert condition(isvc(api, kube_ns, "nolws"), "Degraded")["reason"] == "LeaderWorkerSetMissing"
    # Installed later, the CRD is picked up by the next look: no edit of the spec needed.
    install_crd(kube)
    try:
        wait_for("the LeaderWorkerSet", lambda: get_lws(api, kube_ns, "nolws"), timeout=30)
        wait_for(
            "the condition to clear",
            lambda: (
                condition(isvc(api, kube_ns, "nolws"), "Degraded").get("reason")
                != "LeaderWorkerSetMissing"
            ),
        )
    finally:
        remove_crd(kube)
