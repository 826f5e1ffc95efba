"""Helpers of the e2e tier: a cluster named by KUBECONFIG, driven with kubectl and helm."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletion

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "pagoda-operator"
RELEASE, OPERATOR_NS = "pagoda", "pagoda-system"
CONTROLPLANE = ROOT / "e2e" / "controlplane.py"


@functools.cache
def controlplane_module() -> ModuleType:
    """e2e/controlplane.py (a script, not a package): where build.sh put each binary, and the
    certificate makers the cluster's own PKI comes from."""
    spec = importlib.util.spec_from_file_location("pagoda_e2e_controlplane", CONTROLPLANE)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


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

    def pods_ready(self, ns: str, selector: str) -> dict[str, bool]:
        """The pods of `ns` that `selector` selects: name -> Ready."""
        return {
            p["metadata"]["name"]: any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in p.get("status", {}).get("conditions", [])
            )
            for p in (self.get("pods", "-n", ns, "-l", selector) or {}).get("items", [])
        }

    def helm(self, *args: str, timeout: float = 600):
        r = subprocess.run([self.helm_bin, *args], capture_output=True, text=True, timeout=timeout)
        if r.returncode:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}")
        return r

    def install_operator(self, chart: Path = CHART, *values: str) -> None:
        """`helm upgrade --install` of `chart` with the operator image under test and the extra
        `--set` `values`, until its pods are Ready."""
        repo, _, tag = self.operator_image.rpartition(":")
        sets = [f"image.repository={repo},image.tag={tag},image.pullPolicy=IfNotPresent", *values]
        self.helm(
            "upgrade", "--install", RELEASE, str(chart), "-n", OPERATOR_NS, "--create-namespace",
            *(a for v in sets for a in ("--set", v)), "--wait", "--timeout", "5m",
        )  # fmt: skip

    def uninstall_operator(self) -> None:
        self.helm("uninstall", RELEASE, "-n", OPERATOR_NS, "--wait", "--timeout", "3m")

    def wait(self, pred, timeout: float, what: str, interval: float = 2.0):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = pred()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")

    def say_hello_through_ingress(self, host: str, model: str) -> ChatCompletion:
        """Once `model` is listed through the Ingress (as `host`), one short greedy chat
        completion from it, by the official client."""
        from openai import OpenAI  # as the tests import it: where they run, not at collection

        client = OpenAI(
            base_url=f"{self.ingress_url}/v1",
            api_key="unused",
            timeout=120,
            max_retries=0,
            default_headers={"Host": host},
        )

        def listed() -> bool:
            try:
                return any(m.id == model for m in client.models.list().data)
            except Exception:  # retried until the deadline
                return False

        self.wait(listed, timeout=60, what="the model list through the Ingress")
        return client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "Say hello in one word."}],
            max_tokens=16,
            temperature=0,
        )

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
