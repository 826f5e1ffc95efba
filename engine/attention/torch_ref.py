"""Paged attention in plain PyTorch: the CPU path and the oracle the GPU kernels are tested against.

Grouped-query attention is done without copying K/V per query head: the `group` query heads that
share a KV head are folded into the query-length axis, so one SDPA call over [kv_heads, group *
query_len, head_dim] covers them (the mask is repeated `group` times instead of K/V).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pagoda.engine.attention.metadata import AttentionMetadata
from pagoda.engine.attention.rope import Rope

FP8_MAX = torch.finfo(torch.float8_e4m3fn).max


def as_cached(x: torch.Tensor, cache: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    """x [T, kv_heads, head_dim] as the cache stores it: an FP8 cache holds e4m3(x / scale),
    saturated (scale: one per KV head, quantization/kv_cache.py; None is 1.0)."""
    if cache.dtype == x.dtype:
        return x
    if scale is not None:
        x = x.float() / scale[:, None]
    return x.clamp(-FP8_MAX, FP8_MAX).to(cache.dtype)


def write_kv(
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    k_scale: torch.Tensor | None = None,
    v_scale: torch.Tensor | None = None,
) -> None:
    """Store each token's K/V at its slot (block * block_size + offset); slot -1 is padding."""
    valid = slot_mapping >= 0
    slots = slot_mapping[valid]
    for x, cache, scale in ((k[valid], k_cache, k_scale), (v[valid], v_cache, v_scale)):
        x = as_cached(x, cache, scale)
        if cache.dtype.itemsize == 1:  # index_copy_ has no float8 kernel: copy the bytes
            x, cache = x.view(torch.uint8), cache.view(torch.uint8)
        cache.view(-1, *cache.shape[2:]).index_copy_(0, slots, x)


def gather_blocks(cache: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    """cache[blocks] as [len(blocks) * block_size, kv_heads, head_dim]; a 2-D index_select is a
    row memcpy on the CPU, several times faster than indexing the 4-D cache."""
    raw = cache.view(torch.uint8) if cache.dtype.itemsize == 1 else cache  # float8: the bytes
    rows = raw.view(cache.shape[0], -1).index_select(0, blocks)
    return rows.view(cache.dtype).view(-1, *cache.shape[2:])


def gather_context(cache: torch.Tensor, block_table: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """The first num_tokens cached tokens of one sequence: [num_tokens, kv_heads, head_dim]."""
    num_blocks = -(-num_tokens // cache.shape[1])
    return gather_blocks(cache, block_table[:num_blocks])[:num_tokens]


def attend(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor,
    scale: float,
    soft_cap: float | None,
) -> torch.Tensor:
    """softmax(q k^T * scale) v over the mask; with a soft cap the scores go through
    cap * tanh(s / cap) first (Gemma 2), which SDPA cannot do."""
    if soft_cap is None:
        return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scale)
    scores = (query @ key.transpose(-1, -2)).float() * scale
    scores = (soft_cap * torch.tanh(scores / soft_cap)).masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1).to(value.dtype) @ value


class TorchAttentionBackend:
    name = "torch"

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        meta: AttentionMetadata,
        scale: float,
        sliding_window: int | None = None,
        logits_soft_cap: float | None = None,
        k_scale: torch.Tensor | None = None,
        v_scale: torch.Tensor | None = None,
        rope: Rope | None = None,
    ) -> torch.Tensor:
        if rope is not None:
            rope.apply(q, k)
        write_kv(k, v, k_cache, v_cache, meta.slot_mapping, k_scale, v_scale)
        # An FP8 cache's scales are folded in: q times k_scale, the output times v_scale (one
        # multiply a query and an output, not one a cached value).
        scales = None
        if k_cache.dtype != k.dtype and k_scale is not None and v_scale is not None:
            scales = (k_scale, v_scale)
        opts = (sliding_window, logits_soft_cap, scales)
        starts = meta.query_start_loc_cpu or meta.query_start_loc.tolist()
        seq_lens = meta.seq_lens_cpu or meta.seq_lens.tolist()
        out = torch.empty_like(q)
        decodes = [i for i in range(len(seq_lens)) if starts[i + 1] - starts[i] == 1]
        if decodes:
            self._decode(q, k_cache, v_cache, meta, scale, decodes, starts, seq_lens, out, *opts)
        for i in range(len(seq_lens)):
            start, end = starts[i], starts[i + 1]
            if end - start == 1:
                continue
            if end - start == seq_lens[i]:  # no earlier context: this step's k, v are all of it
                # (rounded as the cache holds them, so a later chunk or decode sees the same keys)
                key = as_cached(k[start:end], k_cache, k_scale).to(q.dtype)
                value = as_cached(v[start:end], v_cache, v_scale).to(q.dtype)
            else:
                key = gather_context(k_cache, meta.block_tables[i], seq_lens[i]).to(q.dtype)
                value = gather_context(v_cache, meta.block_tables[i], seq_lens[i]).to(q.dtype)
            out[start:end] = self._prefill(q[start:end], key, value, scale, *opts)
        return out

    @staticmethod
    def _prefill(
        q: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        scale: float,
        sliding_window: int | None,
        soft_cap: float | None,
        kv_scales: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> torch.Tensor:
        """One sequence: q [Lq, H, d] are the last Lq of the seq_len tokens of key, value [L, kvh, d]
        (as cached: times kv_scales, one per KV head, when given)."""
        query_len, num_heads, head_dim = q.shape
        seq_len, num_kv_heads = key.shape[:2]
        group = num_heads // num_kv_heads
        key, value = key.transpose(0, 1), value.transpose(0, 1)  # [kvh, L, d]
        # [L, H, d] -> [kvh, group * L, d]: heads of one KV group are consecutive, as in HF's repeat_kv.
        query = q.transpose(0, 1).reshape(num_kv_heads, group * query_len, head_dim)
        if kv_scales is not None:
            query = query * kv_scales[0][:, None, None].to(query.dtype)
        q_pos = torch.arange(seq_len - query_len, seq_len, device=q.device)
        k_pos = torch.arange(seq_len, device=q.device)[None, :]
        mask = k_pos <= q_pos[:, None]  # [L, seq_len]
        if sliding_window is not None:  # the query and the window - 1 keys before it, as HF's
            mask &= k_pos > q_pos[:, None] - sliding_window
        out = attend(query, key, value, mask.repeat(group, 1), scale, soft_cap)
        if kv_scales is not None:
            out = out * kv_scales[1][:, None, None].to(out.dtype)
        return out.reshape(num_heads, query_len, head_dim).transpose(0, 1)

    @staticmethod
    def _decode(
        q: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        meta: AttentionMetadata,
        scale: float,
        seqs: list[int],
        starts: list[int],
        seq_lens: list[int],
        out: torch.Tensor,
        sliding_window: int | None,
        soft_cap: float | None,
        kv_scales: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> None:
        """All one-token queries at once: one padded gather of their blocks and one SDPA call."""
        num_heads, head_dim = q.shape[1:]
        num_kv_heads, block_size = k_cache.shape[2], k_cache.shape[1]
        lens = [seq_lens[i] for i in seqs]
        max_blocks = -(-max(lens) // block_size)
        device = q.device
        seq_idx = torch.tensor(seqs, device=device)
        token_list = [starts[i] for i in seqs]
        # A pure decode batch has its tokens at 0..B-1: slice instead of gather and scatter.
        tokens = (
            slice(0, len(seqs))
            if token_list[-1] == len(seqs) - 1
            else torch.tensor(token_list, device=device)
        )
        # [B, nb] blocks, entries past a sequence's length masked below
        tables = meta.block_tables[seq_idx, :max_blocks].flatten()
        shape = (len(seqs), max_blocks * block_size, num_kv_heads, head_dim)
        key = gather_blocks(k_cache, tables).view(shape).transpose(1, 2).to(q.dtype)
        value = gather_blocks(v_cache, tables).view(shape).transpose(1, 2).to(q.dtype)
        query = q[tokens].view(len(seqs), num_kv_heads, num_heads // num_kv_heads, head_dim)
        if kv_scales is not None:
            query = query * kv_scales[0][:, None, None].to(query.dtype)
        positions = torch.arange(max_blocks * block_size, device=device)
        lens_t = torch.tensor(lens, device=device)[:, None]
        mask = positions[None, :] < lens_t
        if sliding_window is not None:
            mask &= positions[None, :] >= lens_t - sliding_window
        attn = attend(query, key, value, mask[:, None, None, :], scale, soft_cap)
        if kv_scales is not None:
            attn = attn * kv_scales[1][:, None, None].to(attn.dtype)
        out[tokens] = attn.reshape(len(seqs), num_heads, head_dim)
