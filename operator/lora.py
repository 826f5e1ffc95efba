"""LoRA adapters of an InferenceService (spec.lora), as pure functions: the pod template's part
(flags, mounts) and the diff between what the spec asks for and what a pod serves.

The pod template carries only --enable-lora, the limits and the pvc:// claims' mounts, never the
adapter list: adding or removing an adapter changes no template, so no pod restarts. Every adapter,
also those present when a pod starts, is loaded through the engine's /v1/load_lora_adapter by
lora_sync.py: one way in for every adapter, and a restarted pod gets its adapters back the same way.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

LORA_MOUNT = "/mnt/lora"  # pvc://CLAIM/PATH is LORA_MOUNT/CLAIM/PATH in the engine container
# vLLM serves the load/unload endpoints only with this set; Pagoda's are always on.
RUNTIME_UPDATING_ENV = {"name": "VLLM_ALLOW_RUNTIME_LORA_UPDATING", "value": "True"}


@dataclass(frozen=True)
class Adapter:
    name: str
    source: str  # hf://ORG/NAME[@REV], pvc://CLAIM/PATH or file:///PATH, as in the spec

    @property
    def path(self) -> str:
        """What the engine gets as lora_path."""
        if self.source.startswith("hf://"):
            return self.source.removeprefix("hf://")  # ORG/NAME[@REV]: the engine downloads it
        if self.source.startswith("pvc://"):
            return f"{LORA_MOUNT}/{self.source.removeprefix('pvc://')}"
        return self.source.removeprefix("file://")


def adapters(lora: dict[str, Any]) -> list[Adapter]:
    return [Adapter(a["name"], a["source"]) for a in lora.get("adapters", [])]


def claims(lora: dict[str, Any]) -> list[str]:
    """The PVCs the pvc:// adapters live on, sorted and once each."""
    return sorted(
        {
            a.source.removeprefix("pvc://").partition("/")[0]
            for a in adapters(lora)
            if a.source.startswith("pvc://")
        }
    )


def volumes(lora: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Read-only volumes and mounts of the adapters' claims. A volume's name is a digest of its
    claim: claim names run to 253 characters, volume names to 63."""
    vols, mounts = [], []
    for claim in claims(lora):
        name = "lora-" + hashlib.sha256(claim.encode()).hexdigest()[:12]
        vols.append({"name": name, "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
        mounts.append({"name": name, "mountPath": f"{LORA_MOUNT}/{claim}", "readOnly": True})
    return vols, mounts


@dataclass(frozen=True)
class Served:
    """An adapter a pod serves, from its /v1/models (an entry with a `parent`)."""

    name: str
    path: str


@dataclass(frozen=True)
class Diff:
    load: list[Adapter]
    unload: list[str]


def diff(wanted: list[Adapter], served: list[Served]) -> Diff:
    """What to do to a pod: load the adapters it lacks, unload those the spec dropped. An adapter
    whose source changed is unloaded and loaded again from the new path."""
    have = {s.name: s.path for s in served}
    want = {a.name: a for a in wanted}
    changed = [n for n, a in want.items() if n in have and have[n] != a.path]
    return Diff(
        load=[a for a in wanted if a.name not in have or a.name in changed],
        unload=sorted(n for n in have if n not in want or n in changed),
    )


@dataclass(frozen=True)
class PodResult:
    """One adapter on one ready pod after a sync: served, or the load's error."""

    served: bool
    error: str | None = None


def adapter_status(
    wanted: list[Adapter], results: dict[str, dict[str, PodResult]]
) -> list[dict[str, str]]:
    """status.lora.adapters: per adapter, over the ready pods (`results[pod][adapter]`): Loaded
    when every one serves it, Failed when a load failed (its message), else Loading."""
    out = []
    for a in wanted:
        per_pod = [r[a.name] for r in results.values() if a.name in r]
        ready = sum(1 for p in per_pod if p.served)
        errors = sorted({p.error for p in per_pod if p.error})
        total = len(results)
        if errors:
            state, message = "Failed", "; ".join(errors)
        elif total and ready == total:
            state, message = "Loaded", ""
        else:
            state, message = "Loading", "" if total else "no ready pod"
        out.append(
            {"name": a.name, "state": state, "message": message, "podsReady": f"{ready}/{total}"}
        )
    return out
