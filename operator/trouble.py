"""What is wrong with an InferenceService's pods that waiting will not fix, from their status
alone (pure): a model download that failed, an engine that crashes, an image that cannot be
pulled, a Secret or ConfigMap or PVC that does not exist. The operator needs no read access to
Secrets for this: the kubelet and the scheduler already say it in the pods' status."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pagoda.operator.resources.deployment import DOWNLOAD_CONTAINER

_PULL = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName"}
_CONFIG = {"CreateContainerConfigError", "CreateContainerError"}
REASONS = (
    "ImagePullFailed",
    "ContainerConfigError",
    "MissingVolume",
    "ModelDownloadFailed",
    "InitContainerFailed",
    "EngineCrashing",
)
MESSAGE_CHARS = 400  # a termination message is the log's tail: keep the status readable


@dataclass(frozen=True)
class Trouble:
    reason: str  # CamelCase, for the Degraded condition and the Event
    message: str


def trouble(pods: list[dict[str, Any]]) -> Trouble | None:
    """The first thing wrong, pods by name; None when nothing is."""
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        found = _pod_trouble(pod)
        if found is not None:
            return found
    return None


def _pod_trouble(pod: dict[str, Any]) -> Trouble | None:
    name, st = pod["metadata"]["name"], pod.get("status") or {}
    for c in st.get("initContainerStatuses") or []:
        found = _container_trouble(c, init=True)
        if found is not None:
            return Trouble(found.reason, f"pod {name}: {found.message}")
    for c in st.get("containerStatuses") or []:
        found = _container_trouble(c, init=False)
        if found is not None:
            return Trouble(found.reason, f"pod {name}: {found.message}")
    for cond in st.get("conditions") or []:
        # A missing PVC keeps the pod unscheduled; other reasons (no node yet) may pass by.
        message = cond.get("message", "")
        unscheduled = cond.get("type") == "PodScheduled" and cond.get("status") == "False"
        if unscheduled and "persistentvolumeclaim" in message and "not found" in message:
            return Trouble("MissingVolume", f"pod {name}: {message}")
    return None


def _container_trouble(c: dict[str, Any], init: bool) -> Trouble | None:
    waiting = (c.get("state") or {}).get("waiting") or {}
    reason, what = waiting.get("reason", ""), f"container {c.get('name')}"
    if reason in _PULL:
        return Trouble("ImagePullFailed", f"{what}: {reason}: {waiting.get('message', '')}")
    if reason in _CONFIG:
        return Trouble("ContainerConfigError", f"{what}: {waiting.get('message', '')}")
    ended = (c.get("state") or {}).get("terminated") or (c.get("lastState") or {}).get("terminated")
    failed = ended is not None and ended.get("exitCode", 0) != 0
    if not failed or not (init or reason == "CrashLoopBackOff" or c.get("restartCount", 0) > 0):
        return None
    tail = (ended.get("message") or ended.get("reason") or "").strip()[-MESSAGE_CHARS:]
    if init and c.get("name") == DOWNLOAD_CONTAINER:
        return Trouble("ModelDownloadFailed", f"{what} exited {ended['exitCode']}: {tail}")
    why = "InitContainerFailed" if init else "EngineCrashing"
    return Trouble(why, f"{what} exited {ended['exitCode']}: {tail}")
