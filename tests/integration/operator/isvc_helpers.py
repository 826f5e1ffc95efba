"""Helpers for the operator's integration tests: InferenceService calls, and a stand-in for the
missing kubelet (FakeEnginePod). Polling is process_harness.wait_for."""

from __future__ import annotations

import http.server
import json
import random
import threading
from collections.abc import Callable

import kubernetes
import pytest
from process_harness import wait_for

from pagoda.operator.spec import ENGINE_PORT, GROUP, PLURAL, VERSION


def isvc(api, ns: str, name: str) -> dict | None:
    try:
        return kubernetes.client.CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, name
        )
    except kubernetes.client.ApiException as e:
        if e.status == 404:
            return None
        raise


def create_isvc(api, ns: str, name: str, spec: dict) -> dict:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": spec,
    }
    return kubernetes.client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, body
    )


def patch_isvc(api, ns: str, name: str, patch: dict) -> dict:
    return kubernetes.client.CustomObjectsApi(api).patch_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, name, patch, _content_type="application/merge-patch+json"
    )


def events(api, ns: str, name: str) -> list[tuple[str, str, str]]:
    items = (
        kubernetes.client.CoreV1Api(api)
        .list_namespaced_event(
            ns, field_selector=f"involvedObject.name={name},involvedObject.kind=InferenceService"
        )
        .items
    )
    return [(e.type, e.reason, e.message) for e in items]


def condition(obj: dict | None, type_: str) -> dict:
    for c in ((obj or {}).get("status") or {}).get("conditions", []):
        if c["type"] == type_:
            return c
    return {}


def mark_pod_ready(api, ns: str, pod: str, ip: str) -> None:
    """The kubelet's part, with no node: the pod runs, Ready, at `ip` (where a test serves it)."""
    status = {
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "conditions": [
            {"type": "Ready", "status": "True"},
            {"type": "ContainersReady", "status": "True"},
        ],
    }
    kubernetes.client.CoreV1Api(api).patch_namespaced_pod_status(pod, ns, {"status": status})


class FakeEnginePod:
    """Plays a running engine pod: a /metrics server on a loopback address of its own, and the
    pod status (IP, Ready) that the kubelet would write."""

    def __init__(self, metrics: Callable[[], str]):
        self.metrics = metrics
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = outer.metrics().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        for _ in range(20):
            self.ip = f"127.0.{random.randint(1, 254)}.{random.randint(2, 254)}"
            try:
                self.server = http.server.ThreadingHTTPServer((self.ip, ENGINE_PORT), Handler)
                break
            except OSError:
                continue
        else:
            pytest.fail(f"no loopback address with port {ENGINE_PORT} free")
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def mark_ready(self, api, ns: str, pod: str) -> None:
        mark_pod_ready(api, ns, pod, self.ip)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def exposition(
    running: float = 0,
    waiting: float = 0,
    kv: float = 0.0,
    ok: float = 0,
    aborted: float = 0,
    errored: float = 0,
    ttft_fast: float = 0,
) -> str:
    """Prometheus text as the engine writes it (vLLM's names and labels)."""
    lbl = 'engine="0",model_name="m"'
    total = ok + aborted + errored
    return f"""# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{{{lbl}}} {running}
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{{{lbl}}} {waiting}
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{{{lbl}}} {kv}
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{{{lbl}}} {10 * total}
# TYPE vllm:request_success_total counter
vllm:request_success_total{{{lbl},finished_reason="stop"}} {ok}
vllm:request_success_total{{{lbl},finished_reason="abort"}} {aborted}
vllm:request_success_total{{{lbl},finished_reason="error"}} {errored}
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{{{lbl},le="0.1"}} {ttft_fast}
vllm:time_to_first_token_seconds_bucket{{{lbl},le="1.0"}} {total}
vllm:time_to_first_token_seconds_bucket{{{lbl},le="+Inf"}} {total}
vllm:time_to_first_token_seconds_count{{{lbl}}} {total}
vllm:time_to_first_token_seconds_sum{{{lbl}}} {0.05 * total}
"""


def block_service(kube, ns: str, name: str) -> str:
    """A ValidatingAdmissionPolicy that refuses the Service `name` in `ns`: reconciles stop half-way."""
    policy = f"block-{ns}"
    doc = [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": policy},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE", "UPDATE"],
                            "resources": ["services"],
                        }
                    ]
                },
                "validations": [
                    {
                        "expression": f"object.metadata.name != '{name}'",
                        "message": "blocked by the test",
                    }
                ],
            },
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": policy},
            "spec": {
                "policyName": policy,
                "validationActions": ["Deny"],
                "matchResources": {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}
                },
            },
        },
    ]
    kube.kubectl(
        "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": doc})
    )
    probe = json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"ports": [{"port": 80}]},
        }
    )
    wait_for(
        "the policy to take effect",
        lambda: (
            "blocked by the test"
            in kube.kubectl(
                "create", "--dry-run=server", "-f", "-", input=probe, check=False
            ).stderr
        ),
    )
    return policy
