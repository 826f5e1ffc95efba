"""`helm lint` is clean and every rendering validates against the Kubernetes schemas."""

from __future__ import annotations

import kubernetes_validate
import pytest
from chart_render import CHART, K8S_MINOR, REPO, VALUES_EXAMPLES, render, run_helm

EXAMPLE_IDS = [p.stem for p in VALUES_EXAMPLES]
# Custom resources are not in the Kubernetes schemas: Prometheus Operator kinds are checked in
# test_chart_objects, kopf's peering objects against the CRDs the chart installs, below.
NOT_CORE = {"monitoring.coreos.com/v1", "kopf.dev/v1"}


def test_every_values_example_is_documented():
    doc = (REPO / "docs" / "chart.md").read_text()
    assert VALUES_EXAMPLES, "charts/pagoda-operator/examples/ holds the documented values examples"
    for p in VALUES_EXAMPLES:
        assert f"examples/{p.name}" in doc, f"docs/chart.md does not show {p.name}"


def test_lint_default(helm):
    out = run_helm(helm, "lint", "--strict", str(CHART))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in out.stdout


@pytest.mark.parametrize("values", VALUES_EXAMPLES, ids=EXAMPLE_IDS)
def test_lint_example(helm, values):
    out = run_helm(helm, "lint", "--strict", str(CHART), "-f", str(values))
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("values", [None, *VALUES_EXAMPLES], ids=["default", *EXAMPLE_IDS])
def test_rendering_validates_against_kubernetes_schemas(helm, values):
    objs = render(helm, *(["-f", str(values)] if values else []))
    kinds = {o["kind"] for o in objs}
    assert {"CustomResourceDefinition", "Deployment", "ServiceAccount", "ClusterRole"} <= kinds
    crds = {
        (c["spec"]["names"]["kind"], f"{c['spec']['group']}/{v['name']}"): c["spec"]["scope"]
        for c in objs
        if c["kind"] == "CustomResourceDefinition"
        for v in c["spec"]["versions"]
    }
    for o in objs:
        if o["apiVersion"] == "kopf.dev/v1":
            scope = crds[(o["kind"], o["apiVersion"])]
            assert ("namespace" in o["metadata"]) == (scope == "Namespaced"), o
        if o["apiVersion"] in NOT_CORE:
            continue
        try:
            kubernetes_validate.validate(o, K8S_MINOR, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{o['kind']}/{o['metadata']['name']}: {e}")


def test_validation_catches_a_broken_object(helm):
    """The schema check above is real: a misspelled field fails it."""
    deploy = next(o for o in render(helm) if o["kind"] == "Deployment")
    deploy["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deploy, K8S_MINOR, strict=True)
