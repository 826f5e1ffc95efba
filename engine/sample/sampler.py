"""The batched sampler: one token per sequence from the model's logits, per-request parameters.

Stages in vLLM's order: logit_bias, min_tokens, penalties, then greedy argmax, or temperature,
min_p, top_k / top_p and a random draw. Each stage builds its per-row tensors once and runs over
the whole batch (or the rows that need it); a stage no row needs is skipped. Logprobs come from the
raw logits, before any of this, as vLLM reports them by default. The only host sync is at the end.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from pagoda.engine.outputs import TokenLogprobs
from pagoda.engine.sample.penalties import apply_penalties
from pagoda.engine.sample.truncation import apply_min_p, apply_top_k, apply_top_k_top_p
from pagoda.engine.sampling_params import SamplingParams


@dataclass
class SamplingRow:
    """One sequence to sample one token for."""
    params: SamplingParams
    prompt_token_ids: list[int]
    output_token_ids: list[int]  # generated so far (for penalties and min_tokens)
    generator: torch.Generator | None = None  # the request's own, from make_generator, when seeded


@dataclass
class SamplerOutput:
    token_ids: list[int]  # one per row
    logprobs: list[float]  # the chosen token's logprob, one per row
    # Where params.logprobs is set: the top-k tokens in descending order, then the chosen token
    # if it is not among them.
    top_logprobs: list[TokenLogprobs | None]


def make_generator(seed: int, device: torch.device | str) -> torch.Generator:
    """The random stream of one seeded request; it lives as long as the request."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def has_penalties(params: SamplingParams) -> bool:
    return (params.repetition_penalty != 1.0 or params.presence_penalty != 0.0
            or params.frequency_penalty != 0.0)


def random_sample(probs: torch.Tensor, generators: list[torch.Generator | None]) -> torch.Tensor:
    """argmax(probs / q) with q ~ Exp(1) is a draw from probs (the exponential race).

    A seeded row draws its q from its own generator, so its tokens depend on nothing else in the
    batch; the unseeded rows share one draw from the default generator.
    """
    q = torch.empty_like(probs)
    if any(g is None for g in generators):
        q.exponential_()
    for i, generator in enumerate(generators):
        if generator is not None:
            q[i].exponential_(generator=generator)
    # An exact 0 from exponential_ would give inf / nan and pick a dropped token.
    q.clamp_(min=torch.finfo(q.dtype).tiny)
    return probs.div_(q).argmax(dim=-1)


class Sampler:
    def __init__(self, vocab_size: int, eos_token_ids: list[int]) -> None:
        self.vocab_size = vocab_size
        self.eos_token_ids = list(eos_token_ids)

    def validate(self, params: SamplingParams) -> None:
        """Raise ValueError (fit for an HTTP 400) for token ids outside the vocabulary; the engine
        calls it when a request arrives, so that a bad one never reaches a batch."""
        for name, ids in (("logit_bias", params.logit_bias or {}), ("stop_token_ids", params.stop_token_ids)):
            bad = sorted(i for i in ids if not 0 <= i < self.vocab_size)
            if bad:
                raise ValueError(f"{name} has token ids outside the vocabulary (size {self.vocab_size}): {bad}")

    def __call__(self, logits: torch.Tensor, rows: list[SamplingRow]) -> SamplerOutput:
        if logits.dim() != 2 or logits.shape != (len(rows), self.vocab_size):
            raise ValueError(f"logits must be [{len(rows)}, {self.vocab_size}], got {list(logits.shape)}")
        logits = logits.float()
        x = self.process_logits(logits, rows)
        greedy = [i for i, row in enumerate(rows) if row.params.greedy]
        sampled = [i for i, row in enumerate(rows) if not row.params.greedy]
        token_ids = x.argmax(dim=-1) if greedy else None
        if sampled and not greedy:
            token_ids = self._sample(x, rows)
        elif sampled:
            index = torch.tensor(sampled, device=x.device)
            token_ids[index] = self._sample(x[index], [rows[i] for i in sampled])
        return self._logprobs(logits, token_ids, rows)

    def process_logits(self, logits: torch.Tensor, rows: list[SamplingRow]) -> torch.Tensor:
        """logit_bias, min_tokens, penalties: the logits a greedy row takes the argmax of.

        Works on a copy, made only when some row asks for one of them."""
        biased = [(i, t, b) for i, row in enumerate(rows) for t, b in (row.params.logit_bias or {}).items()]
        banned = [(i, t) for i, row in enumerate(rows) if len(row.output_token_ids) < row.params.min_tokens
                  for t in {*self.eos_token_ids, *row.params.stop_token_ids}]
        penalized = [i for i, row in enumerate(rows) if has_penalties(row.params)]
        if not (biased or banned or penalized):
            return logits
        x = logits.clone()
        device = x.device
        if biased:
            r, t, b = zip(*biased)
            x.index_put_((torch.tensor(r, device=device), torch.tensor(t, device=device)),
                         torch.tensor(b, dtype=x.dtype, device=device), accumulate=True)
        if banned:
            r, t = zip(*banned)
            x[torch.tensor(r, device=device), torch.tensor(t, device=device)] = float("-inf")
        if penalized:
            sub = [rows[i] for i in penalized]
            index = torch.tensor(penalized, device=device)
            x[index] = apply_penalties(
                x[index], [r.prompt_token_ids for r in sub], [r.output_token_ids for r in sub],
                [r.params.repetition_penalty for r in sub], [r.params.presence_penalty for r in sub],
                [r.params.frequency_penalty for r in sub])
        return x

    def _sample(self, x: torch.Tensor, rows: list[SamplingRow]) -> torch.Tensor:
        """Temperature, min_p, top_k / top_p, then a random draw; x [len(rows), V] is free to overwrite."""
        temperature = torch.tensor([r.params.temperature for r in rows], dtype=x.dtype, device=x.device)
        x = x / temperature.view(-1, 1)
        min_p = [r.params.min_p for r in rows]
        if any(min_p):
            apply_min_p(x, min_p)
        top_k = [r.params.top_k for r in rows]
        top_p = [r.params.top_p for r in rows]
        if any(p < 1.0 for p in top_p):
            apply_top_k_top_p(x, top_k, top_p)
        elif any(top_k):
            apply_top_k(x, top_k)
        return random_sample(x.softmax(dim=-1), [r.generator for r in rows])

    def _logprobs(self, logits: torch.Tensor, token_ids: torch.Tensor, rows: list[SamplingRow]) -> SamplerOutput:
        normalizer = logits.logsumexp(dim=-1, keepdim=True)
        chosen = logits.gather(1, token_ids.view(-1, 1)) - normalizer
        k = max((r.params.logprobs or 0 for r in rows), default=0)
        top = logits.topk(k, dim=-1) if k else None
        token_list = token_ids.tolist()
        chosen_list = chosen.view(-1).tolist()
        top_ids = top.indices.tolist() if top else None
        top_values = (top.values - normalizer).tolist() if top else None
        top_logprobs: list[TokenLogprobs | None] = []
        for i, row in enumerate(rows):
            wanted = row.params.logprobs
            if wanted is None:
                top_logprobs.append(None)
                continue
            entry = dict(zip(top_ids[i][:wanted], top_values[i][:wanted])) if wanted else {}
            entry.setdefault(token_list[i], chosen_list[i])
            top_logprobs.append(entry)
        return SamplerOutput(token_list, chosen_list, top_logprobs)
