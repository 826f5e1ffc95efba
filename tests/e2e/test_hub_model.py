"""End to end, a Hub model by name: a local Hub (tests/local_hub.py, run by the engine image's
Python) serves a tiny random Llama that this test writes, as a Deployment and a Service in the
cluster; an InferenceService with `model: hf://org/tiny` and HF_ENDPOINT pointed at that Hub
through `engine.env` (as a user behind a mirror does) becomes Ready, and its greedy completion
through the Ingress, with the official openai client, is HF transformers' own on that model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from e2e_cluster import Cluster
from local_hub import save_tiny_tokenizer
from tiny_hf import hf_model

pytestmark = pytest.mark.e2e

LOCAL_HUB = Path(__file__).resolve().parents[1] / "local_hub.py"
REPO, HUB, NAME, SERVED, HOST = "org/tiny", "hub", "hub-model", "tiny", "hub-model.e2e"
HUB_PORT = 8000
PROMPT, STEPS = "w100 w200 w300", 12  # a prompt whose greedy tokens do not repeat at once


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The model as transformers writes it, a tokenizer, and a .bin the download must skip."""
    folder = tmp_path_factory.mktemp("tiny")
    model = hf_model("LlamaForCausalLM", tie_word_embeddings=False)
    model.save_pretrained(folder)
    save_tiny_tokenizer(folder)
    (folder / "pytorch_model.bin").write_bytes(b"never fetched: the repo has safetensors")
    return model, folder


def hub_deployment(cluster: Cluster) -> list[dict]:
    labels = {"app": HUB}
    probe = {"httpGet": {"path": f"/api/models/{REPO}/revision/main", "port": HUB_PORT}}
    pod = {
        "containers": [
            {
                "name": HUB,
                "image": cluster.engine_image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["python3", "/hub/local_hub.py", "--port", str(HUB_PORT)],
                "args": [f"{REPO}=/model"],
                "ports": [{"containerPort": HUB_PORT}],
                "readinessProbe": {**probe, "periodSeconds": 2},
                "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
                "volumeMounts": [
                    {"name": "code", "mountPath": "/hub"},
                    {"name": "model", "mountPath": "/model"},
                ],
            }
        ],
        "volumes": [
            {"name": "code", "configMap": {"name": "local-hub-code"}},
            {"name": "model", "configMap": {"name": "local-hub-model"}},
        ],
    }
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": HUB, "labels": labels},
            "spec": {
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": pod},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": HUB},
            "spec": {"selector": labels, "ports": [{"port": HUB_PORT, "targetPort": HUB_PORT}]},
        },
    ]


def hub_isvc(cluster: Cluster, ns: str) -> dict:
    return {
        "apiVersion": "pagoda.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": NAME, "namespace": ns},
        "spec": {
            "model": {"uri": f"hf://{REPO}", "servedName": SERVED},
            "engine": {
                "image": cluster.engine_image,
                "imagePullPolicy": "IfNotPresent",
                "dtype": "float32",
                "maxModelLen": 256,
                "args": ["--kv-cache-memory-bytes", str(16 * 2**20)],
                "env": [{"name": "HF_ENDPOINT", "value": f"http://{HUB}.{ns}.svc:{HUB_PORT}"}],
            },
            "resources": {"memory": "2Gi"},
            "replicas": 1,
            "lifecycle": {"startupTimeoutSeconds": 300},
            "exposure": {"ingress": {"host": HOST, "path": "/"}},
        },
    }


def hf_greedy(model, folder: Path) -> list[str]:
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.inference_mode():
        out = model.generate(ids, max_new_tokens=STEPS, min_new_tokens=STEPS, do_sample=False)
    return tokenizer.decode(out[0, ids.shape[1] :]).split()


def test_hub_model_by_name(cluster: Cluster, operator, ns: str, tiny) -> None:
    from openai import OpenAI

    model, folder = tiny
    cluster.kubectl("create", "configmap", "local-hub-code", "-n", ns, f"--from-file={LOCAL_HUB}")
    cluster.kubectl("create", "configmap", "local-hub-model", "-n", ns, f"--from-file={folder}")
    items = {"apiVersion": "v1", "kind": "List", "items": hub_deployment(cluster)}
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(items))
    cluster.kubectl("apply", "-f", "-", input=json.dumps(hub_isvc(cluster, ns)))
    try:
        cluster.kubectl("rollout", "status", f"deployment/{HUB}", "-n", ns, "--timeout=100s")
        cluster.wait(
            lambda: _ready(cluster.get("inferenceservice", NAME, "-n", ns)),
            timeout=600,
            what=f"the InferenceService of hf://{REPO} to be Ready",
        )
        client = OpenAI(
            base_url=f"{cluster.ingress_url}/v1",
            api_key="unused",
            default_headers={"Host": HOST},
            timeout=120,
            max_retries=0,
        )
        cluster.wait(lambda: _serves(client), timeout=60, what="the model through the Ingress")
        answer = client.completions.create(
            model=SERVED,
            prompt=PROMPT,
            max_tokens=STEPS,
            temperature=0,
            extra_body={"ignore_eos": True},
        )
    except AssertionError:
        print(cluster.describe(ns))
        raise
    assert answer.usage.prompt_tokens == 3 and answer.usage.completion_tokens == STEPS
    assert answer.choices[0].text.split() == hf_greedy(model, folder)
    served = cluster.kubectl("logs", "-n", ns, f"deployment/{HUB}").stdout
    assert f"GET {REPO}/model.safetensors" in served and f"GET {REPO}/tokenizer.json" in served
    assert "pytorch_model.bin" not in served, served  # safetensors only
    cluster.kubectl("delete", "inferenceservice", NAME, "-n", ns, "--wait=true", "--timeout=120s")


def _ready(obj: dict | None) -> bool:
    conditions = ((obj or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _serves(client) -> bool:
    try:
        return any(m.id == SERVED for m in client.models.list().data)
    except Exception:  # retried until the deadline
        return False
