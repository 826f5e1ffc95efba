"""The ClusterIP Service in front of the engine pods (port 80 -> the engine's 8000); of a
multi-node engine's pods, the leaders only (the workers serve no HTTP)."""

from __future__ import annotations

from typing import Any

from pagoda.operator.resources import metadata
from pagoda.operator.resources.leaderworkerset import ROLE_LABEL
from pagoda.operator.spec import Spec


def service(s: Spec) -> dict[str, Any]:
    selector = {**s.selector, ROLE_LABEL: "leader"} if s.nodes > 1 else s.selector
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(s),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [
                {
                    "name": "http",
                    "port": 80,
                    "targetPort": "http",
                    "protocol": "TCP",
                    "appProtocol": "http",
                }
            ],
        },
    }


def cluster_url(s: Spec) -> str:
    return f"http://{s.name}.{s.namespace}.svc.cluster.local"
