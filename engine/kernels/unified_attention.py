"""One paged attention kernel for prefill (fresh, chunked, after prefix-cache hits) and decode.

The layout is engine/attention/metadata.py's: tokens of all sequences concatenated, each sequence's
queries the last query_len of its seq_len tokens, all keys and values (this step's too) already in
the paged cache. A program takes BLOCK_Q consecutive queries of one sequence and all the q heads of
one kv head (grouped-query attention): BLOCK_M = BLOCK_Q * heads_per_kv rows share each K/V tile, so
a decode step reads every cached K/V byte once per kv head rather than once per q head.

Grid axis 0 walks query blocks. Sequence s owns blocks query_start_loc[s] // BLOCK_Q + s onward
(an upper bound of the blocks before it, so no host sync is needed to count them); a program finds
its sequence by binary search and leaves if its block is past the sequence's queries. Axis 1 is the
kv head; axis 2 splits the context (split-KV), for decode batches too small to fill the GPU: each
split writes an unnormalised partial result and a second kernel merges them.

Options (compile-time, one value per model layer): SLIDING_WINDOW w > 0 lets a query see only
itself and the w - 1 keys before it (tiles wholly before that are skipped); SOFT_CAP c > 0 turns
each scaled score s into c * tanh(s / c) before the softmax (Gemma 2).
"""

from __future__ import annotations

import math

import torch

from pagoda.engine.kernels.triton_import import tl, triton

_LOG2E = 1.4426950408889634


@triton.jit
def _find_seq(query_start_loc_ptr, block_id, num_seqs, BLOCK_Q: tl.constexpr):
    """The last sequence s whose first query block, query_start_loc[s] // BLOCK_Q + s, is <= block_id."""
    lo = 0
    hi = num_seqs
    while lo < hi:
        mid = (lo + hi) // 2
        if tl.load(query_start_loc_ptr + mid) // BLOCK_Q + mid <= block_id:
            lo = mid + 1
        else:
            hi = mid
    return lo - 1


# The batch size and the block-table width change every step: specialized (Triton keys a
# compiled kernel on whether an int is 1 or a multiple of 16), each new combination would compile
# anew in the middle of serving, a second or more of stall.
@triton.jit(do_not_specialize=["num_seqs", "stride_bt"])
def _attention_kernel(
    out_ptr,
    q_ptr,
    k_cache_ptr,
    v_cache_ptr,
    block_tables_ptr,
    seq_lens_ptr,
    query_start_loc_ptr,
    part_acc_ptr,
    part_max_ptr,
    part_sum_ptr,
    k_scale_ptr,
    v_scale_ptr,
    scale_log2,
    num_seqs,
    stride_qt,
    stride_qh,
    stride_ot,
    stride_oh,
    stride_kb,
    stride_ks,
    stride_kh,
    stride_vb,
    stride_vs,
    stride_vh,
    stride_bt,
    NUM_HEADS: tl.constexpr,
    HEADS_PER_KV: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    DIM_PAD: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_M: tl.constexpr,
    TILE_N: tl.constexpr,
    NUM_SPLITS: tl.constexpr,
    SLIDING_WINDOW: tl.constexpr,
    SOFT_CAP: tl.constexpr,
    KV_SCALED: tl.constexpr,
):
    block_id = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    v_scale = 1.0
    if KV_SCALED:  # an FP8 cache's per-head scales, folded into the scores and the output
        scale_log2 = scale_log2 * tl.load(k_scale_ptr + kv_head)
        v_scale = tl.load(v_scale_ptr + kv_head)

    seq = _find_seq(query_start_loc_ptr, block_id, num_seqs, BLOCK_Q)
    q_start = tl.load(query_start_loc_ptr + seq)
    q_len = tl.load(query_start_loc_ptr + seq + 1) - q_start
    q_block = block_id - (q_start // BLOCK_Q + seq)
    if q_block * BLOCK_Q >= q_len:
        return
    seq_len = tl.load(seq_lens_ptr + seq)
    context_len = seq_len - q_len  # keys before this step's first query

    rows = tl.arange(0, BLOCK_M)
    q_idx = q_block * BLOCK_Q + rows // HEADS_PER_KV  # query index within the sequence
    head = kv_head * HEADS_PER_KV + rows % HEADS_PER_KV
    row_ok = (rows < BLOCK_Q * HEADS_PER_KV) & (q_idx < q_len)
    token = (q_start + q_idx).to(tl.int64)
    d = tl.arange(0, DIM_PAD)
    d_ok = d < HEAD_DIM
    q = tl.load(
        q_ptr + token[:, None] * stride_qt + head[:, None] * stride_qh + d[None, :],
        mask=row_ok[:, None] & d_ok[None, :],
        other=0.0,
    )
    q_pos = context_len + q_idx  # causal: row r sees keys at positions <= q_pos[r]

    # Keys any row of this program may see, split evenly in whole tiles.
    kv_end = tl.minimum(seq_len, context_len + (q_block + 1) * BLOCK_Q)
    first_tile = 0
    if SLIDING_WINDOW > 0:  # the first key the block's first query sees
        first_tile = tl.maximum(context_len + q_block * BLOCK_Q - SLIDING_WINDOW + 1, 0) // TILE_N
    num_tiles = tl.cdiv(kv_end, TILE_N) - first_tile
    tiles_per_split = tl.cdiv(num_tiles, NUM_SPLITS)
    tile_lo = first_tile + split * tiles_per_split
    tile_hi = tl.minimum(tile_lo + tiles_per_split, first_tile + num_tiles)

    m = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, DIM_PAD], tl.float32)
    n = tl.arange(0, TILE_N)
    block_table = block_tables_ptr + seq.to(tl.int64) * stride_bt
    for tile in range(tile_lo, tile_hi):
        pos = tile * TILE_N + n
        pos_ok = pos < kv_end
        block = tl.load(block_table + pos // BLOCK_SIZE, mask=pos_ok, other=0).to(tl.int64)
        offset = pos % BLOCK_SIZE
        k = tl.load(
            k_cache_ptr
            + block[None, :] * stride_kb
            + offset[None, :] * stride_ks
            + kv_head * stride_kh
            + d[:, None],
            mask=pos_ok[None, :] & d_ok[:, None],
            other=0.0,
        ).to(q_ptr.dtype.element_ty)  # [DIM_PAD, TILE_N]; an FP8 cache widens (scale folded)
        v = tl.load(
            v_cache_ptr
            + block[:, None] * stride_vb
            + offset[:, None] * stride_vs
            + kv_head * stride_vh
            + d[None, :],
            mask=pos_ok[:, None] & d_ok[None, :],
            other=0.0,
        ).to(q_ptr.dtype.element_ty)  # [TILE_N, DIM_PAD]
        s = tl.dot(q, k) * scale_log2
        if SOFT_CAP > 0:  # c * tanh(s / c) on the natural-log scale (s is in log2 units)
            raw = s * 0.6931471805599453  # ln 2
            s = SOFT_CAP * (2.0 * tl.sigmoid(2.0 * raw / SOFT_CAP) - 1.0) * 1.4426950408889634
        visible = pos[None, :] <= q_pos[:, None]
        if SLIDING_WINDOW > 0:
            visible = visible & (pos[None, :] > q_pos[:, None] - SLIDING_WINDOW)
        s = tl.where(visible, s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, axis=1))
        m_safe = tl.where(
            m_new == float("-inf"), 0.0, m_new
        )  # a row with no key yet stays all zero
        p = tl.exp2(s - m_safe[:, None])
        alpha = tl.exp2(m - m_safe)
        l = l * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m = m_new

    if KV_SCALED:
        acc = acc * v_scale
    if NUM_SPLITS == 1:
        out = acc / l[:, None]
        tl.store(
            out_ptr + token[:, None] * stride_ot + head[:, None] * stride_oh + d[None, :],
            out.to(out_ptr.dtype.element_ty),
            mask=row_ok[:, None] & d_ok[None, :],
        )
    else:
        part = (token * NUM_HEADS + head) * NUM_SPLITS + split
        tl.store(part_acc_ptr + part[:, None] * DIM_PAD + d[None, :], acc, mask=row_ok[:, None])
        tl.store(part_max_ptr + part, m, mask=row_ok)
        tl.store(part_sum_ptr + part, l, mask=row_ok)


@triton.jit
def _merge_splits_kernel(
    out_ptr,
    part_acc_ptr,
    part_max_ptr,
    part_sum_ptr,
    stride_ot,
    stride_oh,
    NUM_HEADS: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    DIM_PAD: tl.constexpr,
    NUM_SPLITS: tl.constexpr,
):
    token = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1)
    part = (token * NUM_HEADS + head) * NUM_SPLITS + tl.arange(0, NUM_SPLITS)
    d = tl.arange(0, DIM_PAD)
    m = tl.load(part_max_ptr + part)
    m_all = tl.max(m, axis=0)
    w = tl.exp2(m - m_all)  # an empty split has m = -inf and weighs nothing
    acc = tl.load(part_acc_ptr + part[:, None] * DIM_PAD + d[None, :])
    out = tl.sum(acc * w[:, None], axis=0) / tl.sum(tl.load(part_sum_ptr + part) * w, axis=0)
    tl.store(
        out_ptr + token * stride_ot + head * stride_oh + d,
        out.to(out_ptr.dtype.element_ty),
        mask=d < HEAD_DIM,
    )


def decode_num_splits(num_seqs: int, num_kv_heads: int, num_sms: int) -> int:
    """Splits of the context so that a decode batch puts at least two programs on every SM
    (measured on an H200: 32 seqs x 8 kv heads ran 17% faster in 2 splits, 64 x 8 10% slower)."""
    programs = num_seqs * num_kv_heads
    if programs >= 2 * num_sms:
        return 1
    return min(32, triton.next_power_of_2(math.ceil(2 * num_sms / programs)))


def unified_attention(
    q: torch.Tensor,  # [T, num_heads, head_dim]
    k_cache: torch.Tensor,  # [num_blocks, block_size, num_kv_heads, head_dim]
    v_cache: torch.Tensor,
    query_start_loc: torch.Tensor,  # [B + 1] int32
    seq_lens: torch.Tensor,  # [B] int32
    block_tables: torch.Tensor,  # [B, max_blocks_per_seq] int32
    max_query_len: int,
    scale: float,
    num_splits: int = 1,
    block_m: int | None = None,
    tile_n: int | None = None,
    num_warps: int = 4,
    num_stages: int = 2,
    out: torch.Tensor | None = None,
    sliding_window: int | None = None,
    soft_cap: float | None = None,
    k_scale: torch.Tensor | None = None,  # [num_kv_heads] float32: an FP8 cache holds k / k_scale
    v_scale: torch.Tensor | None = None,
) -> (
    torch.Tensor
):  # [T, num_heads, head_dim]; rows of tokens outside every sequence are left unwritten
    num_tokens, num_heads, head_dim = q.shape
    num_kv_heads, block_size = k_cache.shape[2], k_cache.shape[1]
    if num_heads % num_kv_heads:
        raise ValueError(f"num_heads {num_heads} is not a multiple of num_kv_heads {num_kv_heads}")
    if k_cache.shape[3] != head_dim or v_cache.shape != k_cache.shape:
        raise ValueError(
            f"caches {tuple(k_cache.shape)}, {tuple(v_cache.shape)} do not fit q {tuple(q.shape)}"
        )
    if q.stride(2) != 1 or k_cache.stride(3) != 1 or v_cache.stride(3) != 1:
        raise ValueError("q and the caches need a contiguous last (head_dim) dimension")
    if num_splits < 1 or num_splits & (num_splits - 1) or (num_splits > 1 and max_query_len != 1):
        raise ValueError(
            f"num_splits must be a power of two, and above 1 only for decode; got {num_splits}"
        )
    if out is None:
        out = torch.empty_like(q)
    num_seqs = seq_lens.shape[0]
    if num_tokens == 0 or num_seqs == 0:
        return out

    heads_per_kv = num_heads // num_kv_heads
    # Decode needs one query per program: the fewest rows a tensor-core dot takes (16). Prefill
    # takes 64 rows, to reuse each K/V tile over more queries. Tiles: the fastest on an H200
    # (docs/gpu-notes.md); decode wants more bytes in flight, prefill fewer registers.
    decode = max_query_len == 1
    block_m = max(block_m or (16 if decode else 64), triton.next_power_of_2(heads_per_kv))
    tile_n = tile_n or (64 if decode else 32)
    block_q = block_m // heads_per_kv
    dim_pad = triton.next_power_of_2(head_dim)
    num_q_blocks = num_tokens // block_q + num_seqs
    part_acc = part_max = part_sum = out  # unused unless split
    if num_splits > 1:
        part_acc = torch.empty(
            (num_tokens, num_heads, num_splits, dim_pad), dtype=torch.float32, device=q.device
        )
        part_max = torch.empty(
            (num_tokens, num_heads, num_splits), dtype=torch.float32, device=q.device
        )
        part_sum = torch.empty_like(part_max)
    # Scales apply to an FP8 cache only, as it was written (reshape_and_cache).
    kv_scaled = k_cache.dtype.itemsize == 1 and k_scale is not None and v_scale is not None
    _attention_kernel[(num_q_blocks, num_kv_heads, num_splits)](
        out,
        q,
        k_cache,
        v_cache,
        block_tables,
        seq_lens,
        query_start_loc,
        part_acc,
        part_max,
        part_sum,
        k_scale if kv_scaled else part_max,
        v_scale if kv_scaled else part_max,
        scale * _LOG2E,
        num_seqs,
        q.stride(0),
        q.stride(1),
        out.stride(0),
        out.stride(1),
        k_cache.stride(0),
        k_cache.stride(1),
        k_cache.stride(2),
        v_cache.stride(0),
        v_cache.stride(1),
        v_cache.stride(2),
        block_tables.stride(0),
        NUM_HEADS=num_heads,
        HEADS_PER_KV=heads_per_kv,
        HEAD_DIM=head_dim,
        DIM_PAD=dim_pad,
        BLOCK_SIZE=block_size,
        BLOCK_Q=block_q,
        BLOCK_M=block_m,
        TILE_N=tile_n,
        NUM_SPLITS=num_splits,
        SLIDING_WINDOW=sliding_window or 0,
        SOFT_CAP=float(soft_cap or 0.0),
        KV_SCALED=kv_scaled,
        num_warps=num_warps,
        num_stages=num_stages,
    )
    if num_splits > 1:
        _merge_splits_kernel[(num_tokens, num_heads)](
            out,
            part_acc,
            part_max,
            part_sum,
            out.stride(0),
            out.stride(1),
            NUM_HEADS=num_heads,
            HEAD_DIM=head_dim,
            DIM_PAD=dim_pad,
            NUM_SPLITS=num_splits,
        )
    return out
