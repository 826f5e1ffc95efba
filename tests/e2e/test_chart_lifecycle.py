"""`helm upgrade` across a change of the InferenceService schema on a real cluster (issue 21, chart
lifecycle). The chart renders its CRD as a template (templates/crds.yaml), so an upgrade applies
the new schema where Helm's crds/ folder would keep the old one; `helm uninstall` leaves the CRD
and every InferenceService (helm.sh/resource-policy: keep).

The "older" chart is a copy of this one whose CRD lacks `spec.networkPolicy`, at another chart
version (the operator's pod template carries it in `helm.sh/chart`, so the upgrade rolls the pod
as a release upgrade does). With that chart installed and an engine serving through the Ingress,
the upgrade must: serve the new field, keep the stored object as it was, replace the operator's
pod with one that reconciles the object's use of the new field (a NetworkPolicy child), and never
interrupt the engine, which also keeps answering with the release uninstalled. A reinstall takes
the kept CRD and object over (its operator lets the object go). The cluster is left as the other
modules expect it: no release, this chart's CRD."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from e2e_cluster import CHART, OPERATOR_NS, Cluster
from ingress_load import IngressLoad, answered

pytestmark = pytest.mark.e2e

CRD = "inferenceservices.pagoda.dev"
NAME, HOST, SERVED = "kept", "lifecycle.e2e.test", "smollm2"
SELECTOR = f"pagoda.dev/inferenceservice={NAME}"
OLDER_VERSION = "0.0.1"
# Every pod may reach the engine: where the CNI enforces NetworkPolicies (kind's kindnet does),
# the ingress controller's pods must still get through.
NETWORK_POLICY = {"enabled": True, "allowFrom": [{"namespaceSelector": {}}]}


def older_chart(tmp: Path) -> Path:
    """This chart at version OLDER_VERSION, its CRD without the optional field `spec.networkPolicy`."""
    chart = tmp / "pagoda-operator"
    shutil.copytree(CHART, chart)  # links followed: the copy holds the CRD file itself
    meta = chart / "Chart.yaml"
    meta.write_text(re.sub(r"(?m)^version: .*$", f"version: {OLDER_VERSION}", meta.read_text()))
    path = chart / "files" / "inferenceservice.yaml"
    crd = yaml.safe_load(path.read_text())
    (version,) = crd["spec"]["versions"]
    del version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["networkPolicy"]
    path.write_text(yaml.safe_dump(crd, sort_keys=False))
    return chart


def isvc(cluster: Cluster, ns: str, **spec: object) -> dict:
    return cluster.default_model_isvc(
        ns,
        NAME,
        SERVED,
        # a 256 MiB KV pool: the CPU default (2 GiB), once filled, would not fit the limit
        engine={"maxModelLen": 2048, "args": ["--kv-cache-memory-bytes", str(256 * 2**20)]},
        resources={"memory": "3Gi"},
        replicas=1,
        lifecycle={"startupTimeoutSeconds": 600, "drainSeconds": 5},
        exposure={"ingress": {"host": HOST}},
        **spec,
    )


def apply_strict(cluster: Cluster, body: dict) -> subprocess.CompletedProcess:
    # Strict field validation: a field the served schema lacks is an error, not pruned.
    return cluster.kubectl(
        "apply", "--validate=strict", "-f", "-", input=json.dumps(body), check=False
    )


def schema_fields(cluster: Cluster) -> set[str]:
    (version,) = cluster.get("crd", CRD)["spec"]["versions"]
    return set(version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"])


def operator_pods(cluster: Cluster) -> dict[str, str]:
    """The operator's pods that are not going away: name -> their `helm.sh/chart` label."""
    pods = cluster.get("pods", "-n", OPERATOR_NS, "-l", "app.kubernetes.io/name=pagoda-operator")
    return {
        p["metadata"]["name"]: p["metadata"]["labels"]["helm.sh/chart"]
        for p in (pods or {}).get("items", [])
        if "deletionTimestamp" not in p["metadata"]
    }


@pytest.fixture
def release(cluster: Cluster, ns: str):
    """Whatever the test leaves: this chart installed again (its operator lets the test's
    InferenceServices go, finalizers and all), then uninstalled."""
    yield
    cluster.install_operator()
    cluster.kubectl(
        "delete", "pisvc", "--all", "-n", ns, "--wait=true", "--timeout=180s", check=False
    )
    cluster.uninstall_operator()


def test_helm_upgrade_carries_a_crd_schema_change_under_a_serving_engine(
    cluster: Cluster, ns: str, release, tmp_path
):
    cluster.install_operator(older_chart(tmp_path))
    fields = schema_fields(cluster)
    assert "networkPolicy" not in fields and "rollout" in fields, sorted(fields)
    older_pods = operator_pods(cluster)
    assert set(older_pods.values()) == {f"pagoda-operator-{OLDER_VERSION}"}, older_pods

    out = apply_strict(cluster, isvc(cluster, ns))
    assert out.returncode == 0, out.stderr
    refused = apply_strict(cluster, isvc(cluster, ns, networkPolicy=NETWORK_POLICY))
    assert refused.returncode != 0, "the older schema took spec.networkPolicy"
    assert 'unknown field "spec.networkPolicy"' in refused.stderr, refused.stderr
    try:
        serving = cluster.wait(
            lambda: (pods := cluster.pods_ready(ns, SELECTOR)) and all(pods.values()) and pods,
            timeout=900,
            what="the engine pod to be Ready",
        )
        cluster.wait(
            lambda: answered(cluster.ingress_url, HOST, SERVED),
            timeout=60,
            what="an answer through the Ingress",
        )
    except AssertionError:
        print(cluster.describe(ns))
        raise
    stored = cluster.get("pisvc", NAME, "-n", ns)
    load = IngressLoad(cluster.ingress_url, HOST, SERVED, clients=1, max_tokens=4)
    try:
        # --- the upgrade: this chart -------------------------------------------------------
        cluster.install_operator()
        assert "networkPolicy" in schema_fields(cluster)
        new_pods = cluster.wait(
            lambda: (pods := operator_pods(cluster)) and not set(pods) & set(older_pods) and pods,
            timeout=120,
            what="the older operator pod to be replaced",
        )
        assert set(new_pods.values()) != {f"pagoda-operator-{OLDER_VERSION}"}, new_pods
        assert cluster.get("pisvc", NAME, "-n", ns)["spec"] == stored["spec"], "changed by it"
        # The apiserver serves a changed schema a moment after the CRD is written.
        with_policy = isvc(cluster, ns, networkPolicy=NETWORK_POLICY)
        cluster.wait(
            lambda: apply_strict(cluster, with_policy).returncode == 0,
            timeout=30,
            what="spec.networkPolicy to be accepted",
        )
        obj = cluster.get("pisvc", NAME, "-n", ns)
        assert obj["spec"]["networkPolicy"] == NETWORK_POLICY

        def reconciled() -> dict | None:
            now = cluster.get("pisvc", NAME, "-n", ns)
            policy = cluster.get("networkpolicy", NAME, "-n", ns)
            done = (now.get("status") or {}).get("observedGeneration") == now["metadata"][
                "generation"
            ]
            return policy if policy and done else None

        policy = cluster.wait(
            reconciled, timeout=120, what="the new operator to render the NetworkPolicy"
        )
        (owner,) = policy["metadata"]["ownerReferences"]
        assert owner["uid"] == obj["metadata"]["uid"], owner
        assert cluster.pods_ready(ns, SELECTOR) == serving, (
            "the engine pod was replaced or is not Ready"
        )

        # --- uninstalled: the CRD and the object stay, the engine serves on ------------------
        cluster.uninstall_operator()
        assert "networkPolicy" in schema_fields(cluster), "the CRD stays, as upgraded"
        kept = cluster.get("pisvc", NAME, "-n", ns)
        assert kept["spec"]["networkPolicy"] == NETWORK_POLICY
        left = cluster.get("deployments", "-n", OPERATOR_NS)["items"]
        assert not left, f"the release's Deployments are still there: {left}"
        so_far = load.ok
        cluster.wait(
            lambda: load.ok >= so_far + 3,
            timeout=60,
            what="answers through the Ingress without an operator",
        )
    finally:
        load.stop()
    assert not load.errors, f"the engine stopped answering ({load.ok} answers): {load.errors}"

    # --- reinstalled: it takes the kept CRD and object over --------------------------------
    cluster.install_operator()
    cluster.kubectl("delete", "pisvc", NAME, "-n", ns, "--wait=true", "--timeout=180s")
    cluster.wait(
        lambda: not cluster.get("deployment", NAME, "-n", ns),
        timeout=120,
        what="the engine's Deployment to go with the InferenceService",
    )
