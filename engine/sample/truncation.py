"""Cutting the tail of the distribution: min_p, top_k, top_p (vLLM's order and semantics).

Each works in place on temperature-scaled logits [N, V] with one parameter per row, and sets the
logits of dropped tokens to -inf. A row whose parameter is neutral (min_p 0, top_k 0, top_p 1)
keeps every token.
"""

from __future__ import annotations

import torch


def apply_min_p(logits: torch.Tensor, min_p: torch.Tensor) -> torch.Tensor:
    """Drop tokens whose probability is below min_p [N] times the most likely token's."""
    probs = logits.softmax(dim=-1)
    threshold = probs.amax(dim=-1, keepdim=True) * min_p.view(-1, 1)
    return logits.masked_fill_(probs < threshold, float("-inf"))


def apply_top_k(logits: torch.Tensor, top_k: torch.Tensor, k_max: int) -> torch.Tensor:
    """Keep the top_k [N] largest logits of each row (ties with the k-th too); k_max = top_k.max()
    (given, to need no sync), at least 1."""
    k_max = min(k_max, logits.shape[-1])
    top_k = top_k.clamp(max=k_max).view(-1, 1)
    threshold = logits.topk(k_max, dim=-1).values.gather(1, (top_k - 1).clamp(min=0))
    threshold.masked_fill_(top_k == 0, float("-inf"))
    return logits.masked_fill_(logits < threshold, float("-inf"))


def apply_top_k_top_p(
    logits: torch.Tensor, top_k: torch.Tensor | None, top_p: torch.Tensor
) -> torch.Tensor:
    """top_k [N] (None: off for all), then top_p [N] over what top_k left: keep the smallest set of
    most likely tokens whose probability adds up to at least p."""
    if logits.device.type == "cpu" and logits.shape[-1] > CANDIDATES:
        return top_k_top_p_by_candidates(logits, top_k, top_p)
    return top_k_top_p_by_sort(logits, top_k, top_p)


def top_k_top_p_by_sort(
    logits: torch.Tensor, top_k: torch.Tensor | None, top_p: torch.Tensor
) -> torch.Tensor:
    """One sort of the whole vocabulary serves both (no host sync: the GPU path)."""
    vocab_size = logits.shape[-1]
    ascending, order = logits.sort(dim=-1)
    if top_k is not None:
        kth = (vocab_size - top_k.clamp(max=vocab_size)).masked_fill(top_k == 0, 0).view(-1, 1)
        ascending.masked_fill_(ascending < ascending.gather(1, kth), float("-inf"))
    # Drop the least likely tokens while their mass stays within 1 - p; the top token always stays.
    drop = ascending.softmax(dim=-1).cumsum(dim=-1) <= 1 - top_p.view(-1, 1)
    drop[:, -1] = False
    ascending.masked_fill_(drop, float("-inf"))
    return logits.scatter_(1, order, ascending)


# On the CPU a sort of the whole vocabulary costs some fifteen softmaxes, while the nucleus nearly
# always lies among the few hundred most likely tokens.
CANDIDATES = 256


def top_k_top_p_by_candidates(
    logits: torch.Tensor, top_k: torch.Tensor | None, top_p: torch.Tensor
) -> torch.Tensor:
    """Look for the nucleus among the CANDIDATES most likely tokens; sort the whole row only where
    it lies beyond them (a data-dependent branch: fine on the CPU, where it costs no sync)."""
    n = logits.shape[0]
    values = logits.topk(CANDIDATES, dim=-1).values  # descending
    k = top_k if top_k is not None else torch.zeros(n, dtype=torch.long)
    k_within = (k > 0) & (k <= CANDIDATES)
    values.masked_fill_(
        k_within.view(-1, 1) & (torch.arange(CANDIDATES) >= k.view(-1, 1)), float("-inf")
    )
    # Normalize over what top_k left: the candidates where k fits in them, else the whole row.
    normalizer = torch.where(k_within, values.logsumexp(dim=-1), logits.logsumexp(dim=-1)).view(
        -1, 1
    )
    probs = (values - normalizer).exp()
    cumulative = probs.cumsum(dim=-1)
    # Keep a token while the mass before it is still short of p.
    keep = (cumulative - probs < top_p.view(-1, 1)) & (values > float("-inf"))
    threshold = values.gather(1, keep.sum(dim=-1, keepdim=True) - 1)
    # top_p 1 keeps everything top_k left: its k-th value, or no threshold at all.
    whole = (top_p >= 1).view(-1, 1)
    kth = values.gather(1, (k - 1).clamp(0, CANDIDATES - 1).view(-1, 1)).masked_fill(
        ~k_within.view(-1, 1), float("-inf")
    )
    threshold = torch.where(whole, kth, threshold)
    found = k_within | ((k == 0) & ((cumulative[:, -1] >= top_p) | (top_p >= 1)))
    logits.masked_fill_(found.view(-1, 1) & (logits < threshold), float("-inf"))
    rest = (~found).nonzero().view(-1)
    if len(rest):
        logits[rest] = top_k_top_p_by_sort(
            logits[rest], None if top_k is None else top_k[rest], top_p[rest]
        )
    return logits
