"""What the rendered chart holds: a locked-down operator pod, least-privilege RBAC in either
scope, and the monitoring objects only when asked for."""

from __future__ import annotations

import json

import pytest
import yaml
from chart_render import CHART, CRD, DASHBOARD, NAMESPACE, REPO, by_kind, render

WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}
ALERTS = {
    "PagodaEngineDown",
    "PagodaKVCacheSaturated",
    "PagodaTTFTHigh",
    "PagodaPreemptionsHigh",
    "PagodaReplicasNotReady",
}


def operator_container(objs):
    (deploy,) = by_kind(objs, "Deployment")
    (c,) = deploy["spec"]["template"]["spec"]["containers"]
    return deploy, c


def arg(c, name):
    values = [a.split("=", 1)[1] for a in c["args"] if a.startswith(f"--{name}=")]
    return values


def test_operator_pod_is_locked_down_and_probed(helm):
    deploy, c = operator_container(render(helm))
    pod = deploy["spec"]["template"]["spec"]
    assert deploy["spec"]["replicas"] == 1
    assert deploy["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
    assert c["resources"]["limits"]["memory"]
    assert c["command"] == ["pagoda"] and c["args"][0] == "operator"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert arg(c, "liveness-port") == [str(ports["health"])]
    assert arg(c, "metrics-port") == [str(ports["metrics"])]
    for probe in (c["livenessProbe"], c["readinessProbe"]):
        assert probe["httpGet"] == {"path": "/healthz", "port": "health"}
    assert arg(c, "engine-image") == ["pagoda-engine:0.1.0-cuda"]  # the chart's appVersion
    assert arg(c, "engine-cpu-image") == ["pagoda-engine:0.1.0"]
    assert c["image"] == "pagoda-operator:0.1.0"


def test_default_images_are_the_ones_images_build_tags():
    """The chart names what images/build.sh builds (e2e loads those into the node, no registry)."""
    script = (REPO / "images" / "build.sh").read_text()
    for image in ("pagoda-engine:$TAG-cuda", "pagoda-engine:$TAG", "pagoda-operator:$TAG"):
        assert f"img={image} " in script, f"images/build.sh no longer tags {image}"


@pytest.mark.parametrize(
    "extra,kind,namespaces",
    [
        ([], "ClusterKopfPeering", [None]),
        (
            ["--set", "watch.scope=namespaces", "--set", "watch.namespaces={team-a,team-b}"],
            "KopfPeering",
            ["team-a", "team-b"],
        ),
    ],
    ids=["cluster", "namespaces"],
)
def test_replicas_meet_in_the_peering_object(helm, extra, kind, namespaces):
    objs = render(helm, *extra)
    _, c = operator_container(objs)
    peerings = by_kind(objs, kind)
    assert [p["metadata"].get("namespace") for p in peerings] == namespaces
    assert {p["metadata"]["name"] for p in peerings} == set(arg(c, "peering-name"))
    assert any(
        o["kind"] == "CustomResourceDefinition" and o["spec"]["names"]["kind"] == kind for o in objs
    )
    plural = kind.lower() + "s"
    for role in by_kind(objs, "ClusterRole") + by_kind(objs, "Role"):
        granted = _rules_grant(role["rules"], "kopf.dev", plural, ["list", "watch", "patch"])
        assert granted == (role["kind"] == ("ClusterRole" if namespaces == [None] else "Role")), (
            role
        )


def test_standby_replicas_get_a_disruption_budget(helm):
    assert not by_kind(render(helm), "PodDisruptionBudget")
    objs = render(helm, "--set", "replicaCount=2")
    deploy, _ = operator_container(objs)
    (pdb,) = by_kind(objs, "PodDisruptionBudget")
    assert deploy["spec"]["replicas"] == 2 and pdb["spec"]["maxUnavailable"] == 1
    assert (
        pdb["spec"]["selector"]["matchLabels"].items()
        <= deploy["spec"]["template"]["metadata"]["labels"].items()
    )


def test_metrics_service_selects_the_operator_pod(helm):
    objs = render(helm)
    deploy, c = operator_container(objs)
    (svc,) = by_kind(objs, "Service")
    pod_labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert deploy["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert svc["spec"]["ports"][0]["targetPort"] in {p["name"] for p in c["ports"]}


def _rules_grant(rules, group, resource, verbs):
    return any(
        group in r["apiGroups"] and resource in r["resources"] and set(verbs) <= set(r["verbs"])
        for r in rules
    )


def test_cluster_scope_rbac(helm):
    objs = render(helm)
    _, c = operator_container(objs)
    assert "--all-namespaces" in c["args"] and not arg(c, "namespace")
    assert not by_kind(objs, "Role") and not by_kind(objs, "RoleBinding")
    (role,) = by_kind(objs, "ClusterRole")
    (binding,) = by_kind(objs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    (sa,) = by_kind(objs, "ServiceAccount")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": NAMESPACE}
    ]
    rules = role["rules"]
    assert _rules_grant(rules, "pagoda.dev", "inferenceservices", ["get", "list", "watch", "patch"])
    assert _rules_grant(rules, "pagoda.dev", "inferenceservices/status", ["patch"])
    assert _rules_grant(rules, "apps", "deployments", ["create", "patch", "delete"])
    assert _rules_grant(
        rules, "apiextensions.k8s.io", "customresourcedefinitions", ["list", "watch"]
    )
    assert _rules_grant(rules, "apps", "deployments/scale", ["patch"])
    assert _rules_grant(
        rules,
        "leaderworkerset.x-k8s.io",
        "leaderworkersets",
        ["create", "get", "list", "patch", "delete"],
    )
    assert not _rules_grant(rules, "apiextensions.k8s.io", "customresourcedefinitions", ["create"])


@pytest.mark.parametrize(
    "extra,namespaces",
    [
        (
            ["--set", "watch.scope=namespaces", "--set", "watch.namespaces={team-a,team-b}"],
            ["team-a", "team-b"],
        ),
        (["--set", "watch.scope=namespaces"], [NAMESPACE]),
    ],
    ids=["listed", "release-namespace"],
)
def test_namespaced_scope_rbac(helm, extra, namespaces):
    objs = render(helm, *extra)
    _, c = operator_container(objs)
    assert "--all-namespaces" not in c["args"]
    assert arg(c, "namespace") == namespaces
    roles, bindings = by_kind(objs, "Role"), by_kind(objs, "RoleBinding")
    assert sorted(r["metadata"]["namespace"] for r in roles) == sorted(namespaces)
    assert sorted(b["metadata"]["namespace"] for b in bindings) == sorted(namespaces)
    for role in roles:
        assert _rules_grant(role["rules"], "pagoda.dev", "inferenceservices", ["watch", "patch"])
    # Cluster-wide it may only read CRDs and namespace names.
    (cluster_role,) = by_kind(objs, "ClusterRole")
    for rule in cluster_role["rules"]:
        assert not WRITE_VERBS & set(rule["verbs"]), rule
        assert set(rule["resources"]) <= {"customresourcedefinitions", "namespaces"}, rule
    # kopf lists namespaces to keep its list current; nothing else cluster-wide.
    assert _rules_grant(cluster_role["rules"], "", "namespaces", ["list", "watch"])


@pytest.mark.parametrize(
    "extra", [[], ["--set", "watch.scope=namespaces"]], ids=["cluster", "namespaces"]
)
def test_rbac_has_no_wildcards_or_secrets(helm, extra):
    for role in by_kind(render(helm, *extra), "ClusterRole") + by_kind(
        render(helm, *extra), "Role"
    ):
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
            assert "secrets" not in rule["resources"]


def test_monitoring_is_off_by_default(helm):
    objs = render(helm)
    assert not by_kind(objs, "ServiceMonitor") and not by_kind(objs, "PrometheusRule")
    assert not by_kind(objs, "ConfigMap")


def test_monitoring_objects(helm):
    objs = render(helm, "-f", str(CHART / "examples" / "kube-prometheus-stack.yaml"))
    (svc,) = by_kind(objs, "Service")
    (sm,) = by_kind(objs, "ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in svc["spec"]["ports"]}
    assert endpoint["honorLabels"] is True and endpoint["interval"] == "15s"

    (rule,) = by_kind(objs, "PrometheusRule")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert set(alerts) == ALERTS
    assert alerts["PagodaTTFTHigh"]["expr"].rstrip().endswith("> 1.5")
    assert alerts["PagodaTTFTHigh"]["for"] == "5m"
    assert alerts["PagodaKVCacheSaturated"]["expr"] == "vllm:kv_cache_usage_perc > 0.95"
    for a in alerts.values():
        assert a["labels"]["team"] == "ml-platform" and a["labels"]["severity"] in {
            "warning",
            "critical",
        }
        assert a["annotations"]["summary"] and a["annotations"]["description"]

    (cm,) = by_kind(objs, "ConfigMap")
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Pagoda"}
    assert json.loads(cm["data"]["pagoda.json"]) == json.loads(DASHBOARD.read_text())


def test_chart_crd_is_the_repo_crd(helm):
    """One source: the chart's CRD files are links to the repo's; the InferenceService CRD is
    rendered as a template (so `helm upgrade` applies a changed schema) and kept on uninstall.
    Kopf's peering CRD stays in the chart's crds/: the chart makes a ClusterKopfPeering, and Helm
    resolves every kind of a release before applying any, so that CRD must be installed first."""
    for entry in [*(CHART / "files").iterdir(), *(CHART / "crds").iterdir()]:
        assert entry.is_symlink() and entry.resolve() == (CRD.parent / entry.name).resolve(), entry
    assert [e.name for e in (CHART / "crds").iterdir()] == ["kopf-peering.yaml"]
    crds = {
        o["metadata"]["name"]: o
        for o in by_kind(render(helm, crds=False), "CustomResourceDefinition")
    }
    assert set(crds) == {"inferenceservices.pagoda.dev"}
    rendered = crds["inferenceservices.pagoda.dev"]
    assert rendered["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    del rendered["metadata"]["annotations"]
    assert rendered == yaml.safe_load(CRD.read_text())
    assert (
        by_kind(render(helm, "--set", "crds.install=false", crds=False), "CustomResourceDefinition")
        == []
    )
    loose = by_kind(
        render(helm, "--set", "crds.keep=false", crds=False), "CustomResourceDefinition"
    )
    assert all("annotations" not in o["metadata"] for o in loose)
