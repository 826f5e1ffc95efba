"""Structured outputs in the batched sampler: each constrained row's grammar fills its row of one
packed bitmask on the host (32 tokens a word), which goes to the device in one copy and sets every
token the grammar forbids to -inf, on the CPU or the GPU alike."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from pagoda.engine.sample.device_tensor import device_tensor

if TYPE_CHECKING:
    from pagoda.engine.sample.sampler import SamplingRow

BITS = 32


def apply_grammar_masks(
    x: torch.Tensor, rows: list[SamplingRow], banned: dict[int, set[int]]
) -> None:
    """In place on x [len(rows), V]. `banned`: per row, tokens min_tokens forbids. A row whose
    grammar (less its banned tokens) allows nothing is marked dead and left unmasked: the engine
    ends it on the token it draws, which it drops."""
    index = [i for i, row in enumerate(rows) if row.grammar is not None]
    if not index:
        return
    vocab = x.shape[1]
    words = (vocab + BITS - 1) // BITS
    bitmask = torch.empty(len(index), words, dtype=torch.int32)
    keep = []
    for j, i in enumerate(index):
        grammar = rows[i].grammar
        assert grammar is not None  # index holds the rows with a grammar
        grammar.fill(bitmask, j)
        allowed = bitmask[j].clone()
        for t in banned.get(i, ()):
            allowed[t // BITS] &= ~(1 << (t % BITS))
        if bool(allowed.any()):
            keep.append(j)
        else:
            grammar.dead = True
    if not keep:
        return
    shifts = torch.arange(BITS, dtype=torch.int32, device=x.device)
    packed = bitmask[keep].to(x.device, non_blocking=True)
    allowed = ((packed.unsqueeze(-1) >> shifts) & 1).bool().view(len(keep), -1)[:, :vocab]
    target = device_tensor([index[j] for j in keep], torch.long, x.device)
    x[target] = x[target].masked_fill(~allowed, float("-inf"))
