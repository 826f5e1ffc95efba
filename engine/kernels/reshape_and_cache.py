"""Write this step's new K and V into the paged cache in one launch (vLLM's reshape_and_cache)."""

from __future__ import annotations

import torch

from pagoda.engine.kernels.triton_import import tl, triton


@triton.jit
def _reshape_and_cache_kernel(
    k_ptr,
    v_ptr,
    k_cache_ptr,
    v_cache_ptr,
    slot_mapping_ptr,
    k_scale_ptr,
    v_scale_ptr,
    stride_kt,
    stride_kh,
    stride_vt,
    stride_vh,
    stride_kcb,
    stride_kcs,
    stride_kch,
    stride_vcb,
    stride_vcs,
    stride_vch,
    NUM_KV_HEADS: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
    HEADS_PAD: tl.constexpr,
    DIM_PAD: tl.constexpr,
    FP8_MAX: tl.constexpr,
    SCALED: tl.constexpr,
):
    t = tl.program_id(0)
    slot = tl.load(slot_mapping_ptr + t)
    if slot < 0:  # padding token: nothing to write
        return
    block = slot // BLOCK_SIZE
    offset = slot % BLOCK_SIZE
    h = tl.arange(0, HEADS_PAD)[:, None]
    d = tl.arange(0, DIM_PAD)[None, :]
    mask = (h < NUM_KV_HEADS) & (d < HEAD_DIM)
    k = tl.load(k_ptr + t * stride_kt + h * stride_kh + d, mask=mask)
    v = tl.load(v_ptr + t * stride_vt + h * stride_vh + d, mask=mask)
    if FP8_MAX > 0:  # an e4m3 cache: saturate, as the conversion itself would not
        k = k.to(tl.float32)
        v = v.to(tl.float32)
        if SCALED:  # e4m3(x / scale), a scale per KV head
            k = k / tl.load(k_scale_ptr + h, mask=h < NUM_KV_HEADS, other=1.0)
            v = v / tl.load(v_scale_ptr + h, mask=h < NUM_KV_HEADS, other=1.0)
        k = tl.clamp(k, -FP8_MAX, FP8_MAX)
        v = tl.clamp(v, -FP8_MAX, FP8_MAX)
    tl.store(
        k_cache_ptr + block * stride_kcb + offset * stride_kcs + h * stride_kch + d,
        k.to(k_cache_ptr.dtype.element_ty),
        mask=mask,
    )
    tl.store(
        v_cache_ptr + block * stride_vcb + offset * stride_vcs + h * stride_vch + d,
        v.to(v_cache_ptr.dtype.element_ty),
        mask=mask,
    )


def _check(
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    if k.dim() != 3 or k.shape != v.shape:
        raise ValueError(
            f"k and v must both be [T, num_kv_heads, head_dim], got {tuple(k.shape)} and {tuple(v.shape)}"
        )
    if k_cache.dim() != 4 or k_cache.shape != v_cache.shape or k_cache.shape[2:] != k.shape[1:]:
        raise ValueError(
            f"caches must be [num_blocks, block_size, {k.shape[1]}, {k.shape[2]}], "
            f"got {tuple(k_cache.shape)} and {tuple(v_cache.shape)}"
        )
    if slot_mapping.shape != (k.shape[0],):
        raise ValueError(f"slot_mapping must be [{k.shape[0]}], got {tuple(slot_mapping.shape)}")


def reshape_and_cache(
    k: torch.Tensor,  # [T, num_kv_heads, head_dim]
    v: torch.Tensor,  # [T, num_kv_heads, head_dim]
    k_cache: torch.Tensor,  # [num_blocks, block_size, num_kv_heads, head_dim]
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,  # [T] int64, block * block_size + offset; -1 skips the token
    k_scale: torch.Tensor | None = None,  # [num_kv_heads] float32: an FP8 cache stores k / k_scale
    v_scale: torch.Tensor | None = None,
) -> None:
    _check(k, v, k_cache, v_cache, slot_mapping)
    if k.stride(2) != 1 or v.stride(2) != 1 or k_cache.stride(3) != 1 or v_cache.stride(3) != 1:
        raise ValueError("k, v and the caches need a contiguous last (head_dim) dimension")
    num_tokens, num_kv_heads, head_dim = k.shape
    if num_tokens == 0:
        return
    fp8 = k_cache.dtype.itemsize == 1
    scaled = fp8 and k_scale is not None and v_scale is not None
    _reshape_and_cache_kernel[(num_tokens,)](
        k,
        v,
        k_cache,
        v_cache,
        slot_mapping,
        k_scale if scaled else slot_mapping,
        v_scale if scaled else slot_mapping,
        k.stride(0),
        k.stride(1),
        v.stride(0),
        v.stride(1),
        k_cache.stride(0),
        k_cache.stride(1),
        k_cache.stride(2),
        v_cache.stride(0),
        v_cache.stride(1),
        v_cache.stride(2),
        NUM_KV_HEADS=num_kv_heads,
        HEAD_DIM=head_dim,
        BLOCK_SIZE=k_cache.shape[1],
        HEADS_PAD=triton.next_power_of_2(num_kv_heads),
        DIM_PAD=triton.next_power_of_2(head_dim),
        FP8_MAX=torch.finfo(k_cache.dtype).max if fp8 else 0.0,
        SCALED=scaled,
    )


def reshape_and_cache_ref(
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    k_scale: torch.Tensor | None = None,
    v_scale: torch.Tensor | None = None,
) -> None:
    _check(k, v, k_cache, v_cache, slot_mapping)
    keep = slot_mapping >= 0
    slots = slot_mapping[keep]
    block_size = k_cache.shape[1]
    for x, cache, scale in ((k[keep], k_cache, k_scale), (v[keep], v_cache, v_scale)):
        if cache.dtype != x.dtype:  # an e4m3 cache: x / scale, saturated
            limit = torch.finfo(cache.dtype).max
            x = x.float() / (scale[:, None] if scale is not None else 1.0)
            x = x.clamp(-limit, limit).to(cache.dtype)
        cache[slots // block_size, slots % block_size] = x
