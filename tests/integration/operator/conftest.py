"""Fixtures for the operator against a real kube-apiserver (the `kube` fixture of ../conftest.py).

There is no kubelet in this tier: pods stay Pending unless a test plays the kubelet's part and
writes a pod's status itself (isvc_helpers.FakeEnginePod), with a local HTTP server as its /metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import kubernetes
import pytest
from isvc_helpers import FakeEnginePod
from kopf.testing import KopfRunner
from process_harness import wait_for

from pagoda.operator import config

ROOT = Path(__file__).resolve().parents[3]
CRD = ROOT / "crds" / "inferenceservice.yaml"


@pytest.fixture(scope="session")
def isvc_crd(kube):
    kube.kubectl("apply", "--server-side", "-f", str(CRD))
    # `kubectl wait` right after the create can miss the object; poll instead.
    wait_for(
        "the CRD to be established",
        lambda: (
            "True"
            in kube.kubectl(
                "get",
                "crd/inferenceservices.pagoda.dev",
                "-o",
                "jsonpath={.status.conditions[?(@.type=='Established')].status}",
                check=False,
            ).stdout
        ),
    )
    return CRD


@pytest.fixture(scope="session")
def api(kube) -> kubernetes.client.ApiClient:
    client = kubernetes.config.new_client_from_config(config_file=kube.kubeconfig)
    yield client
    client.close()


@pytest.fixture
def operator(kube, isvc_crd, kube_ns):
    """The operator, in this process (KopfRunner), watching the test's namespace."""
    config.CONFIG.observe_interval = 1.0  # read when the handlers module is first imported
    with KopfRunner(
        ["run", "--standalone", "--namespace", kube_ns, "-m", "pagoda.operator.handlers"],
        timeout=60,
    ) as runner:
        yield runner
    assert runner.exit_code == 0, runner.output


@pytest.fixture
def fake_pods():
    made: list[FakeEnginePod] = []

    def make(metrics: Callable[[], str]) -> FakeEnginePod:
        made.append(FakeEnginePod(metrics))
        return made[-1]

    yield make
    for p in made:
        p.close()
