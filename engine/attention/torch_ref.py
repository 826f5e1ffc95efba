"""Paged attention in plain PyTorch: the CPU path and the oracle the GPU kernels are tested against.

Grouped-query attention is done without copying K/V per query head: the `group` query heads that
share a KV head are folded into the query-length axis, so one SDPA call over [kv_heads, group *
query_len, head_dim] covers them (the mask is repeated `group` times instead of K/V).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from pagoda.engine.attention.metadata import AttentionMetadata


def write_kv(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
             slot_mapping: torch.Tensor) -> None:
    """Store each token's K/V at its slot (block * block_size + offset); slot -1 is padding."""
    valid = slot_mapping >= 0
    slots, k, v = slot_mapping[valid], k[valid], v[valid]
    k_cache.view(-1, *k_cache.shape[2:]).index_copy_(0, slots, k)
    v_cache.view(-1, *v_cache.shape[2:]).index_copy_(0, slots, v)


def gather_context(cache: torch.Tensor, block_table: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """The first num_tokens cached tokens of one sequence: [num_tokens, kv_heads, head_dim]."""
    block_size = cache.shape[1]
    num_blocks = -(-num_tokens // block_size)
    return cache[block_table[:num_blocks]].flatten(0, 1)[:num_tokens]


class TorchAttentionBackend:
    name = "torch"

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor,
                v_cache: torch.Tensor, meta: AttentionMetadata, scale: float) -> torch.Tensor:
        write_kv(k, v, k_cache, v_cache, meta.slot_mapping)
        starts = meta.query_start_loc_cpu or meta.query_start_loc.tolist()
        seq_lens = meta.seq_lens_cpu or meta.seq_lens.tolist()
        out = torch.empty_like(q)
        decodes = [i for i in range(len(seq_lens)) if starts[i + 1] - starts[i] == 1]
        if decodes:
            self._decode(q, k_cache, v_cache, meta, scale, decodes, starts, seq_lens, out)
        for i in range(len(seq_lens)):
            start, end = starts[i], starts[i + 1]
            if end - start > 1:
                out[start:end] = self._prefill(q[start:end], k_cache, v_cache, meta.block_tables[i],
                                               seq_lens[i], scale)
        return out

    @staticmethod
    def _prefill(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                 block_table: torch.Tensor, seq_len: int, scale: float) -> torch.Tensor:
        """One sequence whose last q.shape[0] tokens of seq_len are the queries."""
        query_len, num_heads, head_dim = q.shape
        num_kv_heads = k_cache.shape[2]
        group = num_heads // num_kv_heads
        key = gather_context(k_cache, block_table, seq_len).transpose(0, 1)  # [kvh, L, d]
        value = gather_context(v_cache, block_table, seq_len).transpose(0, 1)
        # [L, H, d] -> [kvh, group * L, d]: heads of one KV group are consecutive, as in HF's repeat_kv.
        query = q.transpose(0, 1).reshape(num_kv_heads, group * query_len, head_dim)
        q_pos = torch.arange(seq_len - query_len, seq_len, device=q.device)
        mask = torch.arange(seq_len, device=q.device)[None, :] <= q_pos[:, None]  # [L, seq_len]
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask.repeat(group, 1),
                                             scale=scale)
        return out.reshape(num_heads, query_len, head_dim).transpose(0, 1)

    @staticmethod
    def _decode(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                meta: AttentionMetadata, scale: float, seqs: list[int], starts: list[int],
                seq_lens: list[int], out: torch.Tensor) -> None:
        """All one-token queries at once: one padded gather of their blocks and one SDPA call."""
        num_heads, head_dim = q.shape[1:]
        num_kv_heads, block_size = k_cache.shape[2], k_cache.shape[1]
        lens = [seq_lens[i] for i in seqs]
        max_blocks = -(-max(lens) // block_size)
        device = q.device
        seq_idx = torch.tensor(seqs, device=device)
        tokens = torch.tensor([starts[i] for i in seqs], device=device)
        tables = meta.block_tables[seq_idx, :max_blocks]  # [B, nb]; unused entries are masked below
        key = k_cache[tables].flatten(1, 2).transpose(1, 2)  # [B, kvh, nb * bs, d]
        value = v_cache[tables].flatten(1, 2).transpose(1, 2)
        query = q[tokens].view(len(seqs), num_kv_heads, num_heads // num_kv_heads, head_dim)
        positions = torch.arange(max_blocks * block_size, device=device)
        mask = positions[None, :] < torch.tensor(lens, device=device)[:, None]
        attn = F.scaled_dot_product_attention(query, key, value, attn_mask=mask[:, None, None, :],
                                              scale=scale)
        out[tokens] = attn.reshape(len(seqs), num_heads, head_dim)
