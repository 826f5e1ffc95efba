"""The operator against a real kube-apiserver, etcd and kube-controller-manager (no kubelet).

Each test gets a fresh namespace and its own operator (kopf.testing.KopfRunner).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import kubernetes
import pytest
from isvc_helpers import (
    block_service,
    condition,
    create_isvc,
    events,
    exposition,
    isvc,
    patch_isvc,
    wait_for,
)
from prometheus_client import REGISTRY

pytestmark = pytest.mark.integration

FULL = {
    "model": {"uri": "default", "servedName": "smol"},
    "engine": {"maxNumSeqs": 8, "maxModelLen": 2048},
    "resources": {"cpu": "1", "memory": "1Gi"},
    "replicas": 2,
    "exposure": {
        "ingress": {
            "className": "traefik",
            "host": "smol.example.com",
            "tls": {"secretName": "smol-tls"},
        }
    },
    "disruption": {"minAvailable": 1},
    "monitoring": {"serviceMonitor": {"enabled": True}},
}


def apps(api):
    return kubernetes.client.AppsV1Api(api)


def core(api):
    return kubernetes.client.CoreV1Api(api)


def deployment(api, ns, name):
    try:
        return apps(api).read_namespaced_deployment(name, ns)
    except kubernetes.client.ApiException as e:
        if e.status == 404:
            return None
        raise


def children(api, ns, name):
    """kind -> names of the objects labelled as this InferenceService's."""
    sel = f"pagoda.dev/inferenceservice={name}"
    net, pol, asc = (
        kubernetes.client.NetworkingV1Api(api),
        kubernetes.client.PolicyV1Api(api),
        kubernetes.client.AutoscalingV2Api(api),
    )
    lists = {
        "ConfigMap": core(api).list_namespaced_config_map(ns, label_selector=sel),
        "Service": core(api).list_namespaced_service(ns, label_selector=sel),
        "Deployment": apps(api).list_namespaced_deployment(ns, label_selector=sel),
        "Ingress": net.list_namespaced_ingress(ns, label_selector=sel),
        "PodDisruptionBudget": pol.list_namespaced_pod_disruption_budget(ns, label_selector=sel),
        "HorizontalPodAutoscaler": asc.list_namespaced_horizontal_pod_autoscaler(
            ns, label_selector=sel
        ),
    }
    return {k: sorted(o.metadata.name for o in v.items) for k, v in lists.items() if v.items}


def args_of(d):
    return d.spec.template.spec.containers[0].args


def converged(api, ns, name):
    obj = isvc(api, ns, name)
    st = (obj or {}).get("status") or {}
    return obj if st.get("observedGeneration") == obj["metadata"]["generation"] else None


def test_create_makes_every_child(api, kube, kube_ns, operator):
    created = create_isvc(api, kube_ns, "smol", FULL)
    uid = created["metadata"]["uid"]
    wait_for(
        "the finalizer",
        lambda: isvc(api, kube_ns, "smol")["metadata"].get("finalizers") == ["pagoda.dev/operator"],
    )
    want = {
        "ConfigMap": ["smol-engine"],
        "Service": ["smol"],
        "Deployment": ["smol"],
        "Ingress": ["smol"],
        "PodDisruptionBudget": ["smol"],
    }
    wait_for("every child", lambda: children(api, kube_ns, "smol") == want)

    d = deployment(api, kube_ns, "smol")
    owner = d.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.uid, owner.controller) == (
        "InferenceService",
        "smol",
        uid,
        True,
    )
    assert d.spec.replicas == 2
    assert (
        d.spec.strategy.rolling_update.max_surge == 1
        and d.spec.strategy.rolling_update.max_unavailable == 0
    )
    c = d.spec.template.spec.containers[0]
    assert c.args[:7] == [
        "default",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
        "--served-model-name",
        "smol",
    ]
    assert c.args[c.args.index("--max-num-seqs") + 1] == "8"
    assert c.image.startswith("pagoda-engine:") and not c.image.endswith("-cuda")  # the CPU image
    assert c.resources.limits == {"cpu": "1", "memory": "1Gi"}
    assert c.startup_probe.http_get.path == "/health"
    assert any(v.empty_dir and v.empty_dir.medium == "Memory" for v in d.spec.template.spec.volumes)

    svc = core(api).read_namespaced_service("smol", kube_ns)
    assert (
        svc.spec.selector == {"pagoda.dev/inferenceservice": "smol"}
        and svc.spec.ports[0].port == 80
    )
    ing = kubernetes.client.NetworkingV1Api(api).read_namespaced_ingress("smol", kube_ns)
    assert ing.spec.ingress_class_name == "traefik" and ing.spec.rules[0].host == "smol.example.com"
    assert ing.spec.tls[0].secret_name == "smol-tls"
    pdb = kubernetes.client.PolicyV1Api(api).read_namespaced_pod_disruption_budget("smol", kube_ns)
    assert pdb.spec.min_available == 1
    for kind, names in children(api, kube_ns, "smol").items():
        assert len(names) == 1, kind

    obj = wait_for("status", lambda: converged(api, kube_ns, "smol"))
    st = obj["status"]
    assert st["url"] == "https://smol.example.com"
    assert st["selector"] == "pagoda.dev/inferenceservice=smol"
    assert st["replicasOwner"] == "spec" and st["desiredReplicas"] == 2
    assert st["rollout"]["phase"] == "Progressing"
    assert condition(obj, "Ready")["status"] == "False"  # no kubelet: pods stay Pending
    assert {"Ready", "Progressing", "Degraded", "MetricsAvailable"} <= {
        c["type"] for c in st["conditions"]
    }
    # The pods exist (the real ReplicaSet controller made them) and the status follows the Deployment.
    wait_for("status.replicas 2", lambda: isvc(api, kube_ns, "smol")["status"].get("replicas") == 2)
    wait_for(
        "the observe timer",
        lambda: (
            condition(isvc(api, kube_ns, "smol"), "MetricsAvailable").get("reason") == "NoReadyPods"
        ),
    )

    reasons = wait_for(
        "events",
        lambda: (
            {r for _, r, _ in events(api, kube_ns, "smol")}
            >= {"Created", "RolloutStarted", "ServiceMonitorSkipped"}
            and events(api, kube_ns, "smol")
        ),
    )
    # One Event names every child the create made (not one Event a child).
    created = [m for t, r, m in reasons if (t, r) == ("Normal", "Created")]
    assert len(created) == 1, created
    for child in ("ConfigMap smol-engine", "Service smol", "Deployment smol", "Ingress smol"):
        assert child in created[0], created
    # ServiceMonitor: its CRD is not installed here, so it was skipped, with a warning.
    assert any(t == "Warning" and r == "ServiceMonitorSkipped" for t, r, _ in reasons)

    table = kube.kubectl("get", "pisvc", "smol", "-n", kube_ns).stdout
    for column in ("READY", "REPLICAS", "MODEL", "URL", "KV", "AGE", "https://smol.example.com"):
        assert column in table


def test_edit_flows_to_children_and_removed_features_are_pruned(api, kube, kube_ns, operator):
    create_isvc(api, kube_ns, "edit", FULL)
    wait_for("the Ingress", lambda: "Ingress" in children(api, kube_ns, "edit"))
    gen = deployment(api, kube_ns, "edit").metadata.generation

    patch_isvc(api, kube_ns, "edit", {"spec": {"engine": {"maxNumSeqs": 4}, "exposure": None}})
    d = wait_for(
        "the new args", lambda: (d := deployment(api, kube_ns, "edit")) and "4" in args_of(d) and d
    )
    assert args_of(d)[args_of(d).index("--max-num-seqs") + 1] == "4" and d.metadata.generation > gen
    wait_for("the Ingress to go", lambda: "Ingress" not in children(api, kube_ns, "edit"))
    assert any(r == "Deleted" and "Ingress" in m for _, r, m in events(api, kube_ns, "edit"))
    obj = wait_for("status of the edit", lambda: converged(api, kube_ns, "edit"))
    assert obj["status"]["url"] == f"http://edit.{kube_ns}.svc.cluster.local"

    # `kubectl scale` goes through the /scale subresource to spec.replicas, then to the Deployment.
    kube.kubectl("scale", "pisvc/edit", "-n", kube_ns, "--replicas=3")
    wait_for("3 replicas", lambda: deployment(api, kube_ns, "edit").spec.replicas == 3)

    # Hand the replica count to an HPA: the HPA appears, the status names its owner.
    patch_isvc(
        api,
        kube_ns,
        "edit",
        {
            "spec": {
                "replicas": None,
                "autoscaling": {
                    "mode": "HPA",
                    "minReplicas": 1,
                    "maxReplicas": 4,
                    "metric": {"type": "WaitingRequests", "target": 5},
                },
            }
        },
    )
    wait_for("the HPA", lambda: "HorizontalPodAutoscaler" in children(api, kube_ns, "edit"))
    hpa = kubernetes.client.AutoscalingV2Api(api).read_namespaced_horizontal_pod_autoscaler(
        "edit", kube_ns
    )
    assert hpa.spec.scale_target_ref.name == "edit" and hpa.spec.max_replicas == 4
    assert hpa.spec.metrics[0].pods.metric.name == "vllm_num_requests_waiting"
    wait_for(
        "owner hpa", lambda: isvc(api, kube_ns, "edit")["status"].get("replicasOwner") == "hpa"
    )
    # The count was handed over, not dropped (which would have reset it to 1 before the HPA acts).
    assert deployment(api, kube_ns, "edit").spec.replicas == 3
    managers = {
        (m.manager, m.operation) for m in deployment(api, kube_ns, "edit").metadata.managed_fields
    }
    assert ("pagoda-operator-handover", "Apply") in managers
    # With an owner other than the spec, `kubectl scale` is refused instead of fighting it.
    out = kube.kubectl("scale", "pisvc/edit", "-n", kube_ns, "--replicas=2", check=False)
    assert out.returncode != 0 and "mutually exclusive" in out.stderr


def test_a_restarted_operator_knows_the_children_from_its_watches(api, isvc_crd, kube_ns):
    """A new operator process has no memory of its applies: what it prunes, and what it calls
    created, comes from kopf's index of the children alone."""
    from kopf.testing import KopfRunner

    args = ["run", "--standalone", "--namespace", kube_ns, "-m", "pagoda.operator.handlers"]
    with KopfRunner(args, timeout=60) as first:
        create_isvc(api, kube_ns, "away", FULL)
        wait_for("the Ingress", lambda: "Ingress" in children(api, kube_ns, "away"))
        wait_for("status", lambda: converged(api, kube_ns, "away"))
    assert first.exit_code == 0, first.output
    patch_isvc(api, kube_ns, "away", {"spec": {"exposure": None}})  # while no operator runs
    with KopfRunner(args, timeout=60) as second:
        wait_for("the Ingress to go", lambda: "Ingress" not in children(api, kube_ns, "away"))
        wait_for("status", lambda: converged(api, kube_ns, "away"))
    assert second.exit_code == 0, second.output
    said = events(api, kube_ns, "away")
    assert any(r == "Deleted" and "Ingress away" in m for _, r, m in said), said
    # The second run applied the same children again: none of them is new to it.
    assert [r for _, r, _ in said].count("Created") == 1, said


def test_deleted_or_edited_child_comes_back(api, kube_ns, operator):
    create_isvc(api, kube_ns, "heal", {"model": {"uri": "default"}, "replicas": 1})
    wait_for("the Service", lambda: "Service" in children(api, kube_ns, "heal"))
    old_uid = core(api).read_namespaced_service("heal", kube_ns).metadata.uid
    core(api).delete_namespaced_service("heal", kube_ns)
    svc = wait_for(
        "the Service to return",
        lambda: next(
            (
                s
                for s in core(api).list_namespaced_service(kube_ns).items
                if s.metadata.name == "heal" and s.metadata.uid != old_uid
            ),
            None,
        ),
    )
    assert svc.metadata.owner_references[0].name == "heal"

    wait_for("a settled Deployment", lambda: deployment(api, kube_ns, "heal"))
    apps(api).patch_namespaced_deployment(
        "heal",
        kube_ns,
        {
            "spec": {
                "replicas": 5,
                "template": {
                    "spec": {"containers": [{"name": "engine", "image": "someone/else:1"}]}
                },
            }
        },
    )
    wait_for(
        "the Deployment to be taken back",
        lambda: (
            (d := deployment(api, kube_ns, "heal"))
            and d.spec.replicas == 1
            and d.spec.template.spec.containers[0].image.startswith("pagoda-engine:")
            and not d.spec.template.spec.containers[0].image.endswith("-cuda")
        ),
    )

    core(api).delete_namespaced_config_map("heal-engine", kube_ns)
    wait_for("the ConfigMap to return", lambda: "ConfigMap" in children(api, kube_ns, "heal"))


def test_deleting_the_inferenceservice_removes_its_children(api, kube_ns, operator):
    create_isvc(api, kube_ns, "gone", FULL)
    wait_for("children", lambda: len(children(api, kube_ns, "gone")) == 5)
    kubernetes.client.CustomObjectsApi(api).delete_namespaced_custom_object(
        "pagoda.dev", "v1alpha1", kube_ns, "inferenceservices", "gone"
    )
    # The operator stops its timer and lifts its finalizer; then the object is gone ...
    wait_for("the InferenceService to go", lambda: isvc(api, kube_ns, "gone") is None, timeout=60)
    # ... and the garbage collector of kube-controller-manager follows the owner references.
    wait_for("the garbage collector", lambda: children(api, kube_ns, "gone") == {}, timeout=90)
    wait_for(
        "the pods to go",
        lambda: (
            not core(api)
            .list_namespaced_pod(kube_ns, label_selector="pagoda.dev/inferenceservice=gone")
            .items
        ),
        timeout=60,
    )


INVALID = [
    (
        {
            "model": {"uri": "default"},
            "replicas": 2,
            "autoscaling": {
                "minReplicas": 1,
                "maxReplicas": 2,
                "metric": {"type": "WaitingRequests", "target": 4},
            },
        },
        "spec.replicas and spec.autoscaling are mutually exclusive",
    ),
    (
        {
            "model": {"uri": "default"},
            "autoscaling": {
                "minReplicas": 3,
                "maxReplicas": 2,
                "metric": {"type": "WaitingRequests", "target": 4},
            },
        },
        "autoscaling.minReplicas must be <= autoscaling.maxReplicas",
    ),
    (
        {
            "model": {"uri": "default"},
            "autoscaling": {
                "mode": "HPA",
                "minReplicas": 1,
                "maxReplicas": 2,
                "metric": {"type": "TTFTSecondsP95", "target": 1},
            },
        },
        "TTFTSecondsP95 needs mode Operator",
    ),
    ({"model": {"uri": "gs://bucket/model"}}, "model.uri must be 'default', hf://ORG/NAME"),
    (
        {"model": {"uri": "s3://My_Bucket/model"}},
        "s3://BUCKET/PREFIX (BUCKET: 3-63 of a-z 0-9 . -)",
    ),
    (
        {"model": {"uri": "hf://a/b", "s3": {"region": "us-east-1"}}},
        "model.s3 is for s3:// models only",
    ),
    (
        {"model": {"uri": "s3://models/tiny", "s3": {"endpoint": "http://s3:7070/models"}}},
        "model.s3.endpoint must be http(s)://HOST[:PORT], with no path",
    ),
    (
        {"model": {"uri": "s3://models/tiny", "s3": {"credentialsSecret": {}}}},
        "spec.model.s3.credentialsSecret.name: Required value",
    ),
    (
        {"model": {"uri": "s3://models/tiny"}, "engine": {"command": ["vllm", "serve"]}},
        "an s3:// model is downloaded by the Pagoda engine image's own downloader",
    ),
    (
        {"model": {"uri": "hf://a/b@"}},
        "model.uri must be 'default', hf://ORG/NAME[@REVISION]",
    ),
    (
        {"model": {"uri": "default", "tokenSecret": {"name": "hf", "key": "token"}}},
        "model.tokenSecret is for hf:// models only",
    ),
    (
        {"model": {"uri": "default"}, "engine": {"blockSize": 12}},
        "spec.engine.blockSize: Unsupported value: 12",
    ),
    (
        {"model": {"uri": "default"}, "engine": {"maxNumSeqs": 0}},
        "spec.engine.maxNumSeqs: Invalid value: 0",
    ),
    (
        {"model": {"uri": "default"}, "engine": {"dtype": "fp8"}},
        'spec.engine.dtype: Unsupported value: "fp8"',
    ),
    (
        {
            "model": {"uri": "default"},
            "engine": {"tensorParallelSize": 2, "pipelineParallelSize": 2},
            "resources": {"gpu": {"count": 2}},
        },
        "resources.gpu.count must equal engine.tensorParallelSize x engine.pipelineParallelSize",
    ),
    (
        {"model": {"uri": "default"}, "exposure": {"ingress": {"tls": {"secretName": "x"}}}},
        "exposure.ingress.tls needs exposure.ingress.host",
    ),
    (
        {"model": {"uri": "default"}, "disruption": {"minAvailable": 1, "maxUnavailable": 1}},
        "disruption needs exactly one of minAvailable and maxUnavailable",
    ),
    (
        {"model": {"uri": "default"}, "rollout": {"maxSurge": 0}},
        "spec.rollout.maxSurge: Invalid value: 0",
    ),
    ({"engine": {}}, "spec.model: Required value"),
    (
        {"model": {"uri": "default"}, "pod": {"sidecars": [{"name": "engine", "image": "x"}]}},
        "pod.sidecars[].name 'engine' is the engine container's",
    ),
    (
        {"model": {"uri": "default"}, "pod": {"volumes": [{"name": "tmp", "emptyDir": {}}]}},
        "pod.volumes[].name must not be dshm, model-cache, model or tmp",
    ),
    (
        {
            "model": {"uri": "default"},
            "engine": {"volumeMounts": [{"name": "x", "mountPath": "/x"}]},
        },
        "engine.volumeMounts[].name must name a volume in pod.volumes",
    ),
    (
        {"model": {"uri": "default"}, "pod": {"imagePullSecrets": [{}]}},
        "spec.pod.imagePullSecrets[0].name: Required value",
    ),
    (
        {"model": {"uri": "default"}, "engine": {"command": []}},
        "spec.engine.command: Invalid value",
    ),
    ({"model": {"uri": "default"}, "nodes": 0}, "spec.nodes: Invalid value: 0"),
    (
        {"model": {"uri": "default"}, "engine": {"pipelineParallelSize": 3}, "nodes": 2},
        "nodes must divide engine.tensorParallelSize x engine.pipelineParallelSize",
    ),
    (
        {
            "model": {"uri": "default"},
            "nodes": 2,
            "engine": {"pipelineParallelSize": 2},
            "autoscaling": {
                "minReplicas": 1,
                "maxReplicas": 2,
                "metric": {"type": "WaitingRequests", "target": 4},
            },
        },
        "nodes > 1 does not combine with autoscaling",
    ),
    (
        {
            "model": {"uri": "default"},
            "nodes": 2,
            "engine": {"pipelineParallelSize": 2, "command": ["vllm", "serve"]},
        },
        "nodes > 1 does not combine with engine.command",
    ),
    (
        {
            "model": {"uri": "default"},
            "nodes": 2,
            "engine": {"tensorParallelSize": 2, "pipelineParallelSize": 2},
            "resources": {"gpu": {"count": 4}},
        },
        "resources.gpu.count must equal engine.tensorParallelSize x engine.pipelineParallelSize / nodes",
    ),
]


@pytest.mark.parametrize("spec, message", INVALID, ids=[m[:40] for _, m in INVALID])
def test_invalid_spec_is_rejected_with_the_schema_message(kube, isvc_crd, kube_ns, spec, message):
    doc = json.dumps(
        {
            "apiVersion": "pagoda.dev/v1alpha1",
            "kind": "InferenceService",
            "metadata": {"name": "bad", "namespace": kube_ns},
            "spec": spec,
        }
    )
    out = kube.kubectl("create", "-f", "-", input=doc, check=False)
    assert out.returncode != 0
    assert message in out.stderr, out.stderr


def test_examples_are_accepted(kube, isvc_crd, kube_ns):
    for path in sorted((Path(__file__).resolve().parents[3] / "crds" / "examples").glob("*.yaml")):
        out = kube.kubectl(
            "create", "--dry-run=server", "-n", kube_ns, "-f", str(path), check=False
        )
        assert out.returncode == 0, f"{path.name}: {out.stderr}"


def test_killed_mid_reconcile_restarts_and_converges(api, kube, isvc_crd, kube_ns):
    from kopf.testing import KopfRunner

    policy = block_service(kube, kube_ns, "crash")
    code = "import sys; from pagoda.operator.main import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            code,
            "--standalone",
            "-n",
            kube_ns,
            "--metrics-port",
            "0",
            "--liveness-port",
            "0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "KUBECONFIG": kube.kubeconfig},
    )
    try:
        create_isvc(api, kube_ns, "crash", FULL)
        # The ConfigMap and the Deployment are applied, the Service refused: the reconcile is stuck
        # half-way (the Ingress and the PDB, applied after the Service, not made). Kill it there
        # (SIGKILL: no cleanup, kopf's progress annotations left as they are). kopf posts events
        # from a queue of its own, so the Warning can land after the status: wait for both.
        obj = wait_for(
            "a half-done reconcile",
            lambda: (
                condition(isvc(api, kube_ns, "crash"), "Degraded").get("reason") == "ApplyFailed"
                and any(r == "ApplyFailed" for _, r, _ in events(api, kube_ns, "crash"))
                and isvc(api, kube_ns, "crash")
            ),
            timeout=60,
        )
        assert "blocked by the test" in condition(obj, "Degraded")["message"]
        assert proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert children(api, kube_ns, "crash") == {
        "ConfigMap": ["crash-engine"],
        "Deployment": ["crash"],
    }
    kube.kubectl("delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", policy)

    with KopfRunner(
        ["run", "--standalone", "--namespace", kube_ns, "-m", "pagoda.operator.handlers"],
        timeout=60,
    ):
        want = {
            "ConfigMap": ["crash-engine"],
            "Service": ["crash"],
            "Deployment": ["crash"],
            "Ingress": ["crash"],
            "PodDisruptionBudget": ["crash"],
        }
        wait_for("every child, once", lambda: children(api, kube_ns, "crash") == want, timeout=60)
        obj = wait_for(
            "Degraded to clear",
            lambda: (
                condition(isvc(api, kube_ns, "crash"), "Degraded").get("status") == "False"
                and isvc(api, kube_ns, "crash")
            ),
            timeout=30,
        )
        time.sleep(2)  # a few more reconciles must not add anything
        assert children(api, kube_ns, "crash") == want
        rs = (
            apps(api)
            .list_namespaced_replica_set(
                kube_ns, label_selector="pagoda.dev/inferenceservice=crash"
            )
            .items
        )
        assert len(rs) == 1  # one rollout, not one per attempt
        assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
        assert obj["status"]["replicasOwner"] == "spec"


def test_autoscaler_scales_on_waiting_requests(api, kube, kube_ns, operator, fake_pods):
    create_isvc(
        api,
        kube_ns,
        "auto",
        {
            "model": {"uri": "default"},
            "autoscaling": {
                "minReplicas": 1,
                "maxReplicas": 3,
                "metric": {"type": "WaitingRequests", "target": 2},
                "scaleUp": {"stabilizationWindowSeconds": 0, "pods": 2, "periodSeconds": 60},
            },
        },
    )
    pod = wait_for(
        "the first pod",
        lambda: (
            core(api)
            .list_namespaced_pod(kube_ns, label_selector="pagoda.dev/inferenceservice=auto")
            .items
        ),
    )[0]
    engine = fake_pods(lambda: exposition(running=4, waiting=10, kv=0.5))
    engine.mark_ready(api, kube_ns, pod.metadata.name)

    wait_for(
        "a scale-up to 3", lambda: deployment(api, kube_ns, "auto").spec.replicas == 3, timeout=30
    )
    # The Deployment's readyReplicas (Ready) comes from kube-controller-manager, on its own time.
    obj = wait_for(
        "status",
        lambda: (
            (o := isvc(api, kube_ns, "auto"))["status"].get("desiredReplicas") == 3
            and condition(o, "Ready").get("status")
            == condition(o, "MetricsAvailable").get("status")
            == "True"
            and o
        ),
    )
    st = obj["status"]
    assert st["replicasOwner"] == "autoscaler" and "lastScaleTime" in st
    assert st["metrics"]["requestsWaiting"] == 10 and st["metrics"]["kvCacheUsage"] == 0.5
    scaled = [m for _, r, m in events(api, kube_ns, "auto") if r == "Scaled"]
    assert scaled and scaled[0].startswith("1 -> 3") and "WaitingRequests" in scaled[0]
    assert (
        REGISTRY.get_sample_value(
            "pagoda_operator_scaling_decisions_total",
            {"namespace": kube_ns, "name": "auto", "direction": "up"},
        )
        == 1
    )
    assert (
        REGISTRY.get_sample_value(
            "pagoda_operator_desired_replicas", {"namespace": kube_ns, "name": "auto"}
        )
        == 3
    )
    # Reconciles keep the autoscaler's count (they do not reset it to minReplicas).
    patch_isvc(api, kube_ns, "auto", {"spec": {"engine": {"maxNumSeqs": 64}}})
    wait_for("the edit", lambda: "64" in args_of(deployment(api, kube_ns, "auto")))
    assert deployment(api, kube_ns, "auto").spec.replicas == 3


def test_rollout_gate_rolls_back_a_bad_revision(api, kube, kube_ns, operator, fake_pods):
    create_isvc(
        api,
        kube_ns,
        "roll",
        {
            "model": {"uri": "default"},
            "replicas": 1,
            "lifecycle": {"startupTimeoutSeconds": 120},
            "rollout": {"analysis": {"maxErrorRate": 0.1, "windowSeconds": 10, "minRequests": 5}},
        },
    )

    def pods():
        return (
            core(api)
            .list_namespaced_pod(kube_ns, label_selector="pagoda.dev/inferenceservice=roll")
            .items
        )

    first = wait_for("the first pod", pods)[0]
    t0 = time.monotonic()
    # Half the clients walk away (finished_reason="abort"): that is no fault of the revision.
    good = fake_pods(
        lambda: exposition(
            ok=int(5 * (time.monotonic() - t0)), aborted=int(5 * (time.monotonic() - t0))
        )
    )
    good.mark_ready(api, kube_ns, first.metadata.name)
    obj = wait_for(
        "the first revision to pass",
        lambda: (
            (o := isvc(api, kube_ns, "roll"))["status"].get("rollout", {}).get("phase")
            == "Succeeded"
            and o
        ),
        timeout=40,
    )
    stable = obj["status"]["rollout"]["stableRevision"]
    assert first.metadata.labels["pagoda.dev/revision"] == stable

    patch_isvc(api, kube_ns, "roll", {"spec": {"engine": {"maxNumSeqs": 4}}})
    new = wait_for(
        "a surge pod of the new revision",
        lambda: [p for p in pods() if p.metadata.labels["pagoda.dev/revision"] != stable],
    )[0]
    bad_rev = new.metadata.labels["pagoda.dev/revision"]
    assert any(
        p.metadata.name == first.metadata.name for p in pods()
    )  # surge first: the old pod stays
    t1 = time.monotonic()
    bad = fake_pods(
        lambda: exposition(
            ok=int(3 * (time.monotonic() - t1)), errored=int(3 * (time.monotonic() - t1))
        )
    )
    bad.mark_ready(api, kube_ns, new.metadata.name)

    obj = wait_for(
        "the rollback",
        lambda: (
            (o := isvc(api, kube_ns, "roll"))["status"].get("rollout", {}).get("phase")
            == "RolledBack"
            and o
        ),
        timeout=40,
    )
    ro = obj["status"]["rollout"]
    assert (
        ro["failedRevision"] == bad_rev
        and ro["revision"] == stable
        and ro["message"].startswith("ErrorRate")
    )
    wait_for(
        "the Deployment back on the stable template",
        lambda: (
            deployment(api, kube_ns, "roll").spec.template.metadata.labels["pagoda.dev/revision"]
            == stable
        ),
    )
    assert "--max-num-seqs" not in args_of(deployment(api, kube_ns, "roll"))
    deg = wait_for(
        "Degraded",
        lambda: (
            condition(isvc(api, kube_ns, "roll"), "Degraded").get("status") == "True"
            and condition(isvc(api, kube_ns, "roll"), "Degraded")
        ),
    )
    assert deg["reason"] == "RolledBack"
    assert any(t == "Warning" and r == "RolledBack" for t, r, _ in events(api, kube_ns, "roll"))
    assert (
        REGISTRY.get_sample_value(
            "pagoda_operator_rollbacks_total", {"namespace": kube_ns, "name": "roll"}
        )
        == 1
    )
    # A later reconcile keeps the rollback (the spec still asks for the failed revision).
    patch_isvc(api, kube_ns, "roll", {"metadata": {"annotations": {"touch": "1"}}})
    time.sleep(2)
    assert (
        deployment(api, kube_ns, "roll").spec.template.metadata.labels["pagoda.dev/revision"]
        == stable
    )


SERVICEMONITOR_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
    "spec": {
        "group": "monitoring.coreos.com",
        "scope": "Namespaced",
        "names": {
            "kind": "ServiceMonitor",
            "plural": "servicemonitors",
            "singular": "servicemonitor",
        },
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                    }
                },
            }
        ],
    },
}


@pytest.fixture
def servicemonitor_crd(kube):
    """prometheus-operator's CRD (its shape only), for one test; the operator's cached answer is reset around it."""
    from pagoda.operator import reconcile

    kube.kubectl("apply", "-f", "-", input=json.dumps(SERVICEMONITOR_CRD))
    wait_for(
        "the ServiceMonitor API",
        lambda: kube.kubectl("get", "servicemonitors", "-A", check=False).returncode == 0,
    )
    reconcile._served_cache.clear()
    yield
    kube.kubectl("delete", "crd", "servicemonitors.monitoring.coreos.com", "--wait=true")
    reconcile._served_cache.clear()


def test_servicemonitor_where_its_crd_exists(api, kube, kube_ns, servicemonitor_crd, operator):
    custom = kubernetes.client.CustomObjectsApi(api)

    def monitors():
        return custom.list_namespaced_custom_object(
            "monitoring.coreos.com", "v1", kube_ns, "servicemonitors"
        )["items"]

    obj = create_isvc(api, kube_ns, "mon", FULL)
    sm = wait_for("the ServiceMonitor", monitors)[0]
    assert (
        sm["metadata"]["name"] == "mon"
        and sm["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"]
    )
    assert sm["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "15s"}]
    assert sm["spec"]["selector"]["matchLabels"] == {"pagoda.dev/inferenceservice": "mon"}
    patch_isvc(
        api, kube_ns, "mon", {"spec": {"monitoring": {"serviceMonitor": {"enabled": False}}}}
    )
    wait_for("the ServiceMonitor to be pruned", lambda: monitors() == [])


def test_two_peered_replicas_one_acts(api, kube, isvc_crd, kube_ns, tmp_path):
    """Without --standalone the replicas peer (crds/kopf-peering.yaml): only the highest priority acts."""
    root = Path(__file__).resolve().parents[3]
    kube.kubectl("apply", "-f", str(root / "crds" / "kopf-peering.yaml"))
    wait_for(
        "the peering CRD",
        lambda: kube.kubectl("get", "kopfpeerings", "-n", kube_ns, check=False).returncode == 0,
    )
    kube.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": "kopf.dev/v1",
                "kind": "KopfPeering",
                "metadata": {"name": "pagoda-operator", "namespace": kube_ns},
            }
        ),
    )
    code = "import sys; from pagoda.operator.main import main; sys.exit(main(sys.argv[1:]))"
    logs = [tmp_path / f"replica-{i}.log" for i in range(2)]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                code,
                "-n",
                kube_ns,
                "--metrics-port",
                "0",
                "--liveness-port",
                "0",
                "--priority",
                str(10 + i),
            ],
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            env={**os.environ, "KUBECONFIG": kube.kubeconfig},
        )
        for i, log in enumerate(logs)
    ]
    try:
        wait_for(
            "both replicas in the peering object",
            lambda: (
                len(
                    json.loads(
                        kube.kubectl(
                            "get",
                            "kopfpeering",
                            "pagoda-operator",
                            "-n",
                            kube_ns,
                            "-o",
                            "jsonpath={.status}",
                        ).stdout
                        or "{}"
                    )
                )
                == 2
            ),
        )
        create_isvc(api, kube_ns, "peer", {"model": {"uri": "default"}})
        wait_for("the children", lambda: "Deployment" in children(api, kube_ns, "peer"), timeout=60)
        patch_isvc(api, kube_ns, "peer", {"spec": {"engine": {"maxNumSeqs": 4}}})
        wait_for("the edit", lambda: "4" in args_of(deployment(api, kube_ns, "peer")))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
    handled = ["reconcile_isvc' succeeded" in log.read_text() for log in logs]
    assert handled == [False, True], [
        log.read_text()[-2000:] for log in logs
    ]  # priority 11 acts, 10 stands by
