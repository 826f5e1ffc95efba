"""The runner's side of speculative decoding: a sequence scheduled for more tokens than it has
(its last token and k drafts, `Sequence.spec_token_ids`) gets the target's logits at all k + 1
positions from the one forward pass, and the rejection sampler decides what it emits."""

from __future__ import annotations

from collections.abc import Callable

import torch

from pagoda.engine.core.sequence import Sequence
from pagoda.engine.sample.sampler import (
    SampledBatch,
    Sampler,
    SamplerOutput,
    SamplingRow,
    has_penalties,
)
from pagoda.engine.spec_decode.rejection_sampler import verify


def verifying_sequences(batch: list[tuple[Sequence, int]]) -> dict[Sequence, int]:
    """The batch's sequences that verify drafts this step, each with its number of drafts k."""
    return {
        seq: seq.num_computed_tokens + n - seq.num_tokens
        for seq, n in batch
        if seq.num_computed_tokens + n > seq.num_tokens
    }


def verify_drafts(
    sampler: Sampler,
    batch: list[tuple[Sequence, int]],
    logits: torch.Tensor,
    generator: Callable[[Sequence], torch.Generator | None],
) -> tuple[torch.Tensor, list[list[int]]]:
    """Split the step's logits (rows in batch order: one per sampling sequence, k + 1 per verifying
    one) into the rows the sampler takes as usual and each verifying sequence's emitted tokens."""
    plain: list[int] = []
    spec: list[int] = []
    rows: list[SamplingRow] = []
    drafts: list[list[int]] = []
    at = 0
    for seq, n in batch:
        k = seq.num_computed_tokens + n - seq.num_tokens
        if k == 0:
            plain.append(at)
            at += 1
        elif k > 0:
            spec += range(at, at + k + 1)
            at += k + 1
            draft = seq.spec_token_ids[:k]
            drafts.append(draft)
            rows += position_rows(seq, draft, generator(seq))
    emitted = verify(sampler, logits[spec], rows, drafts)
    return logits[plain], emitted


def position_rows(
    seq: Sequence, draft: list[int], generator: torch.Generator | None
) -> list[SamplingRow]:
    """A sampling row per verified position: position j follows the output and draft[:j], which
    is what penalties, min_tokens and bad words read (copied only for a request that reads it)."""
    params = seq.params
    reads_history = has_penalties(params) or params.min_tokens or params.bad_words_token_ids
    return [
        SamplingRow(
            params,
            seq.prompt_token_ids,
            seq.output_token_ids + draft[:j] if reads_history else seq.output_token_ids,
            generator,
        )
        for j in range(len(draft) + 1)
    ]


class VerifiedSamples:
    """The step's samples: the sampler's rows, then one row per verifying sequence whose first
    emitted token is its token and the rest are in `more_token_ids`."""

    def __init__(self, plain: SampledBatch | None, emitted: list[list[int]]) -> None:
        self.plain, self.emitted = plain, emitted

    def result(self) -> SamplerOutput:
        out = self.plain.result() if self.plain is not None else SamplerOutput([], None, [])
        base = len(out.token_ids)
        out.token_ids = [*out.token_ids, *(e[0] for e in self.emitted)]
        if out.logprobs is not None:  # verifying rows never ask for logprobs (see policy.py)
            out.logprobs = [*out.logprobs, *[0.0] * len(self.emitted)]
        out.top_logprobs = [*out.top_logprobs, *[None] * len(self.emitted)]
        out.more_token_ids = {base + i: e[1:] for i, e in enumerate(self.emitted)}
        return out
