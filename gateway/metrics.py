"""The gateway's own Prometheus metrics (its /metrics); pod is the engine pod's name."""

from __future__ import annotations

import functools
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

requests = Counter(
    "pagoda_gateway_requests_total",
    "Requests answered, by model, engine pod ('' when none was reached) and HTTP status",
    ["model", "pod", "code"],
)
routing_decisions = Counter(
    "pagoda_gateway_routing_decisions_total",
    "Pod choices by policy and decision (prefix: affinity = the key's own pod, spill = the next "
    "one, its own over the load bound)",
    ["model", "policy", "decision"],
)
retries = Counter(
    "pagoda_gateway_retries_total",
    "Requests sent again to another pod after the first failed before its first byte",
    ["model"],
)
queue_seconds = Histogram(
    "pagoda_gateway_queue_seconds",
    "Time a request was held waiting for a ready pod (those that waited at all)",
    ["model"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300),
)
queue_depth = Gauge(
    "pagoda_gateway_queue_depth", "Requests held now, waiting for a ready pod", ["model"]
)
in_flight = Gauge("pagoda_gateway_in_flight_requests", "Requests being forwarded now", ["model"])
wakeups = Counter(
    "pagoda_gateway_wakeups_total",
    "Replicas asked for because a request came for a model scaled to zero",
    ["model"],
)
upstream_header_seconds = Histogram(
    "pagoda_gateway_upstream_header_seconds",
    "Time from forwarding a request to the engine's response headers",
    ["model"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
broken_streams = Counter(
    "pagoda_gateway_broken_streams_total",
    "Answers broken off after the engine's first byte because its connection failed (a pod "
    "died): a stream is cut, a whole answer becomes a 502",
)


@functools.lru_cache(maxsize=4096)
def child(metric: MetricWrapperBase, *values: str) -> Any:
    """`metric.labels(*values)`, remembered: labels() checks and locks on every call, ~4% of the
    CPU a request costs the gateway (py-spy, benchmarks/gateway_overhead.py)."""
    return metric.labels(*values)
