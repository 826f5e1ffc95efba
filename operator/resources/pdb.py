"""The PodDisruptionBudget: how many engine pods a node drain may take at once."""

from __future__ import annotations

from typing import Any

from pagoda.operator.resources import metadata
from pagoda.operator.spec import Spec


def pdb(s: Spec) -> dict[str, Any] | None:
    if s.disruption is None:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(s),
        # unhealthyPodEvictionPolicy AlwaysAllow: a crash-looping pod must not block a drain.
        "spec": {
            **s.disruption,
            "selector": {"matchLabels": s.selector},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
