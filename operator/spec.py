"""The InferenceService as plain data: the operator's defaults live here and nowhere else.

The CRD (crds/inferenceservice.yaml) validates; this module fills in what was left out. Engine
fields stay a dict: each one is an engine flag in camelCase, so `engine_args` needs no table.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

GROUP, VERSION, PLURAL, KIND = "pagoda.dev", "v1alpha1", "inferenceservices", "InferenceService"
FIELD_MANAGER = "pagoda-operator"
ENGINE_PORT = 8000
SELECTOR_LABEL = "pagoda.dev/inferenceservice"
REVISION_LABEL = "pagoda.dev/revision"
MODEL_MOUNT = "/mnt/models"
CACHE_MOUNT = "/models"
HUB_DIR = f"{CACHE_MOUNT}/hub"  # hf://ORG/NAME@REV is downloaded to HUB_DIR/ORG/NAME/REV
S3_DIR = f"{CACHE_MOUNT}/s3"  # s3://BUCKET/PREFIX is downloaded to S3_DIR/BUCKET/PREFIX
# pagoda gateway sets it (an ISO time) to ask for a replica of an InferenceService at zero. Not
# under "pagoda.dev/": kopf keeps its own state there and leaves such keys out of what it diffs.
WAKE_ANNOTATION = "gateway.pagoda.dev/wake-requested"

# Engine fields that are operator settings, not flags.
NOT_FLAGS = {
    "image",
    "imagePullPolicy",
    "command",
    "apiKeySecret",
    "args",
    "env",
    "envFrom",
    "volumeMounts",
}
LORA_LIMITS = ("maxLoras", "maxLoraRank", "maxCpuLoras")  # spec.lora's fields that are flags


@dataclass(frozen=True)
class ScaleRule:
    """One direction of scaling: wait `stabilization_window_seconds`, move at most `pods` per period."""

    stabilization_window_seconds: int
    pods: int
    period_seconds: int


@dataclass(frozen=True)
class Autoscaling:
    mode: str  # Operator | HPA
    min_replicas: int
    max_replicas: int
    metric: str  # WaitingRequests | InFlightRequests | KVCacheUsage | TTFTSecondsP95
    target: float
    window_seconds: int = 60  # the TTFT quantile's window
    tolerance: float = 0.1
    scale_up: ScaleRule = ScaleRule(0, 4, 60)
    scale_down: ScaleRule = ScaleRule(300, 1, 60)
    scale_to_zero_after_seconds: int = 600  # minReplicas 0 only: idle this long -> 0 replicas


@dataclass(frozen=True)
class Analysis:
    max_error_rate: float | None = None
    max_ttft_seconds_p95: float | None = None
    window_seconds: int = 120
    min_requests: int = 10


@dataclass(frozen=True)
class Ingress:
    class_name: str | None = None
    host: str | None = None
    path: str = "/"
    tls_secret: str | None = None
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class S3Source:
    """model.s3. The keys reach the download only as env from their Secret, by reference."""

    endpoint: str | None = None  # an S3-compatible server; None: AWS
    region: str | None = None
    credentials_secret: str | None = None  # None: the AWS SDK's own chain (IRSA, engine.env)
    access_key_id_key: str = "AWS_ACCESS_KEY_ID"
    secret_access_key_key: str = "AWS_SECRET_ACCESS_KEY"


@dataclass(frozen=True)
class Spec:
    name: str
    namespace: str
    raw: dict[str, Any]  # the spec as the apiserver stored it
    model_uri: str
    served_name: str | None
    engine: dict[str, Any]
    resources: dict[str, Any]
    gpus: int
    gpu_resource: str
    replicas: int | None  # None when autoscaling owns the count
    autoscaling: Autoscaling | None
    max_surge: int = 1
    max_unavailable: int = 0
    analysis: Analysis | None = None
    startup_timeout_seconds: int = 600
    drain_seconds: int = 30
    ingress: Ingress | None = None
    disruption: dict[str, Any] | None = None
    service_monitor: bool = False
    service_monitor_interval: str = "15s"
    scheduling: dict[str, Any] = field(default_factory=dict)
    pod: dict[str, Any] = field(default_factory=dict)  # spec.pod: pod-level overrides, as given
    model_token_secret: dict[str, str] | None = None  # {name, key}: HF_TOKEN for the download
    model_s3: S3Source | None = None  # model.s3: where and as whom an s3:// model is read
    model_cache_claim: str | None = None  # a PVC shared by the pods as the model cache
    network_policy: dict[str, Any] = field(default_factory=dict)  # spec.networkPolicy, as given
    nodes: int = (
        1  # pods per engine; above 1 a LeaderWorkerSet runs it (resources/leaderworkerset.py)
    )

    @property
    def replicas_owner(self) -> str:
        if self.autoscaling is None:
            return "spec"
        return "hpa" if self.autoscaling.mode == "HPA" else "autoscaler"

    @property
    def selector(self) -> dict[str, str]:
        return {SELECTOR_LABEL: self.name}


def parse(name: str, namespace: str, spec: dict[str, Any]) -> Spec:
    model, res, rollout = spec["model"], spec.get("resources", {}), spec.get("rollout", {})
    life, ing = spec.get("lifecycle", {}), spec.get("exposure", {}).get("ingress")
    sm = spec.get("monitoring", {}).get("serviceMonitor", {})
    analysis = rollout.get("analysis")
    return Spec(
        name=name,
        namespace=namespace,
        raw=spec,
        model_uri=model["uri"],
        served_name=model.get("servedName"),
        engine=spec.get("engine", {}),
        resources=res,
        gpus=gpu_count(res, spec.get("engine", {}), spec.get("nodes", 1)),
        gpu_resource=res.get("gpu", {}).get("resourceName", "nvidia.com/gpu"),
        replicas=None if "autoscaling" in spec else spec.get("replicas", 1),
        autoscaling=_autoscaling(spec["autoscaling"]) if "autoscaling" in spec else None,
        max_surge=rollout.get("maxSurge", 1),
        max_unavailable=rollout.get("maxUnavailable", 0),
        analysis=None
        if analysis is None
        else Analysis(
            max_error_rate=analysis.get("maxErrorRate"),
            max_ttft_seconds_p95=analysis.get("maxTTFTSecondsP95"),
            window_seconds=analysis.get("windowSeconds", 120),
            min_requests=analysis.get("minRequests", 10),
        ),
        startup_timeout_seconds=life.get("startupTimeoutSeconds", 600),
        drain_seconds=life.get("drainSeconds", 30),
        ingress=None
        if ing is None
        else Ingress(
            class_name=ing.get("className"),
            host=ing.get("host"),
            path=ing.get("path", "/"),
            tls_secret=ing.get("tls", {}).get("secretName"),
            annotations=ing.get("annotations", {}),
        ),
        disruption=spec.get("disruption"),
        service_monitor=sm.get("enabled", False),
        service_monitor_interval=sm.get("interval", "15s"),
        scheduling=spec.get("scheduling", {}),
        pod=spec.get("pod", {}),
        model_token_secret=model.get("tokenSecret"),
        model_s3=_s3_source(model["s3"]) if "s3" in model else None,
        model_cache_claim=model.get("cache", {}).get("claimName"),
        network_policy=spec.get("networkPolicy", {}),
        nodes=spec.get("nodes", 1),
    )


def _s3_source(s3: dict[str, Any]) -> S3Source:
    creds = s3.get("credentialsSecret", {})
    defaults = S3Source()
    return S3Source(
        endpoint=s3.get("endpoint"),
        region=s3.get("region"),
        credentials_secret=creds.get("name"),
        access_key_id_key=creds.get("accessKeyIdKey", defaults.access_key_id_key),
        secret_access_key_key=creds.get("secretAccessKeyKey", defaults.secret_access_key_key),
    )


def _autoscaling(a: dict[str, Any]) -> Autoscaling:
    defaults = Autoscaling("Operator", 1, 1, "WaitingRequests", 1.0)

    def rule(d: dict[str, Any] | None, base: ScaleRule) -> ScaleRule:
        d = d or {}
        return ScaleRule(
            d.get("stabilizationWindowSeconds", base.stabilization_window_seconds),
            d.get("pods", base.pods),
            d.get("periodSeconds", base.period_seconds),
        )

    return Autoscaling(
        mode=a.get("mode", "Operator"),
        min_replicas=a["minReplicas"],
        max_replicas=a["maxReplicas"],
        metric=a["metric"]["type"],
        target=float(a["metric"]["target"]),
        window_seconds=a["metric"].get("windowSeconds", defaults.window_seconds),
        tolerance=a.get("tolerance", defaults.tolerance),
        scale_up=rule(a.get("scaleUp"), defaults.scale_up),
        scale_down=rule(a.get("scaleDown"), defaults.scale_down),
        scale_to_zero_after_seconds=a.get(
            "scaleToZeroAfterSeconds", defaults.scale_to_zero_after_seconds
        ),
    )


def gpu_count(resources: dict[str, Any], engine: dict[str, Any], nodes: int) -> int:
    """GPUs per pod: as given, else one per rank of the pod (tensor x pipeline parallel, split
    over `nodes`) when GPUs are asked for at all; the CRD's CEL rules keep a given count equal to
    the pod's ranks and the ranks divisible by the nodes."""
    if "gpu" not in resources:
        return 0
    ranks = engine.get("tensorParallelSize", 1) * engine.get("pipelineParallelSize", 1)
    count: int = resources["gpu"].get("count", ranks // nodes)
    return count


def flag(camel: str) -> str:
    """maxNumSeqs -> --max-num-seqs"""
    return "--" + re.sub(r"(?<!^)(?=[A-Z])", "-", camel).lower()


def snake(camel: str) -> str:
    """numSpeculativeTokens -> num_speculative_tokens"""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", camel).lower()


def json_arg(obj: dict[str, Any]) -> str:
    """An object-valued field (speculativeConfig) as the JSON its flag takes, vLLM's snake_case
    keys: {"method": "ngram", "numSpeculativeTokens": 4} -> '{"method": "ngram",
    "num_speculative_tokens": 4}'."""
    return json.dumps({snake(k): v for k, v in obj.items()}, sort_keys=True)


def hub_model(uri: str) -> tuple[str, str] | None:
    """hf://ORG/NAME[@REVISION] -> (ORG/NAME, REVISION or main); None for other URIs."""
    if not uri.startswith("hf://"):
        return None
    repo, _, rev = uri.removeprefix("hf://").partition("@")
    return repo, rev or "main"


def s3_model(uri: str) -> tuple[str, str] | None:
    """s3://BUCKET[/PREFIX] -> (BUCKET, PREFIX without its slashes at either end); None for other
    URIs."""
    if not uri.startswith("s3://"):
        return None
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    return bucket, prefix.strip("/")


def downloaded(uri: str) -> bool:
    """Whether the model-download init container fetches the model before the engine starts."""
    return hub_model(uri) is not None or s3_model(uri) is not None


def model_arg(uri: str) -> str:
    """What the engine gets as MODEL: a path (hub and S3 models are downloaded before it starts),
    or `default`."""
    hub = hub_model(uri)
    if hub is not None:
        return f"{HUB_DIR}/{hub[0]}/{hub[1]}"
    s3 = s3_model(uri)
    if s3 is not None:
        return f"{S3_DIR}/{s3[0]}/{s3[1]}".rstrip("/")
    if uri.startswith("pvc://"):
        _, _, path = uri.removeprefix("pvc://").partition("/")
        return f"{MODEL_MOUNT}/{path}".rstrip("/")
    if uri.startswith("file://"):
        return uri.removeprefix("file://")
    return uri


def engine_args(s: Spec) -> list[str]:
    """`pagoda serve` arguments, vLLM-named; an engine field not set is a flag not passed."""
    args = [
        model_arg(s.model_uri),
        "--host",
        "0.0.0.0",
        "--port",
        str(ENGINE_PORT),
        "--served-model-name",
        s.served_name or s.name,
    ]
    for key, value in s.engine.items():
        if key in NOT_FLAGS:
            continue
        if isinstance(value, bool):
            if key == "enablePrefixCaching":
                args.append(flag(key) if value else "--no-enable-prefix-caching")
            elif value:
                args.append(flag(key))
        else:
            args += [flag(key), json_arg(value) if isinstance(value, dict) else str(value)]
    if "command" not in s.engine:  # Pagoda's own flag; another engine drains on SIGTERM its own way
        args += ["--shutdown-timeout", str(s.drain_seconds)]
    if "lora" in s.raw:  # the adapters are loaded through the endpoints (operator/lora.py)
        lora = s.raw["lora"]
        args.append("--enable-lora")
        args += [a for k in LORA_LIMITS if k in lora for a in (flag(k), str(lora[k]))]
    return args + list(s.engine.get("args", []))
