"""Operator-wide settings: images and intervals, from flags (main.py) or the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version


def _tag() -> str:
    try:
        return version("pagoda")
    except PackageNotFoundError:
        return "dev"


@dataclass
class OperatorConfig:
    engine_image: str  # CUDA engine, for specs that ask for GPUs
    engine_cpu_image: str
    observe_interval: float  # seconds between scrapes (autoscaler, rollout gate, live status)
    # Where the operator runs (the chart sets it from the downward API): NetworkPolicies let its
    # pods in. None: from a pod labelled as the operator in any namespace.
    namespace: str | None = None


def from_env() -> OperatorConfig:
    return OperatorConfig(
        engine_image=os.environ.get("PAGODA_ENGINE_IMAGE", f"pagoda-engine:{_tag()}-cuda"),
        engine_cpu_image=os.environ.get("PAGODA_ENGINE_CPU_IMAGE", f"pagoda-engine:{_tag()}"),
        observe_interval=float(os.environ.get("PAGODA_OBSERVE_INTERVAL", "10")),
        namespace=os.environ.get("PAGODA_OPERATOR_NAMESPACE") or None,
    )


CONFIG = from_env()
