"""resources/: spec -> objects, each checked against Kubernetes' own OpenAPI schema."""

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from pagoda.engine.loader.hub import MODEL_FILES, TOKENIZER_FILES
from pagoda.operator.children import desired, engine_image, revision
from pagoda.operator.resources.deployment import (
    DOWNLOAD_PATTERNS,
    PRESTOP_SECONDS,
    S3_DOWNLOAD,
    deployment,
)
from pagoda.operator.resources.hpa import HPA_METRICS, quantity
from pagoda.operator.resources.ingress import ingress_url
from pagoda.operator.resources.networkpolicy import networkpolicy
from pagoda.operator.spec import parse

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((ROOT / "crds" / "examples").glob("*.yaml"))
K8S = "1.34.0"


def spec(**over):
    return parse("chat", "team", {"model": {"uri": "default"}, **over})


def container(d):
    return d["spec"]["template"]["spec"]["containers"][0]


EXAMPLE_DOCS = [
    (p.name, i, d) for p in EXAMPLES for i, d in enumerate(yaml.safe_load_all(p.read_text()))
]


@pytest.mark.parametrize(
    "obj", [d for _, _, d in EXAMPLE_DOCS], ids=[f"{n}#{i}" for n, i, _ in EXAMPLE_DOCS]
)
def test_example_children_are_valid_kubernetes_objects(obj):
    s = parse(obj["metadata"]["name"], "default", obj["spec"])
    objs = desired(s, s, engine_image(s, "gpu:1", "cpu:1"), s.replicas or 1, servicemonitors=True)
    for o in objs:
        if o["kind"] not in ("ServiceMonitor", "LeaderWorkerSet"):  # not built-in kinds
            kubernetes_validate.validate(o, K8S, strict=True)
    kinds = [o["kind"] for o in objs if o["kind"] != "NetworkPolicy"]
    assert kinds[:3] == [
        "ConfigMap",
        "Deployment" if s.nodes == 1 else "LeaderWorkerSet",
        "Service",
    ]


def test_deployment_cpu_defaults():
    s = spec(
        resources={"cpu": "2", "memory": "4Gi"},
        lifecycle={"drainSeconds": 40, "startupTimeoutSeconds": 300},
    )
    d = deployment(s, engine_image(s, "pagoda-engine:1", "pagoda-engine-cpu:1"), 3)
    c, pod = container(d), d["spec"]["template"]["spec"]
    assert d["spec"]["replicas"] == 3 and c["image"] == "pagoda-engine-cpu:1"
    assert d["spec"]["strategy"]["rollingUpdate"] == {
        "maxSurge": 1,
        "maxUnavailable": 0,
    }  # surge first
    assert c["resources"] == {
        "requests": {"cpu": "2", "memory": "4Gi"},
        "limits": {"cpu": "2", "memory": "4Gi"},
    }
    assert c["startupProbe"]["httpGet"]["path"] == "/health"
    assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] >= 300
    assert (
        c["readinessProbe"]["httpGet"]["path"] == c["livenessProbe"]["httpGet"]["path"] == "/health"
    )
    assert c["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", str(PRESTOP_SECONDS)]
    assert pod["terminationGracePeriodSeconds"] > PRESTOP_SECONDS + 40
    assert c["args"][c["args"].index("--shutdown-timeout") + 1] == "40"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    assert "emptyDir" in vols[mounts["/models"]]
    ann = d["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/port"] == "8000"
    assert d["spec"]["selector"]["matchLabels"] == {"pagoda.dev/inferenceservice": "chat"}


def test_deployment_gpu_pvc_and_scheduling():
    s = spec(
        model={"uri": "pvc://weights/llama"},
        resources={"gpu": {"count": 2}},
        engine={"tensorParallelSize": 2, "image": "mine:2"},
        scheduling={
            "nodeSelector": {"gpu": "h100"},
            "priorityClassName": "serving",
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
        },
    )
    d = deployment(s, engine_image(s, "gpu:1", "cpu:1"), 1)
    c, pod = container(d), d["spec"]["template"]["spec"]
    assert c["image"] == "mine:2"
    assert (
        c["resources"]["limits"]["nvidia.com/gpu"]
        == 2
        == c["resources"]["requests"]["nvidia.com/gpu"]
    )
    assert c["args"][0] == "/mnt/models/llama"
    claim = next(v for v in pod["volumes"] if "persistentVolumeClaim" in v)["persistentVolumeClaim"]
    assert claim == {"claimName": "weights", "readOnly": True}
    assert pod["nodeSelector"] == {"gpu": "h100"} and pod["priorityClassName"] == "serving"
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert engine_image(spec(resources={"gpu": {"count": 1}}), "gpu:1", "cpu:1") == "gpu:1"


def test_revision_moves_with_the_pod_template_only():
    a = deployment(spec(), "img", 1)
    assert revision(a) == revision(deployment(spec(), "img", 7))  # scaling is not a rollout
    assert revision(a) != revision(deployment(spec(engine={"maxNumSeqs": 4}), "img", 1))
    assert revision(a) != revision(deployment(spec(), "img2", 1))
    # The ConfigMap feeds the pods' environment: changing it must roll them too.
    assert revision(a) != revision(deployment(spec(resources={"cpu": "3"}), "img", 1))


def test_hpa_mode_leaves_replicas_out():
    assert "replicas" not in deployment(spec(), "img", None)["spec"]


def test_the_adapter_rules_serve_every_hpa_metric():
    """deploy/prometheus-adapter/values.yaml (the rules docs/operator.md points to) names each
    metric an HPA can ask for, per pod, from the engine's series."""
    values = yaml.safe_load((ROOT / "deploy" / "prometheus-adapter" / "values.yaml").read_text())
    rules = values["rules"]["custom"]
    assert {r["name"]["as"] for r in rules} == set(HPA_METRICS.values())
    for r in rules:
        assert r["seriesQuery"].startswith("vllm:"), r
        assert r["resources"]["overrides"] == {
            "namespace": {"resource": "namespace"},
            "pod": {"resource": "pod"},
        }, r


def test_ingress_tls_and_streaming():
    s = spec(
        exposure={
            "ingress": {
                "className": "nginx",
                "host": "a.example.com",
                "path": "/llm",
                "tls": {"secretName": "cert"},
                "annotations": {"x/y": "z"},
            }
        }
    )
    ing = next(o for o in desired(s, s, "img", 1, False) if o["kind"] == "Ingress")
    assert ing["spec"]["ingressClassName"] == "nginx"
    assert ing["spec"]["tls"] == [{"hosts": ["a.example.com"], "secretName": "cert"}]
    rule = ing["spec"]["rules"][0]
    assert rule["host"] == "a.example.com" and rule["http"]["paths"][0]["path"] == "/llm"
    assert rule["http"]["paths"][0]["backend"]["service"] == {
        "name": "chat",
        "port": {"name": "http"},
    }
    assert (
        int(ing["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 600
    )
    assert ing["metadata"]["annotations"]["x/y"] == "z"
    assert ingress_url(s) == "https://a.example.com/llm"


def test_features_left_out_render_nothing():
    kinds = {o["kind"] for o in desired(spec(), spec(), "img", 1, True)}
    assert kinds == {"ConfigMap", "Service", "Deployment"}


def test_every_feature_renders_its_object():
    s = spec(
        autoscaling={
            "mode": "HPA",
            "minReplicas": 1,
            "maxReplicas": 3,
            "metric": {"type": "KVCacheUsage", "target": 0.75},
        },
        exposure={"ingress": {}},
        disruption={"minAvailable": 1},
        monitoring={"serviceMonitor": {"enabled": True, "interval": "30s"}},
    )
    objs = {o["kind"]: o for o in desired(s, s, "img", None, servicemonitors=True)}
    assert set(objs) == {
        "ConfigMap",
        "Service",
        "Deployment",
        "Ingress",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "ServiceMonitor",
    }
    hpa = objs["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "chat"}
    assert hpa["metrics"][0]["pods"]["metric"]["name"] == "vllm_kv_cache_usage_perc"
    assert hpa["metrics"][0]["pods"]["target"]["averageValue"] == "750m"
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300
    assert objs["PodDisruptionBudget"]["spec"]["minAvailable"] == 1
    assert objs["ServiceMonitor"]["spec"]["endpoints"][0] == {
        "port": "http",
        "path": "/metrics",
        "interval": "30s",
    }
    assert {o["kind"] for o in desired(s, s, "img", None, servicemonitors=False)} == set(objs) - {
        "ServiceMonitor"
    }
    for o in objs.values():
        assert o["metadata"]["labels"]["pagoda.dev/inferenceservice"] == "chat"
        assert o["metadata"]["namespace"] == "team"


def test_configmap_pins_threads_and_offline_mode():
    cm = desired(
        spec(resources={"cpu": "2500m"}), spec(resources={"cpu": "2500m"}), "img", 1, False
    )[0]
    assert cm["data"]["OMP_NUM_THREADS"] == "2" and cm["data"]["HF_HUB_OFFLINE"] == "1"
    hub = spec(model={"uri": "hf://a/b"})
    assert desired(hub, hub, "img", 1, False)[0]["data"]["HF_HUB_OFFLINE"] == "1"  # the engine


def test_the_download_fetches_the_files_the_engine_loads():
    """The operator cannot import the engine: its list of patterns is a copy, kept equal here."""
    assert list(DOWNLOAD_PATTERNS) == MODEL_FILES + TOKENIZER_FILES


def test_the_download_gets_the_engines_env_behind_a_mirror():
    mirror = {"name": "HF_ENDPOINT", "value": "http://hub.mirror:8000"}
    s = spec(
        model={"uri": "hf://org/tiny"},
        engine={
            "env": [mirror, {"name": "HF_HUB_OFFLINE", "value": "1"}],
            "envFrom": [{"secretRef": {"name": "proxy"}}],
        },
    )
    dl = deployment(s, "cpu:1", 1)["spec"]["template"]["spec"]["initContainers"][0]
    assert dl["env"][0] == mirror
    # the last HF_HUB_OFFLINE wins in a container's env: the download's own
    assert [e for e in dl["env"] if e["name"] == "HF_HUB_OFFLINE"][-1]["value"] == "0"
    assert {"secretRef": {"name": "proxy"}} in dl["envFrom"]


def test_hub_models_are_downloaded_into_the_cache_before_the_engine_starts():
    s = spec(
        model={
            "uri": "hf://Qwen/Qwen2.5-0.5B-Instruct@7ae557604adf67be50417f59c2c2f167def9a775",
            "tokenSecret": {"name": "hf", "key": "token"},
            "cache": {"claimName": "model-cache"},
        },
        resources={"cpu": "2", "memory": "4Gi", "gpu": {"count": 1}},
        pod={"initContainers": [{"name": "mine", "image": "busybox"}]},
    )
    d = deployment(s, "gpu:1", 1)
    kubernetes_validate.validate(d, K8S, strict=True)
    pod = d["spec"]["template"]["spec"]
    dl = pod["initContainers"][0]
    assert [c["name"] for c in pod["initContainers"]] == ["model-download", "mine"]
    local = "/models/hub/Qwen/Qwen2.5-0.5B-Instruct/7ae557604adf67be50417f59c2c2f167def9a775"
    assert dl["image"] == "gpu:1" and dl["command"][:7] == [
        "hf",
        "download",
        "Qwen/Qwen2.5-0.5B-Instruct",
        "--revision",
        "7ae557604adf67be50417f59c2c2f167def9a775",
        "--local-dir",
        local,
    ]
    includes = dl["command"][7:]
    assert includes[0::2] == ["--include"] * len(DOWNLOAD_PATTERNS)
    assert includes[1::2] == list(DOWNLOAD_PATTERNS)
    assert container(d)["args"][0] == local
    token = {"secretKeyRef": {"name": "hf", "key": "token"}}
    assert {"name": "HF_TOKEN", "valueFrom": token} in dl["env"]
    assert {"name": "HF_HUB_OFFLINE", "value": "0"} in dl["env"]
    assert "nvidia.com/gpu" not in dl["resources"]["limits"]  # the download holds no GPU
    assert dl["terminationMessagePolicy"] == "FallbackToLogsOnError"
    cache = next(v for v in pod["volumes"] if v["name"] == "model-cache")
    assert cache == {"name": "model-cache", "persistentVolumeClaim": {"claimName": "model-cache"}}
    assert "initContainers" not in deployment(spec(), "cpu:1", 1)["spec"]["template"]["spec"]


def test_quantity():
    assert (quantity(4), quantity(0.8), quantity(1.5), quantity(0.0005)) == (
        "4",
        "800m",
        "1500m",
        "1m",
    )


def test_pod_overrides():
    s = spec(
        engine={
            "image": "registry.example.com/vllm:1",
            "command": ["vllm", "serve"],
            "envFrom": [{"secretRef": {"name": "hf-token"}}],
            "volumeMounts": [{"name": "adapters", "mountPath": "/adapters", "readOnly": True}],
            "apiKeySecret": {"name": "keys", "key": "api"},
        },
        pod={
            "imagePullSecrets": [{"name": "regcred"}],
            "serviceAccountName": "llm-engine",
            "runtimeClassName": "nvidia",
            "volumes": [{"name": "adapters", "configMap": {"name": "lora"}}],
            "initContainers": [{"name": "fetch", "image": "busybox", "command": ["true"]}],
            "sidecars": [{"name": "proxy", "image": "envoy:1"}],
            "template": {
                "metadata": {"annotations": {"team": "ml"}, "labels": {"pagoda.dev/revision": "x"}},
                "spec": {
                    "containers": [{"name": "engine", "env": [{"name": "EXTRA", "value": "1"}]}],
                    "enableServiceLinks": None,
                },
            },
        },
    )
    d = deployment(s, engine_image(s, "gpu:1", "cpu:1"), 1)
    kubernetes_validate.validate(d, K8S, strict=True)
    pod = d["spec"]["template"]["spec"]
    c = container(d)
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["serviceAccountName"] == "llm-engine" and pod["runtimeClassName"] == "nvidia"
    assert [x["name"] for x in pod["initContainers"]] == ["fetch"]
    assert [x["name"] for x in pod["containers"]] == ["engine", "proxy"]
    assert {"name": "adapters", "configMap": {"name": "lora"}} in pod["volumes"]
    assert c["image"] == "registry.example.com/vllm:1" and c["command"] == ["vllm", "serve"]
    assert "--shutdown-timeout" not in c["args"]  # Pagoda's own flag, not another engine's
    assert c["envFrom"][1] == {"secretRef": {"name": "hf-token"}}
    assert {"name": "adapters", "mountPath": "/adapters", "readOnly": True} in c["volumeMounts"]
    # The patch merged into the engine container by name, beside the operator's own env.
    assert [e["name"] for e in c["env"]] == ["PAGODA_API_KEY", "EXTRA"]
    assert "enableServiceLinks" not in pod
    meta = d["spec"]["template"]["metadata"]
    assert meta["annotations"]["team"] == "ml"
    assert meta["labels"]["pagoda.dev/revision"] != "x"  # the operator's labels win
    plain = deployment(spec(), "cpu:1", 1)
    assert revision(plain) != revision(d)


def test_engine_is_read_only_and_keeps_its_api_key_out_of_argv():
    s = spec(engine={"apiKeySecret": {"name": "keys", "key": "api"}})
    d = deployment(s, "cpu:1", 1)
    c = container(d)
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    writable = {m["mountPath"] for m in c["volumeMounts"]}
    assert {"/tmp", "/dev/shm", "/models"} <= writable
    key = {"secretKeyRef": {"name": "keys", "key": "api"}}
    assert c["env"] == [{"name": "PAGODA_API_KEY", "valueFrom": key}]
    assert not any("API_KEY" in a for a in c["args"] + c["command"])


def test_network_policy_lets_in_the_operator_and_the_named_peers():
    assert networkpolicy(spec(), "pagoda-system") is None
    ingress_ns = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress"}}}
    s = spec(networkPolicy={"enabled": True, "allowFrom": [ingress_ns]})
    np = networkpolicy(s, "pagoda-system")
    kubernetes_validate.validate(np, K8S, strict=True)
    rule = np["spec"]["ingress"][0]
    operator = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "pagoda-system"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "pagoda-operator"}},
    }
    assert rule["from"] == [operator, ingress_ns]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8000}]
    assert np["spec"]["podSelector"] == {"matchLabels": {"pagoda.dev/inferenceservice": "chat"}}
    assert networkpolicy(s, None)["spec"]["ingress"][0]["from"][0]["namespaceSelector"] == {}
    assert [o["kind"] for o in desired(s, s, "img", 1, False, "x")][:2] == [
        "ConfigMap",
        "NetworkPolicy",
    ]


def test_parallel_sizes_become_flags_and_one_gpu_per_rank():
    s = spec(
        resources={"gpu": {}},
        engine={"tensorParallelSize": 2, "pipelineParallelSize": 2},
    )
    c = container(deployment(s, engine_image(s, "gpu:1", "cpu:1"), 1))
    args = c["args"]
    assert args[args.index("--tensor-parallel-size") + 1] == "2"
    assert args[args.index("--pipeline-parallel-size") + 1] == "2"
    assert (
        c["resources"]["limits"]["nvidia.com/gpu"]
        == 4
        == c["resources"]["requests"]["nvidia.com/gpu"]
    )
    assert c["image"] == "gpu:1"


def test_s3_models_are_downloaded_into_the_cache_with_keys_from_the_secret():
    s = spec(
        model={
            "uri": "s3://models/qwen/0.5b/",
            "s3": {
                "endpoint": "http://s3.storage:7070",
                "region": "eu-west-1",
                "credentialsSecret": {"name": "s3-keys", "secretAccessKeyKey": "secret"},
            },
        },
        resources={"cpu": "2", "memory": "4Gi"},
        engine={"env": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}]},
    )
    d = deployment(s, "cpu:1", 1)
    kubernetes_validate.validate(d, K8S, strict=True)
    pod = d["spec"]["template"]["spec"]
    (dl,) = pod["initContainers"]
    local = "/models/s3/models/qwen/0.5b"
    assert dl["name"] == "model-download" and dl["image"] == "cpu:1"
    assert dl["command"] == [*S3_DOWNLOAD, "s3://models/qwen/0.5b/", "--local-dir", local]
    assert container(d)["args"][0] == local
    assert dl["env"] == [
        {"name": "HTTPS_PROXY", "value": "http://proxy:3128"},  # the engine's env first
        {"name": "AWS_ENDPOINT_URL", "value": "http://s3.storage:7070"},
        {"name": "AWS_REGION", "value": "eu-west-1"},
        {
            "name": "AWS_ACCESS_KEY_ID",
            "valueFrom": {"secretKeyRef": {"name": "s3-keys", "key": "AWS_ACCESS_KEY_ID"}},
        },
        {
            "name": "AWS_SECRET_ACCESS_KEY",
            "valueFrom": {"secretKeyRef": {"name": "s3-keys", "key": "secret"}},
        },
    ]
    assert "s3-keys" not in " ".join(dl["command"] + container(d)["args"])  # never argv
    assert not any(e["name"].startswith("AWS_") for e in container(d).get("env", []))
    assert {m["name"] for m in dl["volumeMounts"]} == {"model-cache", "tmp"}
    assert dl["terminationMessagePolicy"] == "FallbackToLogsOnError"
    cache = next(v for v in pod["volumes"] if v["name"] == "model-cache")
    assert cache == {"name": "model-cache", "emptyDir": {}}


def test_s3_without_model_s3_leaves_the_sdk_its_own_chain():
    """No endpoint, region or Secret: AWS S3 as the pod's identity (IRSA), nothing rendered."""
    d = deployment(spec(model={"uri": "s3://models/tiny"}), "cpu:1", 1)
    (dl,) = d["spec"]["template"]["spec"]["initContainers"]
    assert not any(e["name"].startswith(("AWS_", "HF_")) for e in dl["env"])
    assert dl["command"][-2:] == ["--local-dir", "/models/s3/models/tiny"]
