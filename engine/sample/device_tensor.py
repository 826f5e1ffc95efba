"""Small per-batch tensors (one value per row) built from Python lists, without a host sync."""
from __future__ import annotations

import torch


def device_tensor(data: list, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """torch.tensor(data, device=device) syncs with a GPU's stream; a pinned, non-blocking copy
    does not (the caching host allocator keeps the pinned block until the copy is done)."""
    tensor = torch.tensor(data, dtype=dtype)
    if device.type != "cuda":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)
