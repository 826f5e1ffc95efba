"""The gateway against a real kube-apiserver (the `kube` fixture) with real `pagoda serve`
engines on loopback as its upstreams.

There is no kubelet in this tier, so the test plays the EndpointSlice controller: it writes each
InferenceService's EndpointSlice (label kubernetes.io/service-name), pointing at the engines.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import kubernetes
import pytest
from integration.server.server_process import ServerProcess

ROOT = Path(__file__).resolve().parents[3]
CRD = ROOT / "crds" / "inferenceservice.yaml"
ENGINE_ARGS = ("--max-model-len", "512", "--max-num-seqs", "8", "--uvicorn-log-level", "warning")


@pytest.fixture(scope="session")
def isvc_crd_applied(kube):
    kube.kubectl("apply", "--server-side", "-f", str(CRD))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        got = kube.kubectl(
            "get",
            "crd/inferenceservices.pagoda.dev",
            "-o",
            "jsonpath={.status.conditions[?(@.type=='Established')].status}",
            check=False,
        ).stdout
        if "True" in got:
            return CRD
        time.sleep(0.25)
    pytest.fail("the InferenceService CRD was not established in 30s")


@pytest.fixture(scope="module")
def kube_api(kube):
    client = kubernetes.config.new_client_from_config(config_file=kube.kubeconfig)
    yield client
    client.close()


def host_ip() -> str:
    """This machine's address on its default route: an EndpointSlice refuses loopback ones."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # UDP: picks the route, sends nothing
        except OSError as e:
            pytest.fail(f"no non-loopback IPv4 address for an EndpointSlice here: {e}")
        return s.getsockname()[0]


@pytest.fixture(scope="module")
def engines():
    """Two real engines, one serving `alpha`, one `beta`, listening on every address (the
    EndpointSlices name this machine's own, non-loopback one)."""
    procs = {
        name: ServerProcess("--served-model-name", name, *ENGINE_ARGS, "--host", "0.0.0.0")
        for name in ("alpha", "beta")
    }
    try:
        for p in procs.values():
            p.wait_healthy()
        yield procs
    finally:
        for p in procs.values():
            p.kill()


class GatewayProcess:
    """`pagoda gateway` as a process, watching one namespace."""

    def __init__(self, namespace: str, *args: str) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115  (lives as long as the process)
            "w+", prefix="pagoda-gateway-", suffix=".log"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pagoda.engine.cli", "gateway", "-n", namespace]
            + ["--host", "127.0.0.1", "--port", str(self.port), *args],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=os.environ | {"PYTHONUNBUFFERED": "1"},
        )

    def wait_healthy(self, timeout: float = 30) -> GatewayProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pagoda gateway exited:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"pagoda gateway not healthy after {timeout}s:\n{self.output()}")

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-5000:]

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=5).text

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.log.close()
