"""FP8 (e4m3) linear layers: weights with a scale per output channel, activations with a scale per
token computed as they arrive (dynamic), the matmul in FP8 with both scales applied to its fp32
accumulators (`torch._scaled_mm`'s row-wise scaling, on GPUs with FP8 tensor cores: compute
capability 8.9 and up). Up to 16 rows (decode at small batch) a Triton GEMV reads the FP8 weights
and multiplies them by the activations unquantized (kernels/w8_gemv.py): there the weight read is
the whole cost, and cuBLASLt's FP8 GEMM does not halve it.

Without FP8 GEMMs (the CPU) the same quantized numbers are multiplied in float32 after dequantizing:
slow, but the results are the FP8 model's, which is what the CPU tests check. A CUDA GPU older than
8.9 is refused rather than emulated: there the feature would cost speed instead of saving it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pagoda.engine.kernels.quant_fp8 import per_token_quant_fp8
from pagoda.engine.kernels.w8_gemv import MAX_ROWS, w8_gemv
from pagoda.engine.layers.linear import LinearBase

FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max  # 448
# A row of zeros gets this scale instead of 0 (so it quantizes to zeros, not NaN).
MIN_SCALE = 1.0 / (FP8_MAX * 512.0)


def quantize_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """weight [N, K] -> (e4m3 [N, K], fp32 scale [N]): row n is approximately q[n] * scale[n]."""
    amax = weight.abs().amax(dim=1).float()
    scale = (amax / FP8_MAX).clamp(min=MIN_SCALE)
    q = (weight.float() / scale[:, None]).clamp(-FP8_MAX, FP8_MAX).to(FP8)
    return q, scale


def quantize_per_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, K] -> (e4m3 [M, K], fp32 scale [M, 1])."""
    amax = x.abs().amax(dim=-1, keepdim=True).float()
    scale = (amax / FP8_MAX).clamp(min=MIN_SCALE)
    return (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale


def dequantize(weight_q: torch.Tensor, weight_scale: torch.Tensor) -> torch.Tensor:
    """The FP8 weight's values in float32 (exact: an e4m3 value times an fp32 scale)."""
    return weight_q.float() * weight_scale[:, None]


def fp8_linear_reference(
    x: torch.Tensor, weight_dequant: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """The FP8 layer's arithmetic in float32 (x quantized per token, the weight's FP8 values): what
    the FP8 GEMM computes, up to summation order."""
    x_q, x_scale = quantize_per_token(x.reshape(-1, x.shape[-1]))
    y = (x_q.float() * x_scale) @ weight_dequant.T
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype).reshape(*x.shape[:-1], weight_dequant.shape[0])


def fp8_linear_scaled_mm(
    x: torch.Tensor, weight_q: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """The same through the FP8 tensor cores: x quantized per token by one Triton kernel, the
    weight per channel (row-wise scaling), accumulated in fp32, written in x's dtype."""
    x_q, x_scale = per_token_quant_fp8(x.reshape(-1, x.shape[-1]))
    y = torch._scaled_mm(
        x_q,
        weight_q.T,  # [K, N] column-major, as cuBLASLt wants the second operand
        scale_a=x_scale,
        scale_b=weight_scale[None, :],
        out_dtype=x.dtype,
    )
    if bias is not None:
        y = y + bias
    return y.reshape(*x.shape[:-1], weight_q.shape[0])


def fp8_gemm_supported(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9)


@dataclass(frozen=True)
class Fp8LinearMethod:
    """Quantizes a loaded LinearBase and then computes its matmuls."""

    use_scaled_mm: bool

    @classmethod
    def for_device(cls, device: torch.device) -> Fp8LinearMethod:
        if device.type == "cuda" and not fp8_gemm_supported(device):
            major, minor = torch.cuda.get_device_capability(device)
            raise ValueError(
                f"--quantization fp8 needs FP8 tensor cores (compute capability 8.9+: Ada, Hopper "
                f"and later); {torch.cuda.get_device_name(device)} is {major}.{minor}"
            )
        return cls(use_scaled_mm=device.type == "cuda")

    def quantize(self, layer: LinearBase) -> None:
        q, scale = quantize_per_channel(layer.weight.data)
        del layer.weight
        self.hold(layer, q, scale)

    def hold(self, layer: LinearBase, q: torch.Tensor, scale: torch.Tensor) -> None:
        """Give the layer its FP8 weight (e4m3 [N, K], fp32 scale [N]) as buffers (they move with
        the module) and this method to multiply with; its full-precision weight is gone."""
        if self.use_scaled_mm:
            layer.register_buffer("weight_q", q)
            layer.register_buffer("weight_scale", scale)
        else:
            # The CPU holds the FP8 values dequantized, in float32: the same numbers (converting
            # e4m3 on the CPU each step would take seconds), but no memory saved.
            layer.register_buffer("weight_dequant", dequantize(q, scale))
        layer.quant_method = self

    def apply(self, layer: nn.Module, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if not self.use_scaled_mm:
            return fp8_linear_reference(x, layer.get_buffer("weight_dequant"), bias)
        weight_q, scale = layer.get_buffer("weight_q"), layer.get_buffer("weight_scale")
        n, k = weight_q.shape
        rows = x.reshape(-1, k)
        if rows.shape[0] <= MAX_ROWS and rows.stride(1) == 1:
            # Decode at small batch: the weight read is the cost, which the GEMV halves.
            return w8_gemv(rows, weight_q, scale, bias).reshape(*x.shape[:-1], n)
        # cuBLASLt's FP8 GEMM wants both sides' dims in multiples of 16 (real models' are).
        if n % 16 == 0 and k % 16 == 0:
            return fp8_linear_scaled_mm(x, weight_q, scale, bias)
        return fp8_linear_reference(x, dequantize(weight_q, scale), bias)
