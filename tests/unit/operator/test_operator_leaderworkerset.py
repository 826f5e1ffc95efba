"""spec.nodes > 1: the LeaderWorkerSet in place of the Deployment, and what changes around it
(pure rendering; the LWS controller itself runs in tests/integration/operator/test_operator_lws_kube.py)."""

import argparse

import kubernetes_validate
import pytest

from pagoda.engine.cli import add_serve_args
from pagoda.operator.children import desired, revision, workload
from pagoda.operator.config import OperatorConfig
from pagoda.operator.plan import LWS_MISSING, Observed, plan, status
from pagoda.operator.resources.leaderworkerset import MASTER_PORT, ROLE_LABEL
from pagoda.operator.resources.networkpolicy import networkpolicy
from pagoda.operator.resources.service import service
from pagoda.operator.spec import REVISION_LABEL, parse

K8S = "1.34.0"
CONFIG = OperatorConfig(engine_image="e:1-cuda", engine_cpu_image="e:1", observe_interval=10)
NOW = "2026-12-04T08:00:00Z"


def spec(nodes=2, **over):
    body = {
        "model": {"uri": "default"},
        "engine": {"pipelineParallelSize": 2, "maxNumSeqs": 8},
        "nodes": nodes,
        **over,
    }
    return parse("chat", "team", body)


def templates(lws):
    t = lws["spec"]["leaderWorkerTemplate"]
    return t["leaderTemplate"], t["workerTemplate"]


def engine_of(template):
    return template["spec"]["containers"][0]


def test_nodes_1_is_a_deployment_and_more_a_leaderworkerset():
    assert workload(spec(nodes=1), "img", 1)["kind"] == "Deployment"
    lws = workload(spec(), "img", 3)
    assert lws["apiVersion"] == "leaderworkerset.x-k8s.io/v1" and lws["kind"] == "LeaderWorkerSet"
    assert lws["spec"]["replicas"] == 3 and lws["spec"]["leaderWorkerTemplate"]["size"] == 2
    # Not the Service's name: LWS names the group's headless Service (the leader's DNS) after it.
    assert lws["metadata"]["name"] == "chat-lws" != service(spec())["metadata"]["name"]
    # The leader is ready only once its workers joined: LeaderReady would wait forever.
    assert lws["spec"]["startupPolicy"] == "LeaderCreated"
    assert lws["spec"]["leaderWorkerTemplate"]["restartPolicy"] == "RecreateGroupOnPodRestart"
    assert lws["spec"]["rolloutStrategy"]["rollingUpdateConfiguration"] == {
        "maxSurge": 1,
        "maxUnavailable": 0,
    }
    kinds = [o["kind"] for o in desired(spec(), spec(), "img", 1, servicemonitors=False)]
    assert "Deployment" not in kinds and "LeaderWorkerSet" in kinds


def kubelet_expands(args, env):
    """$(VAR) in a container's args, as the kubelet expands it from the env (LWS's pod webhook
    injects these)."""
    out = []
    for a in args:
        for k, v in env.items():
            a = a.replace(f"$({k})", v)
        out.append(a)
    return out


def test_leader_and_workers_get_the_engines_rendezvous_flags():
    leader, worker = templates(workload(spec(nodes=2), "img", 1))
    parser = argparse.ArgumentParser()
    add_serve_args(parser)
    addr = "chat-lws-0.chat-lws.team"
    lead = parser.parse_args(
        kubelet_expands(
            engine_of(leader)["args"], {"LWS_LEADER_ADDRESS": addr, "LWS_WORKER_INDEX": "0"}
        )
    )
    work = parser.parse_args(
        kubelet_expands(
            engine_of(worker)["args"], {"LWS_LEADER_ADDRESS": addr, "LWS_WORKER_INDEX": "1"}
        )
    )
    assert (lead.nnodes, lead.node_rank, lead.master_addr, lead.master_port) == (
        2,
        0,
        addr,
        MASTER_PORT,
    )
    assert (work.nnodes, work.node_rank, work.master_addr, work.master_port) == (
        2,
        1,
        addr,
        MASTER_PORT,
    )
    assert lead.pipeline_parallel_size == work.pipeline_parallel_size == 2
    assert lead.max_num_seqs == work.max_num_seqs == 8


def test_workers_serve_no_http_and_are_not_scraped():
    leader, worker = templates(workload(spec(), "img", 1))
    lead, work = engine_of(leader), engine_of(worker)
    assert "readinessProbe" in lead and "lifecycle" in lead
    for key in ("startupProbe", "readinessProbe", "livenessProbe", "lifecycle"):
        assert key not in work
    assert [p["name"] for p in lead["ports"]] == ["http", "dist"]
    assert [p["name"] for p in work["ports"]] == ["dist"]
    assert "prometheus.io/scrape" in leader["metadata"]["annotations"]
    assert "prometheus.io/scrape" not in worker["metadata"]["annotations"]
    assert leader["metadata"]["labels"][ROLE_LABEL] == "leader"
    assert worker["metadata"]["labels"][ROLE_LABEL] == "worker"


def test_templates_are_valid_pod_templates():
    s = spec(resources={"cpu": "2", "memory": "4Gi"}, model={"uri": "hf://org/name@abc"})
    for t in templates(workload(s, "img", 1)):
        doc = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "x"}, "template": t}
        kubernetes_validate.validate(doc, K8S, strict=True)
        # Every node loads its own stage's weights: the download runs on workers too.
        assert t["spec"]["initContainers"][0]["name"] == "model-download"


def test_one_revision_for_the_group_and_it_follows_the_templates():
    a = workload(spec(), "img", 1)
    leader, worker = templates(a)
    assert (
        leader["metadata"]["labels"][REVISION_LABEL]
        == worker["metadata"]["labels"][REVISION_LABEL]
        == revision(a)
    )
    assert revision(a) == revision(workload(spec(), "img", 5))  # scaling is not a rollout
    assert revision(a) != revision(workload(spec(), "img2", 1))
    assert revision(a) != revision(workload(spec(nodes=1), "img", 1))


def test_gpus_per_pod_are_the_ranks_split_over_the_nodes():
    s = spec(engine={"tensorParallelSize": 2, "pipelineParallelSize": 2}, resources={"gpu": {}})
    assert s.gpus == 2
    for t in templates(workload(s, "img", 1)):
        assert engine_of(t)["resources"]["limits"]["nvidia.com/gpu"] == 2


def test_the_service_selects_leaders_and_the_networkpolicy_lets_the_group_talk():
    assert service(spec())["spec"]["selector"] == {
        "pagoda.dev/inferenceservice": "chat",
        ROLE_LABEL: "leader",
    }
    assert ROLE_LABEL not in service(spec(nodes=1))["spec"]["selector"]
    pol = networkpolicy(spec(networkPolicy={"enabled": True}), "pagoda-system")
    assert pol["spec"]["ingress"][1] == {
        "from": [{"podSelector": {"matchLabels": {"pagoda.dev/inferenceservice": "chat"}}}]
    }
    single = networkpolicy(spec(nodes=1, networkPolicy={"enabled": True}), "pagoda-system")
    assert len(single["spec"]["ingress"]) == 1


def test_a_missing_leaderworkerset_crd_is_a_condition_and_one_event():
    s = spec()
    p = plan(s, Observed(1, {}, None, False, leaderworkersets=False), CONFIG, NOW)
    assert "LeaderWorkerSet" not in [o["kind"] for o in p.objects]
    assert {"ConfigMap", "Service"} <= {o["kind"] for o in p.objects}
    assert [e.reason for e in p.events] == [LWS_MISSING] and p.rollout == {}
    st = status(s, {}, None, p.rollout, 1, NOW, missing=p.missing)
    cond = {c["type"]: c for c in st["conditions"]}
    assert cond["Degraded"]["status"] == "True" and cond["Degraded"]["reason"] == LWS_MISSING
    assert cond["Ready"]["reason"] == LWS_MISSING
    assert "leaderworkerset.x-k8s.io" in cond["Degraded"]["message"]
    # Said once per spec: the next reconcile of the same generation posts nothing.
    again = plan(s, Observed(1, st, None, False, leaderworkersets=False), CONFIG, NOW)
    assert again.events == [] and again.missing
    # A single-node engine never needs the CRD.
    single = plan(spec(nodes=1), Observed(1, {}, None, False, leaderworkersets=False), CONFIG, NOW)
    assert single.missing is None and "Deployment" in [o["kind"] for o in single.objects]


@pytest.mark.parametrize("nodes", [2, 4])
def test_a_served_crd_renders_and_rolls_out(nodes):
    s = spec(nodes=nodes, engine={"pipelineParallelSize": 4})
    p = plan(s, Observed(1, {}, None, False, leaderworkersets=True), CONFIG, NOW)
    lws = next(o for o in p.objects if o["kind"] == "LeaderWorkerSet")
    assert lws["spec"]["leaderWorkerTemplate"]["size"] == nodes
    assert p.rollout["phase"] == "Progressing" and p.rollout["revision"] == revision(lws)
