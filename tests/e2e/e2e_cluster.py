"""Helpers of the e2e tier: a cluster named by KUBECONFIG, driven with kubectl and helm."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "pagoda-operator"


def _app_version() -> str:
    for line in (CHART / "Chart.yaml").read_text().splitlines():
        if line.startswith("appVersion:"):
            return line.split(":", 1)[1].strip().strip('"')
    return "latest"


class Cluster:
    def __init__(self, kubeconfig: str, ingress_url: str):
        self.kubeconfig = kubeconfig
        self.ingress_url = ingress_url.rstrip("/")
        self.kubectl_bin = shutil.which("kubectl")
        self.helm_bin = shutil.which("helm")
        tag = _app_version()
        self.operator_image = os.environ.get("PAGODA_E2E_OPERATOR_IMAGE", f"pagoda-operator:{tag}")
        self.engine_image = os.environ.get("PAGODA_E2E_ENGINE_IMAGE", f"pagoda-engine:{tag}")

    def default_model_isvc(
        self, ns: str, name: str, served_name: str, engine: dict, **spec: object
    ) -> dict:
        """An InferenceService of the default model on the engine image under test: `engine`
        adds to its engine fields, `spec` to the rest of its spec."""
        return {
            "apiVersion": "pagoda.dev/v1alpha1",
            "kind": "InferenceService",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "model": {"uri": "default", "servedName": served_name},
                "engine": {"image": self.engine_image, "imagePullPolicy": "IfNotPresent", **engine},
                **spec,
            },
        }

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 120
    ):
        r = subprocess.run(
            [self.kubectl_bin, *args], capture_output=True, text=True, input=input, timeout=timeout
        )
        if check and r.returncode:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{r.stderr}")
        return r

    def get(self, *args: str):
        r = self.kubectl("get", *args, "-o", "json", check=False)
        return json.loads(r.stdout) if r.returncode == 0 else None

    def helm(self, *args: str, timeout: float = 600):
        r = subprocess.run([self.helm_bin, *args], capture_output=True, text=True, timeout=timeout)
        if r.returncode:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}")
        return r

    def wait(self, pred, timeout: float, what: str, interval: float = 2.0):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = pred()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")

    def describe(self, ns: str) -> str:
        out = [
            self.kubectl("get", "all,ingress,events", "-n", ns, "-o", "wide", check=False).stdout
        ]
        for p in (self.get("pods", "-n", ns) or {}).get("items", []):
            name = p["metadata"]["name"]
            out.append(
                f"--- logs {name}\n"
                + self.kubectl("logs", "-n", ns, name, "--tail=30", check=False).stdout
            )
        return "\n".join(out)
