"""One GPU, the model in the engine's process against the same model in a worker process
(--distributed-executor-backend mp at TP = PP = 1): the same greedy tokens, CUDA graphs and async
scheduling on, as they run in production."""

from __future__ import annotations

import random

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs an NVIDIA GPU (CUDA is not available here)"
    ),
]

from engine_harness import run_to_completion  # noqa: E402

from pagoda.engine.config import EngineConfig  # noqa: E402
from pagoda.engine.llm_engine import LLMEngine  # noqa: E402
from pagoda.engine.sampling_params import SamplingParams  # noqa: E402


def greedy_tokens(backend: str) -> dict[str, list[int]]:
    config = EngineConfig(
        load_format="dummy",
        model="llama-3.2-1b",
        dtype="bfloat16",
        max_model_len=1024,
        max_num_seqs=32,
        gpu_memory_utilization=0.5,
        async_scheduling=True,
        distributed_executor_backend=backend,
    )
    engine = LLMEngine(config, tokenizer=object(), log_stats=False)
    rng = random.Random(0)
    try:
        for i in range(24):
            prompt = [rng.randrange(1000) for _ in range(rng.randint(5, 300))]
            params = SamplingParams(
                temperature=0.0,
                max_tokens=rng.randint(1, 40),
                ignore_eos=True,
                detokenize=False,
                output_kind="final_only",
            )
            engine.add_request(str(i), prompt, params)
        return {o.request_id: o.outputs[0].token_ids for o in run_to_completion(engine)}
    finally:
        engine.shutdown()


def test_one_rank_through_a_worker_equals_in_process() -> None:
    assert greedy_tokens("mp") == greedy_tokens("uni")
