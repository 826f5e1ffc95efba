"""The operator's own Prometheus metrics (the Grafana dashboards read these names)."""

from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge

LABELS = ["namespace", "name"]

desired_replicas = Gauge("pagoda_operator_desired_replicas", "Replicas the operator wants", LABELS)
ready_replicas = Gauge("pagoda_operator_ready_replicas", "Ready engine pods", LABELS)
scaling_decisions = Counter(
    "pagoda_operator_scaling_decisions",
    "Replica changes made by the autoscaler",
    LABELS + ["direction"],
)
reconciles = Counter("pagoda_operator_reconcile", "Reconciliations", LABELS + ["result"])
rollbacks = Counter("pagoda_operator_rollbacks", "Automatic rollbacks", LABELS)


# Every series one InferenceService has: (metric, the label values after namespace and name).
_SERIES = (
    (desired_replicas, [()]),
    (ready_replicas, [()]),
    (rollbacks, [()]),
    (scaling_decisions, [("up",), ("down",)]),
    (reconciles, [("ok",), ("error",)]),
)


def track(namespace: str, name: str) -> None:
    """Export an InferenceService's series from its first reconcile, counters at 0, so rate() and the
    dashboard panels see them before the first scaling decision or rollback."""
    for metric, extra in _SERIES:
        for values in extra:
            metric.labels(namespace, name, *values)


def forget(namespace: str, name: str) -> None:
    """Drop a deleted InferenceService's series, so dashboards do not show it forever."""
    for metric, extra in _SERIES:
        for values in extra:
            with contextlib.suppress(KeyError):  # never recorded
                metric.remove(namespace, name, *values)
