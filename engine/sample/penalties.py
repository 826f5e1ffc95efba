"""Repetition, presence and frequency penalties, as vLLM applies them."""
from __future__ import annotations

import torch

from pagoda.engine.sample.device_tensor import device_tensor


def token_counts(token_ids: list[list[int]], vocab_size: int, device: torch.device) -> torch.Tensor:
    """[N, V] int counts of each token id per row, by one scatter_add over a padded [N, L] tensor."""
    width = max((len(ids) for ids in token_ids), default=0)
    # Pad with an extra id (vocab_size) that lands in a spare column, dropped at the end.
    padded = device_tensor([ids + [vocab_size] * (width - len(ids)) for ids in token_ids],
                           torch.long, device).view(len(token_ids), width)
    counts = torch.zeros(len(token_ids), vocab_size + 1, dtype=torch.long, device=device)
    counts.scatter_add_(1, padded, torch.ones_like(padded))
    return counts[:, :vocab_size]


def apply_penalties(logits: torch.Tensor, prompt_ids: list[list[int]], output_ids: list[list[int]],
                    repetition: list[float], presence: list[float], frequency: list[float]) -> torch.Tensor:
    """Penalize logits [N, V] in place, one row per sequence.

    Repetition counts prompt and output tokens: positive logits are divided by it, negative ones
    multiplied. Presence and frequency count output tokens only and are subtracted.
    """
    n, vocab_size = logits.shape
    device = logits.device
    output_counts = token_counts(output_ids, vocab_size, device)
    output_seen = output_counts > 0
    if any(r != 1.0 for r in repetition):
        seen = output_seen | (token_counts(prompt_ids, vocab_size, device) > 0)
        rep = device_tensor(repetition, logits.dtype, device).view(n, 1)
        penalty = torch.where(seen, rep, torch.ones_like(rep))
        logits.copy_(torch.where(logits > 0, logits / penalty, logits * penalty))
    if any(f != 0.0 for f in frequency):
        freq = device_tensor(frequency, logits.dtype, device).view(n, 1)
        logits.sub_(freq * output_counts)
    if any(p != 0.0 for p in presence):
        pres = device_tensor(presence, logits.dtype, device).view(n, 1)
        logits.sub_(pres * output_seen)
    return logits
