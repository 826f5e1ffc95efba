"""The chart tests' helpers: the helm binary, rendering the chart, the repo's paths.

Also imported by tests/integration/monitoring, which renders the alerts it loads into Prometheus."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "pagoda-operator"
VALUES_EXAMPLES = sorted((CHART / "examples").glob("*.yaml"))
CRD = REPO / "crds" / "inferenceservice.yaml"
DASHBOARD = CHART / "dashboards" / "pagoda.json"
NAMESPACE = "pagoda-system"
# Helm, like the local cluster, is pinned in e2e/cluster/versions.env.
VERSIONS = dict(line.split("=", 1) for line in (REPO / "e2e" / "cluster" / "versions.env").read_text().splitlines()
                if line.strip() and not line.startswith("#"))
K8S_MINOR = ".".join(VERSIONS["K8S_VERSION"].lstrip("v").split(".")[:2])


def helm_path() -> str:
    """PAGODA_HELM, else the binary e2e/cluster/build.sh caches."""
    if os.environ.get("PAGODA_HELM"):
        return os.environ["PAGODA_HELM"]
    cache = Path(os.environ.get("PAGODA_CACHE", Path.home() / ".cache" / "pagoda"))
    return str(cache / "bin" / f"helm-{VERSIONS['HELM_VERSION']}" / "helm")


def find_helm() -> str:
    path = helm_path()
    if not os.access(path, os.X_OK):
        pytest.fail(f"helm not found at {path}: build it with `e2e/cluster/build.sh helm` "
                    "or point PAGODA_HELM at a helm 3 binary")
    return path


def run_helm(helm: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=60)


def render(helm: str, *args: str, crds: bool = True) -> list[dict[str, Any]]:
    """`helm template` of the chart as a list of objects; extra args are values flags."""
    cmd = ["template", "pagoda", str(CHART), "--namespace", NAMESPACE, "--kube-version", VERSIONS["K8S_VERSION"]]
    out = run_helm(helm, *cmd, *(["--include-crds"] if crds else []), *args)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def by_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]
