"""The batched LoRA delta in PyTorch: the CPU's path and the kernels' test oracle.

Tokens are grouped by slot (LoRABatch.rows); per slot, shrink x [t, in] by the slot's stacked A
[n*R, in] to [t, n*R] (rounded to x's dtype, as the kernels), then expand each slice's [t, R] by
its B [out_i, R] into y's columns of that slice.
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
    bs: list[torch.Tensor],
    offsets: list[int],
    batch: LoRABatch,
) -> None:
    """y[:, offsets[i]:+out_i] += (x A[slot]^T)[:, slice i] B_i[slot]^T for each token's slot."""
    for slot in batch.active:
        rows = batch.rows[slot]
        s = shrink_ref(x, a, rows, slot)
        for i, (b, offset) in enumerate(zip(bs, offsets)):
            r = b.shape[2]
            delta = s[:, i * r : (i + 1) * r].float() @ b[slot].float().T
            # index_put_, not index_add_: the latter's CPU kernel takes milliseconds per call
            # when its threads wait for a busy core (measured 3-12 ms against 8 us).
            y[:, offset : offset + b.shape[1]].index_put_(
                (rows,), delta.to(y.dtype), accumulate=True
            )
