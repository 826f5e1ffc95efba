"""The sampler at the edges of what SamplingParams accepts: every pick is a token of the vocabulary
and every logprob is a number, whatever the accepted parameters and however extreme the logits.

The values that once took the engine down (top_p 1e-50, top_k 2**70, repetition_penalty 1e-300)
are refused by validate(), with the parameter named; their accepted neighbours must sample."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pagoda.engine.sample.sampler import Sampler, SamplingRow, make_generator
from pagoda.engine.sampling_params import (
    F32_MAX,
    F32_TINY,
    I64_MAX,
    I64_MIN,
    ParamError,
    SamplingParams,
)

V = 64
EOS = [3]


def edge_floats(low: float, high: float) -> st.SearchStrategy[float]:
    """Floats in [low, high], often the bounds themselves and their float32 neighbours."""
    return st.one_of(st.sampled_from([low, high]), st.floats(low, high, allow_nan=False))


params_strategy = st.builds(
    SamplingParams,
    n=st.just(1),
    temperature=st.one_of(st.just(0.0), edge_floats(1e-5, F32_MAX)),
    top_p=edge_floats(F32_TINY, 1.0),
    top_k=st.one_of(st.sampled_from([0, -1, 1, V, I64_MAX]), st.integers(0, I64_MAX)),
    min_p=edge_floats(0.0, 1.0),
    presence_penalty=edge_floats(-2.0, 2.0),
    frequency_penalty=edge_floats(-2.0, 2.0),
    repetition_penalty=edge_floats(1e-4, 1e4),
    seed=st.one_of(st.none(), st.sampled_from([I64_MIN, I64_MAX - 1, 0])),
    max_tokens=st.just(8),
    min_tokens=st.integers(0, 8),
    logprobs=st.one_of(st.none(), st.integers(0, 20)),
    logit_bias=st.one_of(
        st.none(), st.dictionaries(st.integers(0, V - 1), edge_floats(-100.0, 100.0), max_size=8)
    ),
    stop_token_ids=st.lists(st.integers(0, V - 1), max_size=4),
    # allowed_token_ids of only EOS and stop tokens under min_tokens leave no token at all
    allowed_token_ids=st.one_of(st.none(), st.lists(st.integers(0, V - 1), min_size=1, max_size=3)),
)

# Logits a model might give and some it should not: tiny spreads, ties, huge magnitudes.
logit_values = st.one_of(
    st.floats(-30.0, 30.0, width=32),
    st.sampled_from([0.0, 1e-30, -1e30, 1e30, -F32_MAX / 2, F32_MAX / 2]),
)


@settings(max_examples=60, deadline=None)
@given(
    params=st.lists(params_strategy, min_size=1, max_size=4),
    data=st.data(),
)
def test_accepted_extremes_sample_a_token_of_the_vocabulary(params, data):
    rows = []
    for p in params:
        out = data.draw(st.lists(st.integers(0, V - 1), max_size=6))
        prompt = data.draw(st.lists(st.integers(0, V - 1), min_size=1, max_size=6))
        generator = make_generator(p.seed, "cpu") if p.seed is not None else None
        rows.append(SamplingRow(p, prompt, out, generator))
    logits = torch.tensor([data.draw(st.lists(logit_values, min_size=V, max_size=V)) for _ in rows])
    result = Sampler(V, EOS)(logits, rows)
    assert all(0 <= t < V for t in result.token_ids), result.token_ids
    for p, top in zip(params, result.top_logprobs):
        if p.logprobs is not None:
            assert all(0 <= t < V and not math.isnan(v) for t, v in top.items())


def test_logits_that_overflow_under_a_penalty_still_sample():
    """A logit of 1e38 divided by a 1e-4 repetition penalty, then by a low temperature, is past
    float32's range: the pick stays the most likely token instead of an out-of-vocabulary id."""
    logits = torch.full((1, V), -5.0)
    logits[0, 9] = 3e38
    row = SamplingRow(
        SamplingParams(temperature=1e-5, repetition_penalty=1e-4, top_p=F32_TINY),
        [9],
        [],
    )
    assert Sampler(V, EOS)(logits, [row]).token_ids == [9]


@pytest.mark.parametrize(
    "field, value",
    [
        ("top_p", 1e-50),  # 0 in float32: the nucleus was empty and truncation indexed -1
        ("top_p", 0.0),
        ("top_k", 2**70),  # overflowed the int64 tensor of top_k values
        ("top_k", -2),
        ("repetition_penalty", 1e-300),  # 0 in float32: logits / 0 = inf, then NaN
        ("repetition_penalty", 1e5),
        ("temperature", 1e39),
        ("temperature", float("nan")),
        ("min_p", float("nan")),
        ("seed", 2**63),
        ("seed", -(2**63) - 1),
        ("logit_bias", {2**70: 1.0}),
        ("logit_bias", {1: 101.0}),
        ("stop_token_ids", [-1]),
        ("max_tokens", 0),
        ("min_tokens", 17),
        ("n", 0),
    ],
)
def test_values_the_sampler_cannot_compute_are_refused_naming_the_parameter(field, value):
    with pytest.raises(ParamError) as e:
        SamplingParams(**{field: value})
    assert e.value.param == field and field in str(e.value)


def test_seed_room_for_every_sequence():
    SamplingParams(seed=I64_MAX - 4, n=4)
    with pytest.raises(ParamError, match="seed"):
        SamplingParams(seed=I64_MAX - 3, n=4)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_a_row_with_no_token_left_still_picks_inside_the_vocabulary(temperature):
    """allowed_token_ids = [EOS] under min_tokens masks every token (the engine refuses such a
    request; a grammar can still meet it): the pick must stay an id the model can embed."""
    row = SamplingRow(
        SamplingParams(temperature=temperature, allowed_token_ids=EOS, min_tokens=1), [5], []
    )
    result = Sampler(V, EOS)(torch.randn(1, V), [row])
    assert 0 <= result.token_ids[0] < V
