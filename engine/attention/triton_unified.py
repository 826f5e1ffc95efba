"""The GPU attention backend: Triton kernels over the paged KV cache.

One launch rotates q and k (RoPE) and writes this step's K/V into the cache, one (two when the
context is split) attends; prefill, chunked prefill, prefix-cache hits and decode all go through
the same kernels.
"""

from __future__ import annotations

import torch

from pagoda.engine.attention.metadata import AttentionMetadata
from pagoda.engine.attention.rope import Rope
from pagoda.engine.kernels.reshape_and_cache import reshape_and_cache
from pagoda.engine.kernels.triton_import import HAS_TRITON
from pagoda.engine.kernels.unified_attention import decode_num_splits, unified_attention


class TritonAttentionBackend:
    name = "triton"

    def __init__(self, device: torch.device | str = "cuda") -> None:
        device = torch.device(device)
        if device.type != "cuda" or not torch.cuda.is_available():
            raise RuntimeError(
                f"attention backend 'triton' needs an NVIDIA GPU, but device is {device} and "
                f"torch.cuda.is_available() is {torch.cuda.is_available()}; use --attention-backend torch"
            )
        if not HAS_TRITON:
            raise RuntimeError(
                "attention backend 'triton' needs the triton package, which is not installed"
            )
        self.num_sms = torch.cuda.get_device_properties(device).multi_processor_count

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        meta: AttentionMetadata,
        scale: float,
        sliding_window: int | None = None,
        logits_soft_cap: float | None = None,
        k_scale: torch.Tensor | None = None,
        v_scale: torch.Tensor | None = None,
        rope: Rope | None = None,
    ) -> torch.Tensor:
        # The rotation is fused into the write: q rotated in place, k as it is cached.
        rotate = None if rope is None else (q, rope.positions, rope.cos_sin_cache)
        reshape_and_cache(k, v, k_cache, v_cache, meta.slot_mapping, k_scale, v_scale, rotate)
        # Host-side choices depend only on the batch's shape, so a captured CUDA graph stays valid.
        num_splits = 1
        if meta.max_query_len == 1:
            num_splits = decode_num_splits(meta.num_seqs, k_cache.shape[2], self.num_sms)
        return unified_attention(
            q,
            k_cache,
            v_cache,
            meta.query_start_loc,
            meta.seq_lens,
            meta.block_tables,
            meta.max_query_len,
            scale,
            num_splits=num_splits,
            sliding_window=sliding_window,
            soft_cap=logits_soft_cap,
            k_scale=k_scale,
            v_scale=v_scale,
        )
