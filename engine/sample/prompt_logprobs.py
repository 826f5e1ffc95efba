"""Prompt logprobs (vLLM's SamplingParams.prompt_logprobs): for each prompt token after the first,
its log-probability under the model given the tokens before it, with the top-k of that position.

Computed from the raw logits of every prompt row, chunk by chunk as the prompt is prefilled;
the list is set on the sequence as `prompt_logprobs` once its prompt is complete. A recompute after
preemption starts the list again from position 0. The engine gives such a request no prefix-cache
hits (a salt of its own): a cached token has no logits.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch

from pagoda.engine.core.sequence import Sequence
from pagoda.engine.outputs import TokenLogprobs


class PromptLogprobs:
    def __init__(self) -> None:
        self._lists: weakref.WeakKeyDictionary[Sequence, list[TokenLogprobs | None]] = (
            weakref.WeakKeyDictionary()
        )

    def step(
        self,
        batch: list[tuple[Sequence, int]],
        hidden: torch.Tensor,
        starts: list[int],
        compute_logits: Callable[[torch.Tensor], torch.Tensor],
    ) -> None:
        for i, (seq, n) in enumerate(batch):
            k, start, prompt = (
                seq.params.prompt_logprobs,
                seq.num_computed_tokens,
                seq.num_prompt_tokens,
            )
            if k is None or start >= prompt:
                continue
            if start == 0:
                self._lists[seq] = [None]  # the first token has no context to be predicted from
            entries = self._lists.get(seq)
            if entries is None:
                raise RuntimeError(f"{seq.seq_id}: prompt logprobs missed the prompt's start")
            rows = min(start + n, prompt - 1) - start  # rows whose next token is a prompt token
            if rows > 0:
                entries += position_logprobs(
                    compute_logits(hidden[starts[i] : starts[i] + rows]),
                    seq.prompt_token_ids[start + 1 : start + 1 + rows],
                    k,
                )
            if start + n >= prompt:
                seq.prompt_logprobs = self._lists.pop(seq)


def position_logprobs(logits: torch.Tensor, targets: list[int], k: int) -> list[TokenLogprobs]:
    """Per row: the top k tokens in descending order, then the target if it is not among them."""
    logprobs = logits.float().log_softmax(dim=-1)
    target = torch.tensor(targets, device=logprobs.device)
    chosen = logprobs.gather(1, target[:, None])[:, 0].tolist()
    top_values, top_ids = logprobs.topk(k, dim=-1) if k else (None, None)
    out = []
    for j, token in enumerate(targets):
        entry: TokenLogprobs = {}
        if top_ids is not None and top_values is not None:
            entry = dict(zip(top_ids[j].tolist(), top_values[j].tolist()))
        entry.setdefault(token, chosen[j])
        out.append(entry)
    return out
