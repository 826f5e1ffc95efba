"""values.schema.json makes helm refuse wrong values with a message naming the field."""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml
from chart_render import CHART, VALUES_EXAMPLES, VERSIONS, run_helm

BAD = {
    "unknown top-level key": (["--set", "replicas=2"], "replicas"),
    "no replicas": (["--set", "replicaCount=0"], "replicaCount"),
    "scope not an enum value": (["--set", "watch.scope=everything"], "scope"),
    "namespaces with cluster scope": (["--set", "watch.namespaces={team-a}"], "namespaces"),
    "namespace not a DNS label": (
        ["--set", "watch.scope=namespaces", "--set", "watch.namespaces={Team_A}"],
        "namespaces",
    ),
    "port out of range": (["--set", "ports.metrics=70000"], "metrics"),
    "port of the wrong type": (["--set-string", "ports.health=healthz"], "health"),
    "pull policy": (["--set", "image.pullPolicy=Sometimes"], "pullPolicy"),
    "empty repository": (["--set", "image.repository="], "repository"),
    "threshold above 1": (
        ["--set", "monitoring.prometheusRule.rules.kvCacheSaturated.threshold=1.5"],
        "threshold",
    ),
    "duration without unit": (["--set", "monitoring.prometheusRule.rules.engineDown.for=5"], "for"),
    "interval in words": (
        ["--set", "monitoring.serviceMonitor.interval=half a minute"],
        "interval",
    ),
    "unknown nested key": (["--set", "monitoring.grafanaDashboard.folder=Pagoda"], "folder"),
    "dashboard label not a string": (
        ["--set", "monitoring.grafanaDashboard.labels.grafana_dashboard=1"],
        "grafana_dashboard",
    ),
}


@pytest.mark.parametrize("args,field", BAD.values(), ids=BAD.keys())
def test_helm_rejects_bad_value(helm, args, field):
    out = run_helm(
        helm, "template", "pagoda", str(CHART), "--kube-version", VERSIONS["K8S_VERSION"], *args
    )
    assert out.returncode != 0, f"helm accepted {args}"
    assert "values don't meet the specifications of the schema" in out.stderr, out.stderr
    assert field in out.stderr, out.stderr


def test_values_and_examples_meet_the_schema():
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    validator.validate(defaults)
    for path in VALUES_EXAMPLES:
        merged = _merge(defaults, yaml.safe_load(path.read_text()))
        validator.validate(merged)


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out
