"""Write this step's new K and V into the paged cache in one launch (vLLM's reshape_and_cache),
with the rotary embedding of q and k fused in: one kernel a layer where there were two.

The rotation is the "rotate_half" layout of HF Llama over a table cos_sin_cache[p] = [cos(p * f) |
sin(p * f)] built once by the model (layers/rotary.py: any RoPE scaling is in the table);
attention/rope.py holds the PyTorch path, the reference.
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
    """Rotate the first 2 * HALF dims of a token's heads in place ("rotate_half" layout)."""
    h = tl.arange(0, HEADS_PAD)[:, None]
    i = tl.arange(0, HALF_PAD)[None, :]
    mask = (h < NUM_HEADS) & (i < HALF)
    p1 = ptr + t * stride_t + h * stride_h + i
    x1 = tl.load(p1, mask=mask).to(tl.float32)
    x2 = tl.load(p1 + HALF, mask=mask).to(tl.float32)
    tl.store(p1, (x1 * cos - x2 * sin).to(ptr.dtype.element_ty), mask=mask)
    tl.store(p1 + HALF, (x2 * cos + x1 * sin).to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def _as_cached(
    x, scale_ptr, h, NUM_KV_HEADS: tl.constexpr, FP8_MAX: tl.constexpr, SCALED: tl.constexpr
):
    """x as the cache stores it: an e4m3 cache holds x / scale (a scale per KV head), saturated,
    as the conversion itself would not; a cache in the model's dtype holds x."""
    if FP8_MAX > 0:
        x = x.to(tl.float32)
        if SCALED:  # correctly rounded, as PyTorch divides: Triton's `/` is div.full.f32 (2 ulp)
            x = tl.math.div_rn(x, tl.load(scale_ptr + h, mask=h < NUM_KV_HEADS, other=1.0))
        x = tl.clamp(x, -FP8_MAX, FP8_MAX)
    return x


@triton.jit
def _reshape_and_cache_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    k_cache_ptr,
    v_cache_ptr,
    slot_mapping_ptr,
    k_scale_ptr,
    v_scale_ptr,
    positions_ptr,
    cos_sin_ptr,
    stride_qt,
    stride_qh,
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
    stride_cos,
    NUM_HEADS: tl.constexpr,
    NUM_KV_HEADS: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
    HEADS_PAD: tl.constexpr,
    KV_HEADS_PAD: tl.constexpr,
    DIM_PAD: tl.constexpr,
    ROPE: tl.constexpr,
    HALF: tl.constexpr,
    HALF_PAD: tl.constexpr,
    FP8_MAX: tl.constexpr,
    SCALED: tl.constexpr,
):
    """One token a program. With ROPE, its q heads are rotated in place and its k heads as they
    are written (the first 2 * HALF dims; a partial rotary's other dims pass as they are)."""
    t = tl.program_id(0).to(tl.int64)
    i = tl.arange(0, HALF_PAD)[None, :]
    if ROPE:
        pos = tl.load(positions_ptr + t)
        cos = tl.load(cos_sin_ptr + pos * stride_cos + i, mask=i < HALF).to(tl.float32)
        sin = tl.load(cos_sin_ptr + pos * stride_cos + HALF + i, mask=i < HALF).to(tl.float32)
        _rotate_heads(
            q_ptr, stride_qt, stride_qh, t, cos, sin, NUM_HEADS, HALF, HALF_PAD, HEADS_PAD
        )
    slot = tl.load(slot_mapping_ptr + t)
    if slot < 0:  # padding token: nothing to write
        return
    block = slot // BLOCK_SIZE
    offset = slot % BLOCK_SIZE
    h = tl.arange(0, KV_HEADS_PAD)[:, None]
    d = tl.arange(0, DIM_PAD)[None, :]
    md = (h < NUM_KV_HEADS) & (d < HEAD_DIM)
    k_row = k_ptr + t * stride_kt + h * stride_kh
    k = tl.load(k_row + d, mask=md)
    if ROPE:  # dim d < HALF pairs with d + HALF, d < 2 * HALF with d - HALF; the rest pass
        first = d < HALF
        rotated = d < 2 * HALF
        f = tl.where(first, d, d - HALF)  # the frequency
        partner = tl.load(k_row + tl.where(first, d + HALF, d - HALF), mask=md & rotated)
        c = tl.load(cos_sin_ptr + pos * stride_cos + f, mask=rotated, other=1.0)
        s = tl.load(cos_sin_ptr + pos * stride_cos + HALF + f, mask=rotated, other=0.0)
        partner = tl.where(first, -partner.to(tl.float32), partner.to(tl.float32))
        # Rounded to the model's dtype, as a separate rotary kernel's output would be.
        r = (k.to(tl.float32) * c + partner * s).to(k_ptr.dtype.element_ty)
        k = tl.where(rotated, r, k)
    k = _as_cached(k, k_scale_ptr, h, NUM_KV_HEADS, FP8_MAX, SCALED)
    tl.store(
        k_cache_ptr + block * stride_kcb + offset * stride_kcs + h * stride_kch + d,
        k.to(k_cache_ptr.dtype.element_ty),
        mask=md,
    )
    v = tl.load(v_ptr + t * stride_vt + h * stride_vh + d, mask=md)
    v = _as_cached(v, v_scale_ptr, h, NUM_KV_HEADS, FP8_MAX, SCALED)
    tl.store(
        v_cache_ptr + block * stride_vcb + offset * stride_vcs + h * stride_vch + d,
        v.to(v_cache_ptr.dtype.element_ty),
        mask=md,
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
    rotate: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> None:
    """Write K and V at their slots. Given rotate = (q [T, num_heads, head_dim], positions [T]
    int64, cos_sin_cache [max_position, rotary_dim]), the rotary embedding is fused in: q is
    rotated in place and k as it is written (k itself is left as it is); the first rotary_dim
    dims of each head are rotated, "rotate_half" layout."""
    _check(k, v, k_cache, v_cache, slot_mapping)
    if k.stride(2) != 1 or v.stride(2) != 1 or k_cache.stride(3) != 1 or v_cache.stride(3) != 1:
        raise ValueError("k, v and the caches need a contiguous last (head_dim) dimension")
    num_tokens, num_kv_heads, head_dim = k.shape
    # Without the rotation, its pointers are stand-ins the kernel never reads.
    q, positions, table = rotate if rotate is not None else (k, slot_mapping, k)
    num_heads, rotary_dim = 1, 2
    if rotate is not None:
        _check_rope(q, k, positions, table)
        num_heads, rotary_dim = q.shape[1], table.shape[1]
    if num_tokens == 0:
        return
    fp8 = k_cache.dtype.itemsize == 1
    scaled = fp8 and k_scale is not None and v_scale is not None
    _reshape_and_cache_kernel[(num_tokens,)](
        q,
        k,
        v,
        k_cache,
        v_cache,
        slot_mapping,
        k_scale if scaled else slot_mapping,
        v_scale if scaled else slot_mapping,
        positions,
        table,
        q.stride(0),
        q.stride(1),
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
        table.stride(0),
        NUM_HEADS=num_heads,
        NUM_KV_HEADS=num_kv_heads,
        HEAD_DIM=head_dim,
        BLOCK_SIZE=k_cache.shape[1],
        HEADS_PAD=triton.next_power_of_2(num_heads),
        KV_HEADS_PAD=triton.next_power_of_2(num_kv_heads),
        DIM_PAD=triton.next_power_of_2(head_dim),
        ROPE=rotate is not None,
        HALF=rotary_dim // 2,
        HALF_PAD=triton.next_power_of_2(rotary_dim // 2),
        FP8_MAX=torch.finfo(k_cache.dtype).max if fp8 else 0.0,
        SCALED=scaled,
    )


def _check_rope(
    q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, cos_sin_cache: torch.Tensor
) -> None:
    if q.dim() != 3 or q.shape[0] != k.shape[0] or q.shape[2] != k.shape[2] or q.stride(2) != 1:
        raise ValueError(
            f"q must be [{k.shape[0]}, num_heads, {k.shape[2]}] with a contiguous last dimension, "
            f"got {tuple(q.shape)}"
        )
    if positions.shape != (k.shape[0],):
        raise ValueError(f"positions must be [{k.shape[0]}], got {tuple(positions.shape)}")
    rotary_dim = cos_sin_cache.shape[-1]
    if cos_sin_cache.dim() != 2 or rotary_dim % 2 or not 0 < rotary_dim <= k.shape[2]:
        raise ValueError(
            f"cos_sin_cache must be [max_position, an even rotary_dim <= {k.shape[2]}], "
            f"got {tuple(cos_sin_cache.shape)}"
        )
    if cos_sin_cache.stride(1) != 1:
        raise ValueError("cos_sin_cache needs a contiguous last dimension")


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
