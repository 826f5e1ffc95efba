"""Activations (bf16/fp16) times 4-bit weights with per-group scales and zero points (AWQ and GPTQ
checkpoints, layout in quantization/w4.py), in one Triton kernel.

Each program computes a [BLOCK_M, BLOCK_N] tile of the output: it streams the packed weight
strip [BLOCK_N, BLOCK_K / 8] of int32 words, unpacks the eight nibbles of each word in registers,
subtracts the zero points and multiplies by the activations (tl.dot on the tile; for a single row,
nibble j of every word at once against the inputs 8w + j, in fp32, with no reshape). Without act-order a K tile lies inside one group, so (q - zero) is a small integer,
exact in the activations' dtype, and the group's scale multiplies the fp32 partial sums; with
act-order (g_idx) each input channel's scale and zero are gathered and the weight dequantized
before the product. At small batch (decode) the weight read is the whole cost: split-K programs
add into an fp32 output when N alone gives too few programs to keep the memory system busy.
"""

from __future__ import annotations

import torch

from pagoda.engine.kernels.triton_import import tl, triton
from pagoda.engine.kernels.w4_gemv import w4_gemv
from pagoda.engine.kernels.w8_gemv import split_k_for  # the same split rule as the 8-bit GEMV

# Up to this many rows the small-batch configuration (split-K, BLOCK_M 1 or 16) is used.
SMALL_BATCH = 16
# 2^23 as a float: the bits 0x4B000000 | q read as fp32 are 2^23 + q, exactly.
MAGIC: tl.constexpr = tl.constexpr(8388608.0)


@triton.jit
def _nibble_as_magic_float(q):
    """4-bit values (int32) -> 2^23 + q in fp32 by an OR and a bit cast: the integer-to-float
    conversion runs at a quarter of the FMA rate and would bound the kernel; subtracting
    2^23 + zero (exact) then gives q - zero."""
    return (q | 0x4B000000).to(tl.float32, bitcast=True)


@triton.jit
def _w4a16_kernel(
    x_ptr,
    w_ptr,
    scale_ptr,
    zero_ptr,
    g_idx_ptr,
    bias_ptr,
    y_ptr,
    M,
    N,
    K,
    stride_xm,
    stride_wn,
    stride_sg,
    stride_ym,
    group_size,
    num_groups,
    k_per_split,
    HAS_G_IDX: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SPLIT_K: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_k = tl.program_id(2)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rw = tl.arange(0, BLOCK_K // 8)  # the tile's packed words along K
    shifts = tl.arange(0, 8) * 4
    k_start = pid_k * k_per_split
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    # One row: products summed per (row, word) across the loop, reduced over the words once at
    # the end (a reduction each tile would cost more shuffles than the products cost FMAs).
    acc_row = tl.zeros([BLOCK_N, BLOCK_K // 8], dtype=tl.float32)
    for k0 in range(k_start, k_start + k_per_split, BLOCK_K):
        words = k0 // 8 + rw
        packed = tl.load(
            w_ptr + rn[:, None].to(tl.int64) * stride_wn + words[None, :],
            mask=(rn[:, None] < N) & (words[None, :] < K // 8),
            other=0,
        )
        if BLOCK_M == 1:  # one row: nibble j of every word at once, fp32 products
            t = tl.zeros([BLOCK_N, BLOCK_K // 8], dtype=tl.float32)
            if not HAS_G_IDX:  # the tile lies in one group (the last past K: splits overrun)
                sz = tl.minimum(k0 // group_size, num_groups - 1) * stride_sg + rn
                s = tl.load(scale_ptr + sz, mask=rn < N, other=0.0).to(tl.float32)
                z = tl.load(zero_ptr + sz, mask=rn < N, other=0).to(tl.float32) + MAGIC
            for j in tl.static_range(8):
                rkj = words * 8 + j  # input channel of nibble j in each word
                xj = tl.load(x_ptr + rkj, mask=rkj < K, other=0.0).to(tl.float32)
                qj = _nibble_as_magic_float((packed >> (4 * j)) & 0xF)  # [BLOCK_N, BLOCK_K / 8]
                if HAS_G_IDX:  # act-order: each input channel's own group
                    gj = tl.load(g_idx_ptr + rkj, mask=rkj < K, other=0)
                    szj = gj[None, :] * stride_sg + rn[:, None]
                    mj = (rn[:, None] < N) & (rkj[None, :] < K)
                    sj = tl.load(scale_ptr + szj, mask=mj, other=0.0).to(tl.float32)
                    zj = tl.load(zero_ptr + szj, mask=mj, other=0).to(tl.float32) + MAGIC
                    t += (qj - zj) * sj * xj[None, :]
                else:
                    t += (qj - z[:, None]) * xj[None, :]
            if HAS_G_IDX:
                acc_row += t
            else:
                acc_row += t * s[:, None]
        else:  # rows for tl.dot: the weight tile [BLOCK_N, BLOCK_K], column 8w + j = nibble j
            q = (packed[:, :, None] >> shifts[None, None, :]) & 0xF  # [BLOCK_N, BLOCK_K / 8, 8]
            q = _nibble_as_magic_float(tl.reshape(q, [BLOCK_N, BLOCK_K]))
            rk = k0 + tl.arange(0, BLOCK_K)
            x = tl.load(
                x_ptr + rm[:, None] * stride_xm + rk[None, :],
                mask=(rm[:, None] < M) & (rk[None, :] < K),
                other=0.0,
            )
            if HAS_G_IDX:
                g = tl.load(g_idx_ptr + rk, mask=rk < K, other=0)
                sz2 = g[None, :] * stride_sg + rn[:, None]
                mask2 = (rn[:, None] < N) & (rk[None, :] < K)
                s2 = tl.load(scale_ptr + sz2, mask=mask2, other=0.0).to(tl.float32)
                z2 = tl.load(zero_ptr + sz2, mask=mask2, other=0).to(tl.float32) + MAGIC
                w = ((q - z2) * s2).to(x_ptr.dtype.element_ty)
                acc += tl.dot(x, tl.trans(w))
            else:
                sz = tl.minimum(k0 // group_size, num_groups - 1) * stride_sg + rn
                s = tl.load(scale_ptr + sz, mask=rn < N, other=0.0).to(tl.float32)
                z = tl.load(zero_ptr + sz, mask=rn < N, other=0).to(tl.float32) + MAGIC
                w = (q - z[:, None]).to(x_ptr.dtype.element_ty)  # -16..15: exact in any float
                acc += tl.dot(x, tl.trans(w)) * s[None, :]
    if BLOCK_M == 1:
        acc = tl.sum(acc_row, axis=1)[None, :]
    if HAS_BIAS:  # noqa: SIM102 (a constexpr branch, then a runtime one)
        if pid_k == 0:  # added once: by the first split
            bias = tl.load(bias_ptr + rn, mask=rn < N, other=0.0)
            acc += bias.to(tl.float32)[None, :]
    out = y_ptr + rm[:, None] * stride_ym + rn[None, :]
    mask = (rm[:, None] < M) & (rn[None, :] < N)
    if SPLIT_K == 1:
        tl.store(out, acc.to(y_ptr.dtype.element_ty), mask=mask)
    else:
        tl.atomic_add(out, acc, mask=mask, sem="relaxed")


def w4a16_matmul(
    x: torch.Tensor,
    packed: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor,
    group_size: int,
    g_idx: torch.Tensor | None,
    bias: torch.Tensor | None,
    block_n: int | None = None,
    block_k: int | None = None,
    split_k: int | None = None,
    num_warps: int = 4,
) -> torch.Tensor:
    """x [M, K] (contiguous rows) @ the 4-bit weight [N, K]^T (+ bias) -> [M, N] in x's dtype.

    packed int32 [N, K/8], scales [G, N], zeros uint8 [G, N], g_idx int32 [K] or None (then
    input channel k is in group k // group_size). The block sizes and split are chosen by the
    batch unless given (the GPU benchmark sweeps them)."""
    m, k = x.shape
    n = packed.shape[0]
    if (
        x.stride(1) != 1
        or packed.shape[1] * 8 != k
        or not (packed.is_contiguous() and scales.is_contiguous() and zeros.is_contiguous())
        or scales.shape != zeros.shape
        or scales.shape[1] != packed.shape[0]
    ):
        raise ValueError(f"w4a16_matmul: x {tuple(x.shape)}, packed {tuple(packed.shape)}")
    if m == 1 and g_idx is None and block_n is None and block_k is None and split_k is None:
        return w4_gemv(x, packed, scales, zeros, group_size, bias)
    small = m <= SMALL_BATCH
    block_m = 1 if m == 1 else (16 if small else (64 if m <= 128 else 128))
    block_n = block_n or 64
    block_k = block_k or (128 if small else 64)
    if g_idx is None and group_size < k:  # a K tile must not straddle two groups
        block_k = min(block_k, group_size)
        if group_size % block_k or block_k & (block_k - 1):
            raise ValueError(f"w4a16_matmul: group size {group_size} is no multiple of {block_k}")
    if split_k is None:
        if small and x.is_cuda:
            sms = torch.cuda.get_device_properties(x.device).multi_processor_count
            split_k = split_k_for(n, k, block_n, sms)
        else:
            split_k = 1
    k_per_split = triton.cdiv(triton.cdiv(k, split_k), block_k) * block_k
    if split_k == 1:
        y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    else:
        y = torch.zeros((m, n), dtype=torch.float32, device=x.device)
    grid = (triton.cdiv(m, block_m), triton.cdiv(n, block_n), split_k)
    _w4a16_kernel[grid](
        x,
        packed,
        scales,
        zeros,
        g_idx if g_idx is not None else packed,
        bias if bias is not None else scales,
        y,
        m,
        n,
        k,
        x.stride(0),
        packed.stride(0),
        scales.stride(0),
        y.stride(0),
        group_size,
        scales.shape[0],
        k_per_split,
        HAS_G_IDX=g_idx is not None,
        HAS_BIAS=bias is not None,
        SPLIT_K=split_k,
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_K=block_k,
        num_warps=num_warps,
    )
    return y if split_k == 1 else y.to(x.dtype)
