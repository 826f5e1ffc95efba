"""The shrink/expand kernels against the PyTorch reference on fresh random inputs, under Triton's
interpreter on the CPU (tests/gpu/test_lora_gpu.py runs them compiled): mixed slots, base tokens,
a slot without tokens, ranks below the slots' rank, 1 to 3 slices, ranks 8 to 96 (N over two
blocks), K split into chunks (the last one short; more than the sum loads at once) or not, a
strided output."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = r"""
import numpy as np, torch
from pagoda.engine.lora import kernels
from pagoda.engine.lora.batch import LoRABatch
from pagoda.engine.lora.ops import add_lora_ref

torch.manual_seed(0)
# (tokens, K, slice sizes, R, slots, K split?)
CASES = [
    (5, 1000, [24, 8, 8], 16, 3, True),
    (70, 1000, [24, 8, 8], 16, 3, True),
    (37, 200, [40], 16, 3, False),
    (9, 520, [24, 24], 8, 4, True),
    (23, 700, [32, 16, 16], 64, 2, True),
    (5, 3000, [16], 8, 3, True),  # 10 splits: the reduce's second round of 8
    (6, 600, [24, 40], 96, 2, True),  # N = 192: two blocks; rank 96: two rounds of 64
]
for m, K, sizes, R, slots, split in CASES:
    plan = kernels.shrink_plan(m, K, len(sizes) * R, slots, 4, kernels._num_sms(torch.device("cpu")))
    assert (plan.splits > 1) == split and (K < 3000 or plan.splits > 8), (m, K, plan)
    rng = np.random.default_rng(m + K)
    token_slots = rng.integers(-1, slots, m)
    token_slots[token_slots == 1] = 0  # slot 1 has no token
    x = torch.randn(m, K)
    a = torch.randn(slots, len(sizes) * R, K) * K**-0.5
    a[:, R // 2 : R] = 0  # rank R/2 of R in slice 0
    b = torch.randn(slots, sum(sizes), R)
    y = torch.randn(m, sum(sizes) + 4)[:, 2 : 2 + sum(sizes)]  # a strided view, as a slice
    ref = LoRABatch(m, slots, torch.device("cpu"))
    ref.set(token_slots)
    want = y.clone()
    add_lora_ref(x, want, a, b, sizes, ref)
    kern = LoRABatch(m, slots, torch.device("cpu"), use_kernels=True)
    kern.set(token_slots)
    got = y.clone()
    kernels.add_lora(x, got, a, b, sizes, kern)
    torch.testing.assert_close(got, want, atol=1e-3, rtol=1e-3)
    base = torch.from_numpy(token_slots < 0)
    assert torch.equal(got[base], y[base]) and not torch.equal(want, y)
print("ok")
"""


def test_kernels_match_the_reference_interpreted() -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
