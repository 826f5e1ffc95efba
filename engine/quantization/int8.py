"""INT8 linear layers (W8A8, for GPUs without FP8 tensor cores, A100-class): symmetric int8
weights with a scale per output channel, activations quantized per token as they arrive, the
matmul in int8 with int32 sums (`torch._int_mm`), both scales applied after. Up to 16 rows the
8-bit GEMV reads the int8 weights with the activations unquantized (kernels/w8_gemv.py), as for FP8.

They come from compressed-tensors INT8 checkpoints (quantization/checkpoint.py). On the CPU the
layer holds its int8 values dequantized in float32 and computes the same quantized arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pagoda.engine.kernels.w8_gemv import MAX_ROWS, w8_gemv
from pagoda.engine.layers.linear import LinearBase
from pagoda.engine.quantization.fp8 import dequantize

INT8_MAX = 127.0
MIN_SCALE = 1e-10  # a zero row quantizes to zeros, not NaN


def quantize_per_token_int8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, K] -> (int8 [M, K], fp32 scale [M, 1]), symmetric, rounded to nearest."""
    scale = (x.abs().amax(dim=-1, keepdim=True).float() / INT8_MAX).clamp(min=MIN_SCALE)
    return (x.float() / scale).round().clamp(-INT8_MAX, INT8_MAX).to(torch.int8), scale


def int8_linear_reference(
    x: torch.Tensor, weight_dequant: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """The INT8 layer's arithmetic in float32: x quantized per token times the int8 weight's
    values (exact in float32: integer products and sums below 2^24 per term)."""
    x_q, x_scale = quantize_per_token_int8(x.reshape(-1, x.shape[-1]))
    y = (x_q.float() * x_scale) @ weight_dequant.T
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype).reshape(*x.shape[:-1], weight_dequant.shape[0])


def int8_linear_int_mm(
    x: torch.Tensor, weight_q: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """The same through the int8 tensor cores: int32 sums, then the token and channel scales."""
    rows = x.reshape(-1, x.shape[-1])
    x_q, x_scale = quantize_per_token_int8(rows)
    acc = torch._int_mm(x_q, weight_q.T)  # [M, N] int32; weight_q.T is [K, N] column-major
    y = (acc.float() * x_scale * weight_scale[None, :]).to(x.dtype)
    if bias is not None:
        y = y + bias
    return y.reshape(*x.shape[:-1], weight_q.shape[0])


@dataclass(frozen=True)
class Int8LinearMethod:
    """Holds a layer's int8 weight and computes its matmuls."""

    use_int_mm: bool

    @classmethod
    def for_device(cls, device: torch.device) -> Int8LinearMethod:
        return cls(use_int_mm=device.type == "cuda")

    def hold(self, layer: LinearBase, q: torch.Tensor, scale: torch.Tensor) -> None:
        """Give the layer its int8 weight ([N, K], fp32 scale [N]) as buffers and this method."""
        if self.use_int_mm:
            layer.register_buffer("weight_q", q)
            layer.register_buffer("weight_scale", scale)
        else:
            layer.register_buffer("weight_dequant", dequantize(q, scale))
        layer.quant_method = self

    def apply(self, layer: nn.Module, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if not self.use_int_mm:
            return int8_linear_reference(x, layer.get_buffer("weight_dequant"), bias)
        weight_q, scale = layer.get_buffer("weight_q"), layer.get_buffer("weight_scale")
        n, k = weight_q.shape
        rows = x.reshape(-1, k)
        if rows.shape[0] <= MAX_ROWS and rows.stride(1) == 1:
            return w8_gemv(rows, weight_q, scale, bias).reshape(*x.shape[:-1], n)
        # torch._int_mm: more than 16 rows, K and N multiples of 8 (real models' are).
        if n % 8 == 0 and k % 8 == 0:
            return int8_linear_int_mm(x, weight_q, scale, bias)
        return int8_linear_reference(x, dequantize(weight_q, scale), bias)
