"""Punica-style LoRA kernels in Triton: shrink (x A^T, down to the rank) and expand (s B^T, added
into the layer's output), one program per block of one slot's tokens (the grid's second axis is
the slot; a program past its slot's count returns at once), so a batch that mixes adapters and the
base runs in one launch each, and a CUDA graph captured once serves any mix. The reference is
pagoda.engine.lora.ops.
"""

from __future__ import annotations

import torch

from pagoda.engine.kernels.triton_import import tl, triton
from pagoda.engine.lora.batch import LoRABatch


@triton.jit
def _lora_shrink_kernel(
    x_ptr,
    a_ptr,
    s_ptr,
    sorted_ptr,
    counts_ptr,
    starts_ptr,
    K,
    N,
    stride_xm,
    stride_as,
    stride_an,
    stride_sm,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    IEEE: tl.constexpr,
):
    pid_m = tl.program_id(0)
    slot = tl.program_id(1)
    pid_n = tl.program_id(2)
    count = tl.load(counts_ptr + slot)
    if pid_m * BLOCK_M >= count:
        return
    start = tl.load(starts_ptr + slot)
    offs = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = offs < count
    rows = tl.load(sorted_ptr + start + offs, mask=row_mask, other=0).to(tl.int64)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_mask = cols < N
    a_base = a_ptr + slot.to(tl.int64) * stride_as
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_mask = ks < K
        x = tl.load(
            x_ptr + rows[:, None] * stride_xm + ks[None, :],
            mask=row_mask[:, None] & k_mask[None, :],
            other=0.0,
        )
        a = tl.load(
            a_base + cols[:, None] * stride_an + ks[None, :],
            mask=col_mask[:, None] & k_mask[None, :],
            other=0.0,
        )
        if IEEE:  # float32 models: no TF32 rounding, as torch's own float32 matmuls
            acc += tl.dot(x, tl.trans(a), input_precision="ieee")
        else:
            acc += tl.dot(x, tl.trans(a))
    tl.store(
        s_ptr + rows[:, None] * stride_sm + cols[None, :],
        acc.to(s_ptr.dtype.element_ty),
        mask=row_mask[:, None] & col_mask[None, :],
    )


@triton.jit
def _lora_expand_kernel(
    s_ptr,
    b_ptr,
    y_ptr,
    sorted_ptr,
    counts_ptr,
    starts_ptr,
    N,
    R,
    s_col0,
    y_col0,
    stride_sm,
    stride_bs,
    stride_bn,
    stride_ym,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_R: tl.constexpr,
    IEEE: tl.constexpr,
):
    pid_m = tl.program_id(0)
    slot = tl.program_id(1)
    pid_n = tl.program_id(2)
    count = tl.load(counts_ptr + slot)
    if pid_m * BLOCK_M >= count:
        return
    start = tl.load(starts_ptr + slot)
    offs = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = offs < count
    rows = tl.load(sorted_ptr + start + offs, mask=row_mask, other=0).to(tl.int64)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_mask = cols < N
    rs = tl.arange(0, BLOCK_R)
    r_mask = rs < R
    s = tl.load(
        s_ptr + rows[:, None] * stride_sm + s_col0 + rs[None, :],
        mask=row_mask[:, None] & r_mask[None, :],
        other=0.0,
    )
    b = tl.load(
        b_ptr + slot.to(tl.int64) * stride_bs + cols[:, None] * stride_bn + rs[None, :],
        mask=col_mask[:, None] & r_mask[None, :],
        other=0.0,
    )
    if IEEE:  # noqa: SIM108 (a constexpr branch, resolved when the kernel compiles)
        acc = tl.dot(s, tl.trans(b), input_precision="ieee")
    else:
        acc = tl.dot(s, tl.trans(b))
    y_ptrs = y_ptr + rows[:, None] * stride_ym + y_col0 + cols[None, :]
    mask = row_mask[:, None] & col_mask[None, :]
    y = tl.load(y_ptrs, mask=mask, other=0.0)
    tl.store(y_ptrs, (y.to(tl.float32) + acc).to(y_ptr.dtype.element_ty), mask=mask)


def _block_m(m: int) -> int:
    return 16 if m <= 64 else 64


def lora_shrink(x: torch.Tensor, a: torch.Tensor, batch: LoRABatch) -> torch.Tensor:
    """x [M, K] (rows contiguous), a [slots, N, K] -> s [M, N] (x's dtype; rows of base tokens
    are left unwritten: nothing reads them)."""
    m, k = x.shape
    n = a.shape[1]
    s = torch.empty((m, n), dtype=x.dtype, device=x.device)
    block_n = max(16, min(64, triton.next_power_of_2(n)))
    grid = (triton.cdiv(m, _block_m(m)), a.shape[0], triton.cdiv(n, block_n))
    _lora_shrink_kernel[grid](
        x,
        a,
        s,
        batch.sorted_tokens,
        batch.slot_counts,
        batch.slot_starts,
        k,
        n,
        x.stride(0),
        a.stride(0),
        a.stride(1),
        s.stride(0),
        BLOCK_M=_block_m(m),
        BLOCK_N=block_n,
        BLOCK_K=64,
        IEEE=x.dtype == torch.float32,
    )
    return s


def lora_expand(
    s: torch.Tensor, b: torch.Tensor, y: torch.Tensor, s_col0: int, y_col0: int, batch: LoRABatch
) -> None:
    """y[:, y_col0 : y_col0 + N] += s[:, s_col0 : s_col0 + R] b[slot]^T, b [slots, N, R]."""
    m = s.shape[0]
    n, r = b.shape[1], b.shape[2]
    block_n = 64
    grid = (triton.cdiv(m, _block_m(m)), b.shape[0], triton.cdiv(n, block_n))
    _lora_expand_kernel[grid](
        s,
        b,
        y,
        batch.sorted_tokens,
        batch.slot_counts,
        batch.slot_starts,
        n,
        r,
        s_col0,
        y_col0,
        s.stride(0),
        b.stride(0),
        b.stride(1),
        y.stride(0),
        BLOCK_M=_block_m(m),
        BLOCK_N=block_n,
        BLOCK_R=max(16, triton.next_power_of_2(r)),
        IEEE=s.dtype == torch.float32,
    )
