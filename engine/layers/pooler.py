"""Pooling: one vector per sequence from its prompt's final hidden states, for embeddings.

A prompt may be computed in several chunks (chunked prefill) and again after a preemption, so MEAN
keeps a running sum per sequence (float32) that a chunk starting at position 0 resets; LAST takes
the row of the prompt's last token. The vector is set on the sequence as `pooled` when its prompt
is complete.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F

from pagoda.engine.core.sequence import Sequence
from pagoda.engine.pooling_params import PoolingParams


def finish(vector: torch.Tensor, params: PoolingParams) -> torch.Tensor:
    """Matryoshka truncation, then L2 normalization, as vLLM's embedding head does them."""
    if params.dimensions is not None:
        vector = vector[: params.dimensions]
    if params.normalize:
        vector = F.normalize(vector, p=2, dim=-1)
    return vector


class Pooler:
    def __init__(self) -> None:
        # A sequence's running sum; weak, so an aborted sequence's sum goes with it.
        self._sums: weakref.WeakKeyDictionary[Sequence, torch.Tensor] = weakref.WeakKeyDictionary()

    def step(
        self, batch: list[tuple[Sequence, int]], hidden: torch.Tensor, starts: list[int]
    ) -> None:
        """`hidden`: the step's final hidden states, rows starts[i]:starts[i + 1] for batch[i]."""
        for i, (seq, n) in enumerate(batch):
            params = seq.pooling
            if params is None:
                continue
            rows = hidden[starts[i] : starts[i + 1]]
            done = seq.num_computed_tokens + n == seq.num_tokens
            if params.pooling_type == "MEAN":
                if seq.num_computed_tokens == 0:
                    self._sums[seq] = torch.zeros(
                        rows.shape[-1], dtype=torch.float32, device=rows.device
                    )
                if seq not in self._sums:
                    raise RuntimeError(f"{seq.seq_id}: mean pooling missed the prompt's start")
                self._sums[seq] += rows.float().sum(dim=0)
                if done:
                    vector = self._sums.pop(seq) / seq.num_prompt_tokens
            elif done:
                vector = rows[-1].float()
            if done:
                seq.pooled = finish(vector, params)
