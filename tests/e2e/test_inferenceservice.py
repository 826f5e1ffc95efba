"""End to end: Helm installs the operator; an InferenceService of the default model on the CPU
becomes Ready; the official openai client streams a chat completion through the Ingress; load
makes requests wait and the operator scales up, then back down; deleting the InferenceService
removes everything it made."""

from __future__ import annotations

import json
import threading
import time

import pytest
from e2e_cluster import Cluster

pytestmark = pytest.mark.e2e

NAME = "smol"
CHILD_KINDS = "deployments,replicasets,pods,services,ingresses,configmaps,poddisruptionbudgets,horizontalpodautoscalers"


def isvc(cluster: Cluster, ns: str) -> dict:
    return cluster.default_model_isvc(
        ns,
        NAME,
        "smollm2",
        # one sequence at a time: a few concurrent clients make requests wait
        # a 256 MiB KV pool: the CPU default (2 GiB), once filled, would not fit the limit
        engine={
            "maxNumSeqs": 1,
            "maxModelLen": 2048,
            "args": ["--kv-cache-memory-bytes", str(256 * 2**20)],
        },
        resources={"memory": "3Gi"},
        autoscaling={
            "minReplicas": 1,
            "maxReplicas": 2,
            "metric": {"type": "WaitingRequests", "target": 1},
            "scaleUp": {"stabilizationWindowSeconds": 0, "periodSeconds": 5},
            "scaleDown": {"stabilizationWindowSeconds": 30, "periodSeconds": 10},
        },
        lifecycle={"startupTimeoutSeconds": 600, "drainSeconds": 5},
        exposure={"ingress": {"path": "/"}},
    )


def condition(obj: dict | None, type_: str) -> str | None:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return c.get("status")
    return None


def test_inferenceservice_end_to_end(cluster: Cluster, operator, ns: str):
    from openai import OpenAI

    cluster.kubectl("apply", "-f", "-", input=json.dumps(isvc(cluster, ns)))
    try:
        cluster.wait(
            lambda: condition(cluster.get("inferenceservice", NAME, "-n", ns), "Ready") == "True",
            timeout=900,
            what="the InferenceService to be Ready",
        )
    except AssertionError:
        print(cluster.describe(ns))
        raise
    obj = cluster.get("inferenceservice", NAME, "-n", ns)
    uid = obj["metadata"]["uid"]
    assert obj["status"]["readyReplicas"] >= 1

    # --- a streamed chat completion through the Ingress ------------------------------------
    client = OpenAI(
        base_url=f"{cluster.ingress_url}/v1", api_key="unused", timeout=120, max_retries=0
    )
    # the ingress controller may need a moment to see the new endpoints
    cluster.wait(lambda: _models_ok(client), timeout=60, what="the model list through the Ingress")
    stream = client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "Say hello in one word."}],
        max_tokens=16,
        temperature=0,
        stream=True,
    )
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len(pieces) >= 2 and "".join(pieces).strip(), pieces

    # --- load: requests wait, the operator scales up ----------------------------------------
    stop = threading.Event()
    errors: list[str] = []

    def worker():
        while not stop.is_set():
            try:
                client.chat.completions.create(
                    model="smollm2",
                    messages=[{"role": "user", "content": "Count from one to fifty."}],
                    max_tokens=96,
                    temperature=0,
                    extra_body={"ignore_eos": True},
                )
            except Exception as e:  # recorded and reported below
                errors.append(repr(e))
                time.sleep(1)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(6)]
    for t in threads:
        t.start()
    try:
        cluster.wait(
            lambda: (_status(cluster, ns).get("desiredReplicas") or 0) >= 2,
            timeout=240,
            what="the operator to scale up under load",
        )
        cluster.wait(
            lambda: _deploy_replicas(cluster, ns) >= 2,
            timeout=60,
            what="the Deployment to get 2 replicas",
        )
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=150)
    # --- after the load, back down ---------------------------------------------------------
    cluster.wait(
        lambda: _status(cluster, ns).get("desiredReplicas") == 1,
        timeout=300,
        what="the operator to scale back down after the load",
    )
    assert len(errors) <= 3, errors[:5]

    # --- delete: everything it made goes ---------------------------------------------------
    cluster.kubectl("delete", "inferenceservice", NAME, "-n", ns, "--wait=true", "--timeout=120s")

    def owned_left():
        items = (cluster.get(CHILD_KINDS, "-n", ns) or {}).get("items", [])
        left = [
            f"{i['kind']}/{i['metadata']['name']}"
            for i in items
            if i["kind"] != "ConfigMap" or i["metadata"]["name"] != "kube-root-ca.crt"
        ]
        return not left or None

    cluster.wait(owned_left, timeout=180, what=f"all children of {NAME} (uid {uid}) to be deleted")


def _models_ok(client) -> bool:
    try:
        return any(m.id == "smollm2" for m in client.models.list().data)
    except Exception:  # retried until the deadline
        return False


def _status(cluster: Cluster, ns: str, name: str = NAME) -> dict:
    return (cluster.get("inferenceservice", name, "-n", ns) or {}).get("status") or {}


def _deploy_replicas(cluster: Cluster, ns: str) -> int:
    items = (cluster.get("deployment", "-n", ns) or {}).get("items", [])
    return max((d["spec"].get("replicas", 0) for d in items), default=0)


def test_rollout_gate_rolls_back_a_crashing_revision(cluster: Cluster, operator, ns: str):
    """A revision whose engine exits at start (an unknown flag) is rolled back on its own: the
    surge pod crash-loops beside the serving one, the operator sees its restarts, renders the
    stable revision again, and says so in the conditions and Events; serving never stops."""
    name = "gate"
    body = isvc(cluster, ns)
    body["metadata"]["name"] = name
    spec = body["spec"]
    del spec["autoscaling"]
    spec.update(replicas=1, exposure={})
    cluster.kubectl("apply", "-f", "-", input=json.dumps(body))
    try:
        cluster.wait(
            lambda: (
                (cluster.get("inferenceservice", name, "-n", ns) or {})
                .get("status", {})
                .get("rollout", {})
                .get("phase")
                == "Succeeded"
            ),
            timeout=900,
            what="the first revision to be promoted",
        )
        stable = cluster.get("inferenceservice", name, "-n", ns)["status"]["rollout"]
        patch = {"spec": {"engine": {"args": [*spec["engine"]["args"], "--no-such-flag"]}}}
        cluster.kubectl(
            "patch", "inferenceservice", name, "-n", ns, "--type=merge", "-p", json.dumps(patch)
        )
        cluster.wait(
            lambda: (
                (cluster.get("inferenceservice", name, "-n", ns)["status"]["rollout"]).get("phase")
                == "RolledBack"
            ),
            timeout=300,
            what="the crashing revision to be rolled back",
        )
    except AssertionError:
        print(cluster.describe(ns))
        raise
    obj = cluster.get("inferenceservice", name, "-n", ns)
    ro = obj["status"]["rollout"]
    assert ro["revision"] == stable["stableRevision"] and ro["message"].startswith(
        "NewPodsCrashing"
    )
    conds = {c["type"]: c for c in obj["status"]["conditions"]}
    assert conds["Ready"]["status"] == "True"  # the stable pod served throughout
    assert conds["Degraded"]["status"] == "True"
    assert conds["Degraded"]["reason"] in ("RolledBack", "EngineCrashing")
    reasons = [
        e["reason"]
        for e in cluster.get("events", "-n", ns, "--field-selector", f"involvedObject.name={name}")[
            "items"
        ]
    ]
    assert "RolloutStarted" in reasons and "RolledBack" in reasons
    cluster.wait(
        lambda: all(
            p["metadata"]["labels"]["pagoda.dev/revision"] == stable["stableRevision"]
            for p in cluster.get("pods", "-n", ns, "-l", f"pagoda.dev/inferenceservice={name}")[
                "items"
            ]
        ),
        timeout=120,
        what="only stable pods left",
    )
    cluster.kubectl("delete", "inferenceservice", name, "-n", ns, "--wait=true", "--timeout=120s")


def test_rollout_gate_rolls_back_a_slow_revision_and_promotes_a_good_one(
    cluster: Cluster, operator, ns: str
):
    """With requests flowing through the Ingress, a revision whose first tokens come 3 s late (the
    engine's TTFT fault hook) breaks `maxTTFTSecondsP95` and is rolled back on its own; under the
    same bounds a revision without the delay passes the analysis and is promoted."""
    name, host = "slow", "slow.e2e.test"
    body = isvc(cluster, ns)
    body["metadata"]["name"] = name
    spec = body["spec"]
    del spec["autoscaling"]
    spec.update(replicas=1, exposure={"ingress": {"host": host}})

    def rollout() -> dict:
        return _status(cluster, ns, name).get("rollout") or {}

    def with_delay(seconds: str) -> str:
        env = [
            {"name": "PAGODA_TEST_HOOKS", "value": "1"},
            {"name": "PAGODA_TEST_TTFT_DELAY_S", "value": seconds},
        ]
        analysis = {"maxTTFTSecondsP95": 2, "minRequests": 3, "windowSeconds": 30}
        return json.dumps({"spec": {"engine": {"env": env}, "rollout": {"analysis": analysis}}})

    stop = threading.Event()

    def traffic():  # one request after another, to whichever pods the Ingress has
        import httpx

        while not stop.is_set():
            try:
                httpx.post(
                    f"{cluster.ingress_url}/v1/completions",
                    headers={"Host": host},
                    json={"model": "smollm2", "prompt": "Hello", "max_tokens": 2},
                    timeout=60,
                )
            except httpx.HTTPError:  # a pod switching over; the gate judges what the pods saw
                time.sleep(1)

    cluster.kubectl("apply", "-f", "-", input=json.dumps(body))
    threads = [threading.Thread(target=traffic, daemon=True) for _ in range(2)]
    try:
        cluster.wait(
            lambda: rollout().get("phase") == "Succeeded",
            timeout=900,
            what="the first revision to be promoted",
        )
        stable = rollout()["stableRevision"]
        for t in threads:
            t.start()
        cluster.kubectl("patch", "pisvc", name, "-n", ns, "--type=merge", "-p", with_delay("3"))
        cluster.wait(
            lambda: rollout().get("phase") == "RolledBack",
            timeout=600,
            what="the slow revision to be rolled back",
        )
        st = _status(cluster, ns, name)
        assert st["rollout"]["revision"] == stable, st["rollout"]
        assert st["rollout"]["message"].startswith("TTFT: new pods' TTFT p95"), st["rollout"]
        conds = {c["type"]: c for c in st["conditions"]}
        assert (conds["Degraded"]["status"], conds["Degraded"]["reason"]) == ("True", "RolledBack")
        events = cluster.get("events", "-n", ns, "--field-selector", f"involvedObject.name={name}")
        assert "RolledBack" in [e["reason"] for e in events["items"]]
        cluster.wait(
            lambda: (
                {
                    p["metadata"]["labels"]["pagoda.dev/revision"]
                    for p in cluster.get(
                        "pods", "-n", ns, "-l", f"pagoda.dev/inferenceservice={name}"
                    )["items"]
                }
                == {stable}
            ),
            timeout=300,
            what="only stable pods left",
        )
        # The same bounds, no delay: a new revision (not the stable one) that passes them.
        cluster.kubectl("patch", "pisvc", name, "-n", ns, "--type=merge", "-p", with_delay("0"))
        cluster.wait(
            lambda: (
                (r := rollout()).get("phase") == "Succeeded" and r.get("stableRevision") != stable
            ),
            timeout=600,
            what="the revision without the delay to be promoted",
        )
    except AssertionError:
        print(cluster.describe(ns))
        raise
    finally:
        stop.set()
    st = _status(cluster, ns, name)
    assert st["rollout"]["message"].startswith("AnalysisPassed"), st["rollout"]
    assert "failedRevision" not in st["rollout"]
    assert {c["type"]: c["status"] for c in st["conditions"]}["Degraded"] == "False"
    for t in threads:
        t.join(timeout=70)
    cluster.kubectl("delete", "inferenceservice", name, "-n", ns, "--wait=true", "--timeout=120s")
