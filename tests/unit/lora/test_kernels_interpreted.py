"""The shrink/expand kernels against the PyTorch reference on random inputs, under Triton's
interpreter on the CPU (tests/gpu/test_lora_kernels.py runs them compiled): mixed slots, base
tokens, ranks below the slots' rank, several slices, a strided output."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = r"""
import numpy as np, torch
from pagoda.engine.lora.batch import LoRABatch
from pagoda.engine.lora.kernels import lora_expand, lora_shrink
from pagoda.engine.lora.ops import add_lora_ref

torch.manual_seed(0)
slots, R, K = 3, 16, 40
sizes = [24, 8, 8]
for m in (5, 70):
    token_slots = np.random.default_rng(m).integers(-1, slots, m)
    x = torch.randn(m, K)
    a = torch.randn(slots, len(sizes) * R, K)
    a[:, 12:R] = 0  # rank 12 of 16 in slice 0
    bs = [torch.randn(slots, n, R) for n in sizes]
    y = torch.randn(m, sum(sizes) + 4)[:, 2 : 2 + sum(sizes)]  # a strided view, as a slice
    ref = LoRABatch(m, slots, torch.device("cpu"))
    ref.set(token_slots)
    want = y.clone()
    add_lora_ref(x, want, a, bs, [0, 24, 32], ref)
    kern = LoRABatch(m, slots, torch.device("cpu"), use_kernels=True)
    kern.set(token_slots)
    got = y.clone()
    s = lora_shrink(x, a, kern)
    for i, (b, off) in enumerate(zip(bs, [0, 24, 32])):
        lora_expand(s, b, got, i * R, off, kern)
    torch.testing.assert_close(got, want, atol=1e-3, rtol=1e-3)
    assert not torch.equal(want, y)
print("ok")
"""


def test_kernels_match_the_reference_interpreted() -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
