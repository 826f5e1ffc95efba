"""The check that our model gives the logits of a tiny HF model (tiny_hf.py); shared by the
loader, Hub and model-family tests."""

from __future__ import annotations

import torch
from paged_batch import PagedBatch

IDS = [1, 57, 300, 4, 99, 511, 17, 8, 250, 3, 42, 77, 120, 6, 400, 9, 33, 200, 5, 64]


def assert_same_logits(ours, cfg, hf, ids: list[int], atol: float = 1e-4) -> None:
    got = PagedBatch(cfg, block_size=8).step(ours, [(0, ids)])[0]
    with torch.inference_mode():
        want = hf(torch.tensor([ids])).logits[0]
    torch.testing.assert_close(got, want, atol=atol, rtol=1e-4)
