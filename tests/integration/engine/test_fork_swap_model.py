"""Forks (n > 1) and swap preemption with the real default model on the CPU.

Semantics: output i of a request with n outputs and seed s is what a request with n = 1 and seed
s + i gives; greedy forks are all the greedy output; a sequence swapped out and back in continues
exactly as if it had never been preempted.
"""

from __future__ import annotations

import pytest

from pagoda.engine.config import EngineConfig
from pagoda.engine.llm_engine import LLMEngine
from pagoda.engine.sampling_params import SamplingParams

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time,",
    "The three primary colors are",
]


def make_engine(**kw) -> LLMEngine:
    config = EngineConfig(
        dtype="float32", max_model_len=64, max_num_batched_tokens=64, max_num_seqs=16, **kw
    )
    return LLMEngine(config, log_stats=False)


def generate(
    engine: LLMEngine, requests: list[tuple[str, SamplingParams]]
) -> list[list[list[int]]]:
    for i, (prompt, params) in enumerate(requests):
        engine.add_request(str(i), prompt, params)
    done = {}
    while engine.has_unfinished_requests():
        for out in engine.step():
            if out.finished:
                done[int(out.request_id)] = [list(o.token_ids) for o in out.outputs]
    assert engine.kv.num_free_blocks == engine.kv.num_blocks
    assert len(engine.kv.cpu_free) == engine.kv.num_cpu_blocks
    return [done[i] for i in range(len(requests))]


@pytest.fixture(scope="module")
def engine() -> LLMEngine:
    return make_engine(num_gpu_blocks_override=64)


def test_greedy_forks_are_the_greedy_output(engine):
    greedy = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)
    forked, single = generate(
        engine, [(PROMPTS[0], SamplingParams(**{**vars(greedy), "n": 4})), (PROMPTS[0], greedy)]
    )
    assert forked == single * 4


def test_seeded_forks_equal_separate_requests_seeded_seed_plus_i(engine):
    params = dict(temperature=1.0, top_k=50, max_tokens=8, ignore_eos=True)
    forked = generate(engine, [(PROMPTS[1], SamplingParams(n=3, seed=11, **params))])[0]
    separate = generate(
        engine, [(PROMPTS[1], SamplingParams(seed=11 + i, **params)) for i in range(3)]
    )
    assert forked == [out[0] for out in separate]
    assert len({tuple(o) for o in forked}) > 1, (
        "three seeds gave one output: the seeds were not used"
    )


def test_swapped_sequences_resume_with_identical_output(engine):
    params = SamplingParams(n=2, temperature=0.0, max_tokens=12, ignore_eos=True)
    requests = [(p, SamplingParams(**vars(params))) for p in PROMPTS[:3]]
    want = generate(engine, requests)
    engine = make_engine(num_gpu_blocks_override=6, preemption_mode="swap", swap_space=0.05)
    swaps = []
    swap_in = engine.runner.swap_in
    engine.runner.swap_in = lambda pairs: (swaps.append(len(pairs)), swap_in(pairs))
    got = generate(engine, [(p, SamplingParams(**vars(params))) for p in PROMPTS[:3]])
    assert swaps, "the pool was meant to be too small: no sequence was swapped"
    assert got == want
