"""Adapters that cannot run: a clear error naming the cause, from the folder reader and from the
engine (a request's error, HTTP 400's ParamError), never a failed step."""

from __future__ import annotations

import json

import pytest
from peft_adapters import write_adapter
from tiny_hf import hf_model

from pagoda.engine import LoRARequest
from pagoda.engine.config import EngineConfig
from pagoda.engine.llm_engine import LLMEngine
from pagoda.engine.lora.peft import AdapterError, load_adapter
from pagoda.engine.models.config import ModelConfig
from pagoda.engine.sampling_params import ParamError, SamplingParams


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    root = tmp_path_factory.mktemp("llama")
    hf = hf_model("LlamaForCausalLM")
    hf.save_pretrained(root / "base")
    return root, hf


def cfg_of(folder) -> ModelConfig:
    return ModelConfig.from_hf(json.loads((folder / "config.json").read_text()))


def check(folder, base, max_rank: int = 64) -> None:
    load_adapter(LoRARequest("a", 1, str(folder)), cfg_of(base), max_rank)


def test_rank_above_the_limit(llama, tmp_path) -> None:
    root, hf = llama
    write_adapter(hf, tmp_path, 16, seed=0)
    with pytest.raises(AdapterError, match="rank 16, above --max-lora-rank 8"):
        check(tmp_path, root / "base", max_rank=8)


def test_target_modules_the_model_lacks(llama, tmp_path) -> None:
    root, hf = llama
    write_adapter(hf, tmp_path, 8, seed=0)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    config["target_modules"] = ["q_proj", "fc1"]
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(AdapterError, match="target modules the model lacks.*fc1"):
        check(tmp_path, root / "base")


def test_mlp_adapter_on_a_moe_model(tmp_path) -> None:
    moe = hf_model("MixtralForCausalLM", num_local_experts=4, num_experts_per_tok=2)
    moe.save_pretrained(tmp_path / "base")
    dense = hf_model("LlamaForCausalLM")
    write_adapter(dense, tmp_path / "a", 8, seed=0)
    with pytest.raises(AdapterError, match="lacks.*down_proj, gate_proj, up_proj"):
        check(tmp_path / "a", tmp_path / "base")


def test_a_different_base_model(llama, tmp_path) -> None:
    root, _ = llama
    other = hf_model("LlamaForCausalLM", hidden_size=32)
    write_adapter(other, tmp_path, 8, seed=0)
    with pytest.raises(
        AdapterError, match="do not fit this model's down_proj .*trained for another base model"
    ):
        check(tmp_path, root / "base")


def test_more_layers_than_the_model(llama, tmp_path) -> None:
    root, _ = llama
    write_adapter(hf_model("LlamaForCausalLM", num_hidden_layers=3), tmp_path, 8, seed=0)
    with pytest.raises(AdapterError, match="layer 2, the model has 2 layers"):
        check(tmp_path, root / "base")


def test_not_an_adapter_folder(llama, tmp_path) -> None:
    root, hf = llama
    with pytest.raises(AdapterError, match="no folder"):
        check(tmp_path / "absent", root / "base")
    with pytest.raises(AdapterError, match="no adapter_config.json"):
        check(tmp_path, root / "base")
    write_adapter(hf, tmp_path, 8, seed=0, use_dora=True)
    with pytest.raises(AdapterError, match="DoRA is not supported"):
        check(tmp_path, root / "base")


def test_the_engine_refuses_bad_adapters_per_request(llama, tmp_path) -> None:
    root, hf = llama
    write_adapter(hf, tmp_path / "r16", 16, seed=0)
    params = SamplingParams(max_tokens=2, detokenize=False)
    plain = LLMEngine(
        EngineConfig(model=str(root / "base"), device="cpu", num_gpu_blocks_override=16),
        tokenizer=object(),
        log_stats=False,
    )
    with pytest.raises(ParamError, match="--enable-lora"):
        plain.add_request("0", [1, 2], params, lora_request=LoRARequest("a", 1, str(tmp_path)))
    engine = LLMEngine(
        EngineConfig(
            model=str(root / "base"),
            device="cpu",
            num_gpu_blocks_override=16,
            enable_lora=True,
            max_lora_rank=8,
        ),
        tokenizer=object(),
        log_stats=False,
    )
    with pytest.raises(ParamError, match="above --max-lora-rank 8"):
        engine.add_request(
            "1", [1, 2], params, lora_request=LoRARequest("a", 1, str(tmp_path / "r16"))
        )
    with pytest.raises(ValueError, match="lora_int_id must be >= 1"):
        LoRARequest("a", 0, str(tmp_path))
    assert not engine.has_unfinished_requests()


def test_lora_flags_are_checked() -> None:
    with pytest.raises(ValueError, match="--lora-modules needs --enable-lora"):
        EngineConfig(lora_modules=["a=/x"]).validate()
    with pytest.raises(
        ValueError, match="max_cpu_loras \\(1\\) must be at least max_loras \\(2\\)"
    ):
        EngineConfig(enable_lora=True, max_loras=2, max_cpu_loras=1).validate()


def test_lora_on_quantized_weights_is_refused_at_start(llama) -> None:
    root, _ = llama
    config = EngineConfig(
        model=str(root / "base"), enable_lora=True, quantization="fp8", device="cpu"
    )
    with pytest.raises(ValueError, match="LoRA adapters on quantized weights .* not supported"):
        LLMEngine(config)
