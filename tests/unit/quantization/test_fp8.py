"""--quantization fp8 on the CPU: the quantizers' error bounds, the layer's arithmetic against the
float32 reference, refusals of the methods Pagoda cannot run, and the default model quantized."""

from __future__ import annotations

import pytest
import torch

from pagoda.engine.config import EngineConfig
from pagoda.engine.layers.linear import ColumnParallelLinear, ReplicatedLinear, RowParallelLinear
from pagoda.engine.quantization.apply import quantize_model
from pagoda.engine.quantization.fp8 import (
    FP8,
    Fp8LinearMethod,
    dequantize,
    fp8_linear_reference,
    quantize_per_channel,
    quantize_per_token,
)

# e4m3 keeps 3 mantissa bits: a normal number rounds to within 2^-4 of itself, relatively.
E4M3_REL = 2.0**-4


def test_per_channel_quantization_is_within_e4m3_rounding_of_each_rows_range():
    g = torch.Generator().manual_seed(1)
    # Rows of very different magnitudes: each needs its own scale.
    w = torch.randn(64, 96, generator=g) * torch.logspace(-3, 2, 64)[:, None]
    q, scale = quantize_per_channel(w)
    assert q.dtype == FP8 and scale.shape == (64,) and scale.dtype == torch.float32
    err = (q.float() * scale[:, None] - w).abs()
    amax = w.abs().amax(dim=1, keepdim=True)
    assert torch.all(err <= E4M3_REL * amax)
    # Each row's largest value lands on e4m3's largest: the whole range is used.
    assert torch.allclose(q.float().abs().amax(dim=1), torch.full((64,), 448.0))


def test_zero_rows_and_tokens_quantize_to_zeros_not_nan():
    q, scale = quantize_per_channel(torch.zeros(3, 16))
    assert torch.all(q.float() == 0) and torch.all(scale > 0)
    xq, xs = quantize_per_token(torch.zeros(2, 16))
    assert torch.all(xq.float() == 0) and torch.all(xs > 0)


@pytest.mark.parametrize("batch", [1, 7, 33])
def test_an_fp8_layer_computes_the_fp8_arithmetic_close_to_the_float_layer(batch):
    torch.manual_seed(batch)
    layer = ColumnParallelLinear(128, 80, bias=True)
    layer.weight.data.normal_(0, 0.05)
    layer.bias.data.normal_(0, 0.5)
    weight, bias = layer.weight.data.clone(), layer.bias.data.clone()
    x = torch.randn(batch, 128)
    expected_float = torch.nn.functional.linear(x, weight, bias)
    Fp8LinearMethod(use_scaled_mm=False).quantize(layer)
    assert "weight" not in dict(layer.named_parameters())  # the full-precision copy is gone
    y = layer(x)
    q, scale = quantize_per_channel(weight)
    assert torch.equal(y, fp8_linear_reference(x, dequantize(q, scale), bias))
    rel = (y - expected_float).norm() / expected_float.norm()
    assert rel < 2 * E4M3_REL


def test_quantize_model_takes_the_parallel_linears_and_leaves_routers():
    model = torch.nn.ModuleDict(
        {
            "up": ColumnParallelLinear(32, 64, bias=False),
            "down": RowParallelLinear(64, 32, bias=False),
            "router": ReplicatedLinear(32, 4, bias=False),
        }
    )
    for p in model.parameters():
        p.data.normal_()
    assert quantize_model(model, "fp8", torch.device("cpu")) == 2
    for name in ("up", "down"):  # on the CPU: FP8 values, held dequantized
        w = model[name].weight_dequant
        q, scale = quantize_per_channel(w)
        assert torch.equal(dequantize(q, scale), w)
    assert model["router"].weight.dtype == torch.float32 and model["router"].quant_method is None


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("bitsandbytes", "bitsandbytes weights are not supported"),
        ("squeezellm", "dropped by vLLM itself"),
        ("int3", "unknown quantization method"),
    ],
)
def test_methods_pagoda_cannot_run_are_refused_in_one_line(name, says):
    with pytest.raises(ValueError, match=says) as e:
        EngineConfig(quantization=name).validate()
    assert "supported: fp8" in str(e.value) and "\n" not in str(e.value)
