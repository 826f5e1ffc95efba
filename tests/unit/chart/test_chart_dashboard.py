"""The Grafana dashboard against Grafana's dashboard JSON model (schemaVersion 39, the classic
model Grafana 10 and 11 save and import): type-checked against Grafana's own generated types
(@grafana/schema, with TypeScript), checked for what those types leave open (grid, ids,
variables, queries), and against the panels the issue asks for."""

from __future__ import annotations

import itertools
import json
import re
import subprocess

import pytest
from chart_render import DASHBOARD, type_check

PANEL_TYPES = {"row", "timeseries", "stat", "gauge", "bargauge", "table", "heatmap", "text"}
UNITS = {"reqps", "short", "s", "percentunit", "ops"}
BUILTIN_VARS = {"__rate_interval", "__interval", "__range"}


@pytest.fixture(scope="module")
def dash():
    return json.loads(DASHBOARD.read_text())


def panels(dash):
    return [p for p in dash["panels"] if p["type"] != "row"]


def exprs(dash):
    return [t["expr"] for p in panels(dash) for t in p["targets"]]


def grafana_check(dash: dict, tmp_path) -> subprocess.CompletedProcess:
    return type_check(
        tmp_path,
        'import type { Dashboard } from "@grafana/schema";',
        {"dashboard": ("Dashboard", dash)},
    )


def test_dashboard_type_checks_against_grafanas_schema(dash, tmp_path):
    out = grafana_check(dash, tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr


def test_type_check_catches_a_mistyped_field(dash, tmp_path):
    broken = json.loads(json.dumps(dash))
    broken["panels"][1]["gridPos"]["w"] = "8"
    broken["panels"][2]["fieldconfig"] = {}
    out = grafana_check(broken, tmp_path)
    assert out.returncode != 0
    assert (
        "not assignable to type 'number'" in out.stdout
        and "'\"fieldconfig\"' does not exist" in out.stdout
    )


def test_dashboard_top_level(dash):
    assert isinstance(dash["schemaVersion"], int) and 36 <= dash["schemaVersion"] <= 41
    assert re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", dash["uid"])
    assert dash["title"] and dash["time"] == {"from": "now-1h", "to": "now"}
    assert (
        "id" not in dash or dash["id"] is None
    )  # an id pins the dashboard to one Grafana instance
    assert isinstance(dash["templating"]["list"], list) and isinstance(
        dash["annotations"]["list"], list
    )


def test_panels_have_ids_types_and_a_tidy_grid(dash):
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids)
    boxes = []
    for p in dash["panels"]:
        assert p["type"] in PANEL_TYPES, p["type"]
        g = p["gridPos"]
        assert set(g) == {"h", "w", "x", "y"} and all(
            isinstance(v, int) and v >= 0 for v in g.values()
        )
        assert g["w"] > 0 and g["h"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        if p["type"] == "row":
            assert g["w"] == 24 and g["h"] == 1 and p["panels"] == []
        boxes.append((p["title"], g))
    for (a, ga), (b, gb) in itertools.combinations(boxes, 2):
        apart = (
            ga["x"] + ga["w"] <= gb["x"]
            or gb["x"] + gb["w"] <= ga["x"]
            or ga["y"] + ga["h"] <= gb["y"]
            or gb["y"] + gb["h"] <= ga["y"]
        )
        assert apart, f"panels {a!r} and {b!r} overlap"


def test_panels_query_prometheus_through_the_datasource_variable(dash):
    ds = {"type": "prometheus", "uid": "${datasource}"}
    for p in panels(dash):
        assert p["datasource"] == ds and p["title"] and p["description"]
        assert p["fieldConfig"]["defaults"]["unit"] in UNITS
        assert p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs))
        for t in p["targets"]:
            assert t["datasource"] == ds and t["expr"].strip() and t["legendFormat"]


def test_template_variables_are_defined_and_used(dash):
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource"
        and variables["datasource"]["query"] == "prometheus"
    )
    text = json.dumps([exprs(dash)] + [v.get("query") for v in variables.values()])
    used = set(re.findall(r"\$\{?(\w+)", text))
    assert used - BUILTIN_VARS <= set(variables), used - BUILTIN_VARS - set(variables)
    for name, v in variables.items():
        if v["type"] == "query":
            assert v["datasource"]["uid"] == "${datasource}"
            assert (
                v["includeAll"] and v["allValue"] == ".*"
            )  # "All" must match series without the label
        assert name == "datasource" or f"${name}" in json.dumps(exprs(dash)), (
            f"${name} is never used"
        )


def _has(dash, pattern: str) -> bool:
    return any(re.search(pattern, e) for e in exprs(dash))


@pytest.mark.parametrize(
    "what,patterns",
    {
        "requests by finish reason": [r"by \(finished_reason\) \(rate\(vllm:request_success_total"],
        "TTFT p50/p95/p99": [
            rf"histogram_quantile\({q},.*vllm:time_to_first_token_seconds_bucket"
            for q in (0.5, 0.95, 0.99)
        ],
        "ITL p50/p95/p99": [
            rf"histogram_quantile\({q},.*vllm:inter_token_latency_seconds_bucket"
            for q in (0.5, 0.95, 0.99)
        ],
        "end-to-end latency": [
            r"histogram_quantile\(0.95,.*vllm:e2e_request_latency_seconds_bucket"
        ],
        "prompt and generation tokens/s": [
            r"rate\(vllm:prompt_tokens_total",
            r"rate\(vllm:generation_tokens_total",
        ],
        "running and waiting requests": [
            r"vllm:num_requests_running\{",
            r"vllm:num_requests_waiting\{",
        ],
        "KV cache usage": [r"vllm:kv_cache_usage_perc"],
        "prefix-cache hit rate": [
            r"vllm:prefix_cache_hits_total.*/.*vllm:prefix_cache_queries_total"
        ],
        "preemptions": [r"rate\(vllm:num_preemptions_total"],
        "desired vs ready replicas per InferenceService": [
            r"by \(namespace, name\) \(pagoda_operator_desired_replicas",
            r"by \(namespace, name\) \(pagoda_operator_ready_replicas",
        ],
        "scaling decisions": [
            r"by \(namespace, name, direction\) \(increase\(pagoda_operator_scaling_decisions_total"
        ],
    }.items(),
)
def test_dashboard_has_the_expected_panels(dash, what, patterns):
    for pattern in patterns:
        assert _has(dash, pattern), f"no panel for {what}: {pattern}"
