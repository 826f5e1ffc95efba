"""The integration control plane is a real one: the apiserver stores and serves objects, the
controller manager's deployment controller and garbage collector act, the scheduler runs."""

from __future__ import annotations

import json

import pytest
from process_harness import wait_for

pytestmark = pytest.mark.integration


def _get(kube, *args):
    r = kube.kubectl("get", *args, "-o", "json", check=False)
    return json.loads(r.stdout) if r.returncode == 0 else None


def test_version_and_kubeconfig(kube):
    import os

    assert os.environ["KUBECONFIG"] == kube.kubeconfig
    v = json.loads(kube.kubectl("version", "-o", "json").stdout)
    assert v["serverVersion"]["major"] == "1" and v["serverVersion"]["minor"] == "34"


def test_garbage_collector_cascades_from_owner(kube, kube_ns):
    kube.kubectl("-n", kube_ns, "create", "configmap", "owner", "--from-literal=a=b")
    owner = _get(kube, "-n", kube_ns, "configmap", "owner")
    deploy = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "child",
            "namespace": kube_ns,
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "name": "owner",
                    "uid": owner["metadata"]["uid"],
                }
            ],
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "child"}},
            "template": {
                "metadata": {"labels": {"app": "child"}},
                "spec": {"containers": [{"name": "c", "image": "example.invalid/x"}]},
            },
        },
    }
    kube.kubectl("apply", "-f", "-", input=json.dumps(deploy))
    # deployment controller -> ReplicaSet -> replicaset controller -> Pod
    pods = wait_for(
        "the Deployment's pod",
        lambda: (_get(kube, "-n", kube_ns, "pods", "-l", "app=child") or {}).get("items"),
        60,
    )

    # the scheduler ran and found no node (no kubelet in the integration tier)
    def unschedulable():
        p = _get(kube, "-n", kube_ns, "pod", pods[0]["metadata"]["name"])
        return any(
            c["type"] == "PodScheduled" and c.get("reason") == "Unschedulable"
            for c in (p or {}).get("status", {}).get("conditions", [])
        )

    wait_for("the scheduler to mark the pod Unschedulable", unschedulable, 60)

    kube.kubectl("-n", kube_ns, "delete", "configmap", "owner")
    wait_for(
        "the garbage collector to delete the dependent Deployment",
        lambda: _get(kube, "-n", kube_ns, "deployment", "child") is None,
        60,
    )
    wait_for(
        "the ReplicaSet to be collected too",
        lambda: not (_get(kube, "-n", kube_ns, "replicasets") or {"items": [1]})["items"],
        60,
    )
