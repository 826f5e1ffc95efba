"""Chaos on the real cluster (issue 16, points 5 and 7), one InferenceService of two engine pods:

- a rollout while streams are open: every stream ends with a finish_reason (`abort` at the
  drain's deadline) or an error event, then `[DONE]`; none ends silently;
- an engine pod force-deleted mid-stream: that stream fails with an error, the next requests are
  answered by the other replica, the Deployment heals to 2 Ready pods;
- the node's kubelet stopped until the node is NotReady, then started again: the pods come back
  Ready and so does the InferenceService;
- the operator's pod killed 20 times at random points while InferenceServices are created,
  edited and deleted: it converges, with one of each child per InferenceService, none left over
  from a deleted one, every child owned by its live InferenceService, status up to date.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from e2e_cluster import Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.chaos]

NAME, MODEL = "chaos", "smollm2"
OPERATOR_PODS = "app.kubernetes.io/name=pagoda-operator,app.kubernetes.io/instance=pagoda"
# The children kinds the operator makes (operator/children.py KINDS, less ServiceMonitor).
CHILD_KINDS = (
    "configmaps,networkpolicies,services,deployments,ingresses,poddisruptionbudgets,"
    "horizontalpodautoscalers"
)
LONG = 1900  # tokens: longer than any phase of a test on the CPU engine
RUN_DIR = Path("/run/pagoda-e2e")  # e2e/up.sh's pid files


def isvc(cluster: Cluster, ns: str, drain_seconds: int = 3) -> dict:
    return cluster.default_model_isvc(
        ns,
        NAME,
        MODEL,
        {
            "maxNumSeqs": 4,
            "maxModelLen": 2048,
            "args": ["--kv-cache-memory-bytes", str(128 * 2**20)],
        },
        resources={"memory": "3Gi"},
        replicas=2,
        # a short drain, so that the rollout cuts the open streams within seconds
        lifecycle={"startupTimeoutSeconds": 600, "drainSeconds": drain_seconds},
        exposure={"ingress": {"path": "/"}},
    )


@dataclass
class StreamEnd:
    """How one streamed completion ended, as its client saw it."""

    chunks: int = 0
    finish_reasons: dict[int, str] = field(default_factory=dict)
    error_event: str | None = None
    done: bool = False  # `data: [DONE]` arrived
    exception: str | None = None

    def with_reason(self) -> bool:
        """Ended as the drain promises: a finish_reason or an error event, then [DONE]."""
        return self.done and (bool(self.finish_reasons) or self.error_event is not None)


def stream(url: str, end: StreamEnd, started: threading.Event, stop: threading.Event) -> None:
    """A long streamed completion through the Ingress, read until it ends (or `stop`)."""
    body = {
        "model": MODEL,
        "prompt": "Count from one to one thousand:",
        "max_tokens": LONG,
        "ignore_eos": True,
        "stream": True,
    }
    try:
        with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=600) as r:
            if r.status_code != 200:
                end.exception = f"HTTP {r.status_code}: {r.read()[:200]!r}"
                return
            for line in r.iter_lines():
                if not line.startswith("data: "):
                    continue
                data = line.removeprefix("data: ")
                if data == "[DONE]":
                    end.done = True
                    return
                chunk = json.loads(data)
                if "error" in chunk:
                    end.error_event = json.dumps(chunk["error"])
                    continue
                end.chunks += 1
                started.set()
                for choice in chunk.get("choices", []):
                    if choice.get("finish_reason"):
                        end.finish_reasons[choice["index"]] = choice["finish_reason"]
                if stop.is_set():
                    return
    except httpx.HTTPError as e:
        end.exception = repr(e)


def condition(obj: dict | None, type_: str) -> str | None:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return c.get("status")
    return None


def ready_pods(cluster: Cluster, ns: str, name: str = NAME) -> list[str]:
    items = cluster.get("pods", "-n", ns, "-l", f"pagoda.dev/inferenceservice={name}") or {}
    return [
        p["metadata"]["name"]
        for p in items.get("items", [])
        if not p["metadata"].get("deletionTimestamp")
        and any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in p.get("status", {}).get("conditions", [])
        )
    ]


def running_requests(cluster: Cluster, ns: str, pod: str) -> float:
    """vllm:num_requests_running of one engine pod, through the apiserver's pod proxy."""
    r = cluster.kubectl(
        "get", "--raw", f"/api/v1/namespaces/{ns}/pods/{pod}:8000/proxy/metrics", check=False
    )
    return sum(
        float(x.rsplit(" ", 1)[1])
        for x in r.stdout.splitlines()
        if x.startswith("vllm:num_requests_running")
    )


def completion_ok(url: str) -> bool:
    try:
        r = httpx.post(
            f"{url}/v1/completions",
            json={"model": MODEL, "prompt": "Hi", "max_tokens": 2},
            timeout=60,
        )
    except httpx.HTTPError:
        return False
    return r.status_code == 200 and r.json()["choices"][0]["finish_reason"] == "length"


def serving(cluster: Cluster, ns: str, replicas: int) -> bool:
    obj = cluster.get("inferenceservice", NAME, "-n", ns)
    return (
        condition(obj, "Ready") == "True"
        and (obj or {}).get("status", {}).get("readyReplicas") == replicas
        and len(ready_pods(cluster, ns)) == replicas
    )


def open_streams(
    url: str, n: int
) -> tuple[list[StreamEnd], list[threading.Thread], threading.Event]:
    ends = [StreamEnd() for _ in range(n)]
    started = [threading.Event() for _ in range(n)]
    stop = threading.Event()
    threads = [
        threading.Thread(target=stream, args=(url, e, s, stop), daemon=True)
        for e, s in zip(ends, started, strict=True)
    ]
    for t in threads:
        t.start()
    for s in started:
        assert s.wait(300), "a stream produced no token within 300 s"
    return ends, threads, stop


def test_engine_chaos(cluster: Cluster, operator, ns: str):
    url = cluster.ingress_url
    t0 = time.monotonic()
    cluster.kubectl("apply", "-f", "-", input=json.dumps(isvc(cluster, ns)))
    try:
        cluster.wait(lambda: serving(cluster, ns, 2), 900, "2 Ready engine pods")
        cluster.wait(lambda: completion_ok(url), 60, "a completion through the Ingress")
        print(f"chaos: serving after {time.monotonic() - t0:.0f}s")

        # --- (a) a rollout while streams are open: none ends silently -------------------------
        ends, threads, _ = open_streams(url, 4)
        before = set(ready_pods(cluster, ns))
        patch = {"spec": {"engine": {"maxNumSeqs": 5}}}  # a new revision: every pod is replaced
        cluster.kubectl(
            "patch", "inferenceservice", NAME, "-n", ns, "--type=merge", "-p", json.dumps(patch)
        )
        for t in threads:
            t.join(timeout=900)
        assert not any(t.is_alive() for t in threads), "a stream outlived the rollout"
        silent = [e for e in ends if not e.with_reason()]
        assert not silent, f"streams that ended without a reason or [DONE]: {silent}"
        reasons = [r for e in ends for r in e.finish_reasons.values()]
        assert "abort" in reasons, f"no stream was cut by a drain: {ends}"
        cluster.wait(
            lambda: serving(cluster, ns, 2) and not before & set(ready_pods(cluster, ns)),
            600,
            "the new revision's 2 pods Ready",
        )
        print(f"chaos: rollout done after {time.monotonic() - t0:.0f}s, stream ends {ends}")

        # --- (b) a pod killed mid-stream: that stream fails, the other replica answers, heal --
        (end,), (thread,), _ = open_streams(url, 1)
        (victim,) = cluster.wait(
            lambda: [p for p in ready_pods(cluster, ns) if running_requests(cluster, ns, p) > 0],
            60,
            "the pod running the stream",
            interval=0.5,
        )
        cluster.kubectl(
            "delete", "pod", "-n", ns, victim, "--grace-period=0", "--force", "--wait=false"
        )
        thread.join(timeout=120)
        assert not thread.is_alive(), "the killed pod's stream still runs"
        # cut: the ingress aborts the connection (an exception in the client) or ends the body
        # without [DONE]; an `abort` would mean the pod still drained; never a normal finish
        cut = end.exception is not None or not end.done
        assert cut or "abort" in end.finish_reasons.values(), f"the stream did not fail: {end}"
        # the endpoint of the deleted pod leaves the Ingress within seconds; from then on the
        # other replica answers every request
        cluster.wait(lambda: completion_ok(url), 30, "a completion from the other replica")
        for _ in range(5):
            assert completion_ok(url)
        cluster.wait(
            lambda: serving(cluster, ns, 2) and victim not in ready_pods(cluster, ns),
            600,
            "the Deployment to heal to 2 Ready pods",
        )
        print(f"chaos: healed after {time.monotonic() - t0:.0f}s, killed stream {end}")

        # --- (d) the kubelet stopped until the node is NotReady, then started again -----------
        pods = set(ready_pods(cluster, ns))
        node = kubelet_stop()
        try:
            cluster.wait(
                lambda: node_ready(cluster) == "Unknown", 180, "the node to go NotReady", 5
            )
        finally:
            kubelet_start(node)
        cluster.wait(lambda: node_ready(cluster) == "True", 120, "the node Ready again")
        cluster.wait(lambda: serving(cluster, ns, 2), 600, "the InferenceService Ready again")
        assert set(ready_pods(cluster, ns)) == pods  # the same pods came back
        cluster.wait(lambda: completion_ok(url), 60, "a completion after the kubelet restart")
        print(f"chaos: kubelet restarted, Ready after {time.monotonic() - t0:.0f}s")
    except AssertionError:
        print(cluster.describe(ns))
        raise
    cluster.kubectl("delete", "inferenceservice", NAME, "-n", ns, "--wait=true", "--timeout=120s")


@dataclass
class Kubelet:
    exe: str
    argv: list[str]
    env: dict[str, str]
    log: Path


def kubelet_stop() -> Kubelet:
    """Stops e2e/up.sh's kubelet (a host process), keeping what it takes to start it again."""
    pid_file = RUN_DIR / "kubelet.pid"
    if not pid_file.exists():
        pytest.fail(
            f"the kubelet restart needs e2e/up.sh's node ({pid_file} is missing): on another "
            "cluster the kubelet is not a process this test can restart",
            pytrace=False,
        )
    pid = int(pid_file.read_text())
    proc = Path(f"/proc/{pid}")
    argv = proc.joinpath("cmdline").read_bytes().rstrip(b"\0").decode().split("\0")
    env = dict(
        kv.split("=", 1)
        for kv in proc.joinpath("environ").read_bytes().decode().split("\0")
        if "=" in kv
    )
    exe, log = os.readlink(proc / "exe"), Path(os.readlink(proc / "fd" / "1"))
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while proc.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not proc.exists(), "the kubelet did not stop within 30 s"
    return Kubelet(exe, argv, env, log)


def kubelet_start(k: Kubelet) -> None:
    with k.log.open("a") as out:
        p = subprocess.Popen(
            k.argv, executable=k.exe, env=k.env, stdout=out, stderr=out, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    (RUN_DIR / "kubelet.pid").write_text(f"{p.pid}\n")


def node_ready(cluster: Cluster) -> str | None:
    (node,) = cluster.get("nodes")["items"]
    return condition(node, "Ready")


# --- the operator killed while InferenceServices change --------------------------------------

CHURN = [f"churn-{i}" for i in range(4)]


def churn_isvc(cluster: Cluster, ns: str, name: str, max_num_seqs: int) -> dict:
    """An InferenceService at zero replicas: every child but no engine pod."""
    return {
        "apiVersion": "pagoda.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "model": {"uri": "default", "servedName": name},
            "engine": {"image": cluster.engine_image, "maxNumSeqs": max_num_seqs},
            "replicas": 0,
        },
    }


def churn(cluster: Cluster, ns: str, rng: random.Random, stop: threading.Event) -> dict:
    """Creates, edits and deletes the CHURN InferenceServices until `stop`; the wanted end state
    ({name: maxNumSeqs}; absent: deleted)."""
    want: dict[str, int] = {}
    deleting: set[str] = set()  # deleted, maybe still held by the finalizer of a dead operator
    while not stop.is_set():
        name = rng.choice(CHURN)
        if name in deleting:
            if cluster.get("inferenceservice", name, "-n", ns) is not None:
                continue  # an apply now would only edit the object on its way out
            deleting.discard(name)
        if name not in want or rng.random() < 0.7:  # mostly create and edit: some remain
            want[name] = rng.randint(1, 64)
            cluster.kubectl(
                "apply", "-f", "-", input=json.dumps(churn_isvc(cluster, ns, name, want[name]))
            )
        else:
            del want[name]
            deleting.add(name)
            cluster.kubectl("delete", "inferenceservice", name, "-n", ns, "--wait=false")
        time.sleep(rng.uniform(0.2, 1.5))
    return want


def operator_pod(cluster: Cluster) -> str | None:
    """The operator's pod whose container runs (not being deleted)."""
    items = (cluster.get("pods", "-n", "pagoda-system", "-l", OPERATOR_PODS) or {}).get("items", [])
    for p in items:
        statuses = p.get("status", {}).get("containerStatuses") or []
        if not p["metadata"].get("deletionTimestamp") and any(
            "running" in s.get("state", {}) for s in statuses
        ):
            return p["metadata"]["name"]
    return None


def converged(cluster: Cluster, ns: str, want: dict[str, int]) -> str | None:
    """None when the namespace holds exactly what `want` says; else what is still off."""
    live = {
        o["metadata"]["name"]: o
        for o in (cluster.get("inferenceservices", "-n", ns) or {}).get("items", [])
    }
    if set(live) != set(want):
        return f"InferenceServices {sorted(live)}, want {sorted(want)}"
    uids = {o["metadata"]["uid"]: name for name, o in live.items()}
    children = (cluster.get(CHILD_KINDS, "-n", ns) or {}).get("items", [])
    seen: dict[tuple[str, str], int] = {}
    for c in children:
        owner = (c["metadata"].get("labels") or {}).get("pagoda.dev/inferenceservice")
        if owner is None:
            continue  # not the operator's (kube-root-ca.crt)
        refs = [r["uid"] for r in c["metadata"].get("ownerReferences", []) if r.get("controller")]
        if owner not in live or refs != [live[owner]["metadata"]["uid"]]:
            return f"{c['kind']}/{c['metadata']['name']} orphaned (owners {refs}, live {uids})"
        seen[owner, c["kind"]] = seen.get((owner, c["kind"]), 0) + 1
    for name, obj in live.items():
        kinds = {k: n for (o, k), n in seen.items() if o == name}
        if any(n > 1 for n in kinds.values()) or not {"Deployment", "Service"} <= set(kinds):
            return f"{name}: children {kinds}"
        status = obj.get("status") or {}
        if status.get("observedGeneration") != obj["metadata"]["generation"]:
            return f"{name}: observedGeneration {status.get('observedGeneration')}"
        if (status.get("replicas"), status.get("desiredReplicas")) != (0, 0):
            return (
                f"{name}: status replicas {status.get('replicas')}/{status.get('desiredReplicas')}"
            )
        deploy = cluster.get("deployment", name, "-n", ns) or {}
        (engine,) = deploy["spec"]["template"]["spec"]["containers"][:1]
        args = engine.get("args", []) + engine.get("command", [])
        if deploy["spec"]["replicas"] != 0 or f"--max-num-seqs={want[name]}" not in _flags(args):
            return f"{name}: Deployment replicas {deploy['spec']['replicas']}, args {args}"
    return None


def _flags(args: list[str]) -> set[str]:
    """`--flag value` and `--flag=value`, both as `--flag=value`."""
    out = set()
    for a, b in zip(args, [*args[1:], ""], strict=True):
        out.add(a if "=" in a else f"{a}={b}")
    return out


@pytest.fixture
def churn_ns(cluster: Cluster):
    """A namespace of its own: convergence is checked over every InferenceService in it."""
    name = f"e2e-churn-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_operator_killed_20_times(cluster: Cluster, operator, churn_ns: str):
    ns = churn_ns
    rng, kills = random.Random(16), random.Random(17)
    stop = threading.Event()
    result: dict[str, dict[str, int]] = {}
    errors: list[str] = []

    def work() -> None:
        try:
            result["want"] = churn(cluster, ns, rng, stop)
        except Exception as e:  # reported below: the churn itself must not fail
            errors.append(repr(e))

    worker = threading.Thread(target=work, daemon=True)
    t0 = time.monotonic()
    worker.start()
    killed = 0
    try:
        while killed < 20:
            pod = cluster.wait(lambda: operator_pod(cluster), 180, "the operator's pod running")
            time.sleep(kills.uniform(0, 4))  # a random point of its start-up or its work
            r = cluster.kubectl(
                "delete", "pod", "-n", "pagoda-system", pod, "--grace-period=0", "--force",
                "--wait=false", check=False,
            )  # fmt: skip
            killed += r.returncode == 0
    finally:
        stop.set()
        worker.join(timeout=60)
    assert not errors and "want" in result, errors
    want = result["want"]
    print(f"chaos: 20 operator kills in {time.monotonic() - t0:.0f}s, end state {want}")
    try:
        cluster.wait(lambda: converged(cluster, ns, want) is None, 300, "convergence", 3)
    except AssertionError:
        print(converged(cluster, ns, want))
        print(cluster.kubectl("logs", "-n", "pagoda-system", "-l", OPERATOR_PODS, "--tail=60",
                              check=False).stdout)  # fmt: skip
        raise
    print(f"chaos: converged {time.monotonic() - t0:.0f}s after the first kill")
