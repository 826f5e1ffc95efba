"""A linear layer's LoRA slots: its share (this tensor-parallel rank's) of every slot's adapter.

A layer of n slices (q|k|v: 3, gate|up: 2, others 1) keeps A stacked over its slices, [slots,
n * R, in] (one shrink for all slices), and B stacked on its output axis, [slots, sum(out_i), R]
(one expand for all slices: slice i's rows read s's columns i*R : (i+1)*R), R = --max-lora-rank:
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
        self.b = torch.zeros(num_slots, sum(slice_sizes), max_rank, dtype=dtype, device=device)
        self.slice_sizes = slice_sizes

    def set_slice(self, slot: int, index: int, a: torch.Tensor, b: torch.Tensor) -> None:
        """a [r, in], b [out_i, r] of this rank, scale folded into b."""
        r, rows = a.shape[0], slice(index * self.max_rank, (index + 1) * self.max_rank)
        self.a[slot, rows].zero_()
        self.a[slot, rows][:r].copy_(a)
        offset = sum(self.slice_sizes[:index])
        b_rows = self.b[slot, offset : offset + self.slice_sizes[index]]
        b_rows.zero_()
        b_rows[:, :r].copy_(b)

    def clear_slot(self, slot: int) -> None:
        self.a[slot].zero_()
        self.b[slot].zero_()

    def add_to(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """y (the layer's product for x) plus each token's adapter delta, in place."""
        if not self.batch.use_kernels:
            add_lora_ref(x, y, self.a, self.b, self.slice_sizes, self.batch)
            return y
        if not self.batch.active and not self.batch.launch_empty:
            return y
        from pagoda.engine.lora.kernels import add_lora

        add_lora(x, y, self.a, self.b, self.slice_sizes, self.batch)
        return y
