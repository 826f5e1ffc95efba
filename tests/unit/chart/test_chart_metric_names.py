"""Every series a dashboard panel or an alert queries is one the engine or the operator exports,
with the labels the query groups and filters by.

The exposition comes from the metric definitions themselves (pagoda.engine.metrics,
pagoda.operator.metrics); tests/integration/monitoring checks the same against a live scrape.
"""

from __future__ import annotations

import json
import re

from chart_render import DASHBOARD, by_kind, render
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

# Labels Prometheus adds to every series from the scrape target (prometheus-operator adds
# namespace, pod, service, container, endpoint; `le` is a histogram's own).
TARGET_LABELS = {"job", "instance", "namespace", "pod", "service", "container", "endpoint", "le"}
METRIC = re.compile(r"\b(vllm:[a-zA-Z0-9_:]+|pagoda_(?:operator|gateway)_[a-zA-Z0-9_]+|up)\b")
GROUPING = re.compile(r"\b(?:by|on|without|ignoring)\s*\(([^)]*)\)")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*\"")


def exported_series() -> dict[str, set[str]]:
    """Sample name -> label names, from one engine and one InferenceService's worth of metrics."""
    from pagoda.engine.metrics import EngineMetrics
    from pagoda.gateway import metrics as gw
    from pagoda.operator import metrics as op

    EngineMetrics("smollm2", max_model_len=2048)
    # A labelled family shows in the exposition once it has a child.
    for family in (gw.routing_decisions, gw.requests):
        family.labels("m", "x", "y")
    for family in (gw.retries, gw.queue_seconds, gw.queue_depth, gw.in_flight, gw.wakeups):
        family.labels("m")
    gw.upstream_header_seconds.labels("m")
    op.track("ns", "isvc")
    try:
        text = generate_latest(REGISTRY).decode()
    finally:
        op.forget("ns", "isvc")  # the registry is process-wide: leave no series to other tests
    series: dict[str, set[str]] = {"up": set()}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            series.setdefault(s.name, set()).update(s.labels)
    return series


def queries(helm) -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["query"]["query"] for v in dash["templating"]["list"] if v["type"] == "query"]
    (rule,) = by_kind(
        render(helm, "--set", "monitoring.prometheusRule.enabled=true", crds=False),
        "PrometheusRule",
    )
    return exprs + [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]


def test_every_queried_series_is_exported(helm):
    series = exported_series()
    exprs = queries(helm)
    assert len(exprs) > 30
    used = set()
    for expr in exprs:
        names = set(METRIC.findall(expr))
        assert names, f"no Pagoda series in {expr!r}"
        missing = names - set(series)
        assert not missing, f"{expr!r} queries {missing}, which nothing exports"
        used |= names
        labels = set().union(*(series[n] for n in names)) | TARGET_LABELS
        for group in GROUPING.findall(expr):
            for label in filter(None, (x.strip() for x in group.split(","))):
                assert label in labels, f"{expr!r} groups by {label!r}, not a label of {names}"
        for label in MATCHER.findall(expr):
            assert label in labels, f"{expr!r} filters on {label!r}, not a label of {names}"
    # The dashboard and alerts between them read every engine and operator family.
    families = {
        re.sub(r"_(bucket|count|sum|created)$", "", n)
        for n in series
        if n.startswith(("vllm:", "pagoda_operator_", "pagoda_gateway_"))
        and not n.endswith("_created")
    }
    read = {re.sub(r"_bucket$", "", n) for n in used}
    assert families - read == set(), f"exported but never shown: {families - read}"
