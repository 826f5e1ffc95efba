"""Rotary position embedding applied in place to q and k (GPT-NeoX / HF Llama "rotate_half" layout).

cos_sin_cache[p] = [cos(p * f_0..f_{D/2-1}) | sin(p * f_0..f_{D/2-1})], built once by the model
(any RoPE scaling, e.g. Llama 3.1's, goes into that table, not here).
"""

from __future__ import annotations

import torch

from pagoda.engine.kernels.triton_import import tl, triton


@triton.jit
def _rotate_heads(
    ptr,
    stride_t,
    stride_h,
    t,
    cos,
    sin,
    NUM_HEADS: tl.constexpr,
    HALF: tl.constexpr,
    HALF_PAD: tl.constexpr,
    HEADS_PAD: tl.constexpr,
):
    h = tl.arange(0, HEADS_PAD)[:, None]
    i = tl.arange(0, HALF_PAD)[None, :]
    mask = (h < NUM_HEADS) & (i < HALF)
    p1 = ptr + t * stride_t + h * stride_h + i
    x1 = tl.load(p1, mask=mask).to(tl.float32)
    x2 = tl.load(p1 + HALF, mask=mask).to(tl.float32)
    tl.store(p1, (x1 * cos - x2 * sin).to(ptr.dtype.element_ty), mask=mask)
    tl.store(p1 + HALF, (x2 * cos + x1 * sin).to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def _rotary_kernel(
    positions_ptr,
    q_ptr,
    k_ptr,
    cache_ptr,
    stride_qt,
    stride_qh,
    stride_kt,
    stride_kh,
    stride_cache,
    NUM_HEADS: tl.constexpr,
    NUM_KV_HEADS: tl.constexpr,
    HALF: tl.constexpr,
    HALF_PAD: tl.constexpr,
    HEADS_PAD: tl.constexpr,
    KV_HEADS_PAD: tl.constexpr,
):
    t = tl.program_id(0).to(tl.int64)
    pos = tl.load(positions_ptr + t)
    i = tl.arange(0, HALF_PAD)[None, :]
    cos = tl.load(cache_ptr + pos * stride_cache + i, mask=i < HALF).to(tl.float32)
    sin = tl.load(cache_ptr + pos * stride_cache + HALF + i, mask=i < HALF).to(tl.float32)
    _rotate_heads(q_ptr, stride_qt, stride_qh, t, cos, sin, NUM_HEADS, HALF, HALF_PAD, HEADS_PAD)
    _rotate_heads(
        k_ptr, stride_kt, stride_kh, t, cos, sin, NUM_KV_HEADS, HALF, HALF_PAD, KV_HEADS_PAD
    )


def _check(
    positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor, cos_sin_cache: torch.Tensor
) -> None:
    if q.dim() != 3 or k.dim() != 3 or q.shape[0] != k.shape[0] or q.shape[2] != k.shape[2]:
        raise ValueError(
            f"q and k must be [T, heads, head_dim], got {tuple(q.shape)} and {tuple(k.shape)}"
        )
    if positions.shape != (q.shape[0],):
        raise ValueError(f"positions must be [{q.shape[0]}], got {tuple(positions.shape)}")
    head_dim = q.shape[2]
    if head_dim % 2 or cos_sin_cache.dim() != 2 or cos_sin_cache.shape[1] != head_dim:
        raise ValueError(
            f"cos_sin_cache must be [max_position, {head_dim}], got {tuple(cos_sin_cache.shape)}"
        )


def rotary_embedding(
    positions: torch.Tensor,  # [T] int64
    q: torch.Tensor,  # [T, num_heads, rotary_dim], may be a view into a fused qkv tensor
    k: torch.Tensor,  # [T, num_kv_heads, rotary_dim]
    cos_sin_cache: torch.Tensor,  # [max_position, rotary_dim]
) -> None:
    _check(positions, q, k, cos_sin_cache)
    if q.stride(2) != 1 or k.stride(2) != 1 or cos_sin_cache.stride(1) != 1:
        raise ValueError("q, k and cos_sin_cache need a contiguous last dimension")
    half = q.shape[2] // 2  # any: a partial rotary's 96 dims (Phi-4-mini) make a half of 48
    if q.shape[0]:
        _rotary_kernel[(q.shape[0],)](
            positions,
            q,
            k,
            cos_sin_cache,
            q.stride(0),
            q.stride(1),
            k.stride(0),
            k.stride(1),
            cos_sin_cache.stride(0),
            NUM_HEADS=q.shape[1],
            NUM_KV_HEADS=k.shape[1],
            HALF=half,
            HALF_PAD=triton.next_power_of_2(half),
            HEADS_PAD=triton.next_power_of_2(q.shape[1]),
            KV_HEADS_PAD=triton.next_power_of_2(k.shape[1]),
        )


def rotary_embedding_ref(
    positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor, cos_sin_cache: torch.Tensor
) -> None:
    _check(positions, q, k, cos_sin_cache)
    cos, sin = cos_sin_cache[positions].float()[:, None, :].chunk(2, dim=-1)
    for x in (q, k):
        x1, x2 = x.float().chunk(2, dim=-1)
        x.copy_(torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1))
