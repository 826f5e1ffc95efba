"""The rotary position embedding as attention takes it: the backend rotates q and k, so the GPU
one can fuse the rotation into the KV-cache write (kernels/reshape_and_cache.py).

The table cos_sin_cache[p] = [cos(p * f) | sin(p * f)] (times YaRN's or LongRoPE's factor) is
built once by the model (layers/rotary.py), with every RoPE scaling in it; its width is the
rotary_dim: the first rotary_dim dims of each head are rotated ("rotate_half" layout, HF Llama's),
the others pass as they are (a partial rotary, Phi-4-mini's).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Rope:
    positions: torch.Tensor  # [T] int64, each token's position in its sequence
    cos_sin_cache: torch.Tensor  # [max_position, rotary_dim] float32

    def apply(self, q: torch.Tensor, k: torch.Tensor) -> None:
        """Rotate q [T, heads, head_dim] and k [T, kv_heads, head_dim] in place, in PyTorch: the
        CPU path and the reference of the fused kernel."""
        rotary_dim = self.cos_sin_cache.shape[1]
        cos, sin = self.cos_sin_cache[self.positions][:, None, :].chunk(2, dim=-1)
        for x in (q[..., :rotary_dim], k[..., :rotary_dim]):
            x1, x2 = x.float().chunk(2, dim=-1)
            x.copy_(torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1))
