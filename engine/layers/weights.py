"""Checkpoint tensors as the layers' weight loaders receive them, whole or as a lazy slice.

A safetensors file yields each tensor as a slice object that reads only the rows (or columns) a
rank asks for, so a tensor-parallel rank reads its own shard and not the whole checkpoint; GGUF
and in-memory weights arrive as tensors. The loaders take either through these helpers.
"""

from __future__ import annotations

from typing import Any

import torch

# torch.Tensor, or safetensors' PySafeSlice (get_shape(), and indexing that reads only the slice)
LoadedWeight = torch.Tensor | Any


def shape_of(loaded: LoadedWeight) -> tuple[int, ...]:
    if isinstance(loaded, torch.Tensor):
        return tuple(loaded.shape)
    return tuple(loaded.get_shape())


def narrow(loaded: LoadedWeight, dim: int, start: int, size: int) -> torch.Tensor:
    """Rows (dim 0) or columns (dim 1) [start, start + size) of the checkpoint tensor."""
    if isinstance(loaded, torch.Tensor):
        return loaded.narrow(dim, start, size)
    index = (slice(None),) * dim + (slice(start, start + size),)
    return loaded[index]


def whole(loaded: LoadedWeight) -> torch.Tensor:
    return loaded if isinstance(loaded, torch.Tensor) else loaded[...]  # [:] fails on 0-dim


def copy_checked(param: torch.Tensor, tensor: torch.Tensor, what: str) -> None:
    if tuple(param.shape) != tuple(tensor.shape):
        raise ValueError(
            f"{what}: model expects {tuple(param.shape)}, checkpoint has {tuple(tensor.shape)}"
        )
    param.data.copy_(tensor)


def default_weight_loader(param: torch.nn.Parameter, loaded: LoadedWeight) -> None:
    """A parameter every rank holds whole (norms, replicated biases)."""
    copy_checked(param, whole(loaded), "weight")


def set_weight_loader(param: torch.nn.Parameter, loader: Any) -> None:
    """vLLM's convention: a parameter carries the function that loads it from the checkpoint."""
    param.weight_loader = loader  # type: ignore[attr-defined]
