"""The chart tests' helpers: the helm binary, rendering the chart, the repo's paths.

Also imported by tests/integration/monitoring, which renders the alerts it loads into Prometheus."""

from __future__ import annotations

import json
import os
import shutil
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
VERSIONS = dict(
    line.split("=", 1)
    for line in (REPO / "e2e" / "cluster" / "versions.env").read_text().splitlines()
    if line.strip() and not line.startswith("#")
)
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
        pytest.fail(
            f"helm not found at {path}: build it with `e2e/cluster/build.sh helm` "
            "or point PAGODA_HELM at a helm 3 binary"
        )
    return path


def run_helm(helm: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=60)


def render(helm: str, *args: str, crds: bool = True) -> list[dict[str, Any]]:
    """`helm template` of the chart as a list of objects; extra args are values flags."""
    cmd = [
        "template",
        "pagoda",
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--kube-version",
        VERSIONS["K8S_VERSION"],
    ]
    out = run_helm(helm, *cmd, *(["--include-crds"] if crds else []), *args)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def by_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def node_types() -> Path:
    """Where schemas/install.sh puts the upstream types (Grafana, prometheus-operator) and TypeScript."""
    d = (
        Path(os.environ.get("PAGODA_CACHE", Path.home() / ".cache" / "pagoda"))
        / "npm"
        / "chart-schemas"
    )
    if not (d / "node_modules" / "typescript").is_dir() or shutil.which("node") is None:
        pytest.fail(
            f"the upstream types are not in {d}: run tests/unit/chart/schemas/install.sh (needs node)"
        )
    return d


def type_check(
    workdir: Path, imports: str, typed: dict[str, tuple[str, object]]
) -> subprocess.CompletedProcess:
    """tsc on `const NAME: TYPE = <the JSON>` for each entry: object literals, so an unknown or
    mistyped field anywhere in them is an error."""
    modules = node_types() / "node_modules"
    if not (workdir / "node_modules").exists():
        (workdir / "node_modules").symlink_to(modules)
    body = "".join(
        f"export const {name}: {t} = {json.dumps(value, indent=1)};\n"
        for name, (t, value) in typed.items()
    )
    (workdir / "check.ts").write_text(imports + "\n" + body)
    return subprocess.run(
        [
            "node",
            str(modules / "typescript" / "bin" / "tsc"),
            "--noEmit",
            "--strict",
            "--skipLibCheck",
            "--module",
            "esnext",
            "--moduleResolution",
            "bundler",
            "--target",
            "es2022",
            "check.ts",
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )
