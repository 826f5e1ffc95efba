"""The attention backend interface: where the GPU kernels plug in beside the PyTorch reference."""

from __future__ import annotations

from typing import Protocol

import torch

from pagoda.engine.attention.metadata import AttentionMetadata
from pagoda.engine.attention.rope import Rope


class AttentionBackend(Protocol):
    name: str

    def forward(
        self,
        q: torch.Tensor,  # [T, num_heads, head_dim]
        k: torch.Tensor,  # [T, num_kv_heads, head_dim]
        v: torch.Tensor,  # [T, num_kv_heads, head_dim]
        k_cache: torch.Tensor,  # [num_blocks, block_size, num_kv_heads, head_dim]
        v_cache: torch.Tensor,  # [num_blocks, block_size, num_kv_heads, head_dim]
        meta: AttentionMetadata,
        scale: float,
        sliding_window: int | None = None,
        logits_soft_cap: float | None = None,
        k_scale: torch.Tensor | None = None,  # [num_kv_heads] float32
        v_scale: torch.Tensor | None = None,
        rope: Rope | None = None,
    ) -> torch.Tensor:  # [T, num_heads, head_dim]
        """Rotate q and k by `rope` when given (q in place, k as it is cached: the GPU backend
        fuses the rotation into the write), write k, v into the caches at meta.slot_mapping, then
        attend causally over the context: with sliding_window, over the query and the
        sliding_window - 1 tokens before it only; with logits_soft_cap c, the scaled scores s
        become c * tanh(s / c) before the softmax. An FP8 cache stores e4m3(k / k_scale) per KV
        head and reads it back times k_scale (v likewise; None is 1.0); a cache in the model's
        dtype ignores the scales."""
        ...
