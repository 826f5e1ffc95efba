"""What CI can check of the Triton backend without a GPU: it imports, refuses clearly, validates."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from pagoda.engine.attention import TorchAttentionBackend, get_backend
from pagoda.engine.attention.triton_unified import TritonAttentionBackend
from pagoda.engine.kernels.unified_attention import decode_num_splits, unified_attention


def test_triton_backend_without_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="needs an NVIDIA GPU.*--attention-backend torch"):
        TritonAttentionBackend()


def test_selecting_triton_on_cpu_is_a_clear_error():
    with pytest.raises(ValueError, match="'triton' needs a CUDA device"):
        get_backend("triton", torch.device("cpu"))
    assert isinstance(get_backend("auto", torch.device("cpu")), TorchAttentionBackend)


def test_kernel_modules_import_without_triton():
    """A CPU-only torch build has no Triton: the modules import, the references run, and a kernel
    call says what is missing."""
    code = """
import sys
sys.modules["triton"] = None  # any import of triton now fails
import torch
from pagoda.engine.attention.triton_unified import TritonAttentionBackend
from pagoda.engine.kernels.activation import silu_and_mul, silu_and_mul_ref
from pagoda.engine.kernels.rms_norm import rms_norm_ref
from pagoda.engine.attention.rope import Rope
from pagoda.engine.kernels.reshape_and_cache import reshape_and_cache_ref
x = torch.tensor([[1.0, -2.0, 3.0, 0.5]])
assert torch.allclose(silu_and_mul_ref(x), torch.nn.functional.silu(x[:, :2]) * x[:, 2:])
try:
    silu_and_mul(x)
except RuntimeError as e:
    assert "Triton is not installed" in str(e), e
else:
    raise AssertionError("a kernel launched without Triton")
print("ok")
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


@pytest.mark.parametrize(
    "num_seqs,expected", [(1, 32), (8, 8), (16, 4), (17, 2), (32, 2), (33, 1), (256, 1)]
)
def test_decode_splits_fill_the_gpu_only_when_needed(num_seqs, expected):
    assert decode_num_splits(num_seqs, num_kv_heads=8, num_sms=132) == expected


def _attention_inputs(num_heads=8, num_kv_heads=2, head_dim=64):
    q = torch.randn(3, num_heads, head_dim)
    cache = torch.randn(4, 16, num_kv_heads, head_dim)
    return (
        q,
        cache,
        cache.clone(),
        torch.tensor([0, 1, 3], dtype=torch.int32),
        torch.tensor([5, 9], dtype=torch.int32),
        torch.zeros(2, 1, dtype=torch.int32),
    )


@pytest.mark.parametrize(
    "change,message",
    [
        (dict(num_heads=9, num_kv_heads=2), "not a multiple"),
        (dict(num_splits=3), "power of two"),
        (dict(num_splits=2, max_query_len=2), "only for decode"),
    ],
)
def test_attention_rejects_bad_shapes(change, message):
    shape = {k: change.pop(k) for k in ("num_heads", "num_kv_heads") if k in change}
    q, k_cache, v_cache, starts, seq_lens, tables = _attention_inputs(**shape)
    args = dict(max_query_len=2, scale=0.125) | change
    with pytest.raises(ValueError, match=message):
        unified_attention(q, k_cache, v_cache, starts, seq_lens, tables, **args)
