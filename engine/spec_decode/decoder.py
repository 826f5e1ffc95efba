"""The engine's side of speculative decoding: before each step, drafts for the running sequences
that decode; after it, the verified tokens taken in, the rejected slots rolled back, and the
counts vLLM reports (vllm:spec_decode_*: the engine core ships each step's with its stats)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from pagoda.engine.config import EngineConfig
from pagoda.engine.core.sequence import Sequence
from pagoda.engine.sampling_params import SamplingParams
from pagoda.engine.spec_decode.config import SpeculativeConfig
from pagoda.engine.spec_decode.ngram import NgramProposer
from pagoda.engine.spec_decode.policy import why_not_speculate

log = logging.getLogger(__name__)


class Proposer(Protocol):
    def propose_batch(self, requests: list[tuple[Sequence, int]]) -> list[list[int]]:
        """Up to `room` tokens to follow each (sequence, room)."""
        ...


@dataclass
class SpecDecodeStats:
    """Totals since start, under vLLM's meanings: a draft is one sequence's proposal in a step."""

    num_drafts: int = 0
    num_draft_tokens: int = 0
    num_accepted_tokens: int = 0
    num_accepted_tokens_per_pos: list[int] = field(default_factory=list)

    def record(self, num_draft_tokens: int, num_accepted: int) -> None:
        self.num_drafts += 1
        self.num_draft_tokens += num_draft_tokens
        self.num_accepted_tokens += num_accepted
        for pos in range(num_accepted):
            self.num_accepted_tokens_per_pos[pos] += 1


def make_proposer(config: EngineConfig, spec: SpeculativeConfig, runner: Any) -> Proposer:
    """The proposer `spec` names; a draft model loads here, beside the target's `runner`."""
    if spec.method == "ngram":
        return NgramProposer(spec.prompt_lookup_min, spec.prompt_lookup_max)
    from pagoda.engine.spec_decode.draft_model import DraftModelProposer  # torch model code

    return DraftModelProposer(config, spec, runner.model_config.vocab_size, runner.num_blocks)


class SpecDecoder:
    def __init__(
        self,
        config: SpeculativeConfig,
        proposer: Proposer,
    ) -> None:
        self.k = config.num_speculative_tokens
        self.proposer = proposer
        self.stats = SpecDecodeStats(num_accepted_tokens_per_pos=[0] * self.k)

    def propose(self, running: list[Sequence], max_model_len: int) -> None:
        """Set each decoding sequence's drafts for the next step: at most k, and no more than
        its max_tokens and the model's context leave room for after the token it will emit."""
        requests: list[tuple[Sequence, int]] = []
        for seq in running:
            seq.spec_token_ids = []
            if (
                seq.num_tokens - seq.num_computed_tokens != 1
                or not seq.output_token_ids
                or seq.forks
                or not self._speculates(seq)
            ):
                continue
            max_tokens = seq.params.max_tokens
            room = min(
                self.k,
                max_model_len - seq.num_tokens - 1,
                self.k if max_tokens is None else max_tokens - len(seq.output_token_ids) - 1,
            )
            if room > 0:
                requests.append((seq, room))
        for (seq, _), draft in zip(requests, self.proposer.propose_batch(requests)):
            seq.spec_token_ids = draft

    def _speculates(self, seq: Sequence) -> bool:
        return why_not_speculate(seq.params) is None

    @staticmethod
    def announce(request_id: str, params: SamplingParams) -> None:
        """Say, once per request, when it will not speculate and why."""
        reason = why_not_speculate(params)
        if reason is not None:
            log.info("request %s does not speculate: %s", request_id, reason)

    def take_verified(self, seq: Sequence, more_token_ids: list[int]) -> None:
        """The step's first emitted token is in place; put the rest after it and roll the
        computed count back to what is verified: every token but the last emitted one, whose
        K/V the next step computes. The rejected drafts' slots are overwritten then, and no
        block past the verified tokens is hashed (cache_full_blocks reads the computed count)."""
        self.stats.record(len(seq.spec_token_ids), len(more_token_ids))
        seq.output_token_ids.extend(more_token_ids)
        seq.num_computed_tokens = seq.num_tokens - 1
        seq.spec_token_ids = []
