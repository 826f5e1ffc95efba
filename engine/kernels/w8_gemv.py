"""8-bit weights (FP8 e4m3 or INT8) times a few rows of activations (decode at small batch), in
one Triton kernel.

At a handful of tokens a linear layer's time is the weight read, and the 8-bit GEMMs (cuBLASLt's,
tuned for large M) read 8-bit weights no faster than bf16 ones. Here each program streams a
[BLOCK_N, K] strip of 8-bit weights once, widens it to the activations' dtype in registers (exact:
e4m3 and int8 values fit in bf16 and fp16), multiplies it by the activations, kept as they are
(weight-only at small batch: no per-token activation rounding), and applies the per-channel scale
to the fp32 sums. Split-K programs add into an fp32 output when N alone gives too few programs to
keep the memory system busy. The reference: the dequantized weight, then a float32 matmul.
"""

from __future__ import annotations

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
        if BLOCK_M == 1:  # one row: a multiply and a row sum, no tensor-core layout to convert
            acc += tl.sum(w.to(tl.float32) * x.to(tl.float32), axis=1)[None, :]
        else:
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
    (+ bias) -> [M, N] in x's dtype."""
    m, k = x.shape
    n = weight_q.shape[0]
    if m > MAX_ROWS or x.stride(1) != 1 or weight_q.stride(1) != 1:
        raise ValueError(f"w8_gemv takes up to {MAX_ROWS} contiguous rows, got {tuple(x.shape)}")
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
        BLOCK_M=1 if m == 1 else 16,
        BLOCK_N=block_n,
        BLOCK_K=block_k,
        num_warps=num_warps,
    )
    return y if split_k == 1 else y.to(x.dtype)
