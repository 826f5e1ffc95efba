"""4-bit AWQ and GPTQ checkpoints, written here from the formats' specifications (random 4-bit
values, zeros and fp16 scales packed as AutoAWQ and AutoGPTQ pack them; act-order's g_idx a random
permutation of the groups): the layers hold the packed weights (no full-precision copy) and they
dequantize to the checkpoint's weights exactly, the model's log-probabilities equal those of the
same model with the dequantized weights in float32, the Triton kernel (under Triton's
interpreter) matches the reference, and what Pagoda cannot run is refused with the reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hopper_compile import compile_for_hopper
from quantized_checkpoint import (
    AWQ_PACK_ORDER,
    W4_FORMATS,
    pack_along_columns,
    prompt_logprobs,
    write_w4_pair,
)
from safetensors.torch import load_file
from tiny_checkpoint import tiny_config

from pagoda.engine.config import EngineConfig
from pagoda.engine.layers import linear
from pagoda.engine.loader import load_model
from pagoda.engine.loader.errors import ModelLoadError
from pagoda.engine.quantization.w4 import (
    AWQ_ORDER,
    W4LinearMethod,
    dequantize_w4,
    pack_columns,
    unpack_columns,
)
from pagoda.engine.quantization.w4_checkpoint import W4Scheme, prepare_w4_parameters

CPU = torch.device("cpu")


def load(folder: Path, **engine) -> torch.nn.Module:
    model, _ = load_model(
        EngineConfig(model=str(folder), device="cpu", **engine), CPU, torch.float32
    )
    return model


def dequantized(layer: torch.nn.Module) -> torch.Tensor:
    method = layer.quant_method
    assert isinstance(method, W4LinearMethod)
    return dequantize_w4(*method.buffers(layer), method.group_size, method.g_idx(layer))


def test_unpacking_round_trips() -> None:
    gen = torch.Generator().manual_seed(0)
    q = torch.randint(0, 16, (5, 64), generator=gen)
    assert torch.equal(unpack_columns(pack_columns(q)), q)
    # AWQ's interleaved words, packed by the writer from the specification
    assert torch.equal(unpack_columns(pack_along_columns(q, AWQ_PACK_ORDER), AWQ_ORDER), q)
    assert pack_columns(torch.full((1, 8), 15)).item() == -1  # all 32 bits set


@pytest.mark.parametrize("fmt", list(W4_FORMATS))
def test_layers_hold_packed_weights_equal_to_the_checkpoints(tmp_path: Path, fmt: str) -> None:
    stored, plain = write_w4_pair(tmp_path, fmt)
    model = load(stored)
    want = load_file(str(plain / "model.safetensors"))
    layer = model.model.layers[1]
    qkv = torch.cat(
        [want[f"model.layers.1.self_attn.{p}.weight"] for p in ("q_proj", "k_proj", "v_proj")]
    )
    assert torch.equal(dequantized(layer.self_attn.qkv_proj), qkv)
    gate_up = torch.cat([want[f"model.layers.1.mlp.{p}.weight"] for p in ("gate_proj", "up_proj")])
    assert torch.equal(dequantized(layer.mlp.gate_up_proj), gate_up)
    down = layer.mlp.down_proj
    assert torch.equal(dequantized(down), want["model.layers.1.mlp.down_proj.weight"])
    assert down.get_buffer("weight_packed").dtype == torch.int32
    assert down.get_buffer("weight_packed").shape == (64, 96 // 8)
    assert not list(down.parameters())  # no full-precision weight left beside the packed one


@pytest.mark.parametrize("fmt", list(W4_FORMATS))
def test_logprobs_equal_the_dequantized_model(tmp_path: Path, fmt: str) -> None:
    stored, plain = write_w4_pair(tmp_path, fmt)
    a, b = prompt_logprobs(stored), prompt_logprobs(plain)
    # The same float32 arithmetic on the same weights: only the summation order may differ.
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_marlin_names_load_the_same_checkpoints(tmp_path: Path) -> None:
    stored, _ = write_w4_pair(tmp_path, "awq")
    layer = load(stored, quantization="awq_marlin").model.layers[0].mlp.down_proj
    assert isinstance(layer.quant_method, W4LinearMethod)


def test_dummy_weights_in_four_bits(tmp_path: Path) -> None:
    """--load-format dummy --quantization gptq: packed random weights of the shape (group 128)."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps(tiny_config(hidden_size=128, intermediate_size=256)))
    model = load(config.parent, load_format="dummy", quantization="gptq")
    layer = model.model.layers[0].mlp.down_proj
    assert layer.get_buffer("weight_packed").shape == (128, 256 // 8)
    assert layer.get_buffer("weight_scales").shape == (2, 128)
    w = dequantized(layer)
    assert 0.01 < w.std().item() < 0.04 and len(w.unique()) == 16  # every 4-bit value
    y = layer(torch.randn(3, 256))
    assert torch.isfinite(y).all() and y.std() > 0


def refusal(tmp_path: Path, change: dict, config_change: dict | None = None, **engine) -> str:
    stored, _ = write_w4_pair(tmp_path, "gptq-sym")
    config = json.loads((stored / "config.json").read_text()) | (config_change or {})
    config["quantization_config"].update(change)
    (stored / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError) as e:
        load(stored, **engine)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_what_the_kernel_cannot_run_is_refused(tmp_path: Path) -> None:
    assert "only 4 bits are supported" in refusal(tmp_path / "a", {"bits": 8})
    assert "group size 16: supported are 32, 64, 128 and -1" in refusal(
        tmp_path / "b", {"group_size": 16}
    )
    assert "marlin" in refusal(tmp_path / "c", {"is_marlin_format": True})
    assert "only the gptq and gptq_v2 layouts" in refusal(
        tmp_path / "d", {"checkpoint_format": "marlin"}
    )
    gemv = {"quant_method": "awq", "version": "gemv"}
    assert "only the GEMM layout is supported" in refusal(tmp_path / "e", gemv)
    unconverted = {"quant_method": "awq", "modules_to_not_convert": ["model.layers.0.mlp"]}
    assert "leaves modules unquantized" in refusal(tmp_path / "f", unconverted)
    assert "quantized lm_head" in refusal(tmp_path / "g", {"lm_head": True})
    assert "only int32 words" in refusal(tmp_path / "h", {"pack_dtype": "int16"})


def test_a_mixture_of_experts_is_refused(tmp_path: Path) -> None:
    moe = {"architectures": ["MixtralForCausalLM"], "num_local_experts": 4}
    assert "mixture-of-experts models are not supported" in refusal(tmp_path, {}, config_change=moe)


def test_contradicting_flags_are_refused(tmp_path: Path) -> None:
    assert "--quantization awq contradicts it" in refusal(tmp_path / "a", {}, quantization="awq")
    _, plain = write_w4_pair(tmp_path / "b", "awq")
    with pytest.raises(ModelLoadError, match="is no gptq checkpoint"):
        load(plain, quantization="gptq_marlin")


KERNEL_CHECK = """
import torch
from pagoda.engine.kernels.w4a16_gemm import w4a16_matmul
from pagoda.engine.quantization.w4 import dequantize_w4, pack_columns, w4_linear_reference
gen = torch.Generator().manual_seed(0)
n, k = 48, 256
for m, group, act_order, split_k in [(1, 64, False, 2), (3, 128, True, 1), (17, 32, False, 1),
                                     (20, 256, False, 1), (1, 32, True, 1)]:
    groups = k // group
    q = torch.randint(0, 16, (n, k), generator=gen)
    scales = (torch.rand(groups, n, generator=gen) * 0.01 + 0.001).half()
    zeros = torch.randint(0, 16, (groups, n), generator=gen).to(torch.uint8)
    g_idx = (torch.randperm(k, generator=gen) // group).int() if act_order else None
    x = torch.randn(m, k, generator=gen).half()
    bias = torch.randn(n, generator=gen).half()
    packed = pack_columns(q)
    want = w4_linear_reference(x, dequantize_w4(packed, scales, zeros, group, g_idx), bias)
    got = w4a16_matmul(x, packed, scales, zeros, group, g_idx, bias, split_k=split_k)
    torch.testing.assert_close(got, want, rtol=2e-3, atol=2e-3)
# The one-row GEMV (batch-1 decode): a part-filled row tile (40 rows), K steps wider than a
# group, one group over all of K (96 inputs: no power of two).
from pagoda.engine.kernels.w4_gemv import w4_gemv
for n, k, group, tiles in [(48, 256, 32, (16, 128, 4)), (40, 512, 128, (16, 256, 4)),
                           (32, 96, 96, (None, None, None)), (64, 2048, 64, (None, None, None))]:
    groups = -(-k // group)
    q = torch.randint(0, 16, (n, k), generator=gen)
    scales = (torch.rand(groups, n, generator=gen) * 0.01 + 0.001).half()
    zeros = torch.randint(0, 16, (groups, n), generator=gen).to(torch.uint8)
    x = torch.randn(1, k, generator=gen).half()
    bias = torch.randn(n, generator=gen).half()
    packed = pack_columns(q)
    want = w4_linear_reference(x, dequantize_w4(packed, scales, zeros, group), bias)
    got = w4_gemv(x, packed, scales, zeros, group, bias, *tiles)
    torch.testing.assert_close(got, want, rtol=2e-3, atol=2e-3)
print("kernel ok")
"""


def test_the_triton_kernel_matches_the_reference_under_the_interpreter() -> None:
    """fp16 activations (the interpreter's bf16 tl.dot is wrong; the GPU tier runs bf16): one
    row and several, split-K, act-order, groups of 32 to 256 and a partly filled N block; the
    one-row GEMV on masked tiles and one group over all of K."""
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    run = subprocess.run(
        [sys.executable, "-c", KERNEL_CHECK], env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0 and "kernel ok" in run.stdout, run.stderr[-3000:]


def test_a_rank_whose_inputs_split_a_group_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Row-parallel at two ranks: 96 inputs give each rank 48, which splits a group of 32; with
    act-order each rank keeps every group's scales and its slice of g_idx instead."""
    monkeypatch.setattr(linear, "get_tensor_model_parallel_world_size", lambda: 2)
    monkeypatch.setattr(linear, "get_tensor_model_parallel_rank", lambda: 1)
    layer = linear.RowParallelLinear(96, 64, bias=False)
    with pytest.raises(ValueError, match="rank's 48 inputs of 96 split a group of 32"):
        prepare_w4_parameters([layer], W4Scheme("gptq", 32, False, 1))
    layer = linear.RowParallelLinear(96, 64, bias=False)
    prepare_w4_parameters([layer], W4Scheme("gptq", 32, True, 1))
    assert layer.get_parameter("scales").shape == (64, 3)
    g_idx = torch.arange(96, dtype=torch.int32) % 3
    layer.get_parameter("g_idx").weight_loader(layer.get_parameter("g_idx"), g_idx)
    assert torch.equal(layer.get_parameter("g_idx").data, g_idx[48:])


@pytest.mark.parametrize(
    ("act_order", "split_k", "block_m"),
    [(False, 1, 1), (True, 4, 1), (False, 4, 16), (True, 1, 128)],
)
def test_the_kernel_compiles_for_hopper(act_order: bool, split_k: int, block_m: int) -> None:
    """Triton's compiler down to an sm_90 cubin, without a GPU: what the interpreter does not
    check (constexpr branches, layouts, the bit cast) fails here, not first on the GPU."""
    pytest.importorskip("triton")
    from pagoda.engine.kernels.w4a16_gemm import _w4a16_kernel

    pointers = {"x_ptr": "*bf16", "w_ptr": "*i32", "scale_ptr": "*fp16", "zero_ptr": "*u8"}
    pointers |= {"g_idx_ptr": "*i32", "bias_ptr": "*bf16"}
    pointers["y_ptr"] = "*fp32" if split_k > 1 else "*bf16"
    ints = ["M", "N", "K", "stride_xm", "stride_wn", "stride_sg", "stride_ym", "group_size"]
    ints += ["num_groups", "k_per_split"]
    constexprs = {"HAS_G_IDX": act_order, "HAS_BIAS": True, "SPLIT_K": split_k}
    constexprs |= {"BLOCK_M": block_m, "BLOCK_N": 64, "BLOCK_K": 128 if block_m == 1 else 64}
    assert compile_for_hopper(_w4a16_kernel, pointers, ints, constexprs, 4).asm["cubin"]
