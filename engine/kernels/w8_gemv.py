"""8-bit weights (FP8 e4m3 or INT8) times a few rows of activations (decode at small batch), in
one Triton kernel.

At a handful of tokens a linear layer's time is the weight read, and the 8-bit GEMMs (cuBLASLt's,
tuned for large M) read 8-bit weights no faster than bf16 ones. Here each program streams a
[BLOCK_N, K] strip of 8-bit weights once, widens it to the activations' dtype in registers (exact:
e4m3 and int8 values fit in bf16 and fp16), multiplies it by the activations, kept as they are
(weight-only at small batch: no per-token activation rounding), and applies the per-channel scale
to the fp32 sums. A single row (decode at batch 1) goes to a row kernel whose programs each own
a few outputs over all of K: one kernel a layer. Above one row, split-K programs add into an fp32
output when N alone gives too few programs to keep the memory system busy. The reference: the
dequantized weight, then a float32 matmul.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from pagoda.engine.kernels.triton_import import tl, triton

# Rows the kernel takes: tl.dot pads M to 16, and the weight read stays the cost up to there.
MAX_ROWS = 16


@triton.jit
def _w8_gemv_kernel(
    x_ptr,
    w_ptr,
    scale_ptr,
    bias_ptr,
    y_ptr,
    M,
    N,
    K,
    stride_xm,
    stride_wn,
    stride_ym,
    k_per_split,
    HAS_BIAS: tl.constexpr,
    SPLIT_K: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    rm = tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    k_start = pid_k * k_per_split
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(k_start, k_start + k_per_split, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(
            x_ptr + rm[:, None] * stride_xm + rk[None, :],
            mask=(rm[:, None] < M) & (rk[None, :] < K),
            other=0.0,
        )
        w = tl.load(
            w_ptr + rn[:, None].to(tl.int64) * stride_wn + rk[None, :],
            mask=(rn[:, None] < N) & (rk[None, :] < K),
            other=0.0,
        )
        acc += tl.dot(x, tl.trans(w.to(x_ptr.dtype.element_ty)))
    scale = tl.load(scale_ptr + rn, mask=rn < N, other=0.0)
    acc = acc * scale[None, :]
    if HAS_BIAS:  # added once: by the first split
        bias = tl.load(bias_ptr + rn, mask=(rn < N) & (pid_k == 0), other=0.0)
        acc += bias.to(tl.float32)[None, :]
    out = y_ptr + rm[:, None] * stride_ym + rn[None, :]
    mask = (rm[:, None] < M) & (rn[None, :] < N)
    if SPLIT_K == 1:
        tl.store(out, acc.to(y_ptr.dtype.element_ty), mask=mask)
    else:
        tl.atomic_add(out, acc, mask=mask, sem="relaxed")


@triton.jit
def _w8_gemv_row_kernel(
    x_ptr,
    w_ptr,
    scale_ptr,
    bias_ptr,
    y_ptr,
    N,
    K,
    stride_wn,
    HAS_BIAS: tl.constexpr,
    EVEN: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    SUM_EACH_STEP: tl.constexpr,
    NUM_STAGES: tl.constexpr,
):
    """One row: each program owns BLOCK_N outputs over all of K (no split-K, so no fp32 buffer to
    zero and convert: one kernel a layer), with products kept per column and summed once.
    NUM_STAGES > 1 has Triton copy the next steps' tiles into shared memory (cp.async) while this
    one is multiplied: without it a program has one step's bytes in flight at a time."""
    pid = tl.program_id(0)
    rn = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    w_rows = w_ptr + rn[:, None].to(tl.int64) * stride_wn + rk[None, :]
    acc = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
    acc_n = tl.zeros([BLOCK_N], dtype=tl.float32)
    for k0 in tl.range(0, K, BLOCK_K, num_stages=NUM_STAGES):
        if EVEN:
            x = tl.load(x_ptr + k0 + rk)
            w = tl.load(w_rows + k0)
        else:
            x = tl.load(x_ptr + k0 + rk, mask=k0 + rk < K, other=0.0)
            w = tl.load(w_rows + k0, mask=(rn[:, None] < N) & (k0 + rk[None, :] < K), other=0.0)
        if SUM_EACH_STEP:
            acc_n += tl.sum(w.to(tl.float32) * x.to(tl.float32)[None, :], axis=1)
        else:
            acc += w.to(tl.float32) * x.to(tl.float32)[None, :]
    if not SUM_EACH_STEP:
        acc_n = tl.sum(acc, axis=1)
    y = acc_n * tl.load(scale_ptr + rn, mask=rn < N, other=0.0)
    if HAS_BIAS:
        y += tl.load(bias_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)
    tl.store(y_ptr + rn, y.to(y_ptr.dtype.element_ty), mask=rn < N)


class RowTiles(NamedTuple):
    block_n: int  # outputs a program owns
    block_k: int  # inputs a step
    sum_each_step: bool  # reduce every step, or keep [block_n, block_k] products to the end
    num_stages: int  # K steps in flight (1: no software pipelining)


def row_tiles_for(n: int) -> RowTiles:
    """From benchmarks/gpu/w8_gemv_sweep.py on an H200 at the 8B shapes (2026-12-05, weights
    not in L2): wide layers (gate|up) sum 32 rows' 256-wide steps as they go, one stage (29.3 us);
    the others keep 8 rows' 512 columns of products, four stages deep, and sum once (qkv 8.6 us
    against 10.6 at the one-stage 1,024 columns before, o 6.6 against 6.9, down 16.1 against
    17.0)."""
    return RowTiles(32, 256, True, 1) if n >= 16384 else RowTiles(8, 512, False, 4)


def w8_gemv_row(
    x: torch.Tensor,
    weight_q: torch.Tensor,
    weight_scale: torch.Tensor,
    bias: torch.Tensor | None,
    block_n: int | None = None,
    block_k: int | None = None,
    num_warps: int = 4,
    sum_each_step: bool | None = None,
    num_stages: int | None = None,
) -> torch.Tensor:
    """x [1, K] @ (weight_q [N, K] 8-bit * scale [N])^T (+ bias) -> [1, N] in x's dtype; tiles by
    `row_tiles_for` unless given."""
    k = x.shape[1]
    n = weight_q.shape[0]
    tiles = row_tiles_for(n)
    block_n = block_n or tiles.block_n
    block_k = min(block_k or tiles.block_k, triton.next_power_of_2(k))
    sum_each_step = tiles.sum_each_step if sum_each_step is None else sum_each_step
    y = torch.empty((1, n), dtype=x.dtype, device=x.device)
    _w8_gemv_row_kernel[(triton.cdiv(n, block_n),)](
        x,
        weight_q,
        weight_scale,
        bias if bias is not None else weight_scale,
        y,
        n,
        k,
        weight_q.stride(0),
        HAS_BIAS=bias is not None,
        EVEN=n % block_n == 0 and k % block_k == 0,
        BLOCK_N=block_n,
        BLOCK_K=block_k,
        SUM_EACH_STEP=sum_each_step,
        NUM_STAGES=num_stages or tiles.num_stages,
        num_warps=num_warps,
    )
    return y


def split_k_for(n: int, k: int, block_n: int, sms: int) -> int:
    """Enough programs for about four per SM, each still reading at least 1,024 columns."""
    programs = triton.cdiv(n, block_n)
    split = 1
    while programs * split < 4 * sms and k // (split * 2) >= 1024:
        split *= 2
    return split


def w8_gemv(
    x: torch.Tensor,
    weight_q: torch.Tensor,
    weight_scale: torch.Tensor,
    bias: torch.Tensor | None,
    block_n: int = 32,
    block_k: int = 256,
    split_k: int | None = None,
    num_warps: int = 4,
) -> torch.Tensor:
    """x [M <= 16, K] (bf16 or fp16, contiguous rows) @ (weight_q [N, K] 8-bit * scale [N])^T
    (+ bias) -> [M, N] in x's dtype. One row goes to the row kernel."""
    m, k = x.shape
    n = weight_q.shape[0]
    if m > MAX_ROWS or x.stride(1) != 1 or weight_q.stride(1) != 1:
        raise ValueError(f"w8_gemv takes up to {MAX_ROWS} contiguous rows, got {tuple(x.shape)}")
    if m == 1:
        return w8_gemv_row(x, weight_q, weight_scale, bias)
    if split_k is None:
        sms = torch.cuda.get_device_properties(x.device).multi_processor_count
        split_k = split_k_for(n, k, block_n, sms)
    k_per_split = triton.cdiv(triton.cdiv(k, split_k), block_k) * block_k
    if split_k == 1:
        y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    else:
        y = torch.zeros((m, n), dtype=torch.float32, device=x.device)
    grid = (triton.cdiv(n, block_n), split_k)
    _w8_gemv_kernel[grid](
        x,
        weight_q,
        weight_scale,
        bias if bias is not None else weight_scale,
        y,
        m,
        n,
        k,
        x.stride(0),
        weight_q.stride(0),
        y.stride(0),
        k_per_split,
        HAS_BIAS=bias is not None,
        SPLIT_K=split_k,
        BLOCK_M=16,
        BLOCK_N=block_n,
        BLOCK_K=block_k,
        num_warps=num_warps,
    )
    return y if split_k == 1 else y.to(x.dtype)
