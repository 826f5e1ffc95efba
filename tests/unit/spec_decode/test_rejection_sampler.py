"""The rejection sampler keeps the target's distribution: a chi-square test over many seeded draws
on an 8-token vocabulary, for a one-hot proposal (ngram) and a proposal distribution q; greedy
acceptance by hand."""

from __future__ import annotations

import pytest
import torch

from pagoda.engine.sample.sampler import Sampler, SamplingRow, make_generator
from pagoda.engine.sampling_params import SamplingParams
from pagoda.engine.spec_decode.rejection_sampler import accept_greedy, verify

V = 8
# The chi-square distribution's 0.999 quantile at V - 1 = 7 degrees of freedom: a correct sampler
# fails this test once in a thousand seeds (the seeds are fixed, so it passes or fails for good).
CHI2_7_999 = 24.322


def test_greedy_accepts_while_the_argmax_agrees():
    assert accept_greedy([3, 4, 5], [3, 4, 6, 7]) == [3, 4, 6]
    assert accept_greedy([3, 4, 5], [1, 4, 5, 7]) == [1]
    assert accept_greedy([3, 4, 5], [3, 4, 5, 7]) == [3, 4, 5, 7]  # all accepted: a bonus


def _verify_many(p: torch.Tensor, q: torch.Tensor | None, draft_of, n: int) -> list[list[int]]:
    """n sequences, one draft token each, verified in one batch; each seeded on its own."""
    sampler = Sampler(V, eos_token_ids=[])
    params = SamplingParams(temperature=1.0)
    logits = p.log().repeat(n, 1)  # rows: position 0, then the bonus position, per sequence
    rows, drafts = [], []
    for i in range(n):
        g = make_generator(1000 + i, "cpu")
        rows += [SamplingRow(params, [0], [], g), SamplingRow(params, [0], [], g)]
        drafts.append([draft_of(i)])
    probs = None if q is None else [q.view(1, V)] * n
    return verify(sampler, logits, rows, drafts, probs)


@pytest.mark.parametrize("proposal", ["one-hot", "distribution"])
def test_first_token_is_distributed_as_the_target(proposal):
    torch.manual_seed(7)
    p = torch.rand(V).pow(2) + 0.01
    p /= p.sum()
    n = 8000
    if proposal == "one-hot":
        q = None
        draws = [i % 3 for i in range(n)]  # fixed drafts, as ngram names them
        emitted = _verify_many(torch.stack([p, p]), q, lambda i: draws[i], n)
    else:
        q = torch.rand(V) + 0.05
        q /= q.sum()
        gen = torch.Generator().manual_seed(3)
        draws = torch.multinomial(q, n, replacement=True, generator=gen).tolist()
        emitted = _verify_many(torch.stack([p, p]), q, lambda i: draws[i], n)
    first = torch.bincount(torch.tensor([e[0] for e in emitted]), minlength=V).double()
    expected = p.double() * n
    statistic = float(((first - expected) ** 2 / expected).sum())
    assert statistic < CHI2_7_999, (first / n, p)
    # Acceptance is real: some drafts stand (then a bonus follows), some are replaced.
    lengths = {len(e) for e in emitted}
    assert lengths == {1, 2}


def test_a_rejected_draft_is_never_emitted_in_its_place():
    p = torch.tensor([0.5, 0.5, 0, 0, 0, 0, 0, 0]) + 1e-12
    p /= p.sum()
    emitted = _verify_many(torch.stack([p, p]), None, lambda i: 0, 400)
    for e in emitted:
        assert e[0] in (0, 1)
        if e[0] == 1:  # draft 0 rejected: the residual excludes it, and nothing follows
            assert len(e) == 1


def test_top_k_applies_at_every_verified_position():
    torch.manual_seed(1)
    logits = torch.randn(2, V)
    sampler = Sampler(V, eos_token_ids=[])
    params = SamplingParams(temperature=1.0, top_k=2)
    allowed = [set(logits[j].topk(2).indices.tolist()) for j in range(2)]
    for seed in range(200):
        g = make_generator(seed, "cpu")
        rows = [SamplingRow(params, [0], [], g), SamplingRow(params, [0], [], g)]
        draft = seed % V
        [out] = verify(sampler, logits, rows, [[draft]])
        for j, token in enumerate(out):
            assert token in allowed[j]
