"""Greedy output of the default model equals HF transformers', through continuous batching and
again with preemption forced by a tiny KV pool.

Where the two diverge, it may only be at a near-tie: each side's token must be within the other's
top-5 (the rule vLLM's own model tests use); the comparison ends at the first divergence.
"""

from __future__ import annotations

import pytest
import torch
from engine_harness import PreemptionCounter, run_to_completion

from pagoda.engine.config import EngineConfig
from pagoda.engine.llm_engine import LLMEngine
from pagoda.engine.sampling_params import SamplingParams

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
    "The three primary colors are",
    "Water boils at",
    "import numpy as np\n\nx = np.",
    "List three fruits:\n1.",
    "Translate to French: 'Good morning' ->",
    "The quick brown fox",
    "In 1969, the first humans",
    "Photosynthesis is the process by which",
    "SELECT name FROM users WHERE",
    "My favourite book is",
    "2 + 2 =",
    "The largest planet in the solar system is",
    "To make a cup of tea, first",
    "Dear Sir or Madam,\n\nI am writing to",
    "The theory of relativity was developed by",
    "A haiku about autumn:\n",
    "<|im_start|>user\nWhat is the speed of light?<|im_end|>\n<|im_start|>assistant\n",
    "Q: What is the boiling point of water in Fahrenheit?\nA:",
    "Rust and Go are both",
]
MAX_TOKENS = 24
TOP = 5


@pytest.fixture(scope="module")
def hf_greedy():
    """HF's greedy tokens and each step's top-5, per prompt (batch of one: no padding effects)."""
    from transformers import AutoModelForCausalLM

    from pagoda.engine.loader.resolve import default_gguf_path

    path = default_gguf_path()
    model = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    ).eval()
    tok = _engine(num_blocks=None).tokenizer
    results = []
    for prompt in PROMPTS:
        ids = torch.tensor([tok(prompt).input_ids])
        with torch.inference_mode():
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=MAX_TOKENS,
                min_new_tokens=MAX_TOKENS,
                do_sample=False,
                output_scores=True,
                return_dict_in_generate=True,
                pad_token_id=2,
            )
        tokens = out.sequences[0, ids.shape[1] :].tolist()
        tops = [set(s[0].topk(TOP).indices.tolist()) for s in out.scores]
        results.append((tokens, tops))
    return results


def _engine(num_blocks: int | None, **kw) -> LLMEngine:
    config = EngineConfig(
        dtype="float32",
        num_gpu_blocks_override=num_blocks,
        max_model_len=192 if num_blocks else 2048,
        **kw,
    )
    return LLMEngine(config, log_stats=False)


def _run(engine: LLMEngine) -> tuple[list, int]:
    preemptions = PreemptionCounter(engine)
    # min_tokens as HF's min_new_tokens: EOS masked, so both sides pick among the same tokens.
    params = SamplingParams(
        temperature=0.0, max_tokens=MAX_TOKENS, min_tokens=MAX_TOKENS, ignore_eos=True, logprobs=TOP
    )
    for i, prompt in enumerate(PROMPTS):
        engine.add_request(str(i), prompt, SamplingParams(**vars(params)))
    done = {
        int(out.request_id): out.outputs[0] for out in run_to_completion(engine) if out.finished
    }
    return [done[i] for i in range(len(PROMPTS))], preemptions.count


def _assert_close(ours, hf_greedy) -> None:
    exact = 0
    for i, (out, (hf_tokens, hf_tops)) in enumerate(zip(ours, hf_greedy)):
        for step, (a, b) in enumerate(zip(out.token_ids, hf_tokens)):
            if a != b:
                assert a in hf_tops[step] and b in out.logprobs[step], (
                    f"prompt {i} ({PROMPTS[i]!r}) diverges at token {step}: ours {a}, HF {b}, not a near-tie"
                )
                break
        else:
            exact += 1
    # Near-ties are rare: most prompts must match token for token.
    assert exact >= len(PROMPTS) - 3, f"only {exact}/{len(PROMPTS)} prompts matched exactly"


def test_greedy_matches_hf_under_continuous_batching(hf_greedy):
    outs, preemptions = _run(_engine(num_blocks=None, max_num_batched_tokens=64, max_num_seqs=16))
    assert preemptions == 0
    _assert_close(outs, hf_greedy)


def test_greedy_matches_hf_with_preemption_from_a_tiny_pool(hf_greedy):
    outs, preemptions = _run(_engine(num_blocks=12, max_num_batched_tokens=64, max_num_seqs=16))
    assert preemptions > 0, "the pool was meant to be too small for the batch"
    _assert_close(outs, hf_greedy)
