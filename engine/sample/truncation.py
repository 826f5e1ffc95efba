"""Cutting the tail of the distribution: min_p, top_k, top_p (vLLM's order and semantics).

Each works in place on temperature-scaled logits [N, V], one parameter per row, and sets the
logits of dropped tokens to -inf. A row whose parameter is neutral is left as it is.
"""
from __future__ import annotations

import torch


def apply_min_p(logits: torch.Tensor, min_p: list[float]) -> torch.Tensor:
    """Drop tokens whose probability is below min_p times the most likely token's."""
    probs = logits.softmax(dim=-1)
    threshold = probs.amax(dim=-1, keepdim=True) * torch.tensor(min_p, dtype=probs.dtype,
                                                                 device=probs.device).view(-1, 1)
    return logits.masked_fill_(probs < threshold, float("-inf"))


def apply_top_k(logits: torch.Tensor, top_k: list[int]) -> torch.Tensor:
    """Keep the k largest logits of each row (ties with the k-th kept too); k == 0: keep all."""
    if not any(top_k):
        return logits
    n, vocab_size = logits.shape
    k_max = min(max(top_k), vocab_size)
    kth = torch.tensor([min(k, vocab_size) - 1 if k else k_max - 1 for k in top_k], device=logits.device)
    threshold = logits.topk(k_max, dim=-1).values.gather(1, kth.view(n, 1))
    off = torch.tensor([k == 0 for k in top_k], device=logits.device).view(n, 1)
    threshold.masked_fill_(off, float("-inf"))
    return logits.masked_fill_(logits < threshold, float("-inf"))


def apply_top_k_top_p(logits: torch.Tensor, top_k: list[int], top_p: list[float]) -> torch.Tensor:
    """top_k, then top_p over what top_k left: keep the smallest set of most likely tokens whose
    probability adds up to at least p. One sort of the vocabulary serves both."""
    n, vocab_size = logits.shape
    device = logits.device
    ascending, order = logits.sort(dim=-1)
    if any(top_k):
        kth = torch.tensor([vocab_size - min(k, vocab_size) if k else 0 for k in top_k], device=device)
        ascending.masked_fill_(ascending < ascending.gather(1, kth.view(n, 1)), float("-inf"))
    # Drop the least likely tokens while their mass stays within 1 - p; the top token always stays.
    cumulative = ascending.softmax(dim=-1).cumsum(dim=-1)
    p = torch.tensor(top_p, dtype=cumulative.dtype, device=device).view(n, 1)
    drop = cumulative <= 1 - p
    drop[:, -1] = False
    ascending.masked_fill_(drop, float("-inf"))
    return logits.scatter_(1, order, ascending)
