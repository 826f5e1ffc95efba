"""The gateway on a real cluster with real engine pods: two InferenceServices behind one gateway
route by `model`; prefix routing against round-robin on a multi-tenant workload (prefix-cache hit
rate and mean TTFT, both reported); a model at zero replicas answers its first request (the cold
start reported); a pod killed mid-stream fails that stream only."""

from __future__ import annotations

import json
import statistics
import time
import urllib.request
import uuid

import pytest
from e2e_cluster import CHART, OPERATOR_NS, Cluster
from tenants import handbooks, one_round

pytestmark = pytest.mark.e2e

HOST = "gateway.e2e"
# The multi-tenant workload (tenants.py): round 0 fills the caches and is not measured; rounds
# 1 and 2 are, the steady state of a service whose tenants keep coming back.
ROUNDS = 3


@pytest.fixture(scope="module")
def gateway(cluster: Cluster):
    cluster.install_operator(
        CHART,
        "gateway.enabled=true,gateway.replicaCount=1,gateway.queueTimeoutSeconds=600",
        f"gateway.ingress.enabled=true,gateway.ingress.host={HOST}",
        "gateway.resources.requests.cpu=100m",
    )
    yield
    cluster.uninstall_operator()


@pytest.fixture(scope="module")
def ns(cluster: Cluster):
    name = f"e2e-gw-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def engine(cluster: Cluster) -> dict:
    # 134 MiB of float32 KV: 190 blocks of 16 tokens (720 KiB each). A tenant's request is 33
    # blocks, 29 of them its system prompt, 4 its own question and answer. Round-robin sends a pod
    # all 8 tenants in turn: 7 other requests (231 blocks) come between two of one tenant's, so
    # LRU has evicted it (the pool holds ~6 requests, not 8). Prefix routing gives a pod 4
    # tenants, 2 requests a round each: 4 x (29 + 8) = 148 blocks, which stay.
    return {
        "image": cluster.engine_image,
        "imagePullPolicy": "IfNotPresent",
        "maxNumSeqs": 4,
        "maxModelLen": 1024,
        "dtype": "float32",
        "args": ["--kv-cache-memory-bytes", str(134 * 2**20)],
    }


def apply(cluster: Cluster, ns: str, name: str, spec: dict) -> None:
    obj = {
        "apiVersion": "pagoda.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(obj))


def client(cluster: Cluster):
    from openai import OpenAI

    return OpenAI(
        base_url=f"{cluster.ingress_url}/v1",
        api_key="unused",
        default_headers={"Host": HOST},
        timeout=900,
        max_retries=0,
    )


def test_gateway_end_to_end(cluster: Cluster, gateway, ns: str):
    try:
        _scenario(cluster, ns)
    except BaseException:
        print(cluster.describe(ns))
        print(cluster.kubectl("logs", "-n", OPERATOR_NS, "-l", "app.kubernetes.io/name=pagoda-gateway",
                              "--tail=60", check=False).stdout)  # fmt: skip
        raise


def _scenario(cluster: Cluster, ns: str) -> None:
    apply(cluster, ns, "pair", {
        "model": {"uri": "default", "servedName": "smol"},
        "engine": engine(cluster),
        "resources": {"memory": "3Gi"},
        "replicas": 2,
        "routing": "round-robin",
    })  # fmt: skip
    apply(cluster, ns, "cold", {
        "model": {"uri": "default", "servedName": "smol-cold"},
        "engine": engine(cluster),
        "resources": {"memory": "3Gi"},
        "autoscaling": {"minReplicas": 0, "maxReplicas": 1,
                        "metric": {"type": "WaitingRequests", "target": 4}},
    })  # fmt: skip
    c = client(cluster)
    cluster.wait(lambda: _ready(cluster, ns, "pair") == 2, 900, "2 ready pods of `pair`")
    cluster.wait(lambda: _models(c) == {"smol", "smol-cold"}, 120, "both models at the gateway")

    # --- route by model -----------------------------------------------------------------------
    out = c.chat.completions.create(model="smol", messages=[_q("Hi")], max_tokens=4)
    assert out.model == "smol"

    # --- scale from zero: the first request waits for the cold start and succeeds -------------
    assert _ready(cluster, ns, "cold") == 0
    started = time.monotonic()
    stream = c.chat.completions.create(
        model="smol-cold", messages=[_q("Hi")], max_tokens=4, stream=True
    )
    first = _first_token(stream)
    cold_start = time.monotonic() - started
    assert first.model == "smol-cold"
    print(f"\ncold start (request to first token, 0 -> 1 replica): {cold_start:.1f} s")
    events = cluster.kubectl("get", "events", "-n", ns, "-o", "json").stdout
    assert "ScaledFromZero" in events
    # Its pod would only compete for the CPU with the measurement below.
    cluster.kubectl("delete", "inferenceservice", "cold", "-n", ns, "--wait=false")

    # --- prefix routing against round-robin ---------------------------------------------------
    figures = {}
    for policy in ("round-robin", "prefix"):
        cluster.kubectl(
            "patch", "inferenceservice", "pair", "-n", ns, "--type=merge",
            "-p", json.dumps({"spec": {"routing": policy}}),
        )  # fmt: skip
        time.sleep(3)  # the gateway's watch
        systems = handbooks(policy, sorted(_pods(cluster, ns, "pair")))
        one_round(c, "smol", systems, 0)
        before, spills = _prefix_counters(cluster, ns), _spills(cluster)
        ttfts = [t for r in range(1, ROUNDS) for t in one_round(c, "smol", systems, r)]
        after, spills = _prefix_counters(cluster, ns), _spills(cluster) - spills
        hit_rate = (after[0] - before[0]) / max(1.0, after[1] - before[1])
        figures[policy] = (hit_rate, statistics.mean(ttfts), statistics.median(ttfts))
        print(
            f"{policy}: prefix-cache hit rate {hit_rate:.2f}, TTFT mean {figures[policy][1]:.2f} s, "
            f"median {figures[policy][2]:.2f} s ({len(ttfts)} requests after a warm-up round; "
            f"{spills:.0f} sent off their tenant's pod by the load bound)"
        )
    rr, prefix = figures["round-robin"], figures["prefix"]
    print(
        f"prefix routing: mean TTFT {rr[1] / prefix[1]:.1f}x lower, median {rr[2] / prefix[2]:.1f}x"
    )
    # The caches do what the sizing above says. Round-robin's figure is not asserted near 0: when
    # its rotation shifts (a retry, a readiness blip, a reordered EndpointSlice), a tenant's
    # follow-up meets the pod that just served its question, a whole-prompt hit (0.23 once in CI,
    # 0.00-0.05 otherwise); a gap of 0.4 still fails if the pool kept every tenant's prompt.
    assert prefix[0] > 0.6 and prefix[0] - rr[0] > 0.4
    assert rr[1] >= 2 * prefix[1]  # the goal: mean TTFT >= 2x lower with prefix routing

    # --- a pod killed mid-stream fails that stream only ---------------------------------------
    stream = c.chat.completions.create(
        model="smol", messages=[_q("Count to 500.")], max_tokens=900, stream=True,
        extra_body={"ignore_eos": True},
    )  # fmt: skip
    it = iter(stream)
    next(it)  # the role's chunk, sent before the engine schedules the request
    next(it)  # a token: the request runs on one pod now
    (serving,) = cluster.wait(
        lambda: [p for p in _pods(cluster, ns, "pair") if _running(cluster, ns, p) > 0],
        60,
        "the pod running the long stream",
        interval=0.5,
    )
    cluster.kubectl("delete", "pod", "-n", ns, serving, "--grace-period=0", "--force",
                    "--wait=false")  # fmt: skip
    with pytest.raises(Exception):  # noqa: B017 - the broken stream's error, whatever its class
        for _ in it:
            pass
    for _ in range(4):  # the other pod answers at once (a retry covers a stale endpoint)
        out = c.chat.completions.create(model="smol", messages=[_q("Hi")], max_tokens=4)
        assert out.choices[0].message.content is not None


def _first_token(stream):
    """The first chunk after the role's (which the engine sends before any token is computed)."""
    it = iter(stream)
    next(it)
    for chunk in it:
        return chunk
    raise AssertionError("the stream ended without a token")


def _q(text: str) -> dict:
    return {"role": "user", "content": text}


def _metric_sum(cluster: Cluster, ns: str, pod: str, name: str) -> float:
    """One engine pod's series `name`, summed, read through the apiserver's pod proxy."""
    text = cluster.kubectl(
        "get", "--raw", f"/api/v1/namespaces/{ns}/pods/{pod}:8000/proxy/metrics"
    ).stdout
    return sum(float(x.rsplit(" ", 1)[1]) for x in text.splitlines() if x.startswith(name))


def _spills(cluster: Cluster) -> float:
    """The gateway's prefix-policy choices that left the key's own pod (its /metrics)."""
    request = urllib.request.Request(f"{cluster.ingress_url}/metrics", headers={"Host": HOST})
    with urllib.request.urlopen(request, timeout=30) as r:
        text = r.read().decode()
    return sum(
        float(x.rsplit(" ", 1)[1])
        for x in text.splitlines()
        if x.startswith("pagoda_gateway_routing_decisions_total") and 'decision="spill"' in x
    )


def _running(cluster: Cluster, ns: str, pod: str) -> float:
    return _metric_sum(cluster, ns, pod, "vllm:num_requests_running")


def _prefix_counters(cluster: Cluster, ns: str) -> tuple[float, float]:
    """(hits, queries) of vllm:prefix_cache_* summed over the ready pods of `pair`."""
    pods = _pods(cluster, ns, "pair")
    return (
        sum(_metric_sum(cluster, ns, p, "vllm:prefix_cache_hits_total") for p in pods),
        sum(_metric_sum(cluster, ns, p, "vllm:prefix_cache_queries_total") for p in pods),
    )


def _pods(cluster: Cluster, ns: str, name: str) -> list[str]:
    items = cluster.get("pods", "-n", ns, "-l", f"pagoda.dev/inferenceservice={name}") or {}
    return [
        p["metadata"]["name"]
        for p in items.get("items", [])
        if any(c["type"] == "Ready" and c["status"] == "True"
               for c in p.get("status", {}).get("conditions", []))
        and not p["metadata"].get("deletionTimestamp")
    ]  # fmt: skip


def _ready(cluster: Cluster, ns: str, name: str) -> int:
    return len(_pods(cluster, ns, name))


def _models(c) -> set[str] | None:
    try:
        return {m.id for m in c.models.list().data}
    except Exception:  # retried until the deadline
        return None
