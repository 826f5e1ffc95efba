"""The rotary embedding fused into the KV-cache write (kernels/reshape_and_cache.py) against the
PyTorch path (attention/rope.py's Rope.apply, then the reference write), under Triton's
interpreter: q and k as views into one fused qkv tensor, grouped KV heads, padding tokens (q still
rotated, nothing written), full and partial rotary (of a width that is not a power of two), and an
FP8 cache with per-head scales. Also the PyTorch path itself against HF's rotate_half."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from pagoda.engine.attention.rope import Rope


def rotate_half_hf(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """transformers' apply_rotary_pos_emb for one tensor: x * cos + rotate_half(x) * sin, with
    cos and sin over the full rotary width (each frequency twice)."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


@pytest.mark.parametrize("head_dim,rotary_dim", [(8, 8), (12, 8), (8, 6)])
def test_rope_apply_is_hf_rotate_half(head_dim: int, rotary_dim: int) -> None:
    gen = torch.Generator().manual_seed(int.from_bytes(os.urandom(4), "little"))
    inv_freq = 1.0 / 10000.0 ** (torch.arange(0, rotary_dim, 2).float() / rotary_dim)
    freqs = torch.outer(torch.arange(64).float(), inv_freq)
    table = torch.cat((freqs.cos(), freqs.sin()), dim=-1)
    positions = torch.randint(0, 64, (5,), generator=gen)
    q, k = torch.randn(5, 4, head_dim, generator=gen), torch.randn(5, 2, head_dim, generator=gen)
    want_q, want_k = q.clone(), k.clone()
    Rope(positions, table).apply(q, k)
    emb = torch.cat((freqs, freqs), dim=-1)[positions][:, None, :]
    for got, want in ((q, want_q), (k, want_k)):
        rotated = rotate_half_hf(want[..., :rotary_dim], emb.cos(), emb.sin())
        torch.testing.assert_close(got[..., :rotary_dim], rotated)
        assert torch.equal(got[..., rotary_dim:], want[..., rotary_dim:])  # the rest passes
        assert not torch.allclose(got[..., :rotary_dim], want[..., :rotary_dim])


KERNEL = r"""
import os, torch
from pagoda.engine.attention.rope import Rope
from pagoda.engine.kernels.reshape_and_cache import reshape_and_cache, reshape_and_cache_ref

gen = torch.Generator().manual_seed(int.from_bytes(os.urandom(4), "little"))
BLOCK, HEADS, KV_HEADS, T = 4, 4, 2, 6
FP8 = torch.float8_e4m3fn


def case(head_dim, rotary_dim, cache_dtype, scales):
    inv_freq = 1.0 / 10000.0 ** (torch.arange(0, rotary_dim, 2).float() / rotary_dim)
    freqs = torch.outer(torch.arange(100).float(), inv_freq)
    table = torch.cat((freqs.cos(), freqs.sin()), dim=-1)
    positions = torch.randint(1, 100, (T,), generator=gen)
    qkv = torch.randn(T, (HEADS + 2 * KV_HEADS) * head_dim, generator=gen) * 50
    q_size, kv_size = HEADS * head_dim, KV_HEADS * head_dim
    def views(t):
        q, k, v = t.split([q_size, kv_size, kv_size], dim=-1)
        return q.view(T, HEADS, head_dim), k.view(T, KV_HEADS, head_dim), v.view(T, KV_HEADS, head_dim)
    want_qkv = qkv.clone()
    q, k, v = views(qkv)
    wq, wk, wv = views(want_qkv)
    slots = torch.tensor([5, 0, -1, 9, 30, 17])  # token 2 is padding
    ks, vs = scales if scales else (None, None)
    caches = [torch.zeros(8, BLOCK, KV_HEADS, head_dim, dtype=cache_dtype) for _ in range(4)]
    k_before = k.clone()
    reshape_and_cache(k, v, caches[0], caches[1], slots, ks, vs, (q, positions, table))
    Rope(positions, table).apply(wq, wk)
    if cache_dtype == FP8:  # the interpreter's e4m3 rounding is its own (test_kv_scales.py):
        # the reference write is then the unfused kernel's, over the PyTorch rotation's keys
        reshape_and_cache(wk, wv, caches[2], caches[3], slots, ks, vs)
    else:
        reshape_and_cache_ref(wk, wv, caches[2], caches[3], slots, ks, vs)
    assert torch.allclose(q, wq, rtol=1e-5, atol=1e-4), (q - wq).abs().max()  # padding's too
    assert torch.equal(k, k_before), "k itself is left as it is"
    for got, want in zip(caches[:2], caches[2:]):
        if cache_dtype == FP8:
            assert torch.equal(got.view(torch.uint8), want.view(torch.uint8))
        else:
            assert torch.allclose(got, want, rtol=1e-5, atol=1e-4), (got - want).abs().max()
    written = caches[0].float().abs().sum(dim=(2, 3)).flatten()
    assert (written > 0).sum() == 5  # the five real tokens' slots, nothing for the padding


case(8, 8, torch.float32, None)
case(12, 8, torch.float32, None)  # partial rotary; head_dim not a power of two
case(8, 6, torch.float32, None)  # a rotary half of 3
case(8, 8, FP8, (torch.tensor([4.0, 0.5]), torch.tensor([2.0, 0.25])))
print("kernel ok")
"""


def test_the_fused_kernel_matches_the_pytorch_path_under_the_interpreter() -> None:
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    run = subprocess.run(
        [sys.executable, "-c", KERNEL], env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0 and "kernel ok" in run.stdout, run.stderr[-3000:]


@pytest.mark.parametrize(
    "cache,num_heads,rotary_dim", [("bf16", 32, 128), ("fp8e4nv", 32, 128), ("bf16", 24, 96)]
)
def test_the_fused_kernel_compiles_for_hopper(cache: str, num_heads: int, rotary_dim: int) -> None:
    """What the interpreter cannot check: the kernel compiles for an H100/H200 with bf16 tensors
    and a bf16 or e4m3 cache, Llama 3's heads and Phi-4-mini's partial rotary (a half of 48)."""
    pytest.importorskip("triton")
    from hopper_compile import compile_for_hopper

    from pagoda.engine.kernels.reshape_and_cache import _reshape_and_cache_kernel

    names = "q k v k_cache v_cache slot_mapping k_scale v_scale positions cos_sin".split()
    types = ["*bf16"] * 3 + [f"*{cache}"] * 2 + ["*i64", "*fp32", "*fp32", "*i64", "*fp32"]
    pointers = {f"{name}_ptr": t for name, t in zip(names, types, strict=True)}
    ints = [f"stride_{s}" for s in "qt qh kt kh vt vh kcb kcs kch vcb vcs vch cos".split()]
    constexprs = dict(NUM_HEADS=num_heads, NUM_KV_HEADS=8, HEAD_DIM=128, BLOCK_SIZE=16)
    constexprs |= dict(HEADS_PAD=32, KV_HEADS_PAD=8, DIM_PAD=128, ROPE=True)
    constexprs |= dict(HALF=rotary_dim // 2, HALF_PAD=64)
    constexprs |= dict(FP8_MAX=448.0 if cache == "fp8e4nv" else 0.0, SCALED=cache == "fp8e4nv")
    kernel = compile_for_hopper(_reshape_and_cache_kernel, pointers, ints, constexprs, 4)
    assert kernel.asm["cubin"]
