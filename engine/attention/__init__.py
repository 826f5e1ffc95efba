"""Attention backends behind one interface: `get_backend` picks the one for a device."""
from __future__ import annotations

import importlib

import torch

from pagoda.engine.attention.backend import AttentionBackend
from pagoda.engine.attention.metadata import AttentionMetadata
from pagoda.engine.attention.torch_ref import TorchAttentionBackend

__all__ = ["AttentionBackend", "AttentionMetadata", "TorchAttentionBackend", "get_backend"]

BACKENDS = ("auto", "torch", "triton")


def get_backend(name: str, device: torch.device) -> AttentionBackend:
    """"torch" runs anywhere; "triton" needs CUDA; "auto" takes triton on CUDA when it is there."""
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "torch" or (name == "auto" and device.type != "cuda"):
        return TorchAttentionBackend()
    try:
        module = importlib.import_module("pagoda.engine.attention.triton_unified")
    except ModuleNotFoundError as e:
        if name == "auto" and e.name in ("pagoda.engine.attention.triton_unified", "triton"):
            return TorchAttentionBackend()
        raise ValueError(f"attention backend 'triton' is not available: {e}") from e
    if device.type != "cuda":
        raise ValueError(f"attention backend 'triton' needs a CUDA device, got {device}")
    return module.TritonAttentionBackend()
