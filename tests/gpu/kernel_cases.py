"""Cases and checks shared by test_gpu_kernels.py and benchmarks/gpu/run_kernels.py.

Every check draws fresh random inputs, poisons the output (NaN) before the kernel runs, and returns
the relative error ||out - ref|| / ||ref|| against a PyTorch reference in float32. Attention has two
references: a naive dense causal attention per sequence over K/V kept outside the cache (it shares no
indexing code with the kernels), and the engine's PyTorch backend, TorchAttentionBackend.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pagoda.engine.attention.metadata import AttentionMetadata
from pagoda.engine.attention.rope import Rope
from pagoda.engine.attention.torch_ref import TorchAttentionBackend
from pagoda.engine.kernels.activation import silu_and_mul, silu_and_mul_ref
from pagoda.engine.kernels.reshape_and_cache import reshape_and_cache, reshape_and_cache_ref
from pagoda.engine.kernels.rms_norm import (
    fused_add_rms_norm,
    fused_add_rms_norm_ref,
    rms_norm,
    rms_norm_ref,
)
from pagoda.engine.kernels.unified_attention import unified_attention

TOLERANCE = 1e-2  # bf16 operands
HEAD_CONFIGS = [(32, 8), (9, 3), (8, 8), (64, 8)]  # (num_heads, num_kv_heads)
HEAD_DIMS = [64, 128]
BLOCK_SIZE = 16


def _decodes(n: int, max_len: int, gen: torch.Generator) -> list[tuple[int, int]]:
    return [(int(c), 1) for c in torch.randint(0, max_len, (n,), generator=gen, device=gen.device)]


def attention_batches(gen: torch.Generator) -> dict[str, list[tuple[int, int]]]:
    """Named batches of (context_len, query_len) per sequence; seq_len = context_len + query_len."""
    return {
        "prefill": [(0, 1), (0, 17), (0, 100), (0, 1000), (0, 4096)],
        "chunked": [(512, 512), (1000, 37), (3968, 128), (15, 16), (4000, 96)],
        "prefix_hit": [(16, 5), (256, 300), (2048, 1), (1024, 1024)],
        "decode": _decodes(256, 4096, gen),
        "decode_few": [(0, 1), (700, 1), (4095, 1)],
        "mixed": _decodes(60, 4096, gen) + [(0, 333), (128, 512), (2000, 77), (31, 1)],
    }


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    if out.isnan().any():
        return math.nan
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


def worst(errs: list[float]) -> float:
    """The largest error, NaN if any is NaN (max() alone may skip a NaN)."""
    return math.nan if any(math.isnan(e) for e in errs) else max(errs)


def poison_allocator(nbytes: int, device: torch.device) -> int:
    """Leave a NaN-filled (all ones) block in the caching allocator for the next allocation of
    nbytes to reuse, and return its address, so a test can tell the kernel's output got it."""
    torch.cuda.empty_cache()
    buf = torch.full((nbytes,), 0xFF, dtype=torch.uint8, device=device)
    ptr = buf.data_ptr()
    del buf
    return ptr


@dataclass
class AttentionBatch:
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    k_cache: torch.Tensor
    v_cache: torch.Tensor
    meta: AttentionMetadata
    dense_k: list[
        torch.Tensor
    ]  # per sequence, [seq_len, num_kv_heads, head_dim], the whole context
    dense_v: list[torch.Tensor]
    num_valid_tokens: int


def make_attention_batch(
    seqs: list[tuple[int, int]],
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    dtype: torch.dtype,
    device: torch.device,
    gen: torch.Generator,
    num_pad_tokens: int = 0,
) -> AttentionBatch:
    """Sequences on shuffled physical blocks of a cache full of random garbage, their context K/V
    already cached, this step's K/V in k and v; num_pad_tokens trailing tokens belong to no sequence."""

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, device=device, dtype=torch.float32).to(dtype)

    blocks_per_seq = [math.ceil((c + q) / BLOCK_SIZE) for c, q in seqs]
    num_blocks = sum(blocks_per_seq) + 7
    k_cache, v_cache = (
        randn(num_blocks, BLOCK_SIZE, num_kv_heads, head_dim),
        randn(num_blocks, BLOCK_SIZE, num_kv_heads, head_dim),
    )
    physical = torch.randperm(num_blocks, generator=gen, device=device)
    block_tables = torch.zeros(len(seqs), max(blocks_per_seq), dtype=torch.int32, device=device)
    dense_k, dense_v, new_k, new_v, slots = [], [], [], [], []
    used = 0
    for i, (context_len, query_len) in enumerate(seqs):
        n = blocks_per_seq[i]
        block_tables[i, :n] = physical[used : used + n].int()
        used += n
        seq_len = context_len + query_len
        kd, vd = randn(seq_len, num_kv_heads, head_dim), randn(seq_len, num_kv_heads, head_dim)
        pos = torch.arange(seq_len, device=device)
        slot = block_tables[i, pos // BLOCK_SIZE].long() * BLOCK_SIZE + pos % BLOCK_SIZE
        ctx = slot[:context_len]
        k_cache[ctx // BLOCK_SIZE, ctx % BLOCK_SIZE] = kd[:context_len]
        v_cache[ctx // BLOCK_SIZE, ctx % BLOCK_SIZE] = vd[:context_len]
        dense_k.append(kd), dense_v.append(vd)
        (
            new_k.append(kd[context_len:]),
            new_v.append(vd[context_len:]),
            slots.append(slot[context_len:]),
        )
    num_valid = sum(q for _, q in seqs)
    (
        new_k.append(randn(num_pad_tokens, num_kv_heads, head_dim)),
        new_v.append(randn(num_pad_tokens, num_kv_heads, head_dim)),
    )
    slots.append(torch.full((num_pad_tokens,), -1, dtype=torch.long, device=device))
    query_lens = [q for _, q in seqs]
    seq_lens = [c + q for c, q in seqs]
    query_start_loc = [0] + torch.tensor(query_lens).cumsum(0).tolist()
    meta = AttentionMetadata(
        slot_mapping=torch.cat(slots),
        query_start_loc=torch.tensor(query_start_loc, dtype=torch.int32, device=device),
        seq_lens=torch.tensor(seq_lens, dtype=torch.int32, device=device),
        block_tables=block_tables,
        max_query_len=max(query_lens),
        max_seq_len=max(seq_lens),
        block_size=BLOCK_SIZE,
        query_start_loc_cpu=query_start_loc,
        seq_lens_cpu=seq_lens,
    )
    return AttentionBatch(
        randn(num_valid + num_pad_tokens, num_heads, head_dim),
        torch.cat(new_k),
        torch.cat(new_v),
        k_cache,
        v_cache,
        meta,
        dense_k,
        dense_v,
        num_valid,
    )


def dense_causal_attention(
    batch: AttentionBatch,
    scale: float,
    sliding_window: int | None = None,
    soft_cap: float | None = None,
) -> torch.Tensor:
    """[num_valid_tokens, num_heads, head_dim] in float32, one sequence at a time."""
    num_heads = batch.q.shape[1]
    starts = batch.meta.query_start_loc_cpu
    out = []
    for i, (k, v) in enumerate(zip(batch.dense_k, batch.dense_v)):
        group = num_heads // k.shape[1]
        k, v = k.float().repeat_interleave(group, 1), v.float().repeat_interleave(group, 1)
        seq_len = k.shape[0]
        q = batch.q[starts[i] : starts[i + 1]].float()
        for c in range(0, q.shape[0], 1024):  # bounds the [heads, queries, keys] score tensor
            qc = q[c : c + 1024]
            q_pos = seq_len - q.shape[0] + c + torch.arange(qc.shape[0], device=q.device)
            s = torch.einsum("qhd,khd->hqk", qc, k) * scale
            if soft_cap is not None:
                s = soft_cap * torch.tanh(s / soft_cap)
            k_pos = torch.arange(seq_len, device=q.device)[None, None, :]
            hidden = k_pos > q_pos[None, :, None]
            if sliding_window is not None:
                hidden |= k_pos <= q_pos[None, :, None] - sliding_window
            s.masked_fill_(hidden, float("-inf"))
            out.append(torch.einsum("hqk,khd->qhd", s.softmax(-1), v))
    return torch.cat(out)


def check_attention(
    forward,
    seqs: list[tuple[int, int]],
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    gen: torch.Generator,
    dtype: torch.dtype = torch.bfloat16,
    num_pad_tokens: int = 0,
    sliding_window: int | None = None,
    soft_cap: float | None = None,
) -> tuple[float, bool]:
    """forward(q, k, v, k_cache, v_cache, meta, scale) -> out, e.g. a backend's forward.
    Returns (the larger relative error on the valid tokens against the two references, whether
    the caches hold exactly the new K/V afterwards)."""
    device = torch.device("cuda")
    b = make_attention_batch(
        seqs, num_heads, num_kv_heads, head_dim, dtype, device, gen, num_pad_tokens
    )
    scale = head_dim**-0.5
    want_k, want_v = b.k_cache.clone(), b.v_cache.clone()
    opts = (sliding_window, soft_cap)
    torch_out = TorchAttentionBackend().forward(b.q, b.k, b.v, want_k, want_v, b.meta, scale, *opts)
    ptr = poison_allocator(b.q.numel() * b.q.element_size(), device)
    out = forward(b.q, b.k, b.v, b.k_cache, b.v_cache, b.meta, scale, *opts)
    assert out.data_ptr() == ptr, "the output did not land in the poisoned block"
    cache_ok = torch.equal(b.k_cache, want_k) and torch.equal(b.v_cache, want_v)
    valid = out[: b.num_valid_tokens]
    err = worst(
        [
            rel_err(valid, dense_causal_attention(b, scale, *opts)),
            rel_err(valid, torch_out[: b.num_valid_tokens]),
        ]
    )
    return err, cache_ok


def split_forward(num_splits: int):
    """A forward that runs the attention kernel with a forced number of context splits."""

    def forward(q, k, v, k_cache, v_cache, meta, scale, sliding_window=None, soft_cap=None):
        reshape_and_cache(k, v, k_cache, v_cache, meta.slot_mapping)
        return unified_attention(
            q,
            k_cache,
            v_cache,
            meta.query_start_loc,
            meta.seq_lens,
            meta.block_tables,
            meta.max_query_len,
            scale,
            num_splits=num_splits,
            sliding_window=sliding_window,
            soft_cap=soft_cap,
        )

    return forward


def _randn(gen: torch.Generator, *shape: int, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, device="cuda", dtype=torch.float32).to(dtype)


def check_rms_norm(n: int, hidden: int, gen: torch.Generator) -> float:
    x, w = _randn(gen, n, hidden), _randn(gen, hidden)
    ptr = poison_allocator(x.numel() * x.element_size(), x.device)
    out = rms_norm(x, w, 1e-5)
    assert out.data_ptr() == ptr, "the output did not land in the poisoned block"
    return rel_err(out, rms_norm_ref(x, w, 1e-5))


def check_fused_add_rms_norm(n: int, hidden: int, gen: torch.Generator) -> float:
    x, residual, w = _randn(gen, n, hidden), _randn(gen, n, hidden), _randn(gen, hidden)
    want_residual = residual.clone()
    want = fused_add_rms_norm_ref(x, want_residual, w, 1e-5)[0]
    ptr = poison_allocator(x.numel() * x.element_size(), x.device)
    out, residual = fused_add_rms_norm(x, residual, w, 1e-5)
    assert out.data_ptr() == ptr, "the output did not land in the poisoned block"
    return worst([rel_err(out, want), rel_err(residual, want_residual)])


def check_silu_and_mul(n: int, intermediate: int, gen: torch.Generator) -> float:
    x = _randn(gen, n, 2 * intermediate)
    ptr = poison_allocator(n * intermediate * x.element_size(), x.device)
    out = silu_and_mul(x)
    assert out.data_ptr() == ptr, "the output did not land in the poisoned block"
    return rel_err(out, silu_and_mul_ref(x))


def _slots_and_caches(
    n: int, num_kv_heads: int, head_dim: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n distinct random slots, about a tenth of them padding (-1), and random K and V caches."""
    num_blocks = n // BLOCK_SIZE + 9
    slots = torch.randperm(num_blocks * BLOCK_SIZE, generator=gen, device="cuda")[:n]
    slots[torch.rand(n, generator=gen, device="cuda") < 0.1] = -1
    k_cache = _randn(gen, num_blocks, BLOCK_SIZE, num_kv_heads, head_dim)
    return slots, k_cache, _randn(gen, num_blocks, BLOCK_SIZE, num_kv_heads, head_dim)


def check_rotary(
    n: int,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    gen: torch.Generator,
    rotary_dim: int | None = None,
) -> float:
    """The rotary embedding fused into the cache write, against the PyTorch rotation and then the
    reference write: q, k and v are views into one fused qkv tensor, as the model's projection
    leaves them; with rotary_dim, each head's first rotary_dim dims only (partial rotary). Error
    over the rotated q and both caches; k itself must be left as it is."""
    max_pos = 8192
    rot = rotary_dim or head_dim
    inv_freq = 1.0 / (500000.0 ** (torch.arange(0, rot, 2, device="cuda").float() / rot))
    freqs = torch.outer(torch.arange(max_pos, device="cuda").float(), inv_freq)
    table = torch.cat((freqs.cos(), freqs.sin()), dim=-1)
    positions = torch.randint(1, max_pos, (n,), generator=gen, device="cuda")
    qkv = _randn(gen, n, (num_heads + 2 * num_kv_heads) * head_dim)
    want = qkv.clone()

    def views(t: torch.Tensor) -> list[torch.Tensor]:
        sizes = [num_heads * head_dim, num_kv_heads * head_dim, num_kv_heads * head_dim]
        heads = [num_heads, num_kv_heads, num_kv_heads]
        return [x.view(n, h, head_dim) for x, h in zip(t.split(sizes, dim=-1), heads, strict=True)]

    slots, *caches = _slots_and_caches(n, num_kv_heads, head_dim, gen)
    want_caches = [c.clone() for c in caches]
    q, k, v = views(qkv)
    k_before = k.clone()
    reshape_and_cache(k, v, *caches, slots, rotate=(q, positions, table))
    wq, wk, wv = views(want)
    Rope(positions, table).apply(wq, wk)
    reshape_and_cache_ref(wk, wv, *want_caches, slots)
    assert torch.equal(k, k_before), "the fused kernel changed k"
    errs = [rel_err(q, wq)] + [rel_err(g, w) for g, w in zip(caches, want_caches, strict=True)]
    return worst(errs)


def check_reshape_and_cache(n: int, num_kv_heads: int, head_dim: int, gen: torch.Generator) -> bool:
    """Exact: a copy, every new token in its slot, padding tokens (slot -1) nowhere, nothing else touched."""
    k, v = _randn(gen, n, num_kv_heads, head_dim), _randn(gen, n, num_kv_heads, head_dim)
    slots, k_cache, v_cache = _slots_and_caches(n, num_kv_heads, head_dim, gen)
    want_k, want_v = k_cache.clone(), v_cache.clone()
    reshape_and_cache(k, v, k_cache, v_cache, slots)
    reshape_and_cache_ref(k, v, want_k, want_v, slots)
    return torch.equal(k_cache, want_k) and torch.equal(v_cache, want_v)


NORM_SHAPES = [(1, 576), (7, 4096), (256, 4096), (4099, 4096), (33, 8192), (128, 5120)]
SILU_SHAPES = [(1, 1536), (33, 14336), (512, 14336), (2048, 1000)]
ROTARY_SHAPES = [(n, h, kv, d) for n in (1, 100, 2048) for h, kv in HEAD_CONFIGS for d in HEAD_DIMS]
CACHE_SHAPES = [(n, kv, d) for n in (1, 50, 2048) for kv in (3, 8) for d in HEAD_DIMS]
