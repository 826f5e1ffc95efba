"""Small per-batch tensors built on the host (lists, numpy arrays), moved without a host sync."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy.typing as npt
import torch


def device_tensor(
    data: Sequence[float] | npt.NDArray[Any], dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """torch.tensor(data, device=device) syncs with a GPU's stream; a pinned, non-blocking copy
    does not (the caching host allocator keeps the pinned block until the copy is done)."""
    tensor = torch.as_tensor(data, dtype=dtype)
    if device.type != "cuda":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)
