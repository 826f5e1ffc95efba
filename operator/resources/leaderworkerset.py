"""The LeaderWorkerSet of a multi-node engine (spec.nodes > 1), in place of the Deployment.

One replica is a group of `nodes` pods (kubernetes-sigs/lws): a leader that runs `pagoda serve`
(the engine core, its HTTP server and node 0's ranks) and nodes - 1 workers that run only their
ranks (`--node-rank > 0`, engine/executor/multiproc.py's run_headless). They meet through
torch.distributed's env rendezvous at the leader: LWS's pod webhook puts LWS_LEADER_ADDRESS (the
leader's name in the group's headless Service) and LWS_WORKER_INDEX (0 for the leader) in every
container's env, and the kubelet expands `$(VAR)` in the args from it.

It is named `<name>-lws`, not `<name>`: LWS names the group's headless Service (the leader's DNS
name, LWS_LEADER_ADDRESS) after it, and `<name>` is the engine's own Service already.
"""

from __future__ import annotations

import copy
from typing import Any

from pagoda.operator.resources import digest, metadata
from pagoda.operator.resources.deployment import pod_template
from pagoda.operator.spec import REVISION_LABEL, Spec

API_VERSION = "leaderworkerset.x-k8s.io/v1"
# leader | worker: the Service, and the operator's look at the pods (scrape, rollout gate, LoRA),
# take leaders only; workers serve no HTTP.
ROLE_LABEL = "pagoda.dev/role"
# The engine's default --master-port; the leader's engine core also binds the two ports above it
# for the workers (core_addresses in engine/executor/multiproc.py).
MASTER_PORT = 29500
_WORKER_DROPS = ("startupProbe", "readinessProbe", "livenessProbe", "lifecycle", "ports")
_SCRAPE_ANNOTATIONS = ("prometheus.io/scrape", "prometheus.io/port", "prometheus.io/path")


def leaderworkerset(s: Spec, image: str, replicas: int | None) -> dict[str, Any]:
    """`replicas` None leaves the field out (LWS's default, 1), as for the Deployment."""
    base = pod_template(s, image)
    leader = _role(s, base, "leader", "0")
    worker = _role(s, base, "worker", "$(LWS_WORKER_INDEX)")
    engine = worker["spec"]["containers"][0]
    for key in _WORKER_DROPS:  # no HTTP server on a worker: nothing to probe or drain
        engine.pop(key, None)
    for key in _SCRAPE_ANNOTATIONS:
        worker["metadata"]["annotations"].pop(key)
    engine["ports"] = [_dist_port()]
    leader["spec"]["containers"][0]["ports"].append(_dist_port())
    # One revision for the group: a change to either template rolls both.
    rev = digest([leader, worker])
    for t in (leader, worker):
        t["metadata"]["labels"][REVISION_LABEL] = rev
    spec: dict[str, Any] = {
        # LeaderCreated, not LeaderReady: the leader is ready only once its workers have joined.
        "startupPolicy": "LeaderCreated",
        "rolloutStrategy": {
            "type": "RollingUpdate",
            "rollingUpdateConfiguration": {
                "maxSurge": s.max_surge,
                "maxUnavailable": s.max_unavailable,
            },
        },
        "leaderWorkerTemplate": {
            "size": s.nodes,
            # A lost rank breaks the group's torch.distributed world: every pod starts over.
            "restartPolicy": "RecreateGroupOnPodRestart",
            "leaderTemplate": leader,
            "workerTemplate": worker,
        },
    }
    if replicas is not None:
        spec["replicas"] = replicas
    return {
        "apiVersion": API_VERSION,
        "kind": "LeaderWorkerSet",
        "metadata": metadata(s, lws_name(s)),
        "spec": spec,
    }


def lws_name(s: Spec) -> str:
    return f"{s.name}-lws"


def _role(s: Spec, base: dict[str, Any], role: str, node_rank: str) -> dict[str, Any]:
    t = copy.deepcopy(base)
    t["metadata"]["labels"][ROLE_LABEL] = role
    engine = t["spec"]["containers"][0]
    engine["args"] = [
        *engine["args"],
        "--nnodes",
        str(s.nodes),
        "--node-rank",
        node_rank,
        "--master-addr",
        "$(LWS_LEADER_ADDRESS)",
        "--master-port",
        str(MASTER_PORT),
    ]
    return t


def _dist_port() -> dict[str, Any]:
    return {"name": "dist", "containerPort": MASTER_PORT, "protocol": "TCP"}
