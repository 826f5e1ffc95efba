"""The engine Deployment: one `pagoda serve` container per pod, surge-first rollouts.

The pod template's hash is its revision (label pagoda.dev/revision): the rollout gate tells new
pods from old ones by it, and the Deployment rolls whenever it changes.
"""

from __future__ import annotations

import math
from typing import Any

from pagoda.operator import lora
from pagoda.operator.resources import digest, labels, metadata
from pagoda.operator.resources.configmap import configmap, configmap_name
from pagoda.operator.resources.merge import strategic_merge
from pagoda.operator.spec import (
    CACHE_MOUNT,
    ENGINE_PORT,
    MODEL_MOUNT,
    REVISION_LABEL,
    S3Source,
    Spec,
    downloaded,
    engine_args,
    hub_model,
    model_arg,
)

PRESTOP_SECONDS = 5  # time for endpoints and ingresses to stop routing here before SIGTERM
PROBE_PERIOD = 5
ENGINE_UID = 65532  # the engine images' USER; fsGroup makes the volumes writable for it
ENGINE_COMMAND = ["pagoda", "serve"]
# Pod-level overrides (spec.pod) copied onto the pod as they are.
POD_FIELDS = ("imagePullSecrets", "serviceAccountName", "runtimeClassName", "initContainers")
DOWNLOAD_CONTAINER = "model-download"
# s3:// models: the engine package's downloader (obstore), with the same file filter as below.
S3_DOWNLOAD = ["python", "-m", "pagoda.engine.loader.s3"]
# What the download fetches: the engine's own choice (pagoda.engine.loader.hub's MODEL_FILES and
# TOKENIZER_FILES, kept equal by a test): safetensors, configs, tokenizer; never the .bin, .pth or
# original/ copies a repo may also hold (Llama 3.1 8B's original/ alone is 16 GB).
DOWNLOAD_PATTERNS = (
    "*.safetensors",
    "*.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "params.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
)
# Writable only where a volume is: /tmp (HOME in the engine images), the model cache, shm.
_CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}
SHM_SIZE = "2Gi"  # torch.distributed and dataloaders use /dev/shm; the runtime's default is 64 MiB


def deployment(s: Spec, image: str, replicas: int | None) -> dict[str, Any]:
    """`replicas` None leaves the field out, for when an HPA owns it."""
    template = pod_template(s, image)
    spec: dict[str, Any] = {
        "selector": {"matchLabels": s.selector},
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": s.max_surge, "maxUnavailable": s.max_unavailable},
        },
        # Past the model's load time, a stuck rollout shows as Progressing=False on the Deployment.
        "progressDeadlineSeconds": s.startup_timeout_seconds + 60,
        "revisionHistoryLimit": 3,
        "template": template,
    }
    if replicas is not None:
        spec["replicas"] = replicas
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata(s), "spec": spec}


def pod_template(s: Spec, image: str) -> dict[str, Any]:
    volumes, mounts = _volumes(s)
    pod: dict[str, Any] = {
        "containers": [_container(s, image, mounts), *s.pod.get("sidecars", [])],
        "volumes": volumes + s.pod.get("volumes", []),
        "terminationGracePeriodSeconds": PRESTOP_SECONDS + s.drain_seconds + 10,
        "automountServiceAccountToken": False,  # engines never talk to the apiserver
        "enableServiceLinks": False,  # service env vars (e.g. <NAME>_PORT) must not reach the engine
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": ENGINE_UID,
            "runAsGroup": ENGINE_UID,
            "fsGroup": ENGINE_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    sched = s.scheduling
    for key in ("nodeSelector", "tolerations", "affinity", "priorityClassName"):
        if key in sched:
            pod[key] = sched[key]
    for key in POD_FIELDS:
        if key in s.pod:
            pod[key] = s.pod[key]
    if downloaded(s.model_uri):
        pod["initContainers"] = [_download(s, image, mounts), *pod.get("initContainers", [])]
    annotations = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(ENGINE_PORT),
        "prometheus.io/path": "/metrics",
        # envFrom is read at pod start: a changed ConfigMap must roll the pods.
        "pagoda.dev/config-hash": digest(configmap(s)["data"]),
    }
    template = {"metadata": {"labels": labels(s), "annotations": annotations}, "spec": pod}
    template = strategic_merge(template, s.pod.get("template", {}))
    # The operator's labels win over the patch's: the selector and the revision depend on them.
    template["metadata"]["labels"] = {**template["metadata"].get("labels", {}), **labels(s)}
    template["metadata"]["labels"][REVISION_LABEL] = digest(template)
    return template


def _container(s: Spec, image: str, mounts: list[dict[str, Any]]) -> dict[str, Any]:
    env = list(s.engine.get("env", []))
    if "apiKeySecret" in s.engine:
        ref = s.engine["apiKeySecret"]
        env.append(
            {
                "name": "PAGODA_API_KEY",
                "valueFrom": {"secretKeyRef": {"name": ref["name"], "key": ref["key"]}},
            }
        )
    if "lora" in s.raw:
        env.append(lora.RUNTIME_UPDATING_ENV)
    health = {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": PROBE_PERIOD}
    c: dict[str, Any] = {
        "name": "engine",
        "image": image,
        "command": s.engine.get("command", ENGINE_COMMAND),
        "args": engine_args(s),
        "ports": [{"name": "http", "containerPort": ENGINE_PORT, "protocol": "TCP"}],
        "envFrom": [{"configMapRef": {"name": configmap_name(s)}}, *s.engine.get("envFrom", [])],
        "resources": _resources(s),
        "volumeMounts": mounts + s.engine.get("volumeMounts", []),
        # Loading a model takes minutes; the startup probe holds the others off until then.
        "startupProbe": {
            **health,
            "failureThreshold": math.ceil(s.startup_timeout_seconds / PROBE_PERIOD),
        },
        "readinessProbe": {**health, "failureThreshold": 2, "timeoutSeconds": 2},
        # /health fails only when the engine loop died: restart then, not on a slow step.
        "livenessProbe": {
            **health,
            "periodSeconds": 10,
            "failureThreshold": 3,
            "timeoutSeconds": 5,
        },
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_SECONDS)]}}},
        "terminationMessagePolicy": "FallbackToLogsOnError",  # a crash's last lines, in status
        "securityContext": _CONTAINER_SECURITY,
    }
    if env:
        c["env"] = env
    if "imagePullPolicy" in s.engine:
        c["imagePullPolicy"] = s.engine["imagePullPolicy"]
    return c


def _download(s: Spec, image: str, mounts: list[dict[str, Any]]) -> dict[str, Any]:
    """hf://ORG/NAME@REV or s3://BUCKET/PREFIX into the model cache, before the engine starts.
    With a shared cache (model.cache.claimName) the first pod fills it and the others find the
    files there; both downloads fetch only what is missing. A failure ends this container with
    the last log lines as its termination message: the status shows them (ModelDownloadFailed).
    It gets the engine's env and envFrom too: HF_ENDPOINT (a mirror), proxies, a CA bundle."""
    hub = hub_model(s.model_uri)
    if hub is not None:
        command = [
            "hf",
            "download",
            hub[0],
            "--revision",
            hub[1],
            "--local-dir",
            model_arg(s.model_uri),
            *(arg for pattern in DOWNLOAD_PATTERNS for arg in ("--include", pattern)),
        ]
        # After the user's env: the download needs the Hub.
        env = [{"name": "HF_HUB_OFFLINE", "value": "0"}, *_hf_token_env(s.model_token_secret)]
    else:
        command = [*S3_DOWNLOAD, s.model_uri, "--local-dir", model_arg(s.model_uri)]
        env = s3_env(s.model_s3)
    amounts = {k: s.resources[k] for k in ("cpu", "memory") if k in s.resources}
    return {
        "name": DOWNLOAD_CONTAINER,
        "image": image,
        "command": command,
        "envFrom": [{"configMapRef": {"name": configmap_name(s)}}, *s.engine.get("envFrom", [])],
        "env": [*s.engine.get("env", []), *env],
        "resources": {"requests": dict(amounts), "limits": dict(amounts)} if amounts else {},
        "volumeMounts": [m for m in mounts if m["name"] in ("model-cache", "tmp")],
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": _CONTAINER_SECURITY,
    }


def _hf_token_env(token: dict[str, str] | None) -> list[dict[str, Any]]:
    if not token:
        return []
    ref = {"name": token["name"], "key": token["key"]}
    return [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": ref}}]


def s3_env(s3: S3Source | None) -> list[dict[str, Any]]:
    """model.s3 as the AWS SDKs' environment; the keys by reference to their Secret, never in the
    pod spec or argv."""
    if s3 is None:
        return []
    env: list[dict[str, Any]] = []
    if s3.endpoint:
        env.append({"name": "AWS_ENDPOINT_URL", "value": s3.endpoint})
    if s3.region:
        env.append({"name": "AWS_REGION", "value": s3.region})
    if s3.credentials_secret:
        for var, key in (
            ("AWS_ACCESS_KEY_ID", s3.access_key_id_key),
            ("AWS_SECRET_ACCESS_KEY", s3.secret_access_key_key),
        ):
            ref = {"name": s3.credentials_secret, "key": key}
            env.append({"name": var, "valueFrom": {"secretKeyRef": ref}})
    return env


def _resources(s: Spec) -> dict[str, Any]:
    amounts: dict[str, Any] = {k: s.resources[k] for k in ("cpu", "memory") if k in s.resources}
    if s.gpus:
        amounts[s.gpu_resource] = s.gpus
    return {"requests": dict(amounts), "limits": dict(amounts)} if amounts else {}


def _cache(s: Spec) -> dict[str, Any]:
    if s.model_cache_claim:
        return {"persistentVolumeClaim": {"claimName": s.model_cache_claim}}
    return {"emptyDir": {}}


def _volumes(s: Spec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes: list[dict[str, Any]] = [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": SHM_SIZE}},
        {"name": "model-cache", **_cache(s)},
        {"name": "tmp", "emptyDir": {}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "model-cache", "mountPath": CACHE_MOUNT},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if s.model_uri.startswith("pvc://"):
        claim = s.model_uri.removeprefix("pvc://").partition("/")[0]
        volumes.append(
            {"name": "model", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
        )
        mounts.append({"name": "model", "mountPath": MODEL_MOUNT, "readOnly": True})
    lora_volumes, lora_mounts = lora.volumes(s.raw.get("lora", {}))
    return volumes + lora_volumes, mounts + lora_mounts
