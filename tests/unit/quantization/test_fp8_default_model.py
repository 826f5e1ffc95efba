"""The default model (SmolLM2-135M) with --quantization fp8 against itself unquantized: greedy
agreement over 12 prompts. Measured over 64 tokens (docs/quantization.md): the first token agrees
on 11 of 12 prompts and the greedy paths share 11.2 tokens on average before they part, as a
135M-parameter model's do under W8A8; the bounds below sit under that, and far above what wrong
scales or a wrong layout give (garbage from the first token)."""

from __future__ import annotations

import statistics

from pagoda.engine.llm import LLM
from pagoda.engine.sampling_params import SamplingParams

PROMPTS = [
    f"Question {i}: tell me about {w}"
    for i, w in enumerate(
        [
            "the sea",
            "Paris",
            "prime numbers",
            "a cat",
            "the moon",
            "Python",
            "rain",
            "music",
            "trees",
            "history",
            "bread",
            "a robot",
        ]
    )
]
GREEDY = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)


def _greedy(**kw) -> list[list[int]]:
    llm = LLM(max_model_len=256, kv_cache_memory_bytes=64 << 20, **kw)
    return [list(o.outputs[0].token_ids) for o in llm.generate(PROMPTS, GREEDY)]


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def test_fp8_greedy_tokens_follow_the_unquantized_model():
    base, fp8 = _greedy(), _greedy(quantization="fp8")
    prefixes = [_common_prefix(a, b) for a, b in zip(base, fp8, strict=True)]
    first_token_agrees = sum(p > 0 for p in prefixes)
    print(f"fp8 vs unquantized: common prefixes {prefixes}")
    assert first_token_agrees >= 10, prefixes
    assert statistics.mean(prefixes) >= 4, prefixes
