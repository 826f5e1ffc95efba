"""spec.lora on a real kube-apiserver: the CRD's refusals (CEL messages), and the operator loading
and unloading adapters in a real `pagoda serve` that plays a ready engine pod (its address is
written as the pod's IP: there is no kubelet here) behind an API key from a Secret, with no
change to the pod template."""

from __future__ import annotations

import random

import httpx
import kubernetes
import pytest
from isvc_helpers import create_isvc, isvc, mark_pod_ready, patch_isvc
from process_harness import http_ok, wait_for
from server_process import ServerProcess

from pagoda.engine.bench.lora_adapters import write_random_adapter
from pagoda.engine.models.config import ModelConfig
from pagoda.operator.spec import ENGINE_PORT

pytestmark = pytest.mark.integration

KEY = "lora-key"


@pytest.mark.parametrize(
    "lora, message",
    [
        (
            {"adapters": [{"name": "a", "source": "s3://bucket/a"}]},
            "lora.adapters[].source must be hf://ORG/NAME[@REVISION], pvc://CLAIM/PATH or file:///PATH",
        ),
        (
            {"adapters": [{"name": "a", "source": "pvc://claim"}]},  # no path in the claim
            "lora.adapters[].source must be",
        ),
        (
            {
                "adapters": [
                    {"name": "a", "source": "file:///x"},
                    {"name": "a", "source": "file:///y"},
                ]
            },
            "lora.adapters[].name must be unique",
        ),
        ({"maxLoraRank": 0}, "spec.lora.maxLoraRank"),
    ],
)
def test_the_crd_refuses_bad_adapters_with_a_message(api, isvc_crd, kube_ns, lora, message):
    with pytest.raises(kubernetes.client.ApiException) as e:
        create_isvc(api, kube_ns, "bad", {"model": {"uri": "default"}, "lora": lora})
    assert e.value.status == 422 and message in e.value.body


@pytest.fixture
def adapters(tmp_path):
    cfg = ModelConfig.from_shape("smollm2-135m")
    return {
        "sql": write_random_adapter(tmp_path / "sql", cfg, 8, seed=1),
        "chat": write_random_adapter(tmp_path / "chat", cfg, 16, seed=2),
        "big": write_random_adapter(tmp_path / "big", cfg, 32, seed=3),
    }


@pytest.fixture
def engine():
    """A real engine on a loopback address of its own, port 8000, as a pod would serve."""
    ip = f"127.0.{random.randint(1, 254)}.{random.randint(2, 254)}"
    proc = ServerProcess(
        "--dtype", "float32", "--max-model-len", "256", "--max-num-seqs", "4",
        "--enable-lora", "--max-lora-rank", "16", "--max-loras", "2",
        "--api-key", KEY,
        "--host", ip, "--port", str(ENGINE_PORT),  # argparse: the last --host/--port win
    )  # fmt: skip
    url = f"http://{ip}:{ENGINE_PORT}"
    try:
        wait_for("/health", lambda: http_ok(f"{url}/health"), 240, process=proc)
        yield ip, url
    finally:
        proc.kill()


def served(url: str) -> dict[str, str]:
    auth = {"Authorization": f"Bearer {KEY}"}
    data = httpx.get(f"{url}/v1/models", headers=auth, timeout=10).json()["data"]
    return {m["id"]: m["root"] for m in data if m.get("parent")}


def lora_status(api, ns: str) -> dict[str, tuple[str, str, str]]:
    st = ((isvc(api, ns, "tuned") or {}).get("status") or {}).get("lora") or {}
    return {a["name"]: (a["state"], a["podsReady"], a["message"]) for a in st.get("adapters", [])}


def test_adapters_load_and_unload_in_a_ready_pod_without_a_restart(
    api, operator, kube_ns, adapters, engine
):
    ip, url = engine
    src = {n: f"file://{p}" for n, p in adapters.items()}
    core = kubernetes.client.CoreV1Api(api)
    core.create_namespaced_secret(
        kube_ns, {"metadata": {"name": "engine-key"}, "stringData": {"key": KEY}}
    )
    create_isvc(
        api,
        kube_ns,
        "tuned",
        {
            "model": {"uri": "default"},
            "engine": {"apiKeySecret": {"name": "engine-key", "key": "key"}},
            "lora": {
                "maxLoras": 2,
                "maxLoraRank": 16,
                "adapters": [{"name": "sql", "source": src["sql"]}],
            },
        },
    )
    apps = kubernetes.client.AppsV1Api(api)
    deploy = wait_for("the Deployment", lambda: _deployment(apps, kube_ns))
    args = deploy.spec.template.spec.containers[0].args
    assert "--enable-lora" in args and args[args.index("--max-loras") + 1] == "2"
    assert not any("lora-modules" in a for a in args)
    template = deploy.spec.template.metadata.labels["pagoda.dev/revision"]

    # No pod is ready yet: the adapter waits.
    assert wait_for("status.lora", lambda: lora_status(api, kube_ns).get("sql"))[0] == "Loading"
    pod = wait_for(
        "a pod",
        lambda: (
            core.list_namespaced_pod(
                kube_ns, label_selector="pagoda.dev/inferenceservice=tuned"
            ).items
        ),
    )[0]
    mark_pod_ready(api, kube_ns, pod.metadata.name, ip)
    wait_for(
        "sql loaded",
        lambda: lora_status(api, kube_ns).get("sql", ("",))[0] == "Loaded",
        timeout=60,
    )
    assert served(url) == {"sql": str(adapters["sql"])}
    assert lora_status(api, kube_ns)["sql"] == ("Loaded", "1/1", "")

    # sql out, chat and a rank-32 adapter (over --max-lora-rank 16) in.
    patch_isvc(
        api,
        kube_ns,
        "tuned",
        {
            "spec": {
                "lora": {
                    "adapters": [
                        {"name": "chat", "source": src["chat"]},
                        {"name": "big", "source": src["big"]},
                    ]
                }
            }
        },
    )
    st = wait_for(
        "chat loaded, big failed",
        lambda: (
            (s := lora_status(api, kube_ns)).get("chat", ("",))[0] == "Loaded"
            and s.get("big", ("",))[0] == "Failed"
            and s
        ),
        timeout=60,
    )
    assert set(st) == {"chat", "big"}
    assert st["big"][1] == "0/1" and "HTTP 400" in st["big"][2] and "rank" in st["big"][2]
    assert served(url) == {"chat": str(adapters["chat"])}
    after = _deployment(apps, kube_ns)
    assert after.spec.template.metadata.labels["pagoda.dev/revision"] == template


def _deployment(apps, ns: str):
    try:
        return apps.read_namespaced_deployment("tuned", ns)
    except kubernetes.client.ApiException as e:
        if e.status == 404:
            return None
        raise
