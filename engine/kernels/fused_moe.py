"""Fused mixture-of-experts MLP on the GPU: grouped GEMMs over tokens sorted by expert.

Each (token, k) routing slot goes to one expert. The slots are sorted by expert and each expert's
run padded to a multiple of BLOCK_M (on the device, no host sync: the layout's size is bounded by
slots + experts * (BLOCK_M - 1)), so a program owns BLOCK_M slots of one expert and BLOCK_N output
columns. Two launches: slots x w13[e]^T -> [slots, 2I], SiLU-and-mul, then x w2[e]^T scaled by the
routing weight -> [slots, H], summed over each token's k slots. The same arithmetic as
engine/layers/moe.py's fused_moe_reference.
"""

from __future__ import annotations

import torch

from pagoda.engine.kernels.activation import silu_and_mul
from pagoda.engine.kernels.triton_import import tl, triton


@triton.jit
def _expert_gemm_kernel(
    a_ptr,  # [rows, K]: tokens (first GEMM, row = slot // TOP_K) or slots (second)
    w_ptr,  # [E, N, K]
    out_ptr,  # [slots, N]
    sorted_slots_ptr,  # [padded]: slot ids, grouped by expert; `num_slots` marks padding
    block_experts_ptr,  # [padded / BLOCK_M]: each block's expert, E past the last one
    weights_ptr,  # [slots]: routing weights (second GEMM only)
    num_slots,
    N,
    K,
    stride_am,
    stride_we,
    stride_wn,
    stride_om,
    NUM_EXPERTS: tl.constexpr,
    TOP_K: tl.constexpr,
    ROWS_ARE_TOKENS: tl.constexpr,
    MUL_WEIGHTS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    expert = tl.load(block_experts_ptr + pid_m)
    if expert >= NUM_EXPERTS:
        return
    slots = tl.load(sorted_slots_ptr + pid_m * BLOCK_M + tl.arange(0, BLOCK_M))
    slot_ok = slots < num_slots
    rows = slots // TOP_K if ROWS_ARE_TOKENS else slots
    n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = n < N
    kk = tl.arange(0, BLOCK_K)
    a_rows = a_ptr + rows.to(tl.int64)[:, None] * stride_am
    w_cols = w_ptr + expert.to(tl.int64) * stride_we + n.to(tl.int64)[None, :] * stride_wn
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k_ok = k0 + kk < K
        a = tl.load(a_rows + (k0 + kk)[None, :], mask=slot_ok[:, None] & k_ok[None, :], other=0.0)
        w = tl.load(w_cols + (k0 + kk)[:, None], mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        acc += tl.dot(a, w)
    if MUL_WEIGHTS:
        acc *= tl.load(weights_ptr + slots, mask=slot_ok, other=0.0).to(tl.float32)[:, None]
    tl.store(
        out_ptr + slots.to(tl.int64)[:, None] * stride_om + n[None, :],
        acc.to(out_ptr.dtype.element_ty),
        mask=slot_ok[:, None] & n_ok[None, :],
    )


def sort_slots(
    ids: torch.Tensor, num_experts: int, block_m: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(slot ids grouped by expert, each group padded to block_m with `slots`; each block's
    expert, num_experts for blocks past the last group), all on the device."""
    flat = ids.flatten()
    num_slots = flat.numel()
    # scatter_add, not bincount: bincount's output size depends on the data (a host sync, which
    # a CUDA graph capture cannot hold).
    counts = torch.zeros(num_experts, dtype=torch.int64, device=ids.device)
    counts.scatter_add_(0, flat, torch.ones_like(flat))
    padded = (counts + block_m - 1) // block_m * block_m
    group_start = torch.cumsum(padded, 0) - padded
    order = torch.argsort(flat, stable=True)
    expert_of = flat[order]
    rank = (
        torch.arange(num_slots, device=ids.device) - (torch.cumsum(counts, 0) - counts)[expert_of]
    )
    max_len = num_slots + num_experts * (block_m - 1)
    max_len = (max_len + block_m - 1) // block_m * block_m
    sorted_slots = torch.full((max_len,), num_slots, dtype=torch.int32, device=ids.device)
    sorted_slots[group_start[expert_of] + rank] = order.to(torch.int32)
    block_starts = torch.arange(0, max_len, block_m, device=ids.device)
    block_experts = torch.searchsorted(torch.cumsum(padded, 0), block_starts, right=True)
    return sorted_slots, block_experts.to(torch.int32)


def _expert_gemm(
    a: torch.Tensor,
    w: torch.Tensor,
    sorted_slots: torch.Tensor,
    block_experts: torch.Tensor,
    num_slots: int,
    top_k: int,
    weights: torch.Tensor | None,
    block_m: int,
) -> torch.Tensor:
    num_experts, n, k = w.shape
    out = torch.empty((num_slots, n), dtype=a.dtype, device=a.device)
    block_n, block_k = 64, 64 if k >= 64 else max(16, triton.next_power_of_2(k))
    grid = (block_experts.numel(), triton.cdiv(n, block_n))
    _expert_gemm_kernel[grid](
        a,
        w,
        out,
        sorted_slots,
        block_experts,
        weights if weights is not None else out,
        num_slots,
        n,
        k,
        a.stride(0),
        w.stride(0),
        w.stride(1),
        out.stride(0),
        NUM_EXPERTS=num_experts,
        TOP_K=top_k,
        ROWS_ARE_TOKENS=weights is None,
        MUL_WEIGHTS=weights is not None,
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_K=block_k,
    )
    return out


def fused_moe(
    x: torch.Tensor,  # [T, H]
    w13: torch.Tensor,  # [E, 2I, H]
    w2: torch.Tensor,  # [E, H, I]
    weights: torch.Tensor,  # [T, k]
    ids: torch.Tensor,  # [T, k]
    block_m: int = 16,
) -> torch.Tensor:
    """sum over each token's k experts of weight * w2(silu(w1 x) * w3 x): [T, H]."""
    num_tokens, top_k = ids.shape
    if num_tokens == 0:
        return torch.zeros_like(x)
    num_slots = num_tokens * top_k
    sorted_slots, block_experts = sort_slots(ids, w13.shape[0], block_m)
    gate_up = _expert_gemm(x, w13, sorted_slots, block_experts, num_slots, top_k, None, block_m)
    act = silu_and_mul(gate_up)
    flat_weights = weights.reshape(-1).contiguous()
    down = _expert_gemm(act, w2, sorted_slots, block_experts, num_slots, 1, flat_weights, block_m)
    return down.view(num_tokens, top_k, -1).sum(dim=1)
