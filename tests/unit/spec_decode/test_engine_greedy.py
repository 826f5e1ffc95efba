"""Speculation changes no greedy output: the default model with ngram proposals on prompts that
repeat themselves, beside a request that does not speculate and one with penalties; a tiny random
model over the default vocabulary (fast on a busy CPU) under preemption and with n > 1; and the
vllm:spec_decode_* counts on a proposal whose acceptance is known by hand."""

from __future__ import annotations

import json

import pytest

from pagoda.engine.llm import LLM
from pagoda.engine.sampling_params import SamplingParams

CODE = """def total(items):
    result = 0
    for item in items:
        if item.count > 0:
            result = result + item.price * item.count
    return result
"""
PROMPTS = [
    f"Rewrite this code with the variable `result` renamed to `{name}`:\n\n{CODE}\nRewritten:\n"
    for name in ("acc", "sum_", "out", "value", "s", "running_total")
]
NGRAM = {
    "method": "ngram",
    "num_speculative_tokens": 4,
    "prompt_lookup_min": 1,
    "prompt_lookup_max": 3,
}


def _tokens(outs) -> list[list[list[int]]]:
    return [[list(c.token_ids) for c in o.outputs] for o in outs]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("tiny")
    (folder / "config.json").write_text(
        json.dumps(
            dict(
                vocab_size=49152,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=2,
                num_key_value_heads=1,
                max_position_embeddings=256,
                eos_token_id=2,
            )
        )
    )
    return dict(model=str(folder), load_format="dummy", device="cpu", max_model_len=256)


@pytest.fixture(scope="module")
def tiny_plain(tiny_model) -> LLM:
    return LLM(**tiny_model, kv_cache_memory_bytes=16 << 20)


def test_default_model_greedy_batch_equals_decoding_without_speculation():
    common = dict(device="cpu", max_model_len=512, kv_cache_memory_bytes=32 << 20)
    params = [
        SamplingParams(temperature=0, max_tokens=20),
        SamplingParams(temperature=0, max_tokens=8, logprobs=2),  # does not speculate
        SamplingParams(temperature=0, max_tokens=20, repetition_penalty=1.3),
    ]
    expected = _tokens(LLM(**common).generate(PROMPTS[:3], params))
    spec = LLM(**common, speculative_config=NGRAM)
    assert _tokens(spec.generate(PROMPTS[:3], params)) == expected
    assert spec.engine.spec.stats.num_accepted_tokens > 0  # it did speculate


def test_n_greater_than_one(tiny_model, tiny_plain):
    spec = LLM(**tiny_model, kv_cache_memory_bytes=16 << 20, speculative_config=NGRAM)
    params = SamplingParams(temperature=0, max_tokens=40, n=3, ignore_eos=True)
    expected = _tokens(tiny_plain.generate(PROMPTS[:2], params))
    assert _tokens(spec.generate(PROMPTS[:2], params)) == expected
    assert spec.engine.spec.stats.num_accepted_tokens > 0


def test_under_preemption(tiny_model, tiny_plain):
    # 24 blocks of 16 tokens for six ~70-token prompts growing by 60: sequences are preempted and
    # recomputed, their drafts dropped.
    small = LLM(**tiny_model, num_gpu_blocks_override=24, speculative_config=NGRAM)
    preemptions = 0
    preempt = small.engine.scheduler._preempt

    def counting(seq):
        nonlocal preemptions
        preemptions += 1
        preempt(seq)

    small.engine.scheduler._preempt = counting  # type: ignore[method-assign]
    params = SamplingParams(temperature=0, max_tokens=60, ignore_eos=True)
    expected = _tokens(tiny_plain.generate(PROMPTS, params))
    assert _tokens(small.generate(PROMPTS, params)) == expected
    assert preemptions > 0
    assert small.engine.spec.stats.num_accepted_tokens > 0


def _counts(llm: LLM) -> dict[str, int | list[int]]:
    return {m.name: getattr(m, "values", getattr(m, "value", 0)) for m in llm.get_metrics()}


def test_metrics_count_a_proposal_known_by_hand(tiny_model, tiny_plain):
    """k = 3; the proposer knows the greedy output and gets its third token wrong: each verified
    step accepts 2. max_tokens 10: the prefill gives token 1; steps propose 3, 3, then 2 (the
    room left before max_tokens), accepting 2, 2, 2 (the last step's two, then a bonus token)."""
    params = SamplingParams(temperature=0, max_tokens=10, ignore_eos=True)
    [ref] = tiny_plain.generate([PROMPTS[0]], params)
    reference = list(ref.outputs[0].token_ids)

    class Oracle:
        def propose_batch(self, requests):
            return [self.propose(len(seq.output_token_ids), k) for seq, k in requests]

        def propose(self, at: int, k: int) -> list[int]:
            draft = reference[at : at + k]
            if len(draft) > 2:
                draft[2] += 1
            return draft

    spec = LLM(
        **tiny_model,
        kv_cache_memory_bytes=16 << 20,
        speculative_config={"method": "ngram", "num_speculative_tokens": 3},
    )
    spec.engine.spec.proposer = Oracle()
    [out] = spec.generate([PROMPTS[0]], params)
    assert list(out.outputs[0].token_ids) == reference
    assert _counts(spec) == {
        "vllm:spec_decode_num_drafts": 3,
        "vllm:spec_decode_num_draft_tokens": 3 + 3 + 2,
        "vllm:spec_decode_num_accepted_tokens": 6,
        "vllm:spec_decode_num_accepted_tokens_per_pos": [3, 3, 0],
    }
