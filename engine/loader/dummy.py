"""Random weights for --load-format dummy: benchmarks of a shape without its checkpoint."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def fill_dummy(model: nn.Module, seed: int) -> None:
    """In place, on the parameters' own device: N(0, 0.02), norm scales 1 (so activations stay sane)."""
    for name, param in model.named_parameters():
        if not param.is_floating_point():
            continue  # packed quantized weights: their format's filler writes them
        if name.endswith("norm.weight"):
            param.fill_(1.0)
        else:
            gen = torch.Generator(param.device).manual_seed(seed)
            param.normal_(0.0, 0.02, generator=gen)
            seed += 1
