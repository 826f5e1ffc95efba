"""The batched sampler: one token per sequence from the model's logits, per-request parameters.

Stages in vLLM's order: allowed_token_ids, the structured-output grammar's bitmask, logit_bias,
min_tokens, penalties, then greedy argmax, or temperature, min_p, top_k / top_p and a random draw. Each stage builds its per-row tensors once and runs over
the whole batch (or the rows that need it); a stage no row needs is skipped. Logprobs come from the
raw logits, before any of this, as vLLM reports them by default. The only host sync is at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from pagoda.engine.outputs import TokenLogprobs
from pagoda.engine.sample.bad_words import banned_by_bad_words
from pagoda.engine.sample.device_tensor import device_tensor
from pagoda.engine.sample.grammar_mask import apply_grammar_masks
from pagoda.engine.sample.penalties import apply_penalties
from pagoda.engine.sample.truncation import apply_min_p, apply_top_k, apply_top_k_top_p
from pagoda.engine.sampling_params import F32_MAX, SamplingParams
from pagoda.engine.structured.backend import GrammarState


@dataclass
class SamplingRow:
    """One sequence to sample one token for."""

    params: SamplingParams
    prompt_token_ids: list[int]
    output_token_ids: list[int]  # generated so far (for penalties and min_tokens)
    generator: torch.Generator | None = None  # the request's own, from make_generator, when seeded
    grammar: GrammarState | None = None  # structured outputs: the sequence's grammar state


@dataclass
class SamplerOutput:
    token_ids: list[int]  # one per row
    # The chosen token's logprob, one per row; None when no row asks for logprobs (a softmax
    # over the vocabulary for every row is then work nobody reads).
    logprobs: list[float] | None
    # Where params.logprobs is set: the top-k tokens in descending order, then the chosen token
    # if it is not among them.
    top_logprobs: list[TokenLogprobs | None]
    # Speculative decoding: for a row that verified drafts, the tokens it emits after token_ids[i]
    # (the accepted drafts past the first, and the target's own token); every verifying row has
    # an entry, empty when only its first token stands.
    more_token_ids: dict[int, list[int]] = field(default_factory=dict)


def make_generator(seed: int, device: torch.device | str) -> torch.Generator:
    """The random stream of one seeded request; it lives as long as the request."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def has_penalties(params: SamplingParams) -> bool:
    return (
        params.repetition_penalty != 1.0
        or params.presence_penalty != 0.0
        or params.frequency_penalty != 0.0
    )


def random_sample(logits: torch.Tensor, generators: list[torch.Generator | None]) -> torch.Tensor:
    """One draw per row from softmax(logits), by inverting the row's cumulative distribution.

    One uniform number per row (not one per token, as the exponential race needs: on the CPU
    drawing V random numbers costs several softmaxes). A seeded row draws it from its own
    generator, so its tokens depend on nothing else in the batch; the others share one draw.
    """
    weights = (logits - logits.amax(dim=-1, keepdim=True)).exp_()  # dropped tokens weigh 0
    cdf = weights.cumsum(dim=-1, dtype=torch.float64)
    u = torch.empty(len(generators), 1, dtype=torch.float64, device=logits.device)
    if any(g is None for g in generators):
        u.uniform_()
    for i, generator in enumerate(generators):
        if generator is not None:
            u[i].uniform_(generator=generator)
    total = cdf[:, -1:]
    # The first token whose cdf exceeds u * total; kept below total so that rounding never
    # lands past the last token of positive weight.
    target = torch.minimum(u * total, torch.nextafter(total, torch.zeros_like(total)))
    # A row with no token left (all -inf: contradictory constraints) has NaN weights and would
    # draw id V, which the next step's embedding cannot look up: it takes the last id instead.
    return torch.searchsorted(cdf, target, right=True).clamp_(max=logits.shape[-1] - 1).view(-1)


class SampledBatch:
    """One step's samples on their way to the host. `token_ids` stays on the device, where the next
    step's inputs can take it before the host has seen it (async scheduling); result() waits for
    the one copy to the host and unpacks it."""

    def __init__(
        self, token_ids: torch.Tensor, packed: torch.Tensor, rows: list[SamplingRow], k: int
    ) -> None:
        self.token_ids = token_ids
        self.rows, self.k = rows, k
        self.ready = None
        if packed.device.type == "cuda":  # start the copy now; result() only waits for it
            self.packed = torch.empty(packed.shape, dtype=packed.dtype, pin_memory=True)
            self.packed.copy_(packed, non_blocking=True)
            self.ready = torch.cuda.Event()
            self.ready.record()
        else:
            self.packed = packed

    def result(self) -> SamplerOutput:
        """The samples on the host; each constrained row's grammar advances by its token."""
        if self.ready is not None:
            self.ready.synchronize()
        if self.packed.dim() == 1:  # token ids alone: no row asked for logprobs
            token_list = self.packed.tolist()
            self._advance_grammars(token_list)
            return SamplerOutput(token_list, None, [None] * len(self.rows))
        packed, k = self.packed.tolist(), self.k
        token_list = [int(p[0]) for p in packed]
        self._advance_grammars(token_list)
        chosen = [p[1] for p in packed]
        top_logprobs: list[TokenLogprobs | None] = []
        for row, p, token, logprob in zip(self.rows, packed, token_list, chosen):
            wanted = row.params.logprobs
            if wanted is None:
                top_logprobs.append(None)
                continue
            entry = {int(t): v for t, v in zip(p[2 : 2 + wanted], p[2 + k : 2 + k + wanted])}
            entry.setdefault(token, logprob)
            top_logprobs.append(entry)
        return SamplerOutput(token_list, chosen, top_logprobs)

    def _advance_grammars(self, token_ids: list[int]) -> None:
        for row, token in zip(self.rows, token_ids):
            if row.grammar is not None:
                row.grammar.accept(token)


class Sampler:
    def __init__(self, vocab_size: int, eos_token_ids: list[int]) -> None:
        self.vocab_size = vocab_size
        self.eos_token_ids = list(eos_token_ids)

    def __call__(self, logits: torch.Tensor, rows: list[SamplingRow]) -> SamplerOutput:
        return self.start(logits, rows).result()

    def start(self, logits: torch.Tensor, rows: list[SamplingRow]) -> SampledBatch:
        """Sample on the logits' device; the host copy is under way when this returns."""
        if logits.dim() != 2 or logits.shape != (len(rows), self.vocab_size):
            raise ValueError(
                f"logits must be [{len(rows)}, {self.vocab_size}], got {list(logits.shape)}"
            )
        if not rows:
            empty = logits.new_zeros(0, dtype=torch.long)
            return SampledBatch(empty, empty, rows, 0)
        logits = logits.float()
        x = self.process_logits(logits, rows)
        sampled = [i for i, row in enumerate(rows) if not row.params.greedy]
        if len(sampled) == len(rows):
            token_ids = self._sample(x, rows)
        else:
            token_ids = x.argmax(dim=-1)
            if sampled:
                index = device_tensor(sampled, torch.long, x.device)
                token_ids[index] = self._sample(x[index], [rows[i] for i in sampled])
        return self._output(logits, token_ids, rows)

    def process_logits(self, logits: torch.Tensor, rows: list[SamplingRow]) -> torch.Tensor:
        """logit_bias, min_tokens, bad_words, penalties: the logits a greedy row takes the argmax
        of.

        Works on a copy, made only when some row asks for one of them."""
        biased = [
            (i, t, b)
            for i, row in enumerate(rows)
            for t, b in (row.params.logit_bias or {}).items()
        ]
        banned = [
            (i, t)
            for i, row in enumerate(rows)
            if len(row.output_token_ids) < row.params.min_tokens
            for t in {*self.eos_token_ids, *row.params.stop_token_ids}
        ]
        banned += [
            (i, t)
            for i, row in enumerate(rows)
            if row.params.bad_words_token_ids
            for t in banned_by_bad_words(row.params.bad_words_token_ids, row.output_token_ids)
        ]
        penalized = [i for i, row in enumerate(rows) if has_penalties(row.params)]
        constrained = any(row.grammar is not None for row in rows)
        restricted = [i for i, row in enumerate(rows) if row.params.allowed_token_ids]
        if not (biased or banned or penalized or constrained or restricted):
            return logits
        x = logits.clone()
        device = x.device
        if restricted:
            keep = torch.zeros_like(x, dtype=torch.bool)
            r, t = zip(
                *((i, tok) for i in restricted for tok in rows[i].params.allowed_token_ids or ())
            )
            keep[device_tensor(r, torch.long, device), device_tensor(t, torch.long, device)] = True
            index = device_tensor(restricted, torch.long, device)
            x[index] = x[index].masked_fill(~keep[index], float("-inf"))
        if constrained:
            bans: dict[int, set[int]] = {}
            for i, tok in banned:
                bans.setdefault(i, set()).add(tok)
            apply_grammar_masks(x, rows, bans)
        if biased:
            r, t, b = zip(*biased)
            x.index_put_(
                (device_tensor(r, torch.long, device), device_tensor(t, torch.long, device)),
                device_tensor(b, x.dtype, device),
                accumulate=True,
            )
        if banned:
            r, t = zip(*banned)
            # A tensor value: a Python float would be copied to the GPU with a sync.
            x.index_put_(
                (device_tensor(r, torch.long, device), device_tensor(t, torch.long, device)),
                x.new_full((), float("-inf")),
            )
        if penalized:
            sub = [rows[i] for i in penalized]
            rows_index = (
                None if len(sub) == len(rows) else device_tensor(penalized, torch.long, device)
            )
            penalties = (
                [r.prompt_token_ids for r in sub],
                [r.output_token_ids for r in sub],
                [r.params.repetition_penalty for r in sub],
                [r.params.presence_penalty for r in sub],
                [r.params.frequency_penalty for r in sub],
            )
            if rows_index is None:
                apply_penalties(x, *penalties)
            else:
                x[rows_index] = apply_penalties(x[rows_index], *penalties)
        return x

    def _sample(self, x: torch.Tensor, rows: list[SamplingRow]) -> torch.Tensor:
        """Temperature, min_p, top_k / top_p, then a random draw, for rows [len(rows), V]."""
        return random_sample(self.warp(x, rows), [r.generator for r in rows])

    def warp(self, x: torch.Tensor, rows: list[SamplingRow]) -> torch.Tensor:
        """Temperature, min_p, top_k / top_p: the logits whose softmax a random row draws from."""
        params = [r.params for r in rows]
        x = x / device_tensor([p.temperature for p in params], x.dtype, x.device).view(-1, 1)
        # Penalties and a low temperature may push extreme logits past float32's range; an inf
        # would make the draw's weights NaN. Clamped, every row keeps a most likely token.
        x.nan_to_num_(nan=float("-inf"), posinf=F32_MAX, neginf=float("-inf"))
        if any(p.min_p for p in params):
            apply_min_p(x, device_tensor([p.min_p for p in params], x.dtype, x.device))
        k_max = max(p.top_k for p in params)
        top_k = device_tensor([p.top_k for p in params], torch.long, x.device) if k_max else None
        if any(p.top_p < 1.0 for p in params):
            apply_top_k_top_p(x, top_k, device_tensor([p.top_p for p in params], x.dtype, x.device))
        elif top_k is not None:
            apply_top_k(x, top_k, k_max)
        return x

    def _output(
        self, logits: torch.Tensor, token_ids: torch.Tensor, rows: list[SamplingRow]
    ) -> SampledBatch:
        """Logprobs from the raw logits, packed with the token ids so that one copy brings all."""
        if all(r.params.logprobs is None for r in rows):
            return SampledBatch(token_ids, token_ids, rows, 0)
        normalizer = logits.logsumexp(dim=-1, keepdim=True)
        columns = [
            token_ids.view(-1, 1).double(),
            (logits.gather(1, token_ids.view(-1, 1)) - normalizer).double(),
        ]
        k = max((r.params.logprobs or 0 for r in rows), default=0)
        if k:
            top = logits.topk(k, dim=-1)
            columns += [
                top.indices.double(),
                (top.values - normalizer).double(),
            ]  # ids < 2**53: exact
        return SampledBatch(token_ids, torch.cat(columns, dim=1), rows, k)
