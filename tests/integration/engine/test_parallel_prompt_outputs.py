"""What the workers compute from the prompt's rows, over worker processes (gloo on the CPU), equals
one rank's: pooled vectors (mean pooling over chunked prefills: the last stage sums across chunks)
and prompt logprobs; both come back in the step's result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from engine_harness import run_to_completion
from tiny_checkpoint import write_tiny_checkpoint

from pagoda.engine.config import EngineConfig
from pagoda.engine.llm_engine import LLMEngine
from pagoda.engine.pooling_params import PoolingParams
from pagoda.engine.sampling_params import SamplingParams

PROMPTS = [[5, 17, 42, 99, 3], [7] * 30, list(range(3, 40))]


def embed_all(folder: Path, pooling_type: str, **parallel) -> list[torch.Tensor]:
    config = EngineConfig(
        model=str(folder),
        dtype="float32",
        runner="pooling",
        pooler_config=json.dumps({"pooling_type": pooling_type}),
        max_num_seqs=4,
        max_num_batched_tokens=16,
        num_gpu_blocks_override=32,
        max_model_len=64,
        **parallel,
    )
    engine = LLMEngine(config, tokenizer=object(), log_stats=False)
    try:
        for i, prompt in enumerate(PROMPTS):
            engine.add_request(str(i), prompt, PoolingParams())
        outs = {o.request_id: o for o in run_to_completion(engine) if o.finished}
    finally:
        engine.shutdown()
    return [outs[str(i)].outputs.data for i in range(len(PROMPTS))]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny"))


def test_tp2_pp2_mean_pooling_equals_one_rank(tiny) -> None:
    one = embed_all(tiny, "MEAN")  # every chunk's rows count: the workers' sums carry over
    spread = embed_all(tiny, "MEAN", tensor_parallel_size=2, pipeline_parallel_size=2)
    for a, b in zip(one, spread):
        assert a is not None and b is not None
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        assert abs(a.norm().item() - 1.0) < 1e-5


def prompt_logprobs_all(folder: Path, **parallel) -> list:
    config = EngineConfig(
        model=str(folder),
        dtype="float32",
        max_num_seqs=4,
        max_num_batched_tokens=16,
        num_gpu_blocks_override=32,
        max_model_len=64,
        **parallel,
    )
    engine = LLMEngine(config, tokenizer=object(), log_stats=False)
    params = SamplingParams(max_tokens=2, temperature=0.0, prompt_logprobs=2, detokenize=False)
    try:
        for i, prompt in enumerate(PROMPTS):
            engine.add_request(str(i), prompt, params)
        outs = {o.request_id: o for o in run_to_completion(engine) if o.finished}
    finally:
        engine.shutdown()
    return [outs[str(i)].prompt_logprobs for i in range(len(PROMPTS))]


def test_pp2_prompt_logprobs_equal_one_rank(tiny) -> None:
    one = prompt_logprobs_all(tiny)
    staged = prompt_logprobs_all(tiny, pipeline_parallel_size=2)
    assert [len(p) for p in one] == [len(p) for p in PROMPTS]
    for a, b in zip(one, staged):
        assert a[0] is None and b[0] is None
        for x, y in zip(a[1:], b[1:]):
            assert x.keys() == y.keys()
            assert all(abs(x[t] - y[t]) < 1e-4 for t in x)
