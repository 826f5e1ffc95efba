"""The adapter slot pool: --max-loras device slots in every wrapped layer, filled from a CPU cache
of --max-cpu-loras adapters read from their folders, both evicted least recently used.

The runner asks for each step's slots (slots_for); an adapter already in a slot is reused, another
takes a free slot or evicts the least recently used adapter that this step does not use. The
scheduler keeps a step's distinct adapters within --max-loras, so a step always fits.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pagoda.engine.layers.linear import (
    LinearBase,
    MergedColumnParallelLinear,
    QKVParallelLinear,
    RowParallelLinear,
)
from pagoda.engine.lora.batch import LoRABatch
from pagoda.engine.lora.layers import LoRALinear
from pagoda.engine.lora.peft import LoRAAdapter, LoRAModuleWeights, load_adapter
from pagoda.engine.lora.request import LoRARequest
from pagoda.engine.models.config import ModelConfig

_WRAPPED = re.compile(
    r"layers\.(\d+)\.(?:self_attn|mlp)\.(qkv_proj|o_proj|gate_up_proj|down_proj)$"
)
# Our layer -> the HF modules that are its slices, in order.
_SLICES = {
    "qkv_proj": ("q_proj", "k_proj", "v_proj"),
    "gate_up_proj": ("gate_proj", "up_proj"),
    "o_proj": ("o_proj",),
    "down_proj": ("down_proj",),
}


@dataclass
class _Target:
    """Where one HF module's adapter weights go: a slice of a wrapped layer, and this rank's part
    of A's columns (row-parallel) or B's rows (column-parallel)."""

    lora: LoRALinear
    index: int
    a_cols: tuple[int, int] | None  # (start, size) of A's input columns, or all of them
    b_rows: tuple[int, int] | None  # (start, size) of B's output rows, or all of them

    def write(self, slot: int, w: LoRAModuleWeights) -> None:
        a, b = w.a, w.b
        if self.a_cols is not None:
            a = a.narrow(1, *self.a_cols)
        if self.b_rows is not None:
            b = b.narrow(0, *self.b_rows)
        self.lora.set_slice(slot, self.index, a, b)


def _slices(layer: LinearBase) -> list[tuple[int, tuple[int, int] | None, tuple[int, int] | None]]:
    """(local out size, A's columns, B's rows) of each slice of a wrapped layer on this rank."""
    rank = layer.tp_rank
    if isinstance(layer, QKVParallelLinear):
        kv_rank = rank // layer.num_kv_head_replicas
        return [
            (layer.q_size, None, (rank * layer.q_size, layer.q_size)),
            (layer.kv_size, None, (kv_rank * layer.kv_size, layer.kv_size)),
            (layer.kv_size, None, (kv_rank * layer.kv_size, layer.kv_size)),
        ]
    if isinstance(layer, MergedColumnParallelLinear):
        return [(n, None, (rank * n, n)) for n in layer.shard_sizes]
    if isinstance(layer, RowParallelLinear):
        cols = layer.input_size_per_partition
        return [(layer.output_size, (rank * cols, cols), None)]
    raise TypeError(f"no LoRA for {type(layer).__name__}")


class LoRAPool:
    def __init__(
        self,
        model: nn.Module,
        model_config: ModelConfig,
        max_loras: int,
        max_lora_rank: int,
        max_cpu_loras: int,
        max_tokens: int,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        self.model_config, self.max_lora_rank = model_config, max_lora_rank
        self.max_cpu_loras = max_cpu_loras
        # The runner's warm-up step (about 500 tokens) may exceed a small step budget.
        self.batch = LoRABatch(max(max_tokens, 1024), max_loras, device)
        self.targets: dict[tuple[int, str], _Target] = {}
        for name, layer in model.named_modules():
            m = _WRAPPED.search(name)
            if m is None or not isinstance(layer, LinearBase):
                continue
            if layer.quant_method is not None:  # its weight is packed: no [out, in] to wrap
                raise ValueError(
                    f"--enable-lora: LoRA adapters on quantized weights "
                    f"({type(layer.quant_method).__name__} in {name}) are not supported yet"
                )
            slices = _slices(layer)
            layer.lora = LoRALinear(
                [n for n, _, _ in slices],
                layer.weight.shape[1],
                max_loras,
                max_lora_rank,
                self.batch,
                dtype,
                device,
            )
            for i, (module, (_, a_cols, b_rows)) in enumerate(zip(_SLICES[m[2]], slices)):
                self.targets[(int(m[1]), module)] = _Target(layer.lora, i, a_cols, b_rows)
        self.slot_ids: list[int | None] = [None] * max_loras  # each slot's lora_int_id
        self.in_slots: OrderedDict[int, int] = OrderedDict()  # lora_int_id -> slot, LRU first
        self.cpu: OrderedDict[int, LoRAAdapter] = OrderedDict()  # LRU first

    def adapter(self, request: LoRARequest) -> LoRAAdapter:
        """The adapter from the CPU cache, read from its folder (and checked) when not there."""
        if request.lora_int_id in self.cpu:
            self.cpu.move_to_end(request.lora_int_id)
            return self.cpu[request.lora_int_id]
        adapter = load_adapter(request, self.model_config, self.max_lora_rank)
        missing = sorted({m for m in adapter.modules} - set(self.targets))
        if missing:  # another pipeline stage's layers are not here: those are skipped below
            layers = {layer for layer, _ in self.targets}
            missing = [(layer, m) for layer, m in missing if layer in layers]
        if missing:
            raise ValueError(f"LoRA adapter {request.lora_name!r}: no layer for {missing[:3]}")
        self.cpu[request.lora_int_id] = adapter
        while len(self.cpu) > self.max_cpu_loras:
            self.cpu.popitem(last=False)
        return adapter

    def slots_for(self, requests: list[LoRARequest | None]) -> list[int]:
        """Each request's slot (-1 for the base model), loading adapters into slots as needed."""
        wanted = {r.lora_int_id for r in requests if r is not None}
        if len(wanted) > len(self.slot_ids):
            raise RuntimeError(
                f"a step with {len(wanted)} adapters, above --max-loras {len(self.slot_ids)}"
            )
        slots: dict[int, int] = {}
        for r in requests:
            if r is None or r.lora_int_id in slots:
                continue
            slots[r.lora_int_id] = self._slot(r, wanted)
        return [-1 if r is None else slots[r.lora_int_id] for r in requests]

    def _slot(self, request: LoRARequest, in_use: set[int]) -> int:
        lora_id = request.lora_int_id
        if lora_id in self.in_slots:  # recently used in both: its slot and its CPU copy
            self.in_slots.move_to_end(lora_id)
            if lora_id in self.cpu:
                self.cpu.move_to_end(lora_id)
            return self.in_slots[lora_id]
        adapter = self.adapter(request)
        if None in self.slot_ids:
            slot = self.slot_ids.index(None)
        else:
            victim = next(i for i in self.in_slots if i not in in_use)
            slot = self.in_slots.pop(victim)
        self.slot_ids[slot] = lora_id
        self.in_slots[lora_id] = slot
        for target in {id(t.lora): t.lora for t in self.targets.values()}.values():
            target.clear_slot(slot)
        for key, weights in adapter.modules.items():
            if key in self.targets:
                self.targets[key].write(slot, weights)
        return slot

    def remove(self, lora_int_id: int) -> bool:
        """Forget an adapter (slot and CPU cache); whether it was held."""
        held = self.cpu.pop(lora_int_id, None) is not None
        slot = self.in_slots.pop(lora_int_id, None)
        if slot is not None:
            self.slot_ids[slot] = None
            held = True
        return held

    def prepare(self, requests: list[LoRARequest | None], num_tokens: list[int]) -> None:
        """A step's sequences' adapters and token counts: slots loaded, each token's slot set."""
        slots = self.slots_for(requests)
        self.batch.set(np.repeat(np.asarray(slots, dtype=np.int64), num_tokens))
