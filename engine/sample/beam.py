"""Beam search for one request, one step at a time, with HF transformers' semantics.

The engine runs the live beams as sequences (forks of one another, sharing KV blocks), hands this
their next-token log-probabilities, and forks / frees sequences as step() says. Scoring follows
transformers' `_beam_search`: a finished hypothesis scores its cumulative logprob divided by
(generated length ** length_penalty); only candidates ranked within the first beam_width may
finish; the search ends when no live beam can beat the worst of beam_width finished ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Beam:
    token_ids: list[int]  # generated so far
    logprob: float  # cumulative


@dataclass
class Hypothesis:
    token_ids: list[int]  # the finished generation, EOS included where it ended on one
    logprob: float
    score: float  # logprob / len(token_ids) ** length_penalty


class BeamSearch:
    def __init__(
        self,
        beam_width: int,
        max_tokens: int,
        eos_token_ids: list[int],
        length_penalty: float = 1.0,
        early_stopping: bool | str = False,
    ) -> None:
        if beam_width < 1 or max_tokens < 1:
            raise ValueError(
                f"beam_width and max_tokens must be at least 1, got {beam_width}, {max_tokens}"
            )
        if early_stopping not in (True, False, "never"):
            raise ValueError(
                f"early_stopping must be true, false or 'never', got {early_stopping!r}"
            )
        self.beam_width = beam_width
        self.max_tokens = max_tokens
        self.eos_token_ids = set(eos_token_ids)
        self.length_penalty = length_penalty
        self.early_stopping = early_stopping
        # Enough candidates that beam_width of them are still live after every EOS is taken out.
        self.num_candidates = max(2, 1 + len(self.eos_token_ids)) * beam_width
        self.beams = [Beam([], 0.0)]  # the live beams, best first
        self.finished: list[Hypothesis] = []  # at most beam_width, best first
        self.done = False

    def step(self, logprobs: torch.Tensor) -> list[int]:
        """Advance by one token. logprobs [len(self.beams), V]: each live beam's next-token
        log-probabilities (log_softmax of its processed logits). Returns, for each new live beam,
        the index of the beam it extends (the engine forks that sequence and appends the token)."""
        if self.done:
            raise RuntimeError("the beam search is done")
        if logprobs.shape[0] != len(self.beams):
            raise ValueError(
                f"logprobs has {logprobs.shape[0]} rows for {len(self.beams)} live beams"
            )
        vocab_size = logprobs.shape[1]
        total = logprobs.float() + torch.tensor([b.logprob for b in self.beams]).to(
            logprobs.device
        ).view(-1, 1)
        values, indices = total.view(-1).topk(min(self.num_candidates, total.numel()))
        length = len(self.beams[0].token_ids) + 1
        candidates = []  # (parent, token, logprob, ends here)
        for value, index in zip(values.tolist(), indices.tolist()):
            token = index % vocab_size
            ends = token in self.eos_token_ids or length >= self.max_tokens
            candidates.append((index // vocab_size, token, value, ends))
        self._finish(candidates, length)
        # Live beams: the best candidates that did not end (ended ones only fill in, as in transformers).
        live = sorted(candidates, key=lambda c: c[3])[
            : self.beam_width
        ]  # stable: keeps score order
        parents = [parent for parent, _, _, _ in live]
        self.beams = [Beam(self.beams[p].token_ids + [t], v) for p, t, v, _ in live]
        self.done = all(c[3] for c in candidates) or not self._can_improve(length)
        return parents

    def _finish(self, candidates: list[tuple[int, int, float, bool]], length: int) -> None:
        """Candidates ranked within the first beam_width that end become hypotheses (the rest only
        back the live beams up). A search that could not improve has already stopped."""
        for parent, token, value, ends in candidates[: self.beam_width]:
            if ends:
                score = value / length**self.length_penalty
                self.finished.append(
                    Hypothesis(self.beams[parent].token_ids + [token], value, score)
                )
        self.finished.sort(key=lambda h: h.score, reverse=True)
        del self.finished[self.beam_width :]

    def _can_improve(self, length: int) -> bool:
        """Could the best live beam still beat the worst finished hypothesis? (transformers'
        heuristic: it assumes the current length unless early_stopping='never' favours longer)."""
        if len(self.finished) < self.beam_width:
            return True
        if self.early_stopping is True:
            return False
        if self.early_stopping == "never" and self.length_penalty > 0:
            length = self.max_tokens
        best_score: float = self.beams[0].logprob / length**self.length_penalty
        return best_score > self.finished[-1].score

    def best(self, n: int) -> list[Hypothesis]:
        """The n best finished hypotheses (the search must be done)."""
        if not self.done:
            raise RuntimeError("the beam search is not done")
        return self.finished[:n]
