"""Attention backends behind one interface: `get_backend` picks the one for a device."""

from __future__ import annotations

import torch

from pagoda.engine.attention.backend import AttentionBackend
from pagoda.engine.attention.metadata import AttentionMetadata
from pagoda.engine.attention.torch_ref import TorchAttentionBackend

__all__ = ["AttentionBackend", "AttentionMetadata", "TorchAttentionBackend", "get_backend"]

BACKENDS = ("auto", "torch", "triton")


def get_backend(name: str, device: torch.device) -> AttentionBackend:
    """ "torch" runs anywhere; "triton" needs CUDA and Triton; "auto" takes triton where it can."""
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; choose one of {', '.join(BACKENDS)}")
    from pagoda.engine.attention.triton_unified import TritonAttentionBackend
    from pagoda.engine.kernels.triton_import import HAS_TRITON

    if name == "torch" or (name == "auto" and (device.type != "cuda" or not HAS_TRITON)):
        return TorchAttentionBackend()
    if device.type != "cuda":
        raise ValueError(f"attention backend 'triton' needs a CUDA device, got {device}")
    try:
        return TritonAttentionBackend(device)
    except RuntimeError as e:
        raise ValueError(str(e)) from e
