"""One row of activations (decode at batch 1) times 4-bit weights with per-group scales and zero
points (layout in quantization/w4.py, groups of consecutive input channels), in one Triton kernel.

At batch 1 the weight read is the whole cost, so the kernel must unpack at the memory's rate:
- Each nibble becomes a float by a shift and one AND/OR (a LOP3) into the mantissa of 1.0,
  bits 19..22: the float is 1 + q/16 exactly, and a fused multiply-add takes it with the input.
  Over a group, sum (q - z) x = 16 * sum (1 + q/16) x - (16 + z) * sum x, so the zero point and
  the scale cost a few operations a group, not a subtraction a weight (three instructions a
  weight in all, against five for an integer-to-float conversion).
- Each program owns BLOCK_N output rows over all of K (no split-K: it would need an fp32 buffer
  zeroed and converted back, two more kernels a layer), and loads a wide [BLOCK_N, BLOCK_K / 8]
  tile a step so that enough bytes are in flight.
Measured on an H200 (docs/performance.md), this reads the weights at 1.0-1.5 TB/s, under half
of what bf16's GEMV reaches: variants that loaded each thread's inputs in the weights' layout (no
exchange through shared memory) ran slower still.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from pagoda.engine.kernels.triton_import import tl, triton

ONE_BITS: tl.constexpr = tl.constexpr(0x3F800000)  # 1.0f
NIBBLE_AT_19: tl.constexpr = tl.constexpr(0x00780000)  # mantissa bits 19..22


@triton.jit
def _one_plus_q_over_16(packed, j: tl.constexpr):
    """Nibble j of each word -> 1 + q/16 in fp32 (exact), by one shift and one LOP3."""
    if j * 4 <= 19:  # noqa: SIM108 (a branch on a constexpr, resolved as the kernel compiles)
        bits = packed << (19 - 4 * j)
    else:
        bits = packed >> (4 * j - 19)
    return ((bits & NIBBLE_AT_19) | ONE_BITS).to(tl.float32, bitcast=True)


@triton.jit
def _w4_gemv_kernel(
    x_ptr,
    w_ptr,
    scale_ptr,
    zero_ptr,
    bias_ptr,
    y_ptr,
    N,
    K,
    stride_wn,
    stride_sg,
    GROUP: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    EVEN: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    SUB: tl.constexpr,
    NUM_STAGES: tl.constexpr,
):
    """SUB: input channels of a sub-tile, all in one group (the tile is [BLOCK_N, BLOCK_K / SUB,
    SUB / 8] words); its sums take the group's scale and zero point once. NUM_STAGES > 1 has
    Triton copy the next steps' words, scales and zeros into shared memory (cp.async) while this
    one is unpacked."""
    pid = tl.program_id(0)
    rn = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    rg = tl.arange(0, BLOCK_K // SUB)  # sub-tiles of a K step
    rw = tl.arange(0, SUB // 8)  # words of a sub-tile
    words = rg[:, None] * (SUB // 8) + rw[None, :]  # [G, W]: the step's words
    w_rows = w_ptr + rn[:, None, None].to(tl.int64) * stride_wn
    acc = tl.zeros([BLOCK_N, BLOCK_K // SUB], dtype=tl.float32)
    for k0 in tl.range(0, K, BLOCK_K, num_stages=NUM_STAGES):
        word = k0 // 8 + words
        sz = ((k0 + rg * SUB) // GROUP)[None, :] * stride_sg + rn[:, None]  # [BLOCK_N, G]
        if EVEN:
            packed = tl.load(w_rows + word[None, :, :])
            s = tl.load(scale_ptr + sz).to(tl.float32)
            z = tl.load(zero_ptr + sz).to(tl.float32)
        else:
            in_n = rn[:, None, None] < N
            packed = tl.load(w_rows + word[None, :, :], mask=in_n & (word < K // 8), other=0)
            in_k = (rn[:, None] < N) & (k0 + rg * SUB < K)[None, :]
            s = tl.load(scale_ptr + sz, mask=in_k, other=0.0).to(tl.float32)
            z = tl.load(zero_ptr + sz, mask=in_k, other=0).to(tl.float32)
        s1 = tl.zeros([BLOCK_N, BLOCK_K // SUB, SUB // 8], dtype=tl.float32)
        xsum = tl.zeros([BLOCK_K // SUB, SUB // 8], dtype=tl.float32)
        for j in tl.static_range(8):
            if EVEN:
                xj = tl.load(x_ptr + word * 8 + j).to(tl.float32)
            else:
                xj = tl.load(x_ptr + word * 8 + j, mask=word * 8 + j < K, other=0.0).to(tl.float32)
            s1 += _one_plus_q_over_16(packed, j) * xj[None, :, :]
            xsum += xj
        x_group = tl.sum(xsum, axis=1)[None, :]  # [1, G]
        acc += s * (16.0 * tl.sum(s1, axis=2) - (16.0 + z) * x_group)
    y = tl.sum(acc, axis=1)
    if HAS_BIAS:
        y += tl.load(bias_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)
    tl.store(y_ptr + rn, y.to(y_ptr.dtype.element_ty), mask=rn < N)


class Tiles(NamedTuple):
    block_n: int  # outputs a program owns
    block_k: int  # inputs a step
    num_warps: int
    num_stages: int  # K steps in flight (1: no software pipelining)


def tiles_for(n: int, k: int) -> Tiles:
    """From benchmarks/gpu/w4_sweep.py on an H200 at the 8B shapes: 8 warps over 2,048-wide steps
    where N is small (4,096 rows: o, down), 4 warps over 1,024 otherwise. One stage: the sweep
    that chose these ran before stages were a choice."""
    return Tiles(16, 2048, 8, 1) if n <= 4096 and k >= 2048 else Tiles(16, 1024, 4, 1)


def w4_gemv(
    x: torch.Tensor,
    packed: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor,
    group_size: int,
    bias: torch.Tensor | None,
    block_n: int | None = None,
    block_k: int | None = None,
    num_warps: int | None = None,
    num_stages: int | None = None,
) -> torch.Tensor:
    """x [1, K] @ the 4-bit weight [N, K]^T (+ bias) -> [1, N] in x's dtype; groups of
    `group_size` consecutive input channels (no act-order). Tiles by `tiles_for` unless given."""
    k = x.shape[1]
    n = packed.shape[0]
    if x.shape[0] != 1 or x.stride(1) != 1 or packed.shape[1] * 8 != k:
        raise ValueError(f"w4_gemv: x {tuple(x.shape)}, packed {tuple(packed.shape)}")
    tiles = tiles_for(n, k)
    block_n, num_warps = block_n or tiles.block_n, num_warps or tiles.num_warps
    block_k = min(block_k or tiles.block_k, triton.next_power_of_2(k))
    sub = block_k if group_size >= k else min(group_size, block_k)  # one group: any sub-tile
    if group_size < k and (group_size % sub or sub & (sub - 1) or sub < 8):
        raise ValueError(f"w4_gemv: group size {group_size} does not tile K steps of {block_k}")
    y = torch.empty((1, n), dtype=x.dtype, device=x.device)
    _w4_gemv_kernel[(triton.cdiv(n, block_n),)](
        x,
        packed,
        scales,
        zeros,
        bias if bias is not None else scales,
        y,
        n,
        k,
        packed.stride(0),
        scales.stride(0),
        GROUP=min(group_size, k),  # a constant: a sub-tile's group is a shift, not a division
        HAS_BIAS=bias is not None,
        EVEN=n % block_n == 0 and k % block_k == 0,
        BLOCK_N=block_n,
        BLOCK_K=block_k,
        SUB=sub,
        NUM_STAGES=num_stages or tiles.num_stages,
        num_warps=num_warps,
    )
    return y
