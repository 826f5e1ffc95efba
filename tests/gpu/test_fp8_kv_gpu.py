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
