"""The engine's environment, shared by its pods through envFrom."""

from __future__ import annotations

from typing import Any

from pagoda.operator.resources import metadata
from pagoda.operator.spec import CACHE_MOUNT, Spec


def configmap_name(s: Spec) -> str:
    return f"{s.name}-engine"


def configmap(s: Spec) -> dict[str, Any]:
    data = {
        "HF_HOME": f"{CACHE_MOUNT}/hf",
        # The engine never reaches the hub: hub models are downloaded by the model-download init
        # container (deployment.py), which alone turns this off.
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    threads = _whole_cpus(s.resources.get("cpu"))
    if threads:
        # torch sizes its thread pool from the node's cores, not the pod's limit: oversubscription.
        data["OMP_NUM_THREADS"] = str(threads)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(s, configmap_name(s)),
        "data": data,
    }


def _whole_cpus(cpu: int | str | None) -> int | None:
    if cpu is None:
        return None
    if isinstance(cpu, str) and cpu.endswith("m"):
        return max(1, int(cpu[:-1]) // 1000)
    return max(1, int(float(cpu)))
