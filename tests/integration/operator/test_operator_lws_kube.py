"""spec.nodes > 1 against a real kube-apiserver and the real LeaderWorkerSet controller
(kubernetes-sigs/lws, built from its Go module by e2e/cluster/build.sh lws, run as a process),
webhooks included: e2e/lws.py serves them to the apiserver by URL on loopback, as e2e/up.sh does.
No kubelet here: the pods stay Pending, but LWS makes them, with the env its pod webhook injects.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import sys
import time
from pathlib import Path

import kubernetes
import pytest
from isvc_helpers import condition, create_isvc, isvc, patch_isvc, wait_for
from process_harness import LoggedProcess, free_port, http_ok

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


def _load(name: str):
    """e2e/NAME.py (not a package); the kube fixture has loaded controlplane already."""
    if name in sys.modules:
        return sys.modules[name]
    path = Path(__file__).resolve().parents[3] / "e2e" / f"{name.removeprefix('pagoda_e2e_')}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def lws_dir():
    return _load("pagoda_e2e_controlplane").bin_dirs()["lws-controller"]


def tls_up(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def install_crd(kube) -> None:
    # Server-side: the CRD (two pod templates' schemas) is too large for the last-applied annotation.
    kube.kubectl("apply", "--server-side", "-f", str(lws_dir() / "crd.yaml"))
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
    binary = lws_dir() / "lws-controller"
    if not os.access(binary, os.X_OK):
        pytest.fail(f"{binary} is missing: bash e2e/cluster/build.sh lws", pytrace=False)
    install_crd(kube)
    d, port, health = tmp_path / "lws", free_port(), free_port()
    _load("pagoda_e2e_lws").prepare(d, kube.pki, port, health)
    proc = LoggedProcess(
        "lws-controller",
        [str(binary), f"--config={d / 'config.yaml'}", f"--kubeconfig={kube.kubeconfig}"],
        tmp_path / "lws.log",
    )
    wait_for(
        "the LWS controller", lambda: http_ok(f"http://127.0.0.1:{health}/readyz"), process=proc
    )
    wait_for("the LWS webhooks", lambda: tls_up(port), process=proc)
    kube.kubectl("apply", "-f", str(d / "webhooks.json"))
    yield proc
    kube.kubectl("delete", "-f", str(d / "webhooks.json"), "--ignore-not-found")
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
        "the LeaderWorkerSet", lambda: get_lws(api, kube_ns, "multi-lws"), process=lws_controller
    )
    assert lws["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"]
    assert lws["spec"]["replicas"] == 1 and lws["spec"]["leaderWorkerTemplate"]["size"] == 2
    assert kubernetes.client.AppsV1Api(api).list_namespaced_deployment(kube_ns).items == []
    # The LWS controller's part: the leaders' StatefulSet, from our leader template.
    sts = wait_for(
        "the leader StatefulSet",
        lambda: statefulset(api, kube_ns, "multi-lws"),
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
    # LWS's pod controller makes the group's workers (nodes - 1 of them), from our worker template.
    workers = wait_for(
        "the worker StatefulSet",
        lambda: statefulset(api, kube_ns, "multi-lws-0"),
        timeout=60,
        process=lws_controller,
    )
    assert workers.spec.replicas == 1
    assert workers.spec.template.metadata.labels["pagoda.dev/role"] == "worker"
    wargs = workers.spec.template.spec.containers[0].args
    assert wargs[wargs.index("--node-rank") + 1] == "$(LWS_WORKER_INDEX)"
    # Its pod webhook gives every pod of the group the env the args refer to.
    core = kubernetes.client.CoreV1Api(api)

    def env_of(pod_name):
        try:
            pod = core.read_namespaced_pod(pod_name, kube_ns)
        except kubernetes.client.ApiException:
            return None
        return {e.name: e.value for e in pod.spec.containers[0].env or []}

    leader_env = wait_for("the leader pod", lambda: env_of("multi-lws-0"), timeout=60)
    worker_env = wait_for("the worker pod", lambda: env_of("multi-lws-0-1"), timeout=60)
    assert leader_env["LWS_LEADER_ADDRESS"] == worker_env["LWS_LEADER_ADDRESS"]
    assert leader_env["LWS_LEADER_ADDRESS"].startswith(f"multi-lws-0.multi-lws.{kube_ns}")
    assert (leader_env["LWS_WORKER_INDEX"], worker_env["LWS_WORKER_INDEX"]) == ("0", "1")
    svc = core.read_namespaced_service("multi", kube_ns)
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
    # Back to one node: a Deployment again, the LeaderWorkerSet pruned, the Service on every pod.
    patch_isvc(api, kube_ns, "multi", {"spec": {"nodes": 1, "engine": {"pipelineParallelSize": 1}}})
    apps = kubernetes.client.AppsV1Api(api)
    wait_for("the Deployment", lambda: apps.list_namespaced_deployment(kube_ns).items, timeout=30)
    wait_for(
        "the LeaderWorkerSet to go", lambda: get_lws(api, kube_ns, "multi-lws") is None, timeout=30
    )
    selector = core.read_namespaced_service("multi", kube_ns).spec.selector
    assert selector == {"pagoda.dev/inferenceservice": "multi"}


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
        wait_for("the LeaderWorkerSet", lambda: get_lws(api, kube_ns, "nolws-lws"), timeout=30)
        wait_for(
            "the condition to clear",
            lambda: (
                condition(isvc(api, kube_ns, "nolws"), "Degraded").get("reason")
                != "LeaderWorkerSetMissing"
            ),
        )
    finally:
        remove_crd(kube)


def test_a_multi_node_name_leaves_room_for_the_statefulsets(kube, isvc_crd, kube_ns):
    def create(name):
        doc = {
            "apiVersion": "pagoda.dev/v1alpha1",
            "kind": "InferenceService",
            "metadata": {"name": name, "namespace": kube_ns},
            "spec": SPEC,
        }
        return kube.kubectl(
            "create", "--dry-run=server", "-f", "-", input=json.dumps(doc), check=False
        )

    out = create("n" * 46)
    assert out.returncode != 0 and "at most 45 characters with nodes > 1" in out.stderr, out.stderr
    assert create("n" * 45).returncode == 0
