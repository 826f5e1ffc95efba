"""Rotary position embedding, HF Llama's "rotate_half" layout, with the RoPE scalings of vLLM
and HF: default, linear, dynamic (NTK), llama3, yarn, longrope, and GGUF's freq_factors.

The table cos_sin_cache[p] = [cos(p * f) | sin(p * f)] * m over the rotary_dim / 2 frequencies f
is built once; scaling only changes the frequencies f and the factor m (YaRN's and LongRoPE's
attention scaling), so the apply step (attention/rope.py, and the kernel that fuses it into the
KV-cache write) never sees it. rotary_dim is head_dim, or less with a partial_rotary_factor
(Phi-4-mini): the first rotary_dim dims of each head are rotated, as if they were the whole head,
and the others pass through.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from pagoda.engine.attention.rope import Rope

ROPE_TYPES = ("default", "linear", "dynamic", "llama3", "yarn", "longrope", "freq_factors")


def inv_frequencies(
    head_dim: int,
    theta: float,
    rope_scaling: dict[str, Any] | None,
    max_position: int = 0,
    max_model_len: int | None = None,
) -> tuple[torch.Tensor, float]:
    """(inverse frequencies [head_dim / 2], the factor on cos and sin).

    max_position is the model's max_position_embeddings; max_model_len the engine's context
    length (LongRoPE uses its long factors only when that exceeds the original context)."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim
    inv_freq = 1.0 / theta**exponents
    s = rope_scaling or {}
    rope_type = s.get("rope_type", "default")
    if rope_type == "default":
        return inv_freq, 1.0
    if rope_type == "linear":
        return inv_freq / s["factor"], 1.0
    if rope_type == "dynamic":
        # vLLM's dynamic NTK: the base stretched once for factor * max_position tokens (HF
        # stretches it per call as the sequence grows; both agree at that length).
        factor = s["factor"]
        base = theta * (factor * factor - (factor - 1)) ** (head_dim / (head_dim - 2))
        return 1.0 / base**exponents, 1.0
    if rope_type == "llama3":
        return llama3_frequencies(inv_freq, s), 1.0
    if rope_type == "yarn":
        return yarn_frequencies(head_dim, theta, s, max_position)
    if rope_type == "longrope":
        return longrope_frequencies(inv_freq, s, max_position, max_model_len)
    if rope_type == "freq_factors":  # GGUF's rope_freqs: llama3 scaling as per-frequency divisors
        return inv_freq / torch.tensor(s["factors"], dtype=torch.float32), 1.0
    raise ValueError(
        f"unsupported rope_scaling type {rope_type!r}; supported: {', '.join(ROPE_TYPES)}"
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


def _yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def yarn_frequencies(
    dim: int, theta: float, s: dict[str, Any], max_position: int
) -> tuple[torch.Tensor, float]:
    """YaRN: interpolated (slowed by factor) below beta_slow rotations over the original context,
    extrapolated (kept) above beta_fast, a linear ramp between; cos/sin scaled by the mscale."""
    original = s["original_max_position_embeddings"]
    factor = s.get("factor") or max_position / original
    attention = s.get("attention_factor")
    if attention is None:
        mscale, mscale_all = s.get("mscale"), s.get("mscale_all_dim")
        attention = (
            _yarn_mscale(factor, mscale) / _yarn_mscale(factor, mscale_all)
            if mscale and mscale_all
            else _yarn_mscale(factor)
        )

    def correction_dim(rotations: float) -> float:
        return dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low, high = correction_dim(s.get("beta_fast") or 32), correction_dim(s.get("beta_slow") or 1)
    if s.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # no division by zero
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    pos_freqs = theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    extrapolate = 1 - ramp
    inv_freq = (1 / (factor * pos_freqs)) * (1 - extrapolate) + (1 / pos_freqs) * extrapolate
    return inv_freq, float(attention)


def longrope_frequencies(
    inv_freq: torch.Tensor, s: dict[str, Any], max_position: int, max_model_len: int | None
) -> tuple[torch.Tensor, float]:
    """Phi-3's LongRoPE: per-frequency divisors, the long ones when the engine's context exceeds
    the original one (as vLLM: one choice for all positions, so cached K stays valid)."""
    original = s["original_max_position_embeddings"]
    factor = s.get("factor") or max_position / original
    attention = s.get("attention_factor")
    if attention is None:
        attention = 1.0 if factor <= 1 else math.sqrt(1 + math.log(factor) / math.log(original))
    long = (max_model_len or max_position) > original
    factors = torch.tensor(s["long_factor" if long else "short_factor"], dtype=torch.float32)
    return inv_freq / factors, float(attention)


def table_length(
    max_position: int, rope_scaling: dict[str, Any] | None, max_model_len: int | None
) -> int:
    """Positions the table covers: dynamic NTK and YaRN stretch the context by their factor (as
    vLLM's tables do); a longer --max-model-len gets its length."""
    s = rope_scaling or {}
    if s.get("rope_type") == "dynamic":
        max_position = int(max_position * s["factor"])
    elif s.get("rope_type") == "yarn" and s.get("factor"):
        max_position = max(max_position, int(s["original_max_position_embeddings"] * s["factor"]))
    return max(max_position, max_model_len or 0)


class RotaryEmbedding(nn.Module):
    cos_sin_cache: torch.Tensor  # a buffer, registered in __init__

    def __init__(
        self,
        head_dim: int,
        max_position: int,
        theta: float,
        rope_scaling: dict[str, Any] | None = None,
        max_model_len: int | None = None,
        rotary_dim: int | None = None,
    ) -> None:
        super().__init__()
        # Computed on the CPU whatever the default device, then moved: on the meta device (the
        # loader's dry build, check_fits) the first use of these ops costs seconds of setup.
        with torch.device("cpu"):
            inv_freq, scale = inv_frequencies(
                rotary_dim or head_dim, theta, rope_scaling, max_position, max_model_len
            )
            positions = torch.arange(table_length(max_position, rope_scaling, max_model_len))
            freqs = torch.outer(positions.float(), inv_freq)
            # float32 whatever the model dtype: angles at large positions need the precision.
            cache = torch.cat([freqs.cos(), freqs.sin()], dim=-1)
        cache = (cache * scale if scale != 1.0 else cache).to(torch.get_default_device())
        self.register_buffer("cos_sin_cache", cache, persistent=False)

    def forward(self, positions: torch.Tensor) -> Rope:
        """The rotation of tokens at these positions, for the attention backend to apply."""
        return Rope(positions, self.cos_sin_cache)
