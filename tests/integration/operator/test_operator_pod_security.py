"""Engine pods and the operator's own pod are admitted where Pod Security Admission enforces the
`restricted` profile (issue 21, security). The apiserver's PodSecurity admission plugin is on by
default: the real one judges here."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import kubernetes
import pytest
import yaml
from isvc_helpers import create_isvc, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
RESTRICTED = "pod-security.kubernetes.io/enforce=restricted"


def test_engine_pods_are_admitted_under_restricted(api, kube, kube_ns, operator):
    kube.kubectl("label", "namespace", kube_ns, RESTRICTED)
    spec = {
        "model": {"uri": "hf://Qwen/Qwen2.5-0.5B-Instruct@main", "cache": {"claimName": "cache"}},
        "engine": {"apiKeySecret": {"name": "key", "key": "k"}},
        "replicas": 1,
        "pod": {
            "sidecars": [
                {
                    "name": "proxy",
                    "image": "envoy:1",
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ]
        },
    }
    create_isvc(api, kube_ns, "safe", spec)
    core = kubernetes.client.CoreV1Api(api)
    # The ReplicaSet controller creates the pod only if admission lets it in (otherwise the
    # ReplicaSet reports FailedCreate and no pod ever exists).
    pods = wait_for(
        "the engine pod, admitted",
        lambda: (
            core.list_namespaced_pod(
                kube_ns, label_selector="pagoda.dev/inferenceservice=safe"
            ).items
        ),
        timeout=60,
    )
    assert [c.name for c in pods[0].spec.init_containers] == ["model-download"]


def test_a_privileged_override_is_refused_by_admission(api, kube, kube_ns, operator):
    """The check above can fail: the same namespace refuses a pod patched to run as root."""
    kube.kubectl("label", "namespace", kube_ns, RESTRICTED)
    spec = {
        "model": {"uri": "default"},
        "replicas": 1,
        "pod": {"template": {"spec": {"securityContext": {"runAsNonRoot": False, "runAsUser": 0}}}},
    }
    create_isvc(api, kube_ns, "root", spec)
    apps = kubernetes.client.AppsV1Api(api)

    def refused():
        for rs in apps.list_namespaced_replica_set(kube_ns).items:
            for c in rs.status.conditions or []:
                if c.type == "ReplicaFailure" and "violates PodSecurity" in (c.message or ""):
                    return c.message
        return None

    assert "runAsNonRoot" in wait_for("the ReplicaSet's FailedCreate", refused, timeout=60)


def test_the_operator_pod_is_admitted_under_restricted(kube, kube_ns):
    rendered = subprocess.run(
        [
            "helm",
            "template",
            "pagoda",
            str(ROOT / "charts" / "pagoda-operator"),
            "--namespace",
            kube_ns,
            "--set",
            "crds.install=false",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (deploy,) = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Deployment"]
    template = deploy["spec"]["template"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "operator-probe", "namespace": kube_ns, **template["metadata"]},
        "spec": template["spec"],
    }
    # Admission enforces the profile on pods, not on Deployments: try the pod itself.
    kube.kubectl("create", "serviceaccount", "-n", kube_ns, pod["spec"]["serviceAccountName"])
    kube.kubectl("label", "namespace", kube_ns, RESTRICTED)
    out = kube.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(pod), check=False)
    assert out.returncode == 0, out.stderr
    root = {**pod, "spec": {**pod["spec"], "securityContext": {"runAsUser": 0}}}
    out = kube.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(root), check=False)
    assert out.returncode != 0 and "violates PodSecurity" in out.stderr
