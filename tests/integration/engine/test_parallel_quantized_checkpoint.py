"""An FP8 checkpoint over two tensor-parallel worker processes (gloo on the CPU): each rank reads
its shard of the e4m3 weights and of their scales (per tensor, repeated over a projection's rows;
row-parallel layers keep every row's scale), and the prompt's log-probabilities stay as close to
the dequantized model as on one rank; 4-bit AWQ and GPTQ checkpoints give one rank's greedy
tokens."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from engine_harness import run_to_completion
from quantized_checkpoint import write_quantized_pair, write_w4_pair

from pagoda.engine.config import EngineConfig
from pagoda.engine.llm_engine import LLMEngine
from pagoda.engine.sampling_params import SamplingParams

PROMPT = [5, 17, 42, 99, 3, 8, 8, 120, 44, 7, 61, 250, 9, 13, 77, 31]


def engine_for(folder: Path, **parallel) -> LLMEngine:
    config = EngineConfig(
        model=str(folder),
        dtype="float32",
        max_num_seqs=2,
        num_gpu_blocks_override=16,
        max_model_len=64,
        **parallel,
    )
    return LLMEngine(config, tokenizer=object(), log_stats=False)


def prompt_logprobs(folder: Path, **parallel) -> list:
    engine = engine_for(folder, **parallel)
    try:
        params = SamplingParams(max_tokens=1, prompt_logprobs=2, detokenize=False)
        engine.add_request("0", PROMPT, params)
        [out] = [o for o in run_to_completion(engine) if o.finished]
    finally:
        engine.shutdown()
    return out.prompt_logprobs


def logprob_vector(out: list) -> torch.Tensor:
    assert out[0] is None
    return torch.tensor([lp[t] for lp, t in zip(out[1:], PROMPT[1:])])


@pytest.mark.parametrize("fmt", ["fp8-static"])  # per-tensor scales: the harder shards
def test_tp2_fp8_checkpoint_is_as_close_to_the_dequantized_model_as_one_rank(
    tmp_path: Path, fmt: str
) -> None:
    fp8, dequantized = write_quantized_pair(tmp_path, fmt)
    want = logprob_vector(prompt_logprobs(dequantized))
    for parallel in ({}, {"tensor_parallel_size": 2}):
        got = logprob_vector(prompt_logprobs(fp8, **parallel))
        # Not bit for bit across rank counts: a row-parallel rank quantizes its slice of each
        # token's activations with that slice's own scale. Measured 1.0-1.8% on either count.
        assert ((got - want).norm() / want.norm()).item() < 0.03, parallel


def greedy_tokens(folder: Path, **parallel) -> list[int]:
    engine = engine_for(folder, **parallel)
    try:
        params = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True, detokenize=False)
        engine.add_request("0", PROMPT, params)
        [out] = [o for o in run_to_completion(engine) if o.finished]
    finally:
        engine.shutdown()
    return list(out.outputs[0].token_ids)


@pytest.mark.parametrize("fmt", ["awq", "gptq-act-order"])
def test_tp2_four_bit_checkpoint_gives_the_greedy_tokens_of_one_rank(
    tmp_path: Path, fmt: str
) -> None:
    """Column-parallel ranks read their slices of the packed outputs (AWQ's interleaved words
    repacked per slice), row-parallel ranks whole groups of the inputs (act-order: every group's
    scales and their slice of g_idx). An intermediate size of 128: two groups of 32 a rank."""
    stored, _ = write_w4_pair(tmp_path, fmt, intermediate_size=128)
    one = greedy_tokens(stored)
    assert len(one) == 12
    assert greedy_tokens(stored, tensor_parallel_size=2) == one
