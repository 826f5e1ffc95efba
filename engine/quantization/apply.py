"""Quantize a loaded model's linear layers in place."""

from __future__ import annotations

import logging

import torch
from torch import nn

from pagoda.engine.layers.linear import LinearBase, ReplicatedLinear
from pagoda.engine.layers.moe import FusedMoE
from pagoda.engine.quantization import check_quantization
from pagoda.engine.quantization.fp8 import Fp8LinearMethod

log = logging.getLogger(__name__)


def quantize_model(model: nn.Module, name: str, device: torch.device) -> int:
    """Quantize every tensor-parallel linear layer; returns how many were quantized.

    The embedding and LM head stay in the model's dtype, as in vLLM, and so do a mixture of
    experts' router (ReplicatedLinear: routing decisions are sensitive and it is small) and its
    experts (not LinearBase layers; said once in the log).
    """
    check_quantization(name)
    if name != "fp8":  # compressed-tensors describes a checkpoint; nothing quantizes into it
        raise ValueError(f"--quantization {name} needs a checkpoint stored in that format")
    method = Fp8LinearMethod.for_device(device)
    layers = [
        m
        for m in model.modules()
        if isinstance(m, LinearBase) and not isinstance(m, ReplicatedLinear)
    ]
    for layer in layers:
        method.quantize(layer)
    if any(isinstance(m, FusedMoE) for m in model.modules()):
        log.warning("--quantization %s: the MoE experts stay unquantized", name)
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the full-precision weights just freed go back to the KV pool
    return len(layers)
