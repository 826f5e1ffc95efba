"""The sampler against direct reference computations on small random logits."""

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pagoda.engine.sample.penalties import apply_penalties
from pagoda.engine.sample.sampler import Sampler, SamplerOutput, SamplingRow, make_generator
from pagoda.engine.sample.truncation import CANDIDATES, apply_min_p, apply_top_k, apply_top_k_top_p
from pagoda.engine.sampling_params import SamplingParams

V = 50
EOS = [2, 7]


def row(prompt=(1, 2, 3), output=(), generator=None, **params) -> SamplingRow:
    return SamplingRow(SamplingParams(**params), list(prompt), list(output), generator)


def logits_for(seed: int, n: int, vocab: int = V) -> torch.Tensor:
    return torch.randn(n, vocab, generator=torch.Generator().manual_seed(seed)) * 3


def kept(x: torch.Tensor) -> set[int]:
    return set(torch.isfinite(x).nonzero().view(-1).tolist())


# -- greedy ---------------------------------------------------------------------------------------


def test_greedy_is_argmax_and_leaves_the_input_alone():
    logits = logits_for(0, 8)
    before = logits.clone()
    out = Sampler(V, EOS)(
        logits, [row(temperature=0.0, repetition_penalty=1.5, output=[4]) for _ in range(8)]
    )
    processed = Sampler(V, EOS).process_logits(
        logits, [row(repetition_penalty=1.5, output=[4])] * 8
    )
    assert out.token_ids == processed.argmax(-1).tolist()
    assert torch.equal(logits, before)
    plain = Sampler(V, EOS)(logits, [row(temperature=0.0) for _ in range(8)])
    assert plain.token_ids == logits.argmax(-1).tolist()


def test_greedy_rows_among_sampled_rows_stay_argmax():
    logits = logits_for(1, 6)
    rows = [row(temperature=0.0) if i % 2 else row(temperature=1.5, top_p=0.9) for i in range(6)]
    out = Sampler(V, EOS)(logits, rows)
    assert [out.token_ids[i] for i in (1, 3, 5)] == logits.argmax(-1)[[1, 3, 5]].tolist()


# -- truncation -----------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), ks=st.lists(st.integers(0, V + 5), min_size=1, max_size=6))
def test_top_k_keeps_exactly_the_k_largest(seed, ks):
    x = logits_for(seed, len(ks))
    out = apply_top_k(x.clone(), torch.tensor(ks), max(max(ks), 1))
    for i, k in enumerate(ks):
        expected = set(x[i].argsort(descending=True)[: k or V].tolist())
        assert kept(out[i]) == expected
        assert torch.equal(out[i][list(expected)], x[i][list(expected)])


def reference_top_p(logits: torch.Tensor, p: float) -> set[int]:
    """The smallest set of most likely tokens whose mass is >= p (float64)."""
    probs = logits.double().softmax(-1)
    order = probs.argsort(descending=True).tolist()
    total, chosen = 0.0, set()
    for t in order:
        chosen.add(t)
        total += probs[t].item()
        if total >= p:
            break
    return chosen


def far_from_ties(logits: torch.Tensor, p: float) -> bool:
    cumulative = logits.double().softmax(-1).sort(descending=True).values.cumsum(0)
    return bool((cumulative - p).abs().min() > 1e-4)


@settings(max_examples=80, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    ps=st.lists(st.floats(0.01, 1.0), min_size=1, max_size=5),
    ks=st.lists(st.integers(0, 20), min_size=5, max_size=5),
)
def test_top_p_keeps_the_smallest_set_with_mass_p_after_top_k(seed, ps, ks):
    x = logits_for(seed, len(ps))
    ks = ks[: len(ps)]
    for i, (k, p) in enumerate(zip(ks, ps)):
        top = x[i].clone()
        if k:
            top[top < top.topk(k).values[-1]] = float("-inf")
        assume(p == 1.0 or far_from_ties(top, p))
    out = apply_top_k_top_p(x.clone(), torch.tensor(ks), torch.tensor(ps))
    for i, (k, p) in enumerate(zip(ks, ps)):
        top = x[i].clone()
        if k:
            top[top < top.topk(k).values[-1]] = float("-inf")
        assert kept(out[i]) == (kept(top) if p == 1.0 else reference_top_p(top, p))
        assert torch.equal(out[i][torch.isfinite(out[i])], x[i][torch.isfinite(out[i])])


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), min_ps=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=5))
def test_min_p_drops_tokens_below_the_scaled_max(seed, min_ps):
    x = logits_for(seed, len(min_ps))
    out = apply_min_p(x.clone(), torch.tensor(min_ps))
    for i, min_p in enumerate(min_ps):
        probs = x[i].double().softmax(-1)
        assume(((probs - min_p * probs.max()).abs() > 1e-6).all())
        assert kept(out[i]) == set((probs >= min_p * probs.max()).nonzero().view(-1).tolist())


# -- penalties, logit_bias, min_tokens -------------------------------------------------------------


def reference_penalties(logits, prompt, output, rep, pres, freq):
    x = logits.clone()
    for t in range(x.numel()):
        if t in prompt or t in output:
            x[t] = x[t] / rep if x[t] > 0 else x[t] * rep
        x[t] -= freq * output.count(t) + pres * (t in output)
    return x


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    seqs=st.lists(
        st.tuples(
            st.lists(st.integers(0, V - 1), max_size=8),
            st.lists(st.integers(0, V - 1), max_size=8),
            st.floats(0.5, 2.0),
            st.floats(-2, 2),
            st.floats(-2, 2),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_penalties_match_the_reference(seed, seqs):
    x = logits_for(seed, len(seqs))
    prompts, outputs, reps, pres, freqs = (list(c) for c in zip(*seqs))
    out = apply_penalties(x.clone(), prompts, outputs, reps, pres, freqs)
    for i in range(len(seqs)):
        expected = reference_penalties(x[i], prompts[i], outputs[i], reps[i], pres[i], freqs[i])
        torch.testing.assert_close(out[i], expected)


def test_sampler_applies_penalties_only_to_rows_that_ask():
    x = logits_for(3, 3)
    rows = [
        row(output=[5, 5, 9], repetition_penalty=1.3, presence_penalty=0.4, frequency_penalty=0.2),
        row(output=[5, 5, 9]),
        row(prompt=[], output=[], repetition_penalty=1.3),
    ]
    out = Sampler(V, EOS).process_logits(x, rows)
    torch.testing.assert_close(
        out[0], reference_penalties(x[0], [1, 2, 3], [5, 5, 9], 1.3, 0.4, 0.2)
    )
    assert torch.equal(out[1], x[1]) and torch.equal(out[2], x[2])


def test_logit_bias_adds_to_the_named_tokens():
    x = torch.zeros(2, V)
    out = Sampler(V, EOS).process_logits(x, [row(logit_bias={4: 5.0, 9: -100.0}), row()])
    expected = torch.zeros(V)
    expected[4], expected[9] = 5.0, -100.0
    assert torch.equal(out[0], expected) and torch.equal(out[1], torch.zeros(V))
    assert Sampler(V, EOS)(x, [row(temperature=1.0, logit_bias={4: 100.0})] * 2).token_ids[0] == 4


@pytest.mark.parametrize("ignore_eos", [False, True])
def test_min_tokens_masks_eos_and_stop_ids_until_reached(ignore_eos):
    sampler = Sampler(V, EOS)
    x = torch.zeros(1, V)
    params = dict(min_tokens=3, stop_token_ids=[11], ignore_eos=ignore_eos)
    early = sampler.process_logits(x, [row(output=[5, 6], **params)])
    # vLLM masks the EOS ids for min_tokens whether or not ignore_eos is set.
    assert set((early[0] == float("-inf")).nonzero().view(-1).tolist()) == {2, 7, 11}
    assert torch.equal(sampler.process_logits(x, [row(output=[5, 6, 7], **params)]), x)
    eos_first = torch.zeros(1, V)
    eos_first[0, 2], eos_first[0, 11], eos_first[0, 30] = 10.0, 9.0, 1.0
    assert sampler(eos_first, [row(temperature=0.0, output=[5], **params)]).token_ids == [30]
    assert sampler(eos_first, [row(temperature=0.0, output=[5, 5, 5], **params)]).token_ids == [2]


# -- the draw ---------------------------------------------------------------------------------------


def reference_distribution(
    logits: torch.Tensor, temperature: float, top_k: int, top_p: float
) -> torch.Tensor:
    x = logits.double() / temperature
    if top_k:
        x[x < x.topk(top_k).values[-1]] = float("-inf")
    keep = reference_top_p(x, top_p)
    x[[t for t in range(x.numel()) if t not in keep]] = float("-inf")
    return x.softmax(-1)


@pytest.mark.parametrize("seeded", [False, True])
@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.7, 4, 1.0), (1.3, 0, 0.8)])
def test_draws_follow_the_distribution(seeded, temperature, top_k, top_p):
    torch.manual_seed(0)
    logits = torch.tensor([1.0, 0.5, 0.0, -0.5, 0.8])
    n = 4000
    rows = [
        row(
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            generator=make_generator(i, "cpu") if seeded else None,
        )
        for i in range(n)
    ]
    tokens = Sampler(5, [])(logits.expand(n, 5).contiguous(), rows).token_ids
    counts = torch.bincount(torch.tensor(tokens), minlength=5).double()
    expected = reference_distribution(logits, temperature, top_k, top_p) * n
    assert counts[expected == 0].sum() == 0
    chi2 = (((counts - expected) ** 2)[expected > 0] / expected[expected > 0]).sum().item()
    assert chi2 < 25, (counts.tolist(), expected.tolist())  # df <= 4: p < 1e-4 by chance


SEEDED_PARAMS = st.fixed_dictionaries(
    {
        "temperature": st.floats(0.3, 2.0),
        "top_k": st.integers(0, 30),
        "top_p": st.floats(0.3, 1.0),
        "min_p": st.floats(0.0, 0.2),
        "repetition_penalty": st.floats(1.0, 1.5),
        "presence_penalty": st.floats(0, 1),
    }
)
OTHER_ROW = st.fixed_dictionaries(
    {
        "temperature": st.sampled_from([0.0, 0.5, 1.0]),
        "top_k": st.integers(0, 5),
        "top_p": st.floats(0.5, 1.0),
        "seed": st.one_of(st.none(), st.integers(0, 100)),
        "logprobs": st.one_of(st.none(), st.integers(0, 5)),
    }
)


@settings(max_examples=25, deadline=None)
@given(
    params=SEEDED_PARAMS,
    seed=st.integers(0, 2**31),
    others=st.lists(OTHER_ROW, max_size=6),
    position=st.integers(0, 6),
    data_seed=st.integers(0, 1000),
)
def test_a_seeded_row_samples_the_same_alone_or_in_any_batch(
    params, seed, others, position, data_seed
):
    vocab = 300
    sampler = Sampler(vocab, [0])
    position = min(position, len(others))
    gen_alone, gen_batched = make_generator(seed, "cpu"), make_generator(seed, "cpu")
    other_gens = [
        make_generator(o["seed"], "cpu") if o["seed"] is not None else None for o in others
    ]
    alone, batched = [], []
    for step in range(6):
        x = logits_for(data_seed * 100 + step, 1 + len(others), vocab)
        mine = x[:1]
        out = sampler(mine, [row(output=alone, generator=gen_alone, seed=seed, **params)])
        alone.append(out.token_ids[0])
        rows = [row(output=[1, 2], generator=g, **o) for o, g in zip(others, other_gens)]
        rows.insert(position, row(output=batched, generator=gen_batched, seed=seed, **params))
        batch = torch.cat([x[1 : position + 1], mine, x[position + 1 :]])
        batched.append(sampler(batch, rows).token_ids[position])
    assert alone == batched
    # And the seed decides: a fresh generator of the same seed replays the sequence.
    replay, gen = [], make_generator(seed, "cpu")
    for step in range(6):
        x = logits_for(data_seed * 100 + step, 1 + len(others), vocab)[:1]
        replay.append(
            sampler(x, [row(output=replay, generator=gen, seed=seed, **params)]).token_ids[0]
        )
    assert replay == alone


# -- logprobs ---------------------------------------------------------------------------------------


def test_logprobs_are_the_raw_log_softmax():
    x = logits_for(4, 4)
    rows = [
        row(temperature=0.0, logprobs=3),
        row(temperature=0.5, repetition_penalty=1.8, output=[1], logprobs=0),
        row(temperature=2.0, top_k=2, logprobs=5, logit_bias={0: 50.0}),
        row(),
    ]
    out = Sampler(V, EOS)(x, rows)
    reference = x.log_softmax(-1)
    for i, token in enumerate(out.token_ids):
        assert out.logprobs[i] == pytest.approx(reference[i, token].item(), abs=1e-5)
    assert out.token_ids[2] == 0  # the bias decided the draw, the logprob stays the raw one
    assert out.top_logprobs[3] is None
    assert out.top_logprobs[1] == {out.token_ids[1]: pytest.approx(out.logprobs[1])}
    for i, k in ((0, 3), (2, 5)):
        entry = out.top_logprobs[i]
        top = reference[i].topk(k)
        assert list(entry)[:k] == top.indices.tolist()  # descending
        assert list(entry.values())[:k] == pytest.approx(top.values.tolist(), abs=1e-5)
        assert entry[out.token_ids[i]] == pytest.approx(out.logprobs[i])
        assert len(entry) == k + (out.token_ids[i] not in top.indices.tolist())
    assert all(math.isfinite(v) for v in out.logprobs)
    # No row asks: no softmax over the vocabulary, and the same tokens.
    quiet = Sampler(V, EOS)(x[:2], [row(temperature=0.0), row(temperature=0.0)])
    assert quiet.logprobs is None and quiet.top_logprobs == [None, None]
    assert quiet.token_ids == x[:2].argmax(-1).tolist()


# -- bad input ---------------------------------------------------------------------------------------


def test_bad_input_is_refused_clearly_and_an_empty_batch_is_fine():
    sampler = Sampler(V, EOS)
    with pytest.raises(ValueError, match=r"logits must be \[2, 50\]"):
        sampler(torch.zeros(2, V + 1), [row(), row()])
    with pytest.raises(ValueError, match=r"logits must be \[1, 50\]"):
        sampler(torch.zeros(2, V), [row()])
    assert sampler(torch.zeros(0, V), []) == SamplerOutput([], None, [])


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    rows=st.lists(
        st.tuples(
            st.sampled_from([0, 1, 5, 255, 256, 257, 2000]),
            st.sampled_from([0.3, 0.9, 0.99, 1.0]),
            st.sampled_from([0.2, 1.0, 4.0]),
        ),
        min_size=1,
        max_size=5,
    ),
)
def test_top_p_on_the_cpu_looks_among_candidates_first_and_stays_exact(seed, rows):
    """A large vocabulary: peaked rows (nucleus among the candidates) and flat ones (beyond them)."""
    vocab = 1000
    assert vocab > CANDIDATES
    scale = torch.tensor([s for _, _, s in rows]).view(-1, 1)
    x = logits_for(seed, len(rows), vocab) * scale
    ks, ps = [k for k, _, _ in rows], [p for _, p, _ in rows]
    tops = []
    for i, (k, p) in enumerate(zip(ks, ps)):
        top = x[i].clone()
        if k:
            top[top < top.topk(min(k, vocab)).values[-1]] = float("-inf")
        assume(p == 1.0 or far_from_ties(top, p))
        tops.append(top)
    out = apply_top_k_top_p(x.clone(), torch.tensor(ks), torch.tensor(ps))
    for i, p in enumerate(ps):
        assert kept(out[i]) == (kept(tops[i]) if p == 1.0 else reference_top_p(tops[i], p))
