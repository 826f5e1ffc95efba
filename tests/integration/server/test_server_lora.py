"""LoRA adapters on a real `pagoda serve` (the default model), through the official openai client:
--lora-modules in both of vLLM's forms, /v1/models with each adapter's `parent`, a request picking
its adapter by `model`, POST /v1/load_lora_adapter and /v1/unload_lora_adapter behind the API key
with vLLM's answers, a bad adapter refused with a 400, an adapter unloaded in the middle of a
stream that finishes as it started, and vllm:lora_requests_info on /metrics."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from server_process import ServerProcess

from pagoda.engine.bench.lora_adapters import write_random_adapter
from pagoda.engine.models.config import ModelConfig

pytestmark = pytest.mark.integration

KEY = "lora-secret"
PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    cfg = ModelConfig.from_shape("smollm2-135m")
    return {
        "sql": write_random_adapter(root / "sql", cfg, 8, seed=1),
        "chat": write_random_adapter(root / "chat", cfg, 16, seed=2),
        "big": write_random_adapter(root / "big", cfg, 32, seed=3),
    }


@pytest.fixture(scope="module")
def server(adapters):
    chat = json.dumps({"name": "chat", "path": str(adapters["chat"])})
    proc = ServerProcess(
        "--served-model-name",
        "base",
        "--dtype",
        "float32",
        "--max-model-len",
        "256",
        "--max-num-seqs",
        "8",
        "--enable-lora",
        "--max-loras",
        "2",
        "--max-lora-rank",
        "16",
        "--max-cpu-loras",
        "3",
        "--lora-modules",
        f"sql={adapters['sql']}",
        chat,
        "--api-key",
        KEY,
    )
    try:
        yield proc.wait_healthy()
    finally:
        proc.kill()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, timeout=120)


def complete(client, model: str) -> str:
    out = client.completions.create(model=model, prompt=PROMPT, max_tokens=12, temperature=0.0)
    assert out.model == model  # vLLM answers with the adapter's name, not the base's
    return out.choices[0].text


def post(server, path: str, body: dict, key: str | None = KEY) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{server.url}{path}", json=body, headers=headers, timeout=120)


def test_models_lists_adapters_with_their_parent(client) -> None:
    cards = {m.id: m for m in client.models.list().data}
    assert set(cards) == {"base", "sql", "chat"}
    assert cards["sql"].parent == "base" and cards["chat"].parent == "base"
    assert cards["base"].parent is None


def test_requests_pick_their_adapter_by_model(client) -> None:
    texts = {m: complete(client, m) for m in ("base", "sql", "chat")}
    assert len(set(texts.values())) == 3, texts
    chat = client.chat.completions.create(
        model="sql", messages=[{"role": "user", "content": "hi"}], max_tokens=4, temperature=0.0
    )
    assert chat.choices[0].message.content is not None and chat.model == "sql"
    streamed = client.chat.completions.create(
        model="chat",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=4,
        stream=True,
    )
    assert {c.model for c in streamed} == {"chat"}
    with pytest.raises(openai.NotFoundError) as e:
        complete(client, "nope")
    assert e.value.body["code"] == "model_not_found"  # type: ignore[index]


def test_load_and_unload_at_runtime(server, client, adapters) -> None:
    body = {"lora_name": "sql2", "lora_path": str(adapters["sql"])}
    assert post(server, "/v1/load_lora_adapter", body, key=None).status_code == 401
    ok = post(server, "/v1/load_lora_adapter", body)
    assert ok.status_code == 200, ok.text
    assert ok.text == "Success: LoRA adapter 'sql2' added successfully."
    assert complete(client, "sql2") == complete(client, "sql")  # the same weights, another id
    again = post(server, "/v1/load_lora_adapter", body)
    assert again.status_code == 400 and "already been loaded" in again.json()["error"]["message"]
    big = post(
        server, "/v1/load_lora_adapter", {"lora_name": "big", "lora_path": str(adapters["big"])}
    )
    assert big.status_code == 400 and "above --max-lora-rank 16" in big.json()["error"]["message"]
    missing = post(server, "/v1/load_lora_adapter", {"lora_name": "x", "lora_path": "/no/such"})
    assert missing.status_code == 400 and "no folder" in missing.json()["error"]["message"]
    assert "big" not in {m.id for m in client.models.list().data}
    gone = post(server, "/v1/unload_lora_adapter", {"lora_name": "sql2"})
    assert gone.status_code == 200 and gone.text.endswith("removed successfully.")
    with pytest.raises(openai.NotFoundError):
        complete(client, "sql2")
    assert post(server, "/v1/unload_lora_adapter", {"lora_name": "sql2"}).status_code == 404


def test_unloading_in_the_middle_of_a_stream_changes_nothing_in_flight(
    server, client, adapters
) -> None:
    want = client.completions.create(model="chat", prompt=PROMPT, max_tokens=40, temperature=0.0)
    body = {"lora_name": "chat2", "lora_path": str(adapters["chat"])}
    assert post(server, "/v1/load_lora_adapter", body).status_code == 200
    stream = client.completions.create(
        model="chat2", prompt=PROMPT, max_tokens=40, temperature=0.0, stream=True
    )
    chunks = iter(stream)
    text = next(chunks).choices[0].text
    assert post(server, "/v1/unload_lora_adapter", {"lora_name": "chat2"}).status_code == 200
    text += "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == want.choices[0].text


def test_lora_requests_info_metric(server, client) -> None:
    complete(client, "sql")
    series = [labels for (name, labels) in server.metrics() if name == "vllm:lora_requests_info"]
    assert series and all(dict(labels)["max_lora"] == "2" for labels in series)
    running = {dict(labels)["running_lora_adapters"] for labels in series}
    assert "sql" in running
