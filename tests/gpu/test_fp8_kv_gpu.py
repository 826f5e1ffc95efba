"""The FP8 KV cache on the GPU: the Triton write and attention kernels over an e4m3 cache against
the PyTorch reference over the same cache (fresh random inputs, every batch shape), and within
e4m3's rounding of the bf16 cache."""

from __future__ import annotations

import random

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU"),
]

from kernel_cases import TOLERANCE, attention_batches, make_attention_batch, rel_err  # noqa: E402

from pagoda.engine.attention.torch_ref import TorchAttentionBackend  # noqa: E402

FP8 = torch.float8_e4m3fn


@pytest.mark.parametrize("num_heads,num_kv_heads,head_dim", [(32, 8, 128), (9, 3, 64)])
@pytest.mark.parametrize("batch", ["prefill", "chunked", "prefix_hit", "decode", "mixed"])
def test_triton_over_an_fp8_cache_matches_the_reference(batch, num_heads, num_kv_heads, head_dim):
    from pagoda.engine.attention.triton_unified import TritonAttentionBackend

    gen = torch.Generator("cuda").manual_seed(random.randrange(2**31))
    seqs = attention_batches(gen)[batch]
    b = make_attention_batch(
        seqs, num_heads, num_kv_heads, head_dim, torch.bfloat16, torch.device("cuda"), gen, 3
    )
    scale = head_dim**-0.5
    k_fp8, v_fp8 = b.k_cache.to(FP8), b.v_cache.to(FP8)
    want_k, want_v = k_fp8.clone(), v_fp8.clone()
    ref = TorchAttentionBackend().forward(b.q, b.k, b.v, want_k, want_v, b.meta, scale)
    out = TritonAttentionBackend().forward(b.q, b.k, b.v, k_fp8, v_fp8, b.meta, scale)
    n = b.num_valid_tokens
    assert torch.equal(k_fp8.view(torch.uint8), want_k.view(torch.uint8))
    assert torch.equal(v_fp8.view(torch.uint8), want_v.view(torch.uint8))
    assert rel_err(out[:n], ref[:n]) < TOLERANCE, gen.initial_seed()
    full = TorchAttentionBackend().forward(b.q, b.k, b.v, b.k_cache, b.v_cache, b.meta, scale)
    assert rel_err(out[:n], full[:n]) < 0.1  # e4m3 keeps 3 mantissa bits


@pytest.mark.parametrize("batch", ["prefill", "chunked", "prefix_hit", "decode", "mixed"])
def test_triton_with_per_head_scales_matches_the_reference(batch):
    """Calibrated scales, one per KV head (quantization/kv_cache.py), over K/V whose heads reach
    up to 40 times e4m3's range: both backends write the same bytes and attend alike."""
    from pagoda.engine.attention.triton_unified import TritonAttentionBackend

    num_heads, num_kv_heads, head_dim = 32, 8, 128
    gen = torch.Generator("cuda").manual_seed(random.randrange(2**31))
    seqs = attention_batches(gen)[batch]
    b = make_attention_batch(
        seqs, num_heads, num_kv_heads, head_dim, torch.bfloat16, torch.device("cuda"), gen, 3
    )
    gain = torch.logspace(-1, 4, num_kv_heads, device="cuda")  # 0.1 to 10,000
    k, v = b.k * gain[:, None], b.v * gain[:, None]
    # Queries down as much as their keys go up: the scores stay those of the plain batch.
    q = b.q / gain.repeat_interleave(num_heads // num_kv_heads)[:, None]
    k_scale = (k.float().abs().amax((0, 2)) / 448).clamp(min=1e-3)
    v_scale = (v.float().abs().amax((0, 2)) / 448).clamp(min=1e-3)
    caches = []
    for cache in (b.k_cache, b.v_cache, b.k_cache, b.v_cache):  # the context, as written before
        g = gain[None, None, :, None]
        s = (k_scale if len(caches) % 2 == 0 else v_scale)[None, None, :, None]
        caches.append((cache.float() * g / s).clamp(-448, 448).to(FP8))
    scale = head_dim**-0.5
    kw = {"k_scale": k_scale, "v_scale": v_scale}
    ref = TorchAttentionBackend().forward(q, k, v, caches[2], caches[3], b.meta, scale, **kw)
    out = TritonAttentionBackend().forward(q, k, v, caches[0], caches[1], b.meta, scale, **kw)
    n = b.num_valid_tokens
    assert torch.equal(caches[0].view(torch.uint8), caches[2].view(torch.uint8))
    assert torch.equal(caches[1].view(torch.uint8), caches[3].view(torch.uint8))
    assert rel_err(out[:n], ref[:n]) < TOLERANCE, gen.initial_seed()
