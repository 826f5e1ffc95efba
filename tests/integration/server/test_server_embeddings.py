"""POST /v1/embeddings of a real `pagoda serve --runner pooling` with the default model, through
the official openai client: every input form, float and base64, usage, vLLM's errors; the vectors
equal HF transformers' last-token hidden state, normalized (vLLM's defaults for a decoder)."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import openai
import pytest
import torch
import torch.nn.functional as F
from server_process import ServerProcess

pytestmark = pytest.mark.integration

MODEL = "smol-embed"
TEXTS = ["The capital of France is Paris.", "def add(a, b):\n    return a + b", "Hello"]


@pytest.fixture(scope="module")
def server():
    proc = ServerProcess(
        "--served-model-name",
        MODEL,
        "--runner",
        "pooling",
        "--dtype",
        "float32",
        "--max-model-len",
        "512",
        "--max-num-seqs",
        "8",
        "--max-num-batched-tokens",
        "64",  # long inputs computed in chunks
    )
    try:
        yield proc.wait_healthy()
    finally:
        proc.kill()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def hf_model():
    from transformers import AutoModel

    from pagoda.engine.loader.resolve import default_gguf_path

    path = default_gguf_path()
    return AutoModel.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)


def tokenize(server: ServerProcess, text: str) -> list[int]:
    r = httpx.post(f"{server.url}/tokenize", json={"prompt": text}, timeout=30)
    return r.json()["tokens"]


def test_embeddings_match_hf_float_and_base64(server, client, hf_model):
    floats = client.embeddings.create(model=MODEL, input=TEXTS, encoding_format="float")
    b64 = client.embeddings.create(model=MODEL, input=TEXTS)  # the client asks for base64
    ids = [tokenize(server, t) for t in TEXTS]
    assert floats.usage.prompt_tokens == floats.usage.total_tokens == sum(map(len, ids))
    assert [d.index for d in floats.data] == [0, 1, 2]
    for d, b, prompt in zip(floats.data, b64.data, ids):
        got = torch.tensor(d.embedding)
        assert torch.tensor(b.embedding).equal(got)  # the client decoded the base64
        with torch.inference_mode():
            hidden = hf_model(torch.tensor([prompt])).last_hidden_state[0]
        torch.testing.assert_close(got, F.normalize(hidden[-1], dim=-1), atol=2e-4, rtol=1e-3)


def test_token_id_inputs_equal_text(server, client):
    ids = [tokenize(server, t) for t in TEXTS[:2]]
    by_text = client.embeddings.create(model=MODEL, input=TEXTS[0], encoding_format="float")
    one = client.embeddings.create(model=MODEL, input=ids[0], encoding_format="float")
    many = client.embeddings.create(model=MODEL, input=ids, encoding_format="float")
    np.testing.assert_allclose(one.data[0].embedding, by_text.data[0].embedding, atol=1e-6)
    np.testing.assert_allclose(many.data[0].embedding, by_text.data[0].embedding, atol=1e-6)
    assert len(many.data) == 2 and many.usage.prompt_tokens == sum(map(len, ids))


def test_raw_base64_is_little_endian_float32(server):
    body = {"model": MODEL, "input": "Hello", "encoding_format": "base64"}
    raw = httpx.post(f"{server.url}/v1/embeddings", json=body, timeout=60).json()
    body["encoding_format"] = "float"
    floats = httpx.post(f"{server.url}/v1/embeddings", json=body, timeout=60).json()
    decoded = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    assert raw["object"] == "list" and raw["data"][0]["object"] == "embedding"
    np.testing.assert_array_equal(decoded, np.array(floats["data"][0]["embedding"], "<f4"))


@pytest.mark.parametrize(
    "kw, param, message",
    [
        ({"dimensions": 8}, "dimensions", "does not support matryoshka"),
        ({"input": []}, "input", "empty"),
        ({"input": [[]]}, "input", "empty"),
        ({"input": [10**7]}, "input", "out of range"),
        ({"extra_body": {"truncate_prompt_tokens": 4}}, None, "truncate_prompt_tokens"),
    ],
)
def test_bad_embedding_requests_are_400(client, kw, param, message):
    kw = {"model": MODEL, "input": "Hello", **kw}
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(**kw)
    assert message in e.value.message
    if param is not None:
        assert e.value.body["param"] == param


def test_a_pooling_model_does_not_generate(client):
    with pytest.raises(openai.BadRequestError, match="does not support Chat Completions API"):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="does not support Completions API"):
        client.completions.create(model=MODEL, prompt="hi")
