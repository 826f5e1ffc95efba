"""Checkpoints stored in 8 bits (vLLM's `fp8` format, compressed-tensors' float8 and int8 schemes),
written here from the formats' specifications: each layer holds the checkpoint's values and scales
exactly (q, k and v with their own per-tensor scales inside the fused qkv layer), the model's
log-probabilities are close to the same model with the dequantized weights in float32, and what
Pagoda cannot run is refused with the reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from quantized_checkpoint import (
    FORMATS,
    compressed_tensors_config,
    prompt_logprobs,
    write_quantized_pair,
)
from safetensors.torch import load_file

from pagoda.engine.config import EngineConfig
from pagoda.engine.loader import load_model
from pagoda.engine.loader.errors import ModelLoadError


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_layers_hold_the_checkpoints_values_exactly(tmp_path: Path, fmt: str) -> None:
    stored, dequantized = write_quantized_pair(tmp_path, fmt)
    model, _ = load_model(
        EngineConfig(model=str(stored), device="cpu"), torch.device("cpu"), torch.float32
    )
    want = load_file(str(dequantized / "model.safetensors"))
    layer = model.model.layers[1]
    qkv = torch.cat(
        [want[f"model.layers.1.self_attn.{p}.weight"] for p in ("q_proj", "k_proj", "v_proj")]
    )
    assert torch.equal(layer.self_attn.qkv_proj.get_buffer("weight_dequant"), qkv)
    gate_up = torch.cat([want[f"model.layers.1.mlp.{p}.weight"] for p in ("gate_proj", "up_proj")])
    assert torch.equal(layer.mlp.gate_up_proj.get_buffer("weight_dequant"), gate_up)
    assert torch.equal(
        layer.mlp.down_proj.get_buffer("weight_dequant"),
        want["model.layers.1.mlp.down_proj.weight"],
    )
    assert "weight" not in dict(layer.mlp.down_proj.named_parameters())


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_logprobs_close_to_the_dequantized_model(tmp_path: Path, fmt: str) -> None:
    stored, dequantized = write_quantized_pair(tmp_path, fmt)
    a, b = prompt_logprobs(stored), prompt_logprobs(dequantized)
    # Only the activations' per-token e4m3 rounding differs: a few percent of the log-probs.
    assert ((a - b).norm() / b.norm()).item() < 0.05


def refusal(tmp_path: Path, quantization_config: dict, **engine) -> str:
    fp8, _ = write_quantized_pair(tmp_path, "ct-channel")
    config = json.loads((fp8 / "config.json").read_text())
    config["quantization_config"] = quantization_config
    (fp8 / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError) as e:
        load_model(
            EngineConfig(model=str(fp8), device="cpu", **engine), torch.device("cpu"), torch.float32
        )
    return str(e.value)


def test_block_wise_fp8_is_refused(tmp_path: Path) -> None:
    qc = {"quant_method": "fp8", "activation_scheme": "dynamic", "weight_block_size": [128, 128]}
    assert "block-wise FP8" in refusal(tmp_path, qc)


def test_four_bit_and_zero_point_compressed_tensors_are_refused(tmp_path: Path) -> None:
    qc = compressed_tensors_config("channel")
    qc["config_groups"]["group_0"]["weights"].update(type="int", num_bits=4)
    assert "only 8-bit weights (float8 or int8)" in refusal(tmp_path / "a", qc)
    qc = compressed_tensors_config("channel", "int")
    qc["config_groups"]["group_0"]["weights"]["symmetric"] = False
    assert "zero points are not supported" in refusal(tmp_path / "b", qc)


def test_layers_left_unquantized_are_refused(tmp_path: Path) -> None:
    qc = compressed_tensors_config("channel")
    qc["ignore"] = ["lm_head", "model.layers.0.mlp.down_proj"]
    assert "leaves 1 layers unquantized" in refusal(tmp_path, qc)


def test_other_methods_and_contradicting_flags_are_refused(tmp_path: Path) -> None:
    assert "'bitsandbytes' is not supported" in refusal(
        tmp_path / "a", {"quant_method": "bitsandbytes", "load_in_4bit": True}
    )
    (tmp_path / "b").mkdir()
    fp8, base = write_quantized_pair(tmp_path / "b", "fp8-static")
    cpu = torch.device("cpu")
    config = EngineConfig(model=str(fp8), device="cpu", quantization="compressed-tensors")
    with pytest.raises(ModelLoadError, match="contradicts"):
        load_model(config, cpu, torch.float32)
    config = EngineConfig(model=str(base), device="cpu", quantization="compressed-tensors")
    with pytest.raises(ModelLoadError, match="is no compressed-tensors checkpoint"):
        load_model(config, cpu, torch.float32)
