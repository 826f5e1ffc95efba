"""HPA mode end to end on a real control plane: a real `pagoda serve` plays the one engine pod
(its address written as the pod's IP: there is no kubelet here), a real Prometheus scrapes it as
a ServiceMonitor would (the pod's `namespace` and `pod` labels on the target), a real
prometheus-adapter (built from its Go module) serves the custom metrics API through the
apiserver's aggregation layer with the rules users install (deploy/prometheus-adapter/values.yaml),
and the operator renders the HPA. With requests queued behind --max-num-seqs 1, the adapter
serves the pod's `vllm_num_requests_waiting`, and the controller-manager's HPA controller reads
it and raises the Deployment's replicas.

The APIService is served with the apiserver's own Service resolution: an ExternalName Service
to `localhost` (a loopback address can be no Endpoints address), TLS checked against a CA made
for the adapter's serving cert (`prometheus-adapter.NS.svc`, the name the aggregator verifies).
"""

from __future__ import annotations

import base64
import json
import random
import sys
import threading
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import kubernetes
import pytest
import yaml
from isvc_helpers import create_isvc, mark_pod_ready
from monitoring_stack import Prometheus
from process_harness import LoggedProcess, free_port, http_ok, wait_for
from server_process import ServerProcess

from pagoda.operator.spec import ENGINE_PORT

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
ADAPTER_VALUES = ROOT / "deploy" / "prometheus-adapter" / "values.yaml"
API_GROUP, API_VERSION = "custom.metrics.k8s.io", "v1beta1"
APISERVICE = f"{API_VERSION}.{API_GROUP}"
METRIC = "vllm_num_requests_waiting"
NAME = "queued"
# 5 requests kept in flight on an engine that runs one at a time: 4 waiting against a target of
# 1 per pod, so the HPA wants ceil(4 / 1) = 4 pods, within maxReplicas.
IN_FLIGHT, MAX_REPLICAS = 5, 4
# The HPA controller's default --horizontal-pod-autoscaler-sync-period is 15 s.
HPA_TIMEOUT_S = 120


@pytest.fixture
def engine() -> Iterator[tuple[str, str, ServerProcess]]:
    """A real engine on a loopback address of its own, port 8000, as a pod would serve."""
    ip = f"127.0.{random.randint(1, 254)}.{random.randint(2, 254)}"
    proc = ServerProcess(
        "--dtype", "float32", "--max-model-len", "256", "--max-num-seqs", "1",
        "--host", ip, "--port", str(ENGINE_PORT),  # argparse: the last --host/--port win
    )  # fmt: skip
    url = f"http://{ip}:{ENGINE_PORT}"
    try:
        wait_for("/health", lambda: http_ok(f"{url}/health"), 240, process=proc)
        yield ip, url, proc
    finally:
        proc.kill()


class Queue:
    """Keeps `n` long completions in flight until stopped (each one that ends is sent again)."""

    def __init__(self, url: str, n: int) -> None:
        self.url, self.stopped, self.errors = url, threading.Event(), []
        self.threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(n)]
        for t in self.threads:
            t.start()

    def _loop(self) -> None:
        body = {"prompt": "Once upon a time", "max_tokens": 200, "ignore_eos": True}
        with httpx.Client(timeout=600) as client:
            while not self.stopped.is_set():
                try:
                    client.post(f"{self.url}/v1/completions", json=body).raise_for_status()
                except httpx.HTTPError as e:
                    if not self.stopped.is_set():
                        self.errors.append(repr(e))
                    return

    def stop(self) -> None:
        """Call after killing the engine: the requests in flight then fail at once instead of
        running out."""
        self.stopped.set()
        for t in self.threads:
            t.join(timeout=30)


def adapter_rules(path: Path) -> Path:
    """The adapter's --config: the chart values' `rules.custom`, as the chart writes it."""
    path.write_text(
        yaml.safe_dump({"rules": yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"]})
    )
    return path


def serving_cert(d: Path, cpmod, host: str) -> bytes:
    """A CA of the adapter's own and its serving cert for `host`; returns the CA's PEM."""
    d.mkdir(parents=True, exist_ok=True)
    cpmod.make_ca(d, "adapter-ca", "pagoda-test-adapter-ca")
    cpmod.make_cert(d, "adapter-ca", "adapter", f"/CN={host}",
                    f"subjectAltName=DNS:{host}\nextendedKeyUsage=serverAuth")  # fmt: skip
    return (d / "adapter-ca.crt").read_bytes()


@pytest.fixture
def adapter(kube, kube_ns, tmp_path) -> Iterator[Callable[[str], LoggedProcess]]:
    """start(prometheus_url): the adapter on loopback, registered as the APIService; unregistered
    after the test (an unavailable APIService would break discovery for every later test)."""
    cpmod = sys.modules[type(kube).__module__]  # e2e/controlplane.py, as the kube fixture loaded it
    procs: list[LoggedProcess] = []

    def start(prometheus_url: str) -> LoggedProcess:
        port, host = free_port(), f"prometheus-adapter.{kube_ns}.svc"
        ca = serving_cert(tmp_path / "adapter-pki", cpmod, host)
        pki = tmp_path / "adapter-pki"
        proc = LoggedProcess(
            "prometheus-adapter",
            [
                cpmod.binary("prometheus-adapter"),
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                f"--tls-cert-file={pki / 'adapter.crt'}",
                f"--tls-private-key-file={pki / 'adapter.key'}",
                f"--lister-kubeconfig={kube.kubeconfig}",
                f"--authentication-kubeconfig={kube.kubeconfig}",
                f"--authorization-kubeconfig={kube.kubeconfig}",
                f"--prometheus-url={prometheus_url}",
                f"--config={adapter_rules(tmp_path / 'adapter-rules.yaml')}",
                "--metrics-relist-interval=2s",  # discovers the new series in seconds, not 10 min
                "--v=2",
            ],
            tmp_path / "prometheus-adapter.log",
        )
        procs.append(proc)
        svc = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "prometheus-adapter", "namespace": kube_ns},
            "spec": {"type": "ExternalName", "externalName": "localhost"},
        }
        apisvc = {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": APISERVICE},
            "spec": {
                "group": API_GROUP,
                "version": API_VERSION,
                "service": {"namespace": kube_ns, "name": "prometheus-adapter", "port": port},
                "caBundle": base64.b64encode(ca).decode(),
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
            },
        }
        kube.kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [svc, apisvc]}),
        )
        wait_for(
            f"APIService {APISERVICE} Available",
            lambda: (
                kube.kubectl(
                    "get",
                    f"apiservice/{APISERVICE}",
                    "-o",
                    "jsonpath={.status.conditions[?(@.type=='Available')].status}",
                    check=False,
                ).stdout
                == "True"
            ),
            60,
            process=proc,
            context=lambda: (
                kube.kubectl("get", f"apiservice/{APISERVICE}", "-o", "yaml", check=False).stdout
                + proc.output(2000)
            ),
        )
        return proc

    yield start
    kube.kubectl("delete", f"apiservice/{APISERVICE}", "--ignore-not-found", check=False)
    for p in procs:
        p.stop()


def test_the_hpa_scales_the_deployment_on_waiting_requests_served_by_the_adapter(
    api, kube, kube_ns, operator, engine, adapter, tmp_path
):
    ip, url, server = engine
    create_isvc(
        api,
        kube_ns,
        NAME,
        {
            "model": {"uri": "default"},
            "autoscaling": {
                "mode": "HPA",
                "minReplicas": 1,
                "maxReplicas": MAX_REPLICAS,
                "metric": {"type": "WaitingRequests", "target": 1},
            },
        },
    )
    core = kubernetes.client.CoreV1Api(api)
    autoscaling = kubernetes.client.AutoscalingV2Api(api)
    apps = kubernetes.client.AppsV1Api(api)
    selector = f"pagoda.dev/inferenceservice={NAME}"
    pod = wait_for(
        "the engine pod", lambda: core.list_namespaced_pod(kube_ns, label_selector=selector).items
    )[0].metadata.name
    mark_pod_ready(api, kube_ns, pod, ip)  # the kubelet's part, at the engine's address
    job = {
        "static_configs": [
            {
                "targets": [f"{ip}:{ENGINE_PORT}"],
                "labels": {"namespace": kube_ns, "pod": pod, "container": "engine"},
            }
        ]
    }
    (tmp_path / "prometheus").mkdir()
    prom = Prometheus(tmp_path / "prometheus", {"engine": job}, [])
    queue: Queue | None = None
    try:
        prom.wait_ready()
        prom.wait_for(
            "the engine's first scrape",
            lambda: prom.query(f'vllm:num_requests_waiting{{pod="{pod}"}}'),
        )
        proc = adapter(prom.url)
        queue = Queue(url, IN_FLIGHT)
        raw = f"/apis/{API_GROUP}/{API_VERSION}/namespaces/{kube_ns}/pods/*/{METRIC}"

        def served() -> dict[str, Decimal] | None:
            out = kube.kubectl("get", "--raw", raw, check=False)
            if out.returncode != 0:
                return None
            items = json.loads(out.stdout)["items"]
            values = {
                i["describedObject"]["name"]: kubernetes.utils.parse_quantity(i["value"])
                for i in items
            }
            return values if values.get(pod, 0) >= 2 else None

        values = wait_for(
            f"{raw} to serve the queued requests",
            served,
            60,
            process=proc,
            context=lambda: (
                f"{kube.kubectl('get', '--raw', raw, check=False)}\n{prom.targets()}"
                f"\nqueue errors {queue.errors}\n{proc.output(3000)}"
            ),
        )
        assert set(values) == {pod} and values[pod] <= IN_FLIGHT - 1, values

        def scaled():
            d = apps.read_namespaced_deployment(NAME, kube_ns)
            return d if (d.spec.replicas or 0) > 1 else None

        def hpa_state() -> str:
            h = autoscaling.read_namespaced_horizontal_pod_autoscaler(NAME, kube_ns)
            kcm = (kube.logs / "kube-controller-manager.log").read_text(errors="replace")
            return f"HPA status {h.status}\nqueue errors {queue.errors}\n{kcm[-3000:]}"

        deploy = wait_for(
            "the HPA to raise the Deployment's replicas",
            scaled,
            HPA_TIMEOUT_S,
            1,
            context=hpa_state,
        )
        h = autoscaling.read_namespaced_horizontal_pod_autoscaler(NAME, kube_ns)
        (current,) = h.status.current_metrics
        assert current.pods.metric.name == METRIC
        assert kubernetes.utils.parse_quantity(current.pods.current.average_value) > 1, h.status
        assert 1 < h.status.desired_replicas <= MAX_REPLICAS, h.status
        assert 1 < deploy.spec.replicas <= MAX_REPLICAS
        active = {c.type: c for c in h.status.conditions}["ScalingActive"]
        assert active.status == "True", active
        # The HPA controller made the change, on this metric (the operator leaves the field alone).
        rescaled = wait_for(
            "the HPA's SuccessfulRescale event",
            lambda: (
                core.list_namespaced_event(
                    kube_ns,
                    field_selector="involvedObject.kind=HorizontalPodAutoscaler,reason=SuccessfulRescale",
                ).items
            ),
        )
        assert f"pods metric {METRIC} above target" in rescaled[0].message, rescaled[0].message
        assert not queue.errors, queue.errors
    finally:
        server.kill()  # the queued requests fail now, rather than run out
        if queue is not None:
            queue.stop()
        prom.stop()
