"""The chart's gateway: off by default; on, a Deployment of 2 replicas, its Service, PDB,
Ingress and RBAC holding exactly the gateway's calls, with selectors apart from the operator's."""

from __future__ import annotations

import kubernetes_validate
import pytest
from chart_render import CHART, K8S_MINOR, by_kind, render, run_helm

ON = ["--set", "gateway.enabled=true"]
SCOPES = {"cluster": [], "namespaces": ["--set", "watch.scope=namespaces"]}


def gateway_objects(objs: list[dict]) -> list[dict]:
    return [
        o
        for o in objs
        if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "gateway"
    ]


def test_off_by_default(helm):
    assert gateway_objects(render(helm)) == []


@pytest.mark.parametrize("extra", SCOPES.values(), ids=SCOPES.keys())
def test_everything_validates_against_kubernetes_schemas_and_lints(helm, extra):
    every = [
        "--set",
        "gateway.ingress.enabled=true,gateway.ingress.host=h,gateway.ingress.tls.secretName=s",
    ]
    objs = gateway_objects(render(helm, *ON, *every, *extra))
    assert {o["kind"] for o in objs} >= {"Deployment", "Service", "Ingress", "PodDisruptionBudget"}
    for o in objs:
        kubernetes_validate.validate(o, K8S_MINOR, strict=True)
    out = run_helm(helm, "lint", "--strict", str(CHART), *ON, *every, *extra)
    assert out.returncode == 0, out.stdout + out.stderr


def test_deployment_service_and_pdb(helm):
    objs = render(helm, *ON, "--set", "gateway.queueSize=7")
    (deploy,) = [
        d for d in by_kind(objs, "Deployment") if d["metadata"]["name"].endswith("-gateway")
    ]
    assert deploy["spec"]["replicas"] == 2
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:2] == ["gateway", "--all-namespaces"]
    assert "--queue-size=7" in container["args"] and "--max-body-bytes=8388608" in container["args"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    (operator,) = [d for d in by_kind(objs, "Deployment") if d is not deploy]
    op_selector = operator["spec"]["selector"]["matchLabels"].items()
    gw_labels = deploy["spec"]["template"]["metadata"]["labels"].items()
    assert not op_selector <= gw_labels  # the operator's Deployment never selects gateway pods
    (svc,) = [s for s in by_kind(objs, "Service") if s["metadata"]["name"].endswith("-gateway")]
    assert svc["spec"]["selector"] == deploy["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["ports"][0]["targetPort"] == "http"
    (pdb,) = [p for p in by_kind(objs, "PodDisruptionBudget") if p in gateway_objects(objs)]
    assert pdb["spec"]["maxUnavailable"] == 1
    assert by_kind(gateway_objects(objs), "Ingress") == []


def test_ingress(helm):
    objs = render(
        helm,
        *ON,
        "--set",
        "gateway.ingress.enabled=true,gateway.ingress.className=traefik",
        "--set",
        "gateway.ingress.host=llm.example.com,gateway.ingress.tls.secretName=llm-tls",
    )
    (ing,) = by_kind(gateway_objects(objs), "Ingress")
    assert ing["spec"]["ingressClassName"] == "traefik"
    assert ing["spec"]["tls"] == [{"secretName": "llm-tls", "hosts": ["llm.example.com"]}]
    backend = ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"].endswith("-gateway") and backend["port"] == {"name": "http"}


@pytest.mark.parametrize("extra", SCOPES.values(), ids=SCOPES.keys())
def test_rbac_is_exactly_the_gateways_calls(helm, extra):
    objs = gateway_objects(render(helm, *ON, *extra))
    roles = by_kind(objs, "Role") or by_kind(objs, "ClusterRole")
    assert roles
    for role in roles:
        granted = {
            (g, r): set(rule["verbs"])
            for rule in role["rules"]
            for g in rule["apiGroups"]
            for r in rule["resources"]
        }
        assert granted == {
            ("pagoda.dev", "inferenceservices"): {"list", "watch", "patch"},
            ("discovery.k8s.io", "endpointslices"): {"list", "watch"},
        }
    (sa,) = by_kind(objs, "ServiceAccount")
    bindings = by_kind(objs, "RoleBinding") or by_kind(objs, "ClusterRoleBinding")
    assert bindings and all(b["subjects"][0]["name"] == sa["metadata"]["name"] for b in bindings)
    (deploy,) = by_kind(objs, "Deployment")
    assert deploy["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]


def test_values_schema_refuses_a_bad_gateway_value(helm):
    out = run_helm(helm, "template", "p", str(CHART), "--set", "gateway.queueSize=0")
    assert out.returncode != 0 and "queueSize" in out.stderr
