"""HPA mode on a real cluster (issue 21): a real Prometheus scrapes the engine pods, found by their
`prometheus.io/*` annotations (the test writes Prometheus' target file from the pods), a real
prometheus-adapter (built from its Go module) serves the custom metrics API through the
apiserver's aggregation layer with the rules users install (deploy/prometheus-adapter/values.yaml),
and the operator renders the HPA. With requests queued through the Ingress behind
`maxNumSeqs: 1`, the adapter serves the pod's `vllm_num_requests_waiting`, the
controller-manager's HPA controller raises the Deployment's replicas, the second engine pod
becomes Ready, and Prometheus and the adapter find it too.

Prometheus and the adapter run on the node as host processes, like the cluster's other add-ons
(e2e/up.sh): the APIService is an ExternalName Service to `localhost` (the apiserver resolves a
Service itself: `--enable-aggregator-routing=false`), TLS checked against a CA made for the
adapter's serving cert (`prometheus-adapter.NS.svc`, the name the aggregator verifies). So this
test needs the apiserver on this machine (e2e/up.sh's node); elsewhere the APIService never
becomes Available and the test says so."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import kubernetes
import pytest
import yaml
from e2e_cluster import ROOT, Cluster, controlplane_module
from ingress_load import IngressLoad, answered
from monitoring_stack import Prometheus
from process_harness import LoggedProcess, free_port, wait_for

pytestmark = pytest.mark.e2e

ADAPTER_VALUES = ROOT / "deploy" / "prometheus-adapter" / "values.yaml"
API_GROUP, API_VERSION = "custom.metrics.k8s.io", "v1beta1"
APISERVICE = f"{API_VERSION}.{API_GROUP}"
METRIC = "vllm_num_requests_waiting"
NAME, HOST, SERVED = "queued", "hpa.e2e.test", "smollm2"
# 5 requests kept in flight on an engine that runs one at a time: 4 waiting against a target of
# 1 per pod, so the HPA wants 4 pods, held to maxReplicas.
IN_FLIGHT, MAX_REPLICAS = 5, 2
# The HPA controller's default --horizontal-pod-autoscaler-sync-period is 15 s.
HPA_TIMEOUT_S = 120
# A second engine loads the model on the node's CPUs (measured: see e2e/README.md).
SECOND_POD_TIMEOUT_S = 300


def isvc(cluster: Cluster, ns: str) -> dict:
    return cluster.default_model_isvc(
        ns,
        NAME,
        SERVED,
        # one sequence at a time, so that concurrent requests wait; a 256 MiB KV pool that fits
        # the memory limit even when full
        engine={
            "maxNumSeqs": 1,
            "maxModelLen": 2048,
            "args": ["--kv-cache-memory-bytes", str(256 * 2**20)],
        },
        resources={"memory": "3Gi"},
        autoscaling={
            "mode": "HPA",
            "minReplicas": 1,
            "maxReplicas": MAX_REPLICAS,
            "metric": {"type": "WaitingRequests", "target": 1},
            "scaleUp": {"stabilizationWindowSeconds": 0, "periodSeconds": 15},
            # no scale-down while the second pod starts with the load stopped
            "scaleDown": {"stabilizationWindowSeconds": 900, "periodSeconds": 60},
        },
        lifecycle={"startupTimeoutSeconds": 600, "drainSeconds": 5},
        exposure={"ingress": {"host": HOST}},
    )


def scrape_targets(cluster: Cluster, ns: str) -> list[dict]:
    """Prometheus file_sd target groups for the running pods of `ns` that ask to be scraped (the
    operator writes `prometheus.io/scrape`, `port` and `path` on the engine's pods), each
    labelled with its `namespace` and `pod`, as a ServiceMonitor labels them and the adapter's
    rules read them. (Debian's Prometheus is built without Kubernetes discovery.)"""
    groups = []
    for p in (cluster.get("pods", "-n", ns) or {}).get("items", []):
        notes, ip = p["metadata"].get("annotations") or {}, p["status"].get("podIP")
        if notes.get("prometheus.io/scrape") != "true" or p["status"].get("phase") != "Running":
            continue
        labels = {"namespace": ns, "pod": p["metadata"]["name"]}
        labels["__metrics_path__"] = notes.get("prometheus.io/path", "/metrics")
        groups.append({"targets": [f"{ip}:{notes['prometheus.io/port']}"], "labels": labels})
    return groups


class Discovery:
    """Keeps Prometheus' target file in step with the pods, every second, until stopped."""

    def __init__(self, cluster: Cluster, ns: str, path: Path) -> None:
        self.cluster, self.ns, self.path = cluster, ns, path
        self.write([])
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def write(self, groups: list[dict]) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups))
        tmp.replace(self.path)  # whole, never half-written, when Prometheus reads it

    def _loop(self) -> None:
        last: list[dict] = []
        while not self.stopped.wait(1):
            groups = scrape_targets(self.cluster, self.ns)
            if groups != last:
                self.write(groups)
                last = groups

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=30)


def adapter_rules(path: Path) -> Path:
    """The adapter's --config: the chart values' `rules.custom`, as the chart writes it."""
    path.write_text(
        yaml.safe_dump({"rules": yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"]})
    )
    return path


class MetricsStack:
    """Prometheus and prometheus-adapter on this host, the adapter registered as the custom
    metrics APIService."""

    def __init__(self, cluster: Cluster, ns: str, d: Path) -> None:
        self.cluster, self.ns = cluster, ns
        self.raw = f"/apis/{API_GROUP}/{API_VERSION}/namespaces/{ns}/pods/*/{METRIC}"
        cp = controlplane_module()
        adapter = cp.binary("prometheus-adapter")  # first: missing, it fails before any start
        (d / "prometheus").mkdir()
        targets = d / "prometheus" / "engines.json"
        self.discovery = Discovery(cluster, ns, targets)
        job = {"file_sd_configs": [{"files": [str(targets)], "refresh_interval": "1s"}]}
        self.prometheus = Prometheus(d / "prometheus", {"engines": job}, [])
        self.pki, self.port = d / "adapter-pki", free_port()
        self.pki.mkdir()
        host = f"prometheus-adapter.{ns}.svc"
        cp.make_ca(self.pki, "adapter-ca", "pagoda-e2e-adapter-ca")
        cp.make_cert(self.pki, "adapter-ca", "adapter", f"/CN={host}",
                     f"subjectAltName=DNS:{host}\nextendedKeyUsage=serverAuth")  # fmt: skip
        self.adapter = LoggedProcess(
            "prometheus-adapter",
            [
                adapter,
                "--bind-address=127.0.0.1",
                f"--secure-port={self.port}",
                f"--tls-cert-file={self.pki / 'adapter.crt'}",
                f"--tls-private-key-file={self.pki / 'adapter.key'}",
                f"--lister-kubeconfig={cluster.kubeconfig}",
                f"--authentication-kubeconfig={cluster.kubeconfig}",
                f"--authorization-kubeconfig={cluster.kubeconfig}",
                f"--prometheus-url={self.prometheus.url}",
                f"--config={adapter_rules(d / 'adapter-rules.yaml')}",
                "--metrics-relist-interval=2s",  # discovers new series in seconds, not 10 min
                "--v=2",
            ],
            d / "prometheus-adapter.log",
        )

    def register(self) -> None:
        """The adapter as the APIService, through an ExternalName Service to `localhost`; waits
        until the aggregator finds it Available."""
        ca = (self.pki / "adapter-ca.crt").read_bytes()
        svc = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "prometheus-adapter", "namespace": self.ns},
            "spec": {"type": "ExternalName", "externalName": "localhost"},
        }
        apisvc = {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": APISERVICE},
            "spec": {
                "group": API_GROUP,
                "version": API_VERSION,
                "service": {"namespace": self.ns, "name": "prometheus-adapter", "port": self.port},
                "caBundle": base64.b64encode(ca).decode(),
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
            },
        }
        self.cluster.kubectl(
            "apply", "-f", "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [svc, apisvc]}),
        )  # fmt: skip
        self.prometheus.wait_ready()
        wait_for(
            f"APIService {APISERVICE} Available (it needs the apiserver on this machine: the "
            "adapter listens on its loopback, as e2e/up.sh's node has it)",
            lambda: self._apiservice_condition() == "True",
            60,
            process=self.adapter,
            context=lambda: (
                self.cluster.kubectl(
                    "get", f"apiservice/{APISERVICE}", "-o", "yaml", check=False
                ).stdout
            ),
        )

    def _apiservice_condition(self) -> str:
        return self.cluster.kubectl(
            "get", f"apiservice/{APISERVICE}",
            "-o", "jsonpath={.status.conditions[?(@.type=='Available')].status}",
            check=False,
        ).stdout  # fmt: skip

    def served(self) -> dict[str, Decimal]:
        """What the custom metrics API serves now: pod -> vllm_num_requests_waiting."""
        out = self.cluster.kubectl("get", "--raw", self.raw, check=False)
        if out.returncode != 0:
            return {}
        return {
            i["describedObject"]["name"]: kubernetes.utils.parse_quantity(i["value"])
            for i in json.loads(out.stdout)["items"]
        }

    def state(self) -> str:
        """For a failure message: what the API, Prometheus and the adapter say."""
        raw = self.cluster.kubectl("get", "--raw", self.raw, check=False)
        return (
            f"{self.raw}: {raw.stdout or raw.stderr}\n{self.prometheus.targets()}\n"
            f"adapter log:\n{self.adapter.output(3000)}"
        )

    def stop(self) -> None:
        # An unavailable APIService would break discovery for every later test: it goes first.
        self.cluster.kubectl(
            "delete", f"apiservice/{APISERVICE}", "--ignore-not-found", check=False
        )
        self.adapter.stop()
        self.prometheus.stop()
        self.discovery.stop()


@pytest.fixture
def metrics(cluster: Cluster, ns: str, tmp_path: Path) -> Iterator[MetricsStack]:
    try:
        stack = MetricsStack(cluster, ns, tmp_path)
    except controlplane_module().MissingBinaries as e:
        pytest.fail(f"e2e: {e}", pytrace=False)
    try:
        stack.register()
        yield stack
    finally:
        stack.stop()


def ready_pods(cluster: Cluster, ns: str) -> list[str]:
    pods = cluster.pods_ready(ns, f"pagoda.dev/inferenceservice={NAME}")
    return [name for name, ready in pods.items() if ready]


def test_the_hpa_scales_the_engine_on_waiting_requests_served_by_the_adapter(
    cluster: Cluster, operator, ns: str, metrics: MetricsStack
):
    cluster.kubectl("apply", "-f", "-", input=json.dumps(isvc(cluster, ns)))
    try:
        (pod,) = cluster.wait(
            lambda: ready_pods(cluster, ns), timeout=900, what="the engine pod to be Ready"
        )
        cluster.wait(
            lambda: answered(cluster.ingress_url, HOST, SERVED),
            timeout=60,
            what="an answer through the Ingress",
        )
    except AssertionError:
        print(cluster.describe(ns))
        raise
    metrics.prometheus.wait_for(
        "Prometheus to discover and scrape the engine pod",
        lambda: metrics.prometheus.query(f'vllm:num_requests_waiting{{pod="{pod}"}}'),
    )

    load = IngressLoad(cluster.ingress_url, HOST, SERVED, clients=IN_FLIGHT, max_tokens=128)

    def hpa_state() -> str:
        describe = cluster.kubectl("describe", "hpa", NAME, "-n", ns, check=False).stdout
        return f"{describe}\nload errors {load.errors[-5:]}\n{metrics.state()}"

    try:
        values = wait_for(
            f"the custom metrics API to serve {pod}'s queue",
            lambda: (v := metrics.served()).get(pod, 0) >= 2 and v,
            60,
            context=hpa_state,
        )
        assert set(values) == {pod} and values[pod] <= IN_FLIGHT - 1, values

        wait_for(
            "the HPA to raise the Deployment's replicas",
            lambda: (cluster.get("deployment", NAME, "-n", ns)["spec"]["replicas"] or 0) > 1,
            HPA_TIMEOUT_S,
            1,
            context=hpa_state,
        )
        hpa = cluster.get("hpa", NAME, "-n", ns)
        (current,) = hpa["status"]["currentMetrics"]
        assert current["pods"]["metric"]["name"] == METRIC, current
        assert kubernetes.utils.parse_quantity(current["pods"]["current"]["averageValue"]) > 1
        assert hpa["status"]["desiredReplicas"] == MAX_REPLICAS, hpa["status"]
        conditions = {c["type"]: c["status"] for c in hpa["status"]["conditions"]}
        assert conditions["ScalingActive"] == "True", hpa["status"]["conditions"]
        # The HPA controller made the change, on this metric (the operator leaves the field alone).
        events = cluster.get(
            "events", "-n", ns, "--field-selector",
            "involvedObject.kind=HorizontalPodAutoscaler,reason=SuccessfulRescale",
        )["items"]  # fmt: skip
        assert events and f"pods metric {METRIC} above target" in events[0]["message"], events
    finally:
        load.stop(timeout=5)  # the rest ends with the pods
    assert not load.errors, load.errors

    # The second engine starts on CPUs the load no longer takes; the scale-down window holds it.
    try:
        pods = cluster.wait(
            lambda: len(ready_pods(cluster, ns)) == MAX_REPLICAS and ready_pods(cluster, ns),
            timeout=SECOND_POD_TIMEOUT_S,
            what="the second engine pod to be Ready",
        )
    except AssertionError:
        print(cluster.describe(ns))
        raise
    wait_for(
        "the custom metrics API to serve the second pod too",
        lambda: set(metrics.served()) == set(pods),
        60,
        context=metrics.state,
    )
    cluster.kubectl("delete", "inferenceservice", NAME, "-n", ns, "--wait=true", "--timeout=120s")
