"""The INT8 W8A8 paths on the GPU (torch._int_mm past 16 rows, the 8-bit GEMV up to 16) against
the int8 arithmetic in float32, on fresh random inputs at Llama-3.1-8B's and 70B's layer shapes."""

from __future__ import annotations

import pytest
import torch

from pagoda.engine.layers.linear import ColumnParallelLinear
from pagoda.engine.quantization.int8 import (
    Int8LinearMethod,
    int8_linear_reference,
    quantize_per_token_int8,
)

pytestmark = pytest.mark.gpu

SHAPES = [(4096, 6144), (14336, 4096), (8192, 10240), (28672, 8192)]  # (K, N)


def int8_weight(n: int, k: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    w = torch.randn(n, k, device="cuda", generator=g) * 0.02
    scale = w.abs().amax(dim=1) / 127
    return (w / scale[:, None]).round().clamp(-127, 127).to(torch.int8), scale


@pytest.mark.parametrize("batch", [1, 5, 16, 17, 33, 257])
@pytest.mark.parametrize(("k", "n"), SHAPES)
def test_int8_layer_matches_the_reference(k, n, batch):
    g = torch.Generator("cuda").manual_seed(k + n * 3 + batch)
    q, scale = int8_weight(n, k, g)
    x = torch.randn(batch, k, device="cuda", generator=g, dtype=torch.bfloat16)
    bias = torch.randn(n, device="cuda", generator=g, dtype=torch.bfloat16)
    with torch.device("cuda"):
        layer = ColumnParallelLinear(k, n, bias=True).to(torch.bfloat16)
    layer.bias.data.copy_(bias)
    del layer.weight
    Int8LinearMethod.for_device(torch.device("cuda")).hold(layer, q, scale)
    out = torch.full((batch, n), float("nan"), device="cuda", dtype=torch.bfloat16)
    out.copy_(layer(x))
    dequant = q.float() * scale[:, None]
    # Up to 16 rows the GEMV keeps the activations unquantized; past that they are int8 per token.
    ref = x.float() @ dequant.T + bias.float() if batch <= 16 else None
    if ref is None:
        ref = int8_linear_reference(x.float(), dequant, bias).float()
    rel = ((out.float() - ref).norm() / ref.norm()).item()
    assert rel < 1e-2, rel


def test_per_token_int8_quantization_bounds():
    g = torch.Generator("cuda").manual_seed(3)
    x = (
        torch.randn(7, 4096, device="cuda", generator=g)
        * torch.logspace(-3, 3, 7, device="cuda")[:, None]
    )
    q, scale = quantize_per_token_int8(x)
    assert q.dtype == torch.int8 and q.abs().amax(dim=1).eq(127).all()
    assert torch.all((q.float() * scale - x).abs() <= scale / 2 + 1e-6 * x.abs())
