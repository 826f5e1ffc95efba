"""Gated activations of the MLPs: [gate | up] -> act(gate) * up (SiLU for Llama, tanh-GELU for
Gemma)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pagoda.engine.kernels.activation import silu_and_mul


class SiluAndMul(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda:
            return silu_and_mul(x)
        gate, up = x.chunk(2, dim=-1)
        return F.silu(gate) * up


class GeluTanhAndMul(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = x.chunk(2, dim=-1)
        return F.gelu(gate, approximate="tanh") * up


_ACT_AND_MUL = {"silu": SiluAndMul, "gelu_pytorch_tanh": GeluTanhAndMul}


def get_act_and_mul(hidden_act: str) -> nn.Module:
    if hidden_act not in _ACT_AND_MUL:
        raise ValueError(
            f"unsupported hidden_act {hidden_act!r}; supported: {', '.join(_ACT_AND_MUL)}"
        )
    return _ACT_AND_MUL[hidden_act]()
