"""End to end: one engine over two pods. `nodes: 2` with pipeline parallel 2 of the default model
on the CPU: the operator renders a LeaderWorkerSet, LWS (e2e/up.sh runs its controller and
webhooks) makes a leader and a worker pod, the worker's stage joins the leader's engine through
torch.distributed's env rendezvous, and a chat completion comes back through the Ingress."""

from __future__ import annotations

import json

import pytest
from e2e_cluster import Cluster

pytestmark = pytest.mark.e2e

NAME, MODEL, HOST = "duo", "smollm2-duo", "duo.localtest.me"


def isvc(cluster: Cluster, ns: str) -> dict:
    return cluster.default_model_isvc(
        ns,
        NAME,
        MODEL,
        engine={
            "pipelineParallelSize": 2,
            "maxNumSeqs": 2,
            "maxModelLen": 1024,
            "args": ["--kv-cache-memory-bytes", str(128 * 2**20)],
        },
        nodes=2,
        replicas=1,
        resources={"memory": "3Gi"},
        lifecycle={"startupTimeoutSeconds": 600, "drainSeconds": 5},
        exposure={"ingress": {"host": HOST, "path": "/"}},
    )


def ready(obj: dict | None) -> bool:
    conds = ((obj or {}).get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


def test_two_pod_pipeline_parallel_engine_answers_through_the_ingress(
    cluster: Cluster, operator, ns: str
):
    cluster.kubectl("apply", "-f", "-", input=json.dumps(isvc(cluster, ns)))
    try:
        cluster.wait(
            lambda: ready(cluster.get("inferenceservice", NAME, "-n", ns)),
            timeout=900,
            what="the 2-node InferenceService to be Ready",
        )
    except AssertionError:
        print(cluster.describe(ns))
        raise
    lws = cluster.get("leaderworkerset", f"{NAME}-lws", "-n", ns)
    assert lws["spec"]["leaderWorkerTemplate"]["size"] == 2
    assert cluster.get("deployment", NAME, "-n", ns) is None
    pods = cluster.get("pods", "-n", ns, "-l", f"pagoda.dev/inferenceservice={NAME}")["items"]
    roles = sorted(p["metadata"]["labels"]["pagoda.dev/role"] for p in pods)
    assert roles == ["leader", "worker"], roles
    worker = next(p for p in pods if p["metadata"]["labels"]["pagoda.dev/role"] == "worker")
    log = cluster.kubectl("logs", "-n", ns, worker["metadata"]["name"]).stdout
    assert "node 1: workers" in log, log[-2000:]
    # The Service reaches the leader alone: the worker serves no HTTP.
    eps = cluster.get("endpoints", NAME, "-n", ns)
    addresses = [a for s in eps.get("subsets") or [] for a in s.get("addresses") or []]
    assert [a["targetRef"]["name"] for a in addresses] == [f"{NAME}-lws-0"]  # LWS's leader pod name

    out = cluster.say_hello_through_ingress(HOST, MODEL)
    assert out.choices[0].message.content.strip() and out.usage.completion_tokens >= 1
    cluster.kubectl("delete", "inferenceservice", NAME, "-n", ns, "--wait=true", timeout=180)
