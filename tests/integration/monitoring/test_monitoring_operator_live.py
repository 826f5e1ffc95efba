"""The chart installed by helm into a real kube-apiserver, and `pagoda operator` run with the
arguments and the ServiceAccount token the chart gives it: under the chart's RBAC it reconciles
an InferenceService and undoes a deleted child; a real Prometheus scraping its /metrics (as the
chart's ServiceMonitor does, honoring labels) has every operator series the dashboard and alerts
read, every operator panel returns data, and PagodaReplicasNotReady fires (no kubelet here, so
no engine pod ever gets ready).

The release watches only its own namespace (watch.scope=namespaces), so it leaves other tests'
InferenceServices in the shared control plane alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
import yaml
from chart_render import CHART, REPO, find_helm
from monitoring_stack import Prometheus, dashboard_queries, queried_metric_names, rule_groups
from process_harness import LoggedProcess, free_port, http_ok, wait_for

pytestmark = pytest.mark.integration

OPERATOR_QUERIES = [(t, e) for t, e in dashboard_queries() if "pagoda_operator_" in e]
CHILDREN = ["deployment", "service", "configmap", "ingress", "poddisruptionbudget"]


@pytest.fixture(scope="module")
def release(kube):
    name = f"pagoda-operator-{uuid.uuid4().hex[:6]}"  # holds the chart name: objects are named after it
    ns = name
    # The session's control plane is shared: other modules apply the CRD with kubectl, which Helm
    # will not adopt. So this release manages its CRDs as a user who applies them apart would
    # (crds.install=false); e2e installs the chart with its CRDs.
    kube.kubectl("apply", "--server-side", "-f", str(REPO / "crds" / "inferenceservice.yaml"))
    out = subprocess.run(
        [
            find_helm(),
            "install",
            name,
            str(CHART),
            "--namespace",
            ns,
            "--create-namespace",
            "--set",
            "watch.scope=namespaces",
            "--set",
            "crds.install=false",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert f"serves InferenceServices in: {ns}." in out.stdout  # NOTES.txt
    try:
        yield name, ns
    finally:
        subprocess.run(
            [find_helm(), "uninstall", name, "--namespace", ns], capture_output=True, timeout=120
        )
        kube.kubectl("delete", "namespace", ns, "--wait=false", check=False)


@pytest.fixture(scope="module")
def operator(kube, release, tmp_path_factory):
    name, ns = release
    tmp = tmp_path_factory.mktemp("operator")
    # Exactly the chart's identity: a token of its ServiceAccount, nothing of the admin's.
    token = kube.kubectl("create", "token", name, "-n", ns, "--duration=1h").stdout.strip()
    admin = yaml.safe_load(Path(kube.kubeconfig).read_text())
    cluster = admin["clusters"][0]
    (tmp / "kubeconfig").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [cluster],
                "current-context": "sa",
                "contexts": [{"name": "sa", "context": {"cluster": cluster["name"], "user": "sa"}}],
                "users": [{"name": "sa", "user": {"token": token}}],
            }
        )
    )
    deploy = json.loads(kube.kubectl("get", "deployment", name, "-n", ns, "-o", "json").stdout)
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    metrics_port, health_port = free_port(), free_port()
    ports = {"--metrics-port": metrics_port, "--liveness-port": health_port}
    args = [
        f"{a.split('=')[0]}={ports[a.split('=')[0]]}" if a.split("=")[0] in ports else a
        for a in container["args"]
    ]
    assert (
        container["command"] == ["pagoda"] and args[0] == "operator" and f"--namespace={ns}" in args
    )
    proc = LoggedProcess(
        "the operator",
        [sys.executable, "-m", "pagoda.engine.cli", *args, "--observe-interval=1"],
        tmp / "operator.log",
        env={"KUBECONFIG": str(tmp / "kubeconfig")},
    )
    try:
        wait_for(
            "the operator's /healthz",
            lambda: http_ok(f"http://127.0.0.1:{health_port}/healthz"),
            60,
            0.5,
            process=proc,
        )
        yield {"ns": ns, "metrics": f"127.0.0.1:{metrics_port}", "proc": proc}
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def isvc(kube, operator):
    ns = operator["ns"]
    kube.kubectl("apply", "-n", ns, "-f", str(REPO / "crds" / "examples" / "cpu-default.yaml"))
    name = "smollm2"
    wait_for(
        "the InferenceService reconciled",
        lambda: (
            json.loads(kube.kubectl("get", "inferenceservice", name, "-n", ns, "-o", "json").stdout)
            .get("status", {})
            .get("observedGeneration")
        ),
        60,
        0.5,
        process=operator["proc"],
    )
    return name


def test_examples_pass_the_apiserver_including_cel(kube, release):
    _, ns = release
    out = kube.kubectl(
        "apply", "--dry-run=server", "-n", ns, "-f", str(REPO / "crds" / "examples"), check=False
    )
    assert out.returncode == 0, out.stderr


def test_operator_reconciles_under_the_charts_rbac(kube, operator, isvc):
    ns = operator["ns"]
    for kind in CHILDREN:
        assert kube.kubectl(
            "get", kind, "-n", ns, "-l", f"pagoda.dev/inferenceservice={isvc}", "-o", "name"
        ).stdout, kind
    status = json.loads(
        kube.kubectl("get", "inferenceservice", isvc, "-n", ns, "-o", "json").stdout
    )["status"]
    assert status["desiredReplicas"] == 1 and status.get("readyReplicas", 0) == 0
    # A child deleted by hand comes back: the chart grants the watch that notices it.
    kube.kubectl("delete", "service", isvc, "-n", ns)
    wait_for(
        "the Service recreated",
        lambda: kube.kubectl("get", "service", isvc, "-n", ns, check=False).returncode == 0,
        60,
        0.5,
        process=operator["proc"],
    )
    text = operator["proc"].output(tail=None)
    assert "Forbidden" not in text and " 403" not in text, text[-4000:]


def test_charts_service_account_is_least_privilege(kube, release):
    name, ns = release
    sa = f"system:serviceaccount:{ns}:{name}"

    def can(*args: str) -> bool:
        return (
            kube.kubectl("auth", "can-i", *args, f"--as={sa}", check=False).stdout.strip() == "yes"
        )

    assert can("patch", "deployments", "-n", ns) and can("patch", "deployments/scale", "-n", ns)
    assert can("watch", "inferenceservices.pagoda.dev", "-n", ns)
    assert not can("get", "secrets", "-n", ns)
    assert not can("create", "pods", "-n", ns)
    assert not can("patch", "deployments", "-n", "default")  # only the namespaces it serves
    assert not can("create", "clusterroles")


@pytest.fixture(scope="module")
def prometheus(operator, isvc, tmp_path_factory):
    job = {"honor_labels": True, "static_configs": [{"targets": [operator["metrics"]]}]}
    prom = Prometheus(
        tmp_path_factory.mktemp("prometheus"),
        {"pagoda-operator": job},
        rule_groups('monitoring.prometheusRule.rules.replicasNotReady={"for": "0s"}'),
    )
    try:
        prom.wait_ready()
        prom.wait_for(
            "two scrapes of the operator",
            lambda: prom.query("count_over_time(pagoda_operator_desired_replicas[1m]) >= 2"),
        )
        yield prom
    finally:
        prom.stop()


def test_live_scrape_has_every_queried_operator_series(operator, prometheus):
    exprs = [e for _, e in OPERATOR_QUERIES] + [
        r["expr"] for g in rule_groups() for r in g["rules"]
    ]
    wanted = {n for n in queried_metric_names(exprs) if n.startswith("pagoda_operator_")}
    assert len(wanted) == 5
    text = httpx.get(f"http://{operator['metrics']}/metrics", timeout=10).text
    scraped = set(prometheus.api("label/__name__/values"))
    for name in wanted:
        assert f"\n{name}{{" in text, f"{name} is not in the operator's /metrics"
        assert name in scraped, f"{name} is not in Prometheus"


@pytest.mark.parametrize("title,expr", OPERATOR_QUERIES, ids=[t for t, _ in OPERATOR_QUERIES])
def test_operator_panel_query_returns_data(operator, isvc, prometheus, title, expr):
    result = prometheus.query(expr)
    assert result, f"{title}: no data for {expr}"
    assert {s["metric"]["namespace"] for s in result if "namespace" in s["metric"]} <= {
        operator["ns"]
    }


def test_replicas_not_ready_fires(operator, isvc, prometheus):
    firing = prometheus.wait_for(
        "PagodaReplicasNotReady firing",
        lambda: [
            a for a in prometheus.firing() if a["labels"]["alertname"] == "PagodaReplicasNotReady"
        ],
    )
    assert (
        firing[0]["labels"]["namespace"] == operator["ns"] and firing[0]["labels"]["name"] == isvc
    )
