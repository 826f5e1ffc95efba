"""Pipeline stages: which layers a stage holds, and what it hands the next one."""

from __future__ import annotations

import torch
from torch import nn

# What one stage passes to the next: {"hidden_states": [T, hidden], "residual": [T, hidden]}.
IntermediateTensors = dict[str, torch.Tensor]


class PPMissingLayer(nn.Identity):
    """The place of a module another pipeline stage holds: no parameters, names keep their
    numbers (model.layers.17 is layer 17 on every stage)."""


def get_pp_indices(num_layers: int, pp_rank: int, pp_size: int) -> tuple[int, int]:
    """[start, end) of the stage's layers: an even split, the remainder going to the stages before
    the last one (which also runs the final norm and the LM head), as vLLM's."""
    if num_layers < pp_size:
        raise ValueError(
            f"pipeline_parallel_size {pp_size} exceeds the model's {num_layers} layers"
        )
    sizes = [num_layers // pp_size] * pp_size
    for i in range(2, num_layers % pp_size + 2):
        sizes[-i] += 1
    start = sum(sizes[:pp_rank])
    return start, start + sizes[pp_rank]
