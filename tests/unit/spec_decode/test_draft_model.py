"""method draft_model: a tiny random draft proposes for a tiny random target; greedy output equals
decoding without speculation, a draft equal to the target is accepted in full, and a draft with
another vocabulary is refused at start. And seeded sampling with ngram proposals on the same tiny
target (300 tokens: its samples recur, so prompt lookup finds drafts)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pagoda.engine.llm import LLM
from pagoda.engine.sampling_params import SamplingParams

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/: tiny_checkpoint
from tiny_checkpoint import write_tiny_checkpoint, write_tiny_tokenizer

PROMPTS = [[5, 17, 33, 5, 17, 33, 9], [100, 101, 102, 103], [7] * 12]
GREEDY = SamplingParams(temperature=0, max_tokens=30, ignore_eos=True)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("draft")
    out = {}
    for name, seed, extra in (
        ("target", 0, {}),
        ("draft", 1, {"num_hidden_layers": 1}),
        ("other_vocab", 2, {"vocab_size": 320}),
    ):
        folder = write_tiny_checkpoint(root / name, seed=seed, **extra)
        write_tiny_tokenizer(folder)
        out[name] = str(folder)
    return out


def _engine(models, **kw) -> LLM:
    return LLM(model=models["target"], device="cpu", kv_cache_memory_bytes=8 << 20, **kw)


def _tokens(outs) -> list[list[int]]:
    return [list(o.outputs[0].token_ids) for o in outs]


def test_greedy_with_a_random_draft_equals_decoding_without(models):
    expected = _tokens(_engine(models).generate(PROMPTS, GREEDY))
    spec = _engine(
        models,
        speculative_config={"model": models["draft"], "num_speculative_tokens": 3},
    )
    assert _tokens(spec.generate(PROMPTS, GREEDY)) == expected
    assert spec.engine.spec.stats.num_drafts > 0


def test_a_draft_equal_to_the_target_is_accepted_in_full(models):
    spec = _engine(
        models,
        speculative_config={
            "method": "draft_model",
            "model": models["target"],
            "num_speculative_tokens": 4,
        },
    )
    expected = _tokens(_engine(models).generate(PROMPTS, GREEDY))
    assert _tokens(spec.generate(PROMPTS, GREEDY)) == expected
    stats = spec.engine.spec.stats
    assert stats.num_draft_tokens > 0
    assert stats.num_accepted_tokens == stats.num_draft_tokens


def test_a_draft_with_another_vocabulary_is_refused(models):
    with pytest.raises(ValueError, match="vocabulary of 320 tokens, the target 300"):
        _engine(
            models,
            speculative_config={"model": models["other_vocab"], "num_speculative_tokens": 2},
        )


def test_seeded_sampling_speculates_and_repeats_itself(models):
    """Temperature, top-k/top-p and a penalty at every verified position: a seeded request gives
    the same tokens twice, all max_tokens of them, and drafts were verified on the way."""
    spec = _engine(
        models,
        speculative_config={"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_min": 1},
    )
    params = SamplingParams(
        temperature=0.7,
        top_k=8,
        top_p=0.9,
        repetition_penalty=1.1,
        seed=5,
        max_tokens=40,
        ignore_eos=True,
    )
    first = _tokens(spec.generate(PROMPTS, params))
    assert first == _tokens(spec.generate(PROMPTS, params))
    assert all(len(t) == 40 for t in first)
    assert spec.engine.spec.stats.num_drafts > 0
