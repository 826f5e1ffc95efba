"""`helm upgrade` carries a change of the InferenceService schema (issue 21, chart lifecycle): the
chart renders its CRD as a template (templates/crds.yaml), so an upgrade applies the new schema
where Helm's crds/ folder would keep the old one; `helm uninstall` leaves the CRD and every
InferenceService (helm.sh/resource-policy: keep).

The "older" chart is a copy of this one whose CRD lacks `spec.networkPolicy`. It runs on a control
plane of its own: the session's shared one has the CRD from kubectl, which Helm will not adopt."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from chart_render import CHART, find_helm
from process_harness import wait_for

pytestmark = pytest.mark.integration

CRD_NAME = "inferenceservices.pagoda.dev"
RELEASE, OPERATOR_NS, NS = "pagoda", "pagoda-system", "apps"
NETWORK_POLICY = {"enabled": True, "allowFrom": [{"podSelector": {"matchLabels": {"app": "gw"}}}]}


def older_chart(tmp: Path) -> Path:
    """This chart, its CRD without the optional field `spec.networkPolicy`."""
    chart = tmp / "pagoda-operator"
    shutil.copytree(CHART, chart)  # links followed: the copy holds the CRD file itself
    path = chart / "files" / "inferenceservice.yaml"
    crd = yaml.safe_load(path.read_text())
    (version,) = crd["spec"]["versions"]
    del version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["networkPolicy"]
    path.write_text(yaml.safe_dump(crd, sort_keys=False))
    return chart


def isvc(name: str, **spec) -> str:
    return json.dumps(
        {
            "apiVersion": "pagoda.dev/v1alpha1",
            "kind": "InferenceService",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"model": {"uri": "default"}, "replicas": 1, **spec},
        }
    )


def test_helm_upgrade_carries_a_crd_schema_change(own_kube, tmp_path):
    kube = own_kube
    helm = [find_helm(), "--kubeconfig", kube.kubeconfig, "--namespace", OPERATOR_NS]

    def run_helm(*args: str) -> None:
        out = subprocess.run([*helm, *args], capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, out.stderr

    def create_strict(body: str) -> subprocess.CompletedProcess:
        # Strict field validation: a field the served schema lacks is an error, not pruned.
        return kube.kubectl("create", "--validate=strict", "-f", "-", input=body, check=False)

    def schema_fields() -> set[str]:
        crd = json.loads(kube.kubectl("get", "crd", CRD_NAME, "-o", "json").stdout)
        (version,) = crd["spec"]["versions"]
        return set(version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"])

    run_helm("install", RELEASE, str(older_chart(tmp_path)), "--create-namespace")
    assert "networkPolicy" not in schema_fields() and "rollout" in schema_fields()
    kube.kubectl("create", "namespace", NS)
    wait_for("the old object to be accepted", lambda: create_strict(isvc("old")).returncode == 0)
    refused = create_strict(isvc("early", networkPolicy=NETWORK_POLICY))
    assert refused.returncode != 0 and 'unknown field "spec.networkPolicy"' in refused.stderr

    run_helm("upgrade", RELEASE, str(CHART))
    assert "networkPolicy" in schema_fields()
    # The apiserver serves a changed schema a moment after the CRD is written.
    wait_for(
        "an object with the new field to be accepted",
        lambda: create_strict(isvc("new", networkPolicy=NETWORK_POLICY)).returncode == 0,
    )

    def spec_of(name: str) -> dict:
        out = kube.kubectl("get", "pisvc", name, "-n", NS, "-o", "json")
        return json.loads(out.stdout)["spec"]

    assert spec_of("new")["networkPolicy"] == NETWORK_POLICY
    assert spec_of("old") == {"model": {"uri": "default"}, "replicas": 1}

    run_helm("uninstall", RELEASE, "--wait")
    assert "networkPolicy" in schema_fields(), "the CRD stays, as upgraded"
    left = json.loads(kube.kubectl("get", "pisvc", "-n", NS, "-o", "json").stdout)["items"]
    assert sorted(o["metadata"]["name"] for o in left) == ["new", "old"]
    deployments = kube.kubectl("get", "deployments", "-n", OPERATOR_NS, "-o", "name").stdout
    assert not deployments.strip(), "the release itself is gone"
