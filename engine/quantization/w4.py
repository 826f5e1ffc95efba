"""4-bit weights with a scale and a zero point per group of input channels (W4A16: the layout AWQ
and GPTQ checkpoints are converted to as they load, w4_checkpoint.py), and the method that
multiplies by them.

A layer holds, on its rank:
- `weight_packed` int32 [N, K/8]: eight 4-bit values a word, packed along the input (value j of
  word c is input channel 8c + j, in the word's bits 4j..4j+3);
- `weight_scales` [G, N] in the checkpoint's dtype (fp16) and `weight_zeros` uint8 [G, N]: input
  channel k of row n is (q - zeros[group(k), n]) * scales[group(k), n] (a K tile's scales for a
  block of rows are then one contiguous read);
- with act-order (GPTQ's desc_act) `weight_g_idx` int32 [K], each input channel's group;
  otherwise group(k) = k // group_size.

The weights stay packed (a quarter of bf16's bytes). On the GPU a Triton kernel unpacks them in
registers (kernels/w4a16_gemm.py); elsewhere they are dequantized to float32 for each matmul
(`dequantize_w4`: the one reference, which the tests use too).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pagoda.engine.kernels.w4a16_gemm import w4a16_matmul
from pagoda.engine.layers.linear import LinearBase

PACK = 8  # 4-bit values in an int32
SHIFTS = torch.arange(PACK, dtype=torch.int32) * 4
# AWQ packs the columns 0, 2, 4, 6, 1, 3, 5, 7 of each eight into a word's nibbles 0..7.
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
SEQUENTIAL = tuple(range(PACK))


def unpack_columns(packed: torch.Tensor, order: tuple[int, ...] = SEQUENTIAL) -> torch.Tensor:
    """int32 [R, C] -> int32 [R, 8C] in 0..15, where nibble i of word c is column 8c + order[i]."""
    nibbles = (packed[:, :, None] >> SHIFTS.to(packed.device)) & 0xF  # [R, C, 8]: nibble i
    where = [order.index(j) for j in range(PACK)]  # column j's nibble
    return nibbles[:, :, where].reshape(packed.shape[0], -1)


def pack_columns(values: torch.Tensor) -> torch.Tensor:
    """int [R, 8C] in 0..15 -> int32 [R, C], column 8c + j in nibble j of word c."""
    v = values.to(torch.int64).reshape(values.shape[0], -1, PACK)
    words = (v << SHIFTS.to(torch.int64).to(v.device)).sum(dim=-1)
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def group_index(
    k: int, group_size: int, g_idx: torch.Tensor | None, device: torch.device
) -> torch.Tensor:
    """Each input channel's group: g_idx (act-order) or k // group_size."""
    if g_idx is not None:
        return g_idx.long().to(device)
    return torch.arange(k, device=device) // group_size


def dequantize_w4(
    packed: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor,
    group_size: int,
    g_idx: torch.Tensor | None = None,
) -> torch.Tensor:
    """The layer's weight [N, K] in float32 (exact: small integers times fp16 scales)."""
    q = unpack_columns(packed)
    groups = group_index(q.shape[1], group_size, g_idx, q.device)
    return (q - zeros[groups].T.to(torch.int32)).float() * scales[groups].T.float()


def w4_linear_reference(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """x times the dequantized weight in float32, written in x's dtype."""
    y = x.float() @ weight.T
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype)


@dataclass(frozen=True)
class W4LinearMethod:
    """Holds a layer's packed 4-bit weight and computes its matmuls."""

    group_size: int  # input channels a group (the layer's whole K for a checkpoint's -1)
    use_triton: bool

    def hold(
        self,
        layer: LinearBase,
        packed: torch.Tensor,
        scales: torch.Tensor,
        zeros: torch.Tensor,
        g_idx: torch.Tensor | None,
    ) -> None:
        """Give the layer its packed weight (layout in the module's docstring) as buffers (they
        move with the module) and this method to multiply with; its full-precision weight is
        gone."""
        layer.register_buffer("weight_packed", packed)
        layer.register_buffer("weight_scales", scales)
        layer.register_buffer("weight_zeros", zeros)
        if g_idx is not None:
            layer.register_buffer("weight_g_idx", g_idx)
        layer.quant_method = self

    def buffers(self, layer: nn.Module) -> tuple[torch.Tensor, ...]:
        return (
            layer.get_buffer("weight_packed"),
            layer.get_buffer("weight_scales"),
            layer.get_buffer("weight_zeros"),
        )

    def g_idx(self, layer: nn.Module) -> torch.Tensor | None:
        return layer.get_buffer("weight_g_idx") if hasattr(layer, "weight_g_idx") else None

    def apply(self, layer: nn.Module, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        packed, scales, zeros = self.buffers(layer)
        n, k = packed.shape[0], packed.shape[1] * PACK
        rows = x.reshape(-1, k)
        if self.use_triton:
            if rows.stride(1) != 1:
                rows = rows.contiguous()
            y = w4a16_matmul(rows, packed, scales, zeros, self.group_size, self.g_idx(layer), bias)
        else:
            weight = dequantize_w4(packed, scales, zeros, self.group_size, self.g_idx(layer))
            y = w4_linear_reference(rows, weight, bias)
        return y.reshape(*x.shape[:-1], n)
