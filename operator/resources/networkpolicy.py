"""The NetworkPolicy (spec.networkPolicy.enabled): engine pods take traffic on their port only
from the operator (it scrapes /metrics) and the peers the spec names (the ingress controller,
the gateway, Prometheus), and, for a multi-node engine, on every port from the pods of their own
group (torch.distributed and the engine core's sockets pick ports beyond the engine's);
everything else is dropped where the CNI enforces NetworkPolicies."""

from __future__ import annotations

from typing import Any

from pagoda.operator.resources import metadata
from pagoda.operator.spec import ENGINE_PORT, Spec

OPERATOR_POD_LABELS = {"app.kubernetes.io/name": "pagoda-operator"}  # the chart's selector label


def networkpolicy(s: Spec, operator_namespace: str | None) -> dict[str, Any] | None:
    if not s.network_policy.get("enabled"):
        return None
    namespaces = (
        {"matchLabels": {"kubernetes.io/metadata.name": operator_namespace}}
        if operator_namespace
        else {}
    )
    operator = {
        "namespaceSelector": namespaces,
        "podSelector": {"matchLabels": OPERATOR_POD_LABELS},
    }
    rules: list[dict[str, Any]] = [
        {
            "from": [operator, *s.network_policy.get("allowFrom", [])],
            "ports": [{"protocol": "TCP", "port": ENGINE_PORT}],
        }
    ]
    if s.nodes > 1:
        rules.append({"from": [{"podSelector": {"matchLabels": s.selector}}]})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(s),
        "spec": {
            "podSelector": {"matchLabels": s.selector},
            "policyTypes": ["Ingress"],
            "ingress": rules,
        },
    }
