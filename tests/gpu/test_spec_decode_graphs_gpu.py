"""Speculative decoding under CUDA graphs (GPU tier): verification steps (k + 1 query tokens per
sequence, plain sequences padded to k + 1 beside speculating ones) replay captured graphs, and
greedy output equals the same engine with --enforce-eager and decoding without speculation.

Float32 weights: the graph and the eager step run the same attention kernel and differ only in
the GEMMs' row count, so they must agree token for token. Against decoding without speculation
the attention takes another kernel path (one query a sequence, split over the context) whose
float32 dots run in TF32 (Triton's default): a request may part from it only where that run's two
best tokens are a near tie; a wrong padding row or mask parts far from any tie."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU"),
]

from pagoda.engine.llm import LLM  # noqa: E402
from pagoda.engine.sampling_params import SamplingParams  # noqa: E402

sys.path.insert(0, str(Path(__file__).parents[1]))  # tiny_checkpoint
from tiny_checkpoint import write_tiny_checkpoint, write_tiny_tokenizer  # noqa: E402

NEAR_TIE = 5e-2  # TF32 moves a logit by ~1e-3; a wrong row moves it by whole units
COMMON = dict(
    device="cuda",
    dtype="float32",
    max_model_len=1024,
    kv_cache_memory_bytes=512 << 20,
    cuda_graph_sizes=[1, 2, 4, 8],
)


def engine(**kw: Any) -> LLM:
    return LLM(**{**COMMON, **kw})


def spy_on_verify_graphs(llm: LLM, k: int) -> list[list[int]]:
    """Each replayed verification step's query lengths, as the graphs' run() sees them."""
    graphs = llm.engine.runner.verify_graphs
    assert graphs is not None and graphs.layout.query_len == k + 1  # type: ignore[union-attr]
    calls: list[list[int]] = []
    run = graphs.run

    def recording(input_ids, positions, meta):
        starts = meta.query_start_loc_cpu
        calls.append([b - a for a, b in zip(starts, starts[1:])])
        return run(input_ids, positions, meta)

    graphs.run = recording  # type: ignore[method-assign]
    return calls


def tokens(llm: LLM, prompts: list, params: list[SamplingParams]) -> list[list[int]]:
    return [list(o.outputs[0].token_ids) for o in llm.generate(prompts, params)]


def tokens_and_gaps(llm: LLM, prompts: list, params: list[SamplingParams]):
    """Each request's tokens, and at each step the gap between its two best log-probs."""
    outs = llm.generate(prompts, [replace(p, logprobs=2) for p in params])
    gaps = [
        [
            top[0] - top[1]
            for top in (sorted(lp.values(), reverse=True) for lp in o.outputs[0].logprobs)
        ]
        for o in outs
    ]
    return [list(o.outputs[0].token_ids) for o in outs], gaps


def assert_equal_up_to_near_ties(got: list[list[int]], want: list[list[int]], gaps) -> None:
    for i, (a, b) in enumerate(zip(got, want)):
        step = next((s for s, (x, y) in enumerate(zip(a, b)) if x != y), None)
        if step is None:
            assert len(a) == len(b), (i, a, b)
        else:
            assert gaps[i][step] < NEAR_TIE, (i, step, gaps[i][step], a, b)


def check(spec_config: dict, prompts: list, params: list[SamplingParams], **kw: Any) -> None:
    """The three engines over the same requests; the last request does not speculate (logprobs),
    so verification steps mix speculating and plain sequences."""
    k = spec_config["num_speculative_tokens"]
    want, gaps = tokens_and_gaps(engine(**kw), prompts, params)

    graphed = engine(speculative_config=spec_config, **kw)
    calls = spy_on_verify_graphs(graphed, k)
    got_graphed = tokens(graphed, prompts, params)
    eager = engine(speculative_config=spec_config, enforce_eager=True, **kw)
    assert eager.engine.runner.verify_graphs is None and eager.engine.runner.graphs is None
    got_eager = tokens(eager, prompts, params)

    assert graphed.engine.spec.stats.num_accepted_tokens > 0  # it did speculate
    assert calls, "no verification step replayed a graph"
    assert any(1 in c and k + 1 in c for c in calls), calls  # plain beside speculating, replayed
    assert got_graphed == got_eager
    assert_equal_up_to_near_ties(got_graphed, want, gaps)


def tiny_model(tmp_path: Path) -> str:
    folder = write_tiny_checkpoint(tmp_path / "tiny")
    write_tiny_tokenizer(folder)
    return str(folder)


# Token-id prompts that repeat themselves: prompt lookup finds its drafts in them, and a tiny
# random model's greedy output falls into loops that it finds as well. (The default model's GGUF
# package is larger than what travels to the GPU machine.)
REPEATING = [
    {"prompt_token_ids": p}
    for p in ([5, 17, 33, 5, 17, 33, 9], [100, 101, 102, 103, 104], [7] * 12, [40, 41] * 4)
]


def test_tiny_model_ngram_under_graphs(tmp_path):
    ngram = {
        "method": "ngram",
        "num_speculative_tokens": 4,
        "prompt_lookup_min": 2,
        "prompt_lookup_max": 4,
    }
    greedy = SamplingParams(temperature=0, max_tokens=64, ignore_eos=True)
    plain = SamplingParams(temperature=0, max_tokens=64, ignore_eos=True, logprobs=1)
    check(ngram, REPEATING, [greedy] * 3 + [plain], model=tiny_model(tmp_path), max_model_len=256)


def test_tiny_model_with_a_draft_equal_to_the_target_under_graphs(tmp_path):
    folder = tiny_model(tmp_path)
    draft = {"method": "draft_model", "model": folder, "num_speculative_tokens": 3}
    greedy = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)
    plain = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True, logprobs=1)
    check(draft, REPEATING, [greedy] * 3 + [plain], model=folder, max_model_len=256)
