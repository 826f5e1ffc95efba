"""Calibrated scales of an FP8 KV cache, read from the checkpoint (vLLM's names and meaning).

With `--kv-cache-dtype fp8` a layer's keys are stored as e4m3(k / k_scale) and read back as
stored * k_scale (values likewise), so a layer whose K or V exceed e4m3's +-448 is not saturated.
A scale is per tensor (one number) or per KV head (compressed-tensors' `attn_head` strategy); each
attention layer holds both as one float32 vector over its rank's KV heads, 1.0 where the
checkpoint gives none. With a cache in the model's dtype the scales are not used, as in vLLM.

The checkpoint names, all under `model.layers.N.self_attn.`:
- `k_scale`, `v_scale` (llm-compressor, compressed-tensors and the fp8 format);
- `k_proj.k_scale`, `v_proj.v_scale` (NVIDIA ModelOpt);
- `k_proj.output_scale`, `v_proj.output_scale` (older compressed-tensors);
- `kv_scale`: one scale for both (deprecated, as vLLM reads it).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from pagoda.engine.layers.weights import LoadedWeight, whole

# checkpoint name suffix -> which of the layer's scales it sets
SCALE_NAMES = {
    ".self_attn.k_scale": "k",
    ".self_attn.v_scale": "v",
    ".self_attn.kv_scale": "kv",
    ".self_attn.k_proj.k_scale": "k",
    ".self_attn.v_proj.v_scale": "v",
    ".self_attn.k_proj.output_scale": "k",
    ".self_attn.v_proj.output_scale": "v",
}


def kv_scale_target(name: str) -> tuple[str, str] | None:
    """(the attention module's name, "k", "v" or "kv") for a KV-cache scale's checkpoint name,
    None for any other tensor."""
    for suffix, which in SCALE_NAMES.items():
        if name.endswith(suffix):
            return name[: -len(suffix)] + ".self_attn", which
    return None


def check_kv_cache_scheme(scheme: dict[str, Any] | None) -> None:
    """compressed-tensors' `kv_cache_scheme`: what the FP8 cache can take is 8-bit float,
    symmetric, static, per tensor or per attention head; anything else raises ValueError."""
    if scheme is None:
        return
    kind = (scheme.get("type"), scheme.get("num_bits"))
    if kind != ("float", 8):
        raise ValueError(
            f"kv_cache_scheme {kind[0]}{kind[1]}: only 8-bit float KV-cache scales are supported"
        )
    if scheme.get("strategy") not in ("tensor", "attn_head"):
        raise ValueError(
            f"kv_cache_scheme strategy {scheme.get('strategy')!r}: only 'tensor' and "
            "'attn_head' are supported"
        )
    if scheme.get("symmetric") is False:
        raise ValueError("kv_cache_scheme with zero points (symmetric: false) is not supported")
    if scheme.get("dynamic"):
        raise ValueError("a dynamic kv_cache_scheme is not supported: the scales must be stored")


def load_kv_scale(
    target: torch.Tensor, loaded: LoadedWeight, first_head: int, total_heads: int, name: str
) -> None:
    """Copy a checkpoint scale into `target` (this rank's KV heads: first_head onward): one
    number for every head, or one per head of the model's `total_heads` ([H] or [H, 1, 1])."""
    scale = whole(loaded).float().reshape(-1)
    if scale.numel() == total_heads:
        scale = scale[first_head : first_head + target.numel()]
    elif scale.numel() != 1:
        raise ValueError(
            f"{name}: a KV-cache scale is one number or one per KV head ({total_heads}), got "
            f"shape {tuple(whole(loaded).shape)}"
        )
    bad = [v for v in scale.tolist() if not (math.isfinite(v) and v > 0)]
    if bad:
        raise ValueError(f"{name}: KV-cache scales must be positive and finite, got {bad[0]}")
    target.copy_(scale.expand_as(target))


def describe_kv_scales(model: torch.nn.Module, fp8_cache: bool) -> str | None:
    """A line for the log on what the scales do in this engine, None when there is nothing to
    say (no FP8 cache and no scales)."""
    scales = [
        torch.cat([m.get_buffer("k_scale"), m.get_buffer("v_scale")])
        for m in model.modules()
        if isinstance(getattr(m, "k_scale", None), torch.Tensor)
    ]
    layers = len(scales)
    calibrated = sum(bool(torch.any(s != 1)) for s in scales)
    if fp8_cache and calibrated:
        return f"FP8 KV cache with the checkpoint's scales ({calibrated} of {layers} layers)"
    if fp8_cache:
        return (
            "FP8 KV cache with scale 1.0: the checkpoint has no k_scale/v_scale (values beyond "
            "e4m3's +-448 saturate)"
        )
    if calibrated:
        return "the checkpoint's KV-cache scales are not used: they apply with --kv-cache-dtype fp8"
    return None
