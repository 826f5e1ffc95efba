"""A linear layer's LoRA slots: its share (this tensor-parallel rank's) of every slot's adapter.

A layer of n slices (q|k|v: 3, gate|up: 2, others 1) keeps A stacked over its slices, [slots,
n * R, in] (one shrink for all slices), and a B per slice, [slots, out_i, R], R = --max-lora-rank:
an adapter of lower rank fills the first r rows of A and columns of B, the rest stay zero, and a
slice the adapter leaves out is all zero. Column-parallel layers hold B's rows of this rank and all
of A; row-parallel ones hold A's input columns of this rank and all of B: their delta is a partial
sum like the layer's own product, and the layer's all-reduce sums both.
"""

from __future__ import annotations

import torch

from pagoda.engine.lora.batch import LoRABatch
from pagoda.engine.lora.ops import add_lora_ref


class LoRALinear:
    def __init__(
        self,
        slice_sizes: list[int],
        input_size: int,
        num_slots: int,
        max_rank: int,
        batch: LoRABatch,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        self.batch, self.max_rank = batch, max_rank
        self.a = torch.zeros(
            num_slots, len(slice_sizes) * max_rank, input_size, dtype=dtype, device=device
        )
        self.b = [
            torch.zeros(num_slots, n, max_rank, dtype=dtype, device=device) for n in slice_sizes
        ]
        self.offsets = [sum(slice_sizes[:i]) for i in range(len(slice_sizes))]

    def set_slice(self, slot: int, index: int, a: torch.Tensor, b: torch.Tensor) -> None:
        """a [r, in], b [out_i, r] of this rank, scale folded into b."""
        r, rows = a.shape[0], slice(index * self.max_rank, (index + 1) * self.max_rank)
        self.a[slot, rows].zero_()
        self.a[slot, rows][:r].copy_(a)
        self.b[index][slot].zero_()
        self.b[index][slot][:, :r].copy_(b)

    def clear_slot(self, slot: int) -> None:
        self.a[slot].zero_()
        for b in self.b:
            b[slot].zero_()

    def add_to(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """y (the layer's product for x) plus each token's adapter delta, in place."""
        if not self.batch.use_kernels:
            add_lora_ref(x, y, self.a, self.b, self.offsets, self.batch)
            return y
        if not self.batch.active and not self.batch.launch_empty:
            return y
        from pagoda.engine.lora.kernels import lora_expand, lora_shrink

        s = lora_shrink(x, self.a, self.batch)
        for i, (b, offset) in enumerate(zip(self.b, self.offsets)):
            lora_expand(s, b, y, i * self.max_rank, offset, self.batch)
        return y
