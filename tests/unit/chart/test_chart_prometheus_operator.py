"""The chart's ServiceMonitor and PrometheusRule against prometheus-operator's own models
(@kubernetes-models/prometheus-operator, generated from its CRDs): TypeScript's object-literal
check for unknown or mistyped fields, and the models' validate() for the CRD schemas' patterns."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path

import pytest
from chart_render import CHART, by_kind, node_types, render, type_check

MODELS = "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1"
IMPORTS = (
    f'import type {{ IServiceMonitor }} from "{MODELS}/ServiceMonitor";\n'
    f'import type {{ IPrometheusRule }} from "{MODELS}/PrometheusRule";'
)
VALIDATE = f"""
import {{ readFileSync }} from "node:fs";
import {{ ServiceMonitor }} from "{MODELS}/ServiceMonitor";
import {{ PrometheusRule }} from "{MODELS}/PrometheusRule";
const kinds = {{ ServiceMonitor, PrometheusRule }};
for (const o of JSON.parse(readFileSync("objects.json"))) new kinds[o.kind](o).validate();
"""


@pytest.fixture(scope="module")
def objects(helm) -> dict[str, dict]:
    objs = render(helm, "-f", str(CHART / "examples" / "kube-prometheus-stack.yaml"), crds=False)
    (sm,) = by_kind(objs, "ServiceMonitor")
    (rule,) = by_kind(objs, "PrometheusRule")
    return {"ServiceMonitor": sm, "PrometheusRule": rule}


def check_types(objects: dict[str, dict], workdir: Path) -> subprocess.CompletedProcess:
    return type_check(
        workdir,
        IMPORTS,
        {
            "sm": ("IServiceMonitor", objects["ServiceMonitor"]),
            "rule": ("IPrometheusRule", objects["PrometheusRule"]),
        },
    )


def validate(objects: dict[str, dict], workdir: Path) -> subprocess.CompletedProcess:
    (workdir / "objects.json").write_text(json.dumps(list(objects.values())))
    (workdir / "validate.mjs").write_text(VALIDATE)
    if not (workdir / "node_modules").exists():
        (workdir / "node_modules").symlink_to(node_types() / "node_modules")
    return subprocess.run(
        ["node", "validate.mjs"], cwd=workdir, capture_output=True, text=True, timeout=60
    )


def test_monitoring_objects_match_prometheus_operators_models(objects, tmp_path):
    out = check_types(objects, tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    out = validate(objects, tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr


def test_models_catch_a_misspelled_field_and_a_bad_interval(objects, tmp_path):
    broken = copy.deepcopy(objects)
    broken["ServiceMonitor"]["spec"]["endpoints"][0]["honorLabel"] = True
    out = check_types(broken, tmp_path)
    assert out.returncode != 0 and "'\"honorLabel\"' does not exist" in out.stdout, out.stdout
    broken = copy.deepcopy(objects)
    broken["ServiceMonitor"]["spec"]["endpoints"][0]["interval"] = "5 minutes"
    out = validate(broken, tmp_path)
    assert out.returncode != 0 and "interval must match pattern" in out.stderr, out.stderr
