"""The FP8 GEMM path (torch._scaled_mm, row-wise scales) and the small-batch FP8 GEMV against the
FP8 arithmetic in float32, on fresh random inputs at the shapes of Llama-3.1-8B's and 70B's layers
and odd batch sizes."""

from __future__ import annotations

import pytest
import torch

from pagoda.engine.kernels.quant_fp8 import per_token_quant_fp8
from pagoda.engine.kernels.w8_gemv import w8_gemv, w8_gemv_row
from pagoda.engine.quantization.fp8 import (
    dequantize,
    fp8_gemm_supported,
    fp8_linear_reference,
    fp8_linear_scaled_mm,
    quantize_per_channel,
    quantize_per_token,
)

pytestmark = pytest.mark.gpu

# (K, N): qkv, o, gate|up, down of the 8B shape, then of the 70B shape (one TP=1 rank).
SHAPES = [
    (4096, 6144),
    (4096, 4096),
    (4096, 28672),
    (14336, 4096),
    (8192, 10240),
    (8192, 57344),
    (28672, 8192),
]


@pytest.mark.parametrize("batch", [1, 7, 33, 257])
@pytest.mark.parametrize(("k", "n"), SHAPES)
def test_scaled_mm_matches_the_fp8_reference(k, n, batch):
    device = torch.device("cuda")
    assert fp8_gemm_supported(device), "the GPU tier runs on Hopper"
    g = torch.Generator(device).manual_seed(k * 7 + n + batch)
    w = torch.randn(n, k, device=device, generator=g, dtype=torch.bfloat16) * 0.02
    x = torch.randn(batch, k, device=device, generator=g, dtype=torch.bfloat16)
    bias = torch.randn(n, device=device, generator=g, dtype=torch.bfloat16)
    q, scale = quantize_per_channel(w)
    out = torch.full((batch, n), float("nan"), device=device, dtype=torch.bfloat16)
    out.copy_(fp8_linear_scaled_mm(x, q, scale, bias))
    ref = fp8_linear_reference(x.float(), dequantize(q, scale), bias).float()
    rel = ((out.float() - ref).norm() / ref.norm()).item()
    assert rel < 1e-2, rel


@pytest.mark.parametrize("batch", [1, 7, 257])
@pytest.mark.parametrize("k", [4096, 14336, 28672, 100])
def test_per_token_quant_kernel_matches_the_reference(k, batch):
    g = torch.Generator("cuda").manual_seed(k + batch)
    x = torch.randn(batch, k, device="cuda", generator=g, dtype=torch.bfloat16)
    x[0] *= 1000.0  # rows of very different ranges
    if batch > 1:
        x[1] = 0.0  # a zero row: zeros, not NaN
    q, scale = per_token_quant_fp8(x)
    q_ref, scale_ref = quantize_per_token(x)
    # PyTorch divides by a scalar as a product with its reciprocal: the scales may differ in the
    # last bit, and so a value on a rounding boundary may land one e4m3 step away.
    assert torch.allclose(scale, scale_ref, rtol=1e-6, atol=0)
    q, q_ref = q.float(), q_ref.float()
    differ = q != q_ref
    assert differ.float().mean() < 1e-2  # measured: at most 0.13%
    assert torch.all((q - q_ref).abs()[differ] <= 2.0**-3 * q_ref.abs()[differ] + 2.0**-9)


@pytest.mark.parametrize("batch", [1, 3, 8, 16])
@pytest.mark.parametrize(("k", "n"), SHAPES)
def test_w8_gemv_fp8_matches_the_weight_only_reference(k, n, batch):
    """The small-batch path: bf16 activations times the FP8 weights, split-K or not, with bias."""
    g = torch.Generator("cuda").manual_seed(k * 3 + n + batch)
    w = torch.randn(n, k, device="cuda", generator=g, dtype=torch.bfloat16) * 0.02
    x = torch.randn(batch, k, device="cuda", generator=g, dtype=torch.bfloat16)
    bias = torch.randn(n, device="cuda", generator=g, dtype=torch.bfloat16)
    q, scale = quantize_per_channel(w)
    ref = x.float() @ dequantize(q, scale).T + bias.float()
    for split_k in (None, 1, 4):
        out = torch.full((batch, n), float("nan"), device="cuda", dtype=torch.bfloat16)
        out.copy_(w8_gemv(x, q, scale, bias, split_k=split_k))
        rel = ((out.float() - ref).norm() / ref.norm()).item()
        assert rel < 5e-3, (split_k, rel)


@pytest.mark.parametrize("stages", [2, 3, 4])
@pytest.mark.parametrize(("k", "n"), SHAPES)
def test_the_fp8_row_kernel_pipelined(k, n, stages):
    """One row with K steps in flight (cp.async into shared memory), both ways of summing."""
    g = torch.Generator("cuda").manual_seed(k + n + stages)
    w = torch.randn(n, k, device="cuda", generator=g, dtype=torch.bfloat16) * 0.02
    x = torch.randn(1, k, device="cuda", generator=g, dtype=torch.bfloat16)
    q, scale = quantize_per_channel(w)
    ref = x.float() @ dequantize(q, scale).T
    for tiles in ((8, 1024, 4, False), (32, 256, 4, True)):
        out = w8_gemv_row(x, q, scale, None, *tiles, stages)
        rel = ((out.float() - ref).norm() / ref.norm()).item()
        assert rel < 5e-3, (tiles, stages, rel)


def test_w8_gemv_odd_sizes_and_a_layer_without_bias():
    g = torch.Generator("cuda").manual_seed(5)
    w = torch.randn(77, 300, device="cuda", generator=g, dtype=torch.bfloat16)
    x = torch.randn(5, 300, device="cuda", generator=g, dtype=torch.bfloat16)
    q, scale = quantize_per_channel(w)
    ref = x.float() @ dequantize(q, scale).T
    out = w8_gemv(x, q, scale, None)
    assert out.dtype == torch.bfloat16 and out.shape == (5, 77)
    assert ((out.float() - ref).norm() / ref.norm()).item() < 5e-3
