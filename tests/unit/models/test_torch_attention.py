"""TorchAttentionBackend against dense causal attention computed from scratch."""

from __future__ import annotations

import math

import pytest
import torch

from pagoda.engine.attention import AttentionMetadata, TorchAttentionBackend, get_backend

BLOCK_SIZE = 4
NUM_BLOCKS = 64
HEAD_DIM = 8


def dense_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float
) -> torch.Tensor:
    """q: [Lq, H, d] are the last Lq of the L tokens of k, v: [L, KVH, d]."""
    query_len, num_heads, _ = q.shape
    seq_len, num_kv_heads, _ = k.shape
    group = num_heads // num_kv_heads
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q.double(), k.double()) * scale
    q_pos = torch.arange(seq_len - query_len, seq_len)[:, None]
    scores = scores.masked_fill(torch.arange(seq_len)[None, :] > q_pos, -math.inf)
    return torch.einsum("hqk,khd->qhd", scores.softmax(-1), v.double()).to(q.dtype)


def run_case(
    seqs: list[tuple[int, int]], num_heads: int, num_kv_heads: int, pad: int = 0, seed: int = 0
) -> None:
    """seqs: (seq_len, query_len) per sequence; earlier context is already in the cache."""
    gen = torch.Generator().manual_seed(seed)
    k_cache = torch.zeros(NUM_BLOCKS, BLOCK_SIZE, num_kv_heads, HEAD_DIM)
    v_cache = torch.zeros_like(k_cache)
    free_blocks = torch.randperm(NUM_BLOCKS, generator=gen).tolist()  # non-contiguous tables
    max_blocks = max(-(-seq_len // BLOCK_SIZE) for seq_len, _ in seqs)
    tables = torch.zeros(len(seqs), max_blocks, dtype=torch.int32)
    qs, ks, vs, slots, expected, starts = [], [], [], [], [], [0]
    for i, (seq_len, query_len) in enumerate(seqs):
        blocks = [free_blocks.pop() for _ in range(-(-seq_len // BLOCK_SIZE))]
        tables[i, : len(blocks)] = torch.tensor(blocks)
        q = torch.randn(query_len, num_heads, HEAD_DIM, generator=gen)
        k = torch.randn(seq_len, num_kv_heads, HEAD_DIM, generator=gen)
        v = torch.randn(seq_len, num_kv_heads, HEAD_DIM, generator=gen)
        seq_slots = torch.tensor(
            [blocks[p // BLOCK_SIZE] * BLOCK_SIZE + p % BLOCK_SIZE for p in range(seq_len)]
        )
        cached = seq_len - query_len
        k_cache.view(-1, num_kv_heads, HEAD_DIM)[seq_slots[:cached]] = k[:cached]
        v_cache.view(-1, num_kv_heads, HEAD_DIM)[seq_slots[:cached]] = v[:cached]
        qs.append(q), ks.append(k[cached:]), vs.append(v[cached:]), slots.append(seq_slots[cached:])
        expected.append(dense_attention(q, k, v, 1 / math.sqrt(HEAD_DIM)))
        starts.append(starts[-1] + query_len)
    # Padding tokens at the end (as a CUDA graph batch has): slot -1, never written.
    qs.append(torch.randn(pad, num_heads, HEAD_DIM, generator=gen))
    ks.append(torch.full((pad, num_kv_heads, HEAD_DIM), 7.0))
    vs.append(torch.full((pad, num_kv_heads, HEAD_DIM), 7.0))
    slots.append(torch.full((pad,), -1))
    seq_lens = [seq_len for seq_len, _ in seqs]
    meta = AttentionMetadata(
        slot_mapping=torch.cat(slots),
        query_start_loc=torch.tensor(starts, dtype=torch.int32),
        seq_lens=torch.tensor(seq_lens, dtype=torch.int32),
        block_tables=tables,
        max_query_len=max(q for _, q in seqs),
        max_seq_len=max(seq_lens),
        block_size=BLOCK_SIZE,
        query_start_loc_cpu=starts,
        seq_lens_cpu=seq_lens,
    )
    out = TorchAttentionBackend().forward(
        torch.cat(qs), torch.cat(ks), torch.cat(vs), k_cache, v_cache, meta, 1 / math.sqrt(HEAD_DIM)
    )
    torch.testing.assert_close(out[: starts[-1]], torch.cat(expected), atol=1e-5, rtol=1e-5)
    assert not (k_cache == 7.0).any() and not (v_cache == 7.0).any(), "a -1 slot was written"


@pytest.mark.parametrize("num_heads,num_kv_heads", [(4, 4), (6, 2), (4, 1)])
def test_prefill(num_heads: int, num_kv_heads: int) -> None:
    run_case([(13, 13), (4, 4), (1, 1)], num_heads, num_kv_heads)


def test_chunked_prefill_query_in_middle_of_context() -> None:
    run_case([(21, 6), (9, 5)], 6, 2)


@pytest.mark.parametrize("num_heads,num_kv_heads", [(4, 4), (6, 3), (8, 1)])
def test_decode(num_heads: int, num_kv_heads: int) -> None:
    run_case([(1, 1), (17, 1), (32, 1), (5, 1)], num_heads, num_kv_heads)


def test_mixed_batch_with_padding() -> None:
    run_case([(30, 1), (12, 12), (3, 1), (25, 7), (8, 1)], 6, 2, pad=5)


def test_reuses_the_cache_across_steps() -> None:
    """The decode step reads K/V that the prefill step wrote, through the same tables."""
    gen = torch.Generator().manual_seed(1)
    heads, kv_heads, n = 4, 2, 11
    q = torch.randn(n, heads, HEAD_DIM, generator=gen)
    k = torch.randn(n, kv_heads, HEAD_DIM, generator=gen)
    v = torch.randn(n, kv_heads, HEAD_DIM, generator=gen)
    k_cache = torch.zeros(NUM_BLOCKS, BLOCK_SIZE, kv_heads, HEAD_DIM)
    v_cache = torch.zeros_like(k_cache)
    blocks = [9, 2, 40]
    table = torch.tensor([blocks], dtype=torch.int32)
    slots = torch.tensor([blocks[p // BLOCK_SIZE] * BLOCK_SIZE + p % BLOCK_SIZE for p in range(n)])
    backend, scale = TorchAttentionBackend(), 1 / math.sqrt(HEAD_DIM)

    def step(lo: int, hi: int) -> torch.Tensor:
        meta = AttentionMetadata(
            slots[lo:hi],
            torch.tensor([0, hi - lo], dtype=torch.int32),
            torch.tensor([hi], dtype=torch.int32),
            table,
            hi - lo,
            hi,
            BLOCK_SIZE,
        )
        return backend.forward(q[lo:hi], k[lo:hi], v[lo:hi], k_cache, v_cache, meta, scale)

    out = torch.cat([step(0, 7), step(7, 10), step(10, 11)])
    torch.testing.assert_close(out, dense_attention(q, k, v, scale), atol=1e-5, rtol=1e-5)


def test_bfloat16_close_to_float32() -> None:
    torch.manual_seed(2)
    run_case([(9, 1), (7, 7)], 4, 2)  # float32 exact above; bf16 only needs to be close
    q = torch.randn(5, 4, HEAD_DIM)
    k, v = torch.randn(5, 2, HEAD_DIM), torch.randn(5, 2, HEAD_DIM)
    meta = AttentionMetadata(
        torch.arange(5),
        torch.tensor([0, 5], dtype=torch.int32),
        torch.tensor([5], dtype=torch.int32),
        torch.tensor([[0, 1]], dtype=torch.int32),
        5,
        5,
        BLOCK_SIZE,
    )
    caches = [torch.zeros(NUM_BLOCKS, BLOCK_SIZE, 2, HEAD_DIM, dtype=torch.bfloat16) for _ in "kv"]
    out = TorchAttentionBackend().forward(
        q.bfloat16(), k.bfloat16(), v.bfloat16(), *caches, meta, HEAD_DIM**-0.5
    )
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(
        out.float(), dense_attention(q, k, v, HEAD_DIM**-0.5), atol=3e-2, rtol=3e-2
    )


def test_get_backend() -> None:
    assert isinstance(get_backend("torch", torch.device("cpu")), TorchAttentionBackend)
    assert isinstance(get_backend("auto", torch.device("cpu")), TorchAttentionBackend)
    with pytest.raises(ValueError, match="unknown attention backend 'flash'"):
        get_backend("flash", torch.device("cpu"))
    with pytest.raises(ValueError, match="triton"):
        get_backend("triton", torch.device("cpu"))
