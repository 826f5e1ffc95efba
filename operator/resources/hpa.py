"""The HorizontalPodAutoscaler for `autoscaling.mode: HPA`, on per-pod custom metrics.

The metric names are what prometheus-adapter exposes for the engine's series with the colon
made an underscore (docs/operator.md has the adapter rules). The HPA scales the Deployment; the
operator then leaves the Deployment's replicas alone.
"""

from __future__ import annotations

from typing import Any

from pagoda.operator.resources import metadata
from pagoda.operator.spec import ScaleRule, Spec

HPA_METRICS = {
    "WaitingRequests": "vllm_num_requests_waiting",
    "InFlightRequests": "vllm_num_requests_in_flight",
    "KVCacheUsage": "vllm_kv_cache_usage_perc",
}


def hpa(s: Spec) -> dict[str, Any] | None:
    a = s.autoscaling
    if a is None or a.mode != "HPA":
        return None
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(s),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": s.name},
            "minReplicas": a.min_replicas,
            "maxReplicas": a.max_replicas,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": HPA_METRICS[a.metric]},
                        "target": {"type": "AverageValue", "averageValue": quantity(a.target)},
                    },
                }
            ],
            "behavior": {"scaleUp": _behavior(a.scale_up), "scaleDown": _behavior(a.scale_down)},
        },
    }


def _behavior(r: ScaleRule) -> dict[str, Any]:
    return {
        "stabilizationWindowSeconds": r.stabilization_window_seconds,
        "policies": [{"type": "Pods", "value": r.pods, "periodSeconds": r.period_seconds}],
    }


def quantity(x: float) -> str:
    """0.8 -> '800m', 4.0 -> '4': Kubernetes quantities to the thousandth (and never 0: targets are > 0)."""
    milli = max(1, round(x * 1000))
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"
