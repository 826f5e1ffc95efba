"""The batched LoRA delta in PyTorch: the CPU's path and the kernels' test oracle.

Tokens are grouped by slot (LoRABatch.rows); per slot, shrink x [t, in] by the slot's stacked A
[n*R, in] to [t, n*R] (float32 sums rounded to x's dtype, as the kernels), then expand each slice's
[t, R] columns by its rows of the stacked B [sum(out_i), R] into y's same columns.
"""

from __future__ import annotations

import torch

from pagoda.engine.lora.batch import LoRABatch


def shrink_ref(x: torch.Tensor, a: torch.Tensor, rows: torch.Tensor, slot: int) -> torch.Tensor:
    return (x[rows].float() @ a[slot].float().T).to(x.dtype)


def add_lora_ref(
    x: torch.Tensor,
    y: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    slice_sizes: list[int],
    batch: LoRABatch,
) -> None:
    """y[:, slice i's columns] += (x A[slot]^T)[:, i*R : (i+1)*R] B[slot, slice i's rows]^T for
    each token's slot; b [slots, sum(slice_sizes), R]."""
    r = b.shape[2]
    for slot in batch.active:
        rows = batch.rows[slot]
        s = shrink_ref(x, a, rows, slot)
        offset = 0
        for i, size in enumerate(slice_sizes):
            cols = slice(offset, offset + size)
            delta = s[:, i * r : (i + 1) * r].float() @ b[slot, cols].float().T
            # index_put_, not index_add_: the latter's CPU kernel takes milliseconds per call
            # when its threads wait for a busy core (measured 3-12 ms against 8 us).
            y[:, cols].index_put_((rows,), delta.to(y.dtype), accumulate=True)
            offset += size
