"""`pagoda serve ORG/NAME@REVISION` downloads from a Hub (a local one, HF_ENDPOINT pointing at
it), answers the official openai client under that name, and a second start with
HF_HUB_OFFLINE=1 serves the same model from the cache."""

from __future__ import annotations

import openai
import pytest
import torch
from local_hub import HubRepo, LocalHub, save_tiny_tokenizer
from server_process import ServerProcess
from transformers import LlamaConfig, LlamaForCausalLM

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    save_tiny_tokenizer(folder)
    with LocalHub() as server:
        server.repos["org/tiny"] = HubRepo()
        server.repos["org/tiny"].add_folder(folder, ref="v1")
        yield server


def completion(proc: ServerProcess, model: str) -> str:
    client = openai.OpenAI(base_url=f"{proc.url}/v1", api_key="none")
    out = client.completions.create(model=model, prompt="w5 w9 w17", max_tokens=8, temperature=0)
    assert out.model == model and out.usage.prompt_tokens == 3
    return out.choices[0].text


def test_serve_a_hub_model_then_offline(hub, tmp_path) -> None:
    env = {"HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(tmp_path / "hf")}
    args = ("org/tiny@v1", "--device", "cpu", "--max-model-len", "128")
    proc = ServerProcess(*args, env=env).wait_healthy()
    try:
        online = completion(proc, "org/tiny@v1")
    finally:
        proc.kill()
    fetched = len(hub.file_gets)
    offline = ServerProcess(*args, env=env | {"HF_HUB_OFFLINE": "1"}).wait_healthy()
    try:
        assert completion(offline, "org/tiny@v1") == online
    finally:
        offline.kill()
    assert len(hub.file_gets) == fetched  # nothing downloaded the second time
