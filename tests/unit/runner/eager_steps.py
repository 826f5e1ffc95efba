"""A step run eagerly with the KV cache restored after it, so that a padded graph layout can run
the same step on the same cache and be compared with it."""

from __future__ import annotations

import torch

from pagoda.engine.attention.metadata import AttentionMetadata
from pagoda.engine.runner.model_runner import ModelRunner


def eager_step(
    runner: ModelRunner, ids: torch.Tensor, pos: torch.Tensor, meta: AttentionMetadata
) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
    """The step's hidden states and the KV cache it leaves; the runner's cache is as before."""
    before = [(k.clone(), v.clone()) for k, v in runner.kv_caches]
    with torch.inference_mode():
        hidden = runner.model(ids, pos, runner.kv_caches, meta)
    after = [(k.clone(), v.clone()) for k, v in runner.kv_caches]
    for (k, v), (k0, v0) in zip(runner.kv_caches, before):
        k.copy_(k0)
        v.copy_(v0)
    return hidden, after
