"""--generation-config as vLLM's: `auto` takes the model's generation_config.json (its sampling
values, max_new_tokens as max_tokens; do_sample and token ids are not sampling defaults), `vllm`
none, a folder its file; offline generate() without SamplingParams uses them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_checkpoint import write_tiny_checkpoint, write_tiny_tokenizer

from pagoda.engine.config import EngineConfig
from pagoda.engine.llm import LLM
from pagoda.engine.loader.generation_config import load_generation_defaults

GENERATION = {
    "temperature": 0.3,
    "top_p": 0.9,
    "top_k": 7,
    "repetition_penalty": 1.1,
    "max_new_tokens": 3,
    "do_sample": True,
    "eos_token_id": 2,
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    folder = write_tiny_tokenizer(write_tiny_checkpoint(tmp_path_factory.mktemp("tiny")))
    (folder / "generation_config.json").write_text(json.dumps(GENERATION))
    return folder


def test_auto_vllm_and_a_folder(tiny: Path, tmp_path: Path) -> None:
    want = {
        "temperature": 0.3,
        "top_p": 0.9,
        "top_k": 7,
        "repetition_penalty": 1.1,
        "max_tokens": 3,
    }
    assert load_generation_defaults(EngineConfig(model=str(tiny))) == want
    assert load_generation_defaults(EngineConfig(model=str(tiny), generation_config="vllm")) == {}
    assert load_generation_defaults(EngineConfig(generation_config=str(tiny))) == want
    assert load_generation_defaults(EngineConfig()) == {}  # the GGUF default model has none
    with pytest.raises(ValueError, match="no generation_config.json"):
        load_generation_defaults(EngineConfig(generation_config=str(tmp_path)))


def test_offline_generate_without_params_takes_them(tiny: Path) -> None:
    llm = LLM(str(tiny), dtype="float32", device="cpu", num_gpu_blocks_override=32)
    [out] = llm.generate({"prompt_token_ids": [5, 6, 7]})
    assert len(out.outputs[0].token_ids) <= 3
    assert llm.engine.default_sampling_params["temperature"] == 0.3
