"""Rotary position embedding, HF Llama's "rotate_half" layout, with Llama 3 and linear scaling.

The table cos_sin_cache[p] = [cos(p * f) | sin(p * f)] over the head_dim / 2 frequencies f is built
once; scaling only changes the frequencies, so the apply step (and a fused kernel) never sees it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from pagoda.engine.kernels.rotary import rotary_embedding


def inv_frequencies(
    head_dim: int, theta: float, rope_scaling: dict[str, Any] | None
) -> torch.Tensor:
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    rope_type = (rope_scaling or {}).get("rope_type", "default")
    if rope_type == "default" or rope_scaling is None:
        return inv_freq
    if rope_type == "linear":
        return inv_freq / rope_scaling["factor"]
    if rope_type == "llama3":
        return llama3_frequencies(inv_freq, rope_scaling)
    if (
        rope_type == "freq_factors"
    ):  # GGUF's rope_freqs: the same scaling, as one divisor per frequency
        return inv_freq / torch.tensor(rope_scaling["factors"], dtype=torch.float32)
    raise ValueError(
        f"unsupported rope_scaling type {rope_type!r}; "
        "supported: default, linear, llama3, freq_factors"
    )


def llama3_frequencies(inv_freq: torch.Tensor, s: dict[str, Any]) -> torch.Tensor:
    """Llama 3.1: long wavelengths slowed by `factor`, short ones kept, a smooth ramp between."""
    factor, low, high = s["factor"], s["low_freq_factor"], s["high_freq_factor"]
    old_context = s["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old_context / low, inv_freq / factor, inv_freq)
    smooth = (old_context / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old_context / high) & (wavelen <= old_context / low)
    return torch.where(medium, smoothed, scaled)


class RotaryEmbedding(nn.Module):
    cos_sin_cache: torch.Tensor  # a buffer: [max_position, head_dim] cos then sin

    def __init__(
        self,
        head_dim: int,
        max_position: int,
        theta: float,
        rope_scaling: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        inv_freq = inv_frequencies(head_dim, theta, rope_scaling)
        freqs = torch.outer(torch.arange(max_position, dtype=torch.float32), inv_freq)
        # float32 whatever the model dtype: angles at large positions need the precision.
        self.register_buffer(
            "cos_sin_cache", torch.cat([freqs.cos(), freqs.sin()], dim=-1), persistent=False
        )

    def forward(self, positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> None:
        """Rotate q [T, heads, head_dim] and k [T, kv_heads, head_dim] in place."""
        if q.is_cuda:
            return rotary_embedding(positions, q, k, self.cos_sin_cache)
        cos, sin = self.cos_sin_cache[positions][:, None, :].chunk(2, dim=-1)
        for x in (q, k):
            x1, x2 = x.float().chunk(2, dim=-1)
            x.copy_(torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1))
