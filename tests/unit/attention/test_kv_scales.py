"""An FP8 KV cache with calibrated scales (one per KV head): the cache holds e4m3(k / k_scale),
attention reads stored * k_scale (v likewise), so keys and values past e4m3's 448 are kept, not
saturated; the PyTorch backend on the CPU, and the Triton write and attention kernels against it
under Triton's interpreter (prefill, a chunk after cached context, decode with and without a
split context)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from pagoda.engine.attention.metadata import AttentionMetadata
from pagoda.engine.attention.torch_ref import TorchAttentionBackend, write_kv

FP8 = torch.float8_e4m3fn
BLOCK, KV_HEADS, HEADS, DIM = 4, 2, 4, 8


def meta_of(slots: list[int], starts: list[int], lens: list[int], tables: list[list[int]]):
    return AttentionMetadata(
        slot_mapping=torch.tensor(slots),
        query_start_loc=torch.tensor(starts, dtype=torch.int32),
        seq_lens=torch.tensor(lens, dtype=torch.int32),
        block_tables=torch.tensor(tables, dtype=torch.int32),
        max_query_len=max(b - a for a, b in zip(starts, starts[1:], strict=False)),
        max_seq_len=max(lens),
        block_size=BLOCK,
        query_start_loc_cpu=starts,
        seq_lens_cpu=lens,
    )


# A 7-token prefill and a 3-token chunk after 9 cached tokens (slots 12..20); then both decode.
TABLES = [[0, 1, 2, 6], [3, 4, 5, 7]]
PREFILL = meta_of([0, 1, 2, 3, 4, 5, 6, 21, 22, 23], [0, 7, 10], [7, 12], TABLES)
DECODE = meta_of([7, 28], [0, 1, 2], [8, 13], TABLES)
CONTEXT_SLOTS = torch.arange(12, 21)


def attend(
    gen: torch.Generator, dtype: torch.dtype, scales: tuple[torch.Tensor, torch.Tensor] | None
) -> torch.Tensor:
    """The prefill step then the decode step over a fresh cache of `dtype`; K/V reach 1,500
    (head 0) and 60 (head 1), so one scale for both heads cannot fit them."""
    gain = torch.tensor([500.0, 20.0])[None, :, None]
    k_cache = torch.zeros(8, BLOCK, KV_HEADS, DIM, dtype=dtype)
    v_cache = torch.zeros_like(k_cache)
    ctx_k, ctx_v = (torch.randn(9, KV_HEADS, DIM, generator=gen) * gain for _ in range(2))
    ks, vs = scales if scales is not None else (None, None)
    write_kv(ctx_k, ctx_v, k_cache, v_cache, CONTEXT_SLOTS, ks, vs)
    outs = []
    for meta in (PREFILL, DECODE):
        t = meta.slot_mapping.shape[0]
        q = torch.randn(t, HEADS, DIM, generator=gen) * 0.01
        k, v = (torch.randn(t, KV_HEADS, DIM, generator=gen) * gain for _ in range(2))
        outs.append(
            TorchAttentionBackend().forward(
                q, k, v, k_cache, v_cache, meta, DIM**-0.5, k_scale=ks, v_scale=vs
            )
        )
    return torch.cat(outs)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def test_write_kv_stores_each_head_over_its_scale() -> None:
    k = torch.tensor([[[1000.0, -3.0], [1000.0, 0.5]]])  # one token, two heads
    v = -k
    k_cache = torch.zeros(1, BLOCK, 2, 2, dtype=FP8)
    v_cache = torch.zeros_like(k_cache)
    write_kv(k, v, k_cache, v_cache, torch.tensor([2]), torch.tensor([4.0, 0.5]), None)
    stored = k_cache[0, 2].float()
    assert stored.tolist() == [[256.0, -0.75], [448.0, 1.0]]  # 250 rounds to 256 in e4m3
    assert v_cache[0, 2].float().tolist() == [[-448.0, 3.0], [-448.0, -0.5]]  # no scale: 1.0


def test_calibrated_scales_keep_what_scale_one_saturates() -> None:
    seed = int.from_bytes(os.urandom(4), "little")
    full = attend(torch.Generator().manual_seed(seed), torch.float32, None)
    calibrated = (torch.tensor([1500.0, 60.0]) * 3 / 448,) * 2  # amax over e4m3's max
    scaled = attend(torch.Generator().manual_seed(seed), FP8, calibrated)
    unscaled = attend(torch.Generator().manual_seed(seed), FP8, None)
    # Over 2,000 seeds: 0.105 at most with the scales (e4m3's 3 mantissa bits; 0.1 was crossed
    # once in CI), 0.348 at least at scale 1.0 (head 0 clipped at 448).
    assert rel(scaled, full) < 0.15, seed
    assert rel(unscaled, full) > 0.3, seed


def test_a_full_precision_cache_ignores_the_scales() -> None:
    seed = int.from_bytes(os.urandom(4), "little")
    plain = attend(torch.Generator().manual_seed(seed), torch.float32, None)
    scales = (torch.tensor([3.0, 0.25]), torch.tensor([2.0, 5.0]))
    assert torch.equal(attend(torch.Generator().manual_seed(seed), torch.float32, scales), plain)


KERNELS = r"""
import os, torch
from pagoda.engine.kernels.reshape_and_cache import reshape_and_cache, reshape_and_cache_ref
from pagoda.engine.kernels.unified_attention import unified_attention
from test_kv_scales import CONTEXT_SLOTS, DECODE, PREFILL, BLOCK, KV_HEADS, HEADS, DIM, FP8, rel
from pagoda.engine.attention.torch_ref import TorchAttentionBackend, write_kv

gen = torch.Generator().manual_seed(int.from_bytes(os.urandom(4), "little"))
gain = torch.tensor([500.0, 20.0])[None, :, None]
# The write kernel: the same bytes as the reference, padding untouched. Inputs are e4m3 values
# times power-of-two scales, some past 448 times the scale: dividing gives them back exactly or
# saturates (the interpreter's own float-to-e4m3 rounding can be a binade off, so nothing here
# needs rounding).
ks, vs = torch.tensor([4.0, 0.125]), torch.tensor([0.5, 2.0])
k, v = ((torch.randn(5, KV_HEADS, DIM, generator=gen) * 200).to(FP8).float() for _ in range(2))
k, v = k * ks[:, None], v * vs[:, None] * 4  # v: some past 448 on either side
slots = torch.tensor([3, 0, -1, 9, 17])
caches = [torch.zeros(8, BLOCK, KV_HEADS, DIM, dtype=FP8) for _ in range(4)]
reshape_and_cache(k, v, caches[0], caches[1], slots, ks, vs)
reshape_and_cache_ref(k, v, caches[2], caches[3], slots, ks, vs)
for got, want in zip(caches[:2], caches[2:]):
    assert torch.equal(got.view(torch.uint8), want.view(torch.uint8))
assert caches[0].view(torch.uint8).count_nonzero() > 0
assert caches[1].float().abs().max() == 448.0
ks, vs = torch.tensor([3.2, 0.15]), torch.tensor([2.5, 0.2])
# Attention over the FP8 cache: the kernel against the PyTorch backend, same cache and scales.
k_cache = torch.zeros(8, BLOCK, KV_HEADS, DIM, dtype=FP8)
v_cache = torch.zeros_like(k_cache)
ctx_k, ctx_v = (torch.randn(9, KV_HEADS, DIM, generator=gen) * gain for _ in range(2))
write_kv(ctx_k, ctx_v, k_cache, v_cache, CONTEXT_SLOTS, ks, vs)
for meta, splits in ((PREFILL, 1), (DECODE, 1), (DECODE, 4)):
    t = meta.slot_mapping.shape[0]
    q = torch.randn(t, HEADS, DIM, generator=gen) * 0.01
    k, v = (torch.randn(t, KV_HEADS, DIM, generator=gen) * gain for _ in range(2))
    want = TorchAttentionBackend().forward(
        q, k, v, k_cache, v_cache, meta, DIM**-0.5, k_scale=ks, v_scale=vs
    )  # writes this step's K/V, which the kernel then reads
    got = unified_attention(
        q, k_cache, v_cache, meta.query_start_loc, meta.seq_lens, meta.block_tables,
        meta.max_query_len, DIM**-0.5, num_splits=splits, k_scale=ks, v_scale=vs,
    )
    assert rel(got, want) < 1e-4, (meta.max_query_len, splits, rel(got, want))
    unscaled = unified_attention(
        q, k_cache, v_cache, meta.query_start_loc, meta.seq_lens, meta.block_tables,
        meta.max_query_len, DIM**-0.5, num_splits=splits,
    )
    assert rel(unscaled, want) > 0.05  # the scales are applied, not ignored
print("kernels ok")
"""


def test_the_triton_kernels_apply_the_scales_under_the_interpreter() -> None:
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(__file__), env.get("PYTHONPATH", "")])
    run = subprocess.run(
        [sys.executable, "-c", KERNELS], env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0 and "kernels ok" in run.stdout, run.stderr[-3000:]
