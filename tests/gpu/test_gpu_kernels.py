"""The Triton kernels against their PyTorch references on fresh random bf16 inputs (GPU tier)."""

from __future__ import annotations

import random

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs an NVIDIA GPU (CUDA is not available here)"
    ),
]

from kernel_cases import (  # noqa: E402  (beside this file; pytest puts its folder on sys.path)
    CACHE_SHAPES,
    HEAD_CONFIGS,
    HEAD_DIMS,
    NORM_SHAPES,
    ROTARY_SHAPES,
    SILU_SHAPES,
    TOLERANCE,
    attention_batches,
    check_attention,
    check_fused_add_rms_norm,
    check_reshape_and_cache,
    check_rms_norm,
    check_rotary,
    check_silu_and_mul,
    split_forward,
)

BATCH_NAMES = list(attention_batches(torch.Generator().manual_seed(0)))


@pytest.fixture
def gen() -> torch.Generator:
    """Fresh inputs every run; the seed is in the failure message (pytest shows fixture values)."""
    return torch.Generator(device="cuda").manual_seed(random.randrange(2**31))


@pytest.fixture(scope="module")
def backend():
    from pagoda.engine.attention.triton_unified import TritonAttentionBackend

    return TritonAttentionBackend()


@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize("num_heads,num_kv_heads", HEAD_CONFIGS)
@pytest.mark.parametrize("batch", BATCH_NAMES)
def test_attention_backend(backend, gen, batch, num_heads, num_kv_heads, head_dim):
    seqs = attention_batches(gen)[batch]
    err, cache_ok = check_attention(
        backend.forward, seqs, num_heads, num_kv_heads, head_dim, gen, num_pad_tokens=3
    )
    assert cache_ok, "the caches do not hold exactly the new K/V (or padding tokens were written)"
    assert err < TOLERANCE, f"relative error {err} (seed {gen.initial_seed()})"


@pytest.mark.parametrize("num_splits", [2, 16])
@pytest.mark.parametrize("num_heads,num_kv_heads,head_dim", [(32, 8, 128), (9, 3, 64)])
def test_attention_split_kv(gen, num_splits, num_heads, num_kv_heads, head_dim):
    seqs = attention_batches(gen)["decode"][:40] + [(0, 1), (4095, 1)]
    err, cache_ok = check_attention(
        split_forward(num_splits), seqs, num_heads, num_kv_heads, head_dim, gen
    )
    assert cache_ok
    assert err < TOLERANCE, f"relative error {err} (seed {gen.initial_seed()})"


WINDOW_CAP = [(256, None), (None, 50.0), (1000, 30.0), (1, None)]


@pytest.mark.parametrize("sliding_window,soft_cap", WINDOW_CAP)
@pytest.mark.parametrize("num_heads,num_kv_heads,head_dim", [(32, 8, 128), (8, 4, 256)])
@pytest.mark.parametrize("batch", ["prefill", "chunked", "prefix_hit", "decode", "mixed"])
def test_attention_window_and_soft_cap(
    backend, gen, batch, num_heads, num_kv_heads, head_dim, sliding_window, soft_cap
):
    """Mistral's and Gemma's options (Gemma 2: head_dim 256, soft cap 50, window 4096 scaled
    down to these lengths) against both references."""
    seqs = attention_batches(gen)[batch]
    err, cache_ok = check_attention(
        backend.forward,
        seqs,
        num_heads,
        num_kv_heads,
        head_dim,
        gen,
        num_pad_tokens=3,
        sliding_window=sliding_window,
        soft_cap=soft_cap,
    )
    assert cache_ok
    assert err < TOLERANCE, f"relative error {err} (seed {gen.initial_seed()})"


@pytest.mark.parametrize("sliding_window,soft_cap", WINDOW_CAP)
def test_attention_window_and_soft_cap_split_kv(gen, sliding_window, soft_cap):
    seqs = attention_batches(gen)["decode"][:40] + [(0, 1), (4095, 1)]
    forward = split_forward(8)
    err, cache_ok = check_attention(
        forward, seqs, 32, 8, 128, gen, sliding_window=sliding_window, soft_cap=soft_cap
    )
    assert cache_ok
    assert err < TOLERANCE, f"relative error {err} (seed {gen.initial_seed()})"


@pytest.mark.parametrize("n,hidden", NORM_SHAPES)
def test_rms_norm(gen, n, hidden):
    assert check_rms_norm(n, hidden, gen) < TOLERANCE
    assert check_fused_add_rms_norm(n, hidden, gen) < TOLERANCE


@pytest.mark.parametrize("n,intermediate", SILU_SHAPES)
def test_silu_and_mul(gen, n, intermediate):
    assert check_silu_and_mul(n, intermediate, gen) < TOLERANCE


@pytest.mark.parametrize("n,num_heads,num_kv_heads,head_dim", ROTARY_SHAPES)
def test_rotary(gen, n, num_heads, num_kv_heads, head_dim):
    assert check_rotary(n, num_heads, num_kv_heads, head_dim, gen) < TOLERANCE


@pytest.mark.parametrize("n", [1, 100])
def test_rotary_partial(gen, n):
    """Phi-4-mini's heads: RoPE over 96 of 128 dims (a half of 48, not a power of two)."""
    assert check_rotary(n, 24, 8, 128, gen, rotary_dim=96) < TOLERANCE


@pytest.mark.parametrize("n,num_kv_heads,head_dim", CACHE_SHAPES)
def test_reshape_and_cache(gen, n, num_kv_heads, head_dim):
    assert check_reshape_and_cache(n, num_kv_heads, head_dim, gen)
