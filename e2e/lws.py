"""LeaderWorkerSet (kubernetes-sigs/lws, built by e2e/cluster/build.sh lws) beside a control plane
whose kube-apiserver runs on this host: the controller's configuration, a webhook serving
certificate signed by the cluster CA, and upstream's webhook configurations (config/webhook with
its kustomize patches) pointed at the controller by URL on loopback instead of a Service.

LWS's webhooks matter: the pod webhook puts LWS_LEADER_ADDRESS, LWS_WORKER_INDEX and
LWS_GROUP_SIZE into every container of a group, and the defaulting webhook fills the spec.

    python3 e2e/lws.py DIR PKI PORT HEALTH_PORT
writes DIR/config.yaml (run `lws-controller --config DIR/config.yaml`), DIR/tls.crt, DIR/tls.key
and DIR/webhooks.json (`kubectl apply -f` it once the controller serves). Standard library only:
e2e/up.sh runs it with the system Python.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or loaded by path
from controlplane import make_cert  # the control plane's own certificate maker

_POD_SELECTOR = {
    "matchExpressions": [{"key": "leaderworkerset.sigs.k8s.io/name", "operator": "Exists"}]
}


def prepare(d: Path, pki: Path, port: int, health_port: int) -> None:
    d.mkdir(parents=True, exist_ok=True)
    # tls.crt and tls.key (controller-runtime's names in certDir) for 127.0.0.1, from the cluster CA
    make_cert(d, str(pki / "ca"), "tls", "/CN=lws-webhook",
              "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth")  # fmt: skip
    (d / "config.yaml").write_text(
        "apiVersion: config.lws.x-k8s.io/v1alpha1\n"
        "kind: Configuration\n"
        "leaderElection: {leaderElect: false}\n"
        "internalCertManagement: {enable: false}\n"
        f"webhook: {{host: 127.0.0.1, port: {port}, certDir: {d}}}\n"
        'metrics: {bindAddress: "0"}\n'
        f'health: {{healthProbeBindAddress: "127.0.0.1:{health_port}"}}\n'
    )
    (d / "webhooks.json").write_text(json.dumps(webhooks(port, (pki / "ca.crt").read_bytes())))


def webhooks(port: int, ca_pem: bytes) -> dict:
    ca = base64.b64encode(ca_pem).decode()

    def hook(name: str, path: str, group: str, resource: str) -> dict:
        h = {
            "name": name,
            "admissionReviewVersions": ["v1"],
            "clientConfig": {"url": f"https://127.0.0.1:{port}{path}", "caBundle": ca},
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "rules": [
                {
                    "apiGroups": [group],
                    "apiVersions": ["v1"],
                    "operations": ["CREATE", "UPDATE"],
                    "resources": [resource],
                }
            ],
        }
        if resource == "pods":  # only the pods LWS made
            h["objectSelector"] = _POD_SELECTOR
        return h

    lws = "leaderworkerset.x-k8s.io"
    return {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "MutatingWebhookConfiguration",
                "metadata": {"name": "lws-mutating-webhook-configuration"},
                "webhooks": [
                    hook(
                        "mleaderworkerset.kb.io",
                        "/mutate-leaderworkerset-x-k8s-io-v1-leaderworkerset",
                        lws,
                        "leaderworkersets",
                    ),
                    hook("mpod.kb.io", "/mutate--v1-pod", "", "pods"),
                ],
            },
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingWebhookConfiguration",
                "metadata": {"name": "lws-validating-webhook-configuration"},
                "webhooks": [
                    hook(
                        "vleaderworkerset.kb.io",
                        "/validate-leaderworkerset-x-k8s-io-v1-leaderworkerset",
                        lws,
                        "leaderworkersets",
                    ),
                    hook("vpod.kb.io", "/validate--v1-pod", "", "pods"),
                ],
            },
        ],
    }


if __name__ == "__main__":
    prepare(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
