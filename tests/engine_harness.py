"""Helpers for tests that drive a whole LLMEngine (unit, integration and GPU tiers alike; `tests`
is on pytest's pythonpath)."""

from __future__ import annotations

import random

from pagoda.engine.config import EngineConfig
from pagoda.engine.llm_engine import LLMEngine
from pagoda.engine.outputs import RequestOutput
from pagoda.engine.sampling_params import SamplingParams


class PreemptionCounter:
    """Counts the preemptions of every step the engine schedules from now on."""

    def __init__(self, engine: LLMEngine) -> None:
        self.count = 0
        schedule = engine.scheduler.schedule

        def counting():
            out = schedule()
            self.count += out.num_preemptions
            return out

        engine.scheduler.schedule = counting


def run_to_completion(engine: LLMEngine) -> list[RequestOutput]:
    """Step until nothing is left; every output in order. No KV block may be left held."""
    outputs = []
    while engine.has_unfinished_requests():
        outputs += engine.step()
    assert engine.kv.num_free_blocks == engine.kv.num_blocks
    return outputs


def generate_all(model: str, async_scheduling: bool, device: str = "cpu") -> dict[str, list[int]]:
    """A real engine (random weights): greedy and seeded requests of assorted lengths, one batch."""
    config = EngineConfig(
        load_format="dummy",
        model=model,
        device=device,
        max_model_len=512,
        max_num_seqs=16,
        max_num_batched_tokens=256,
        kv_cache_memory_bytes=64 << 20,
        async_scheduling=async_scheduling,
    )
    engine = LLMEngine(config, tokenizer=object(), log_stats=False)
    rng = random.Random(0)
    for i in range(12):
        prompt = [rng.randrange(1000) for _ in range(rng.randint(3, 90))]
        seeded = dict(temperature=0.8, top_p=0.9, seed=i) if i % 3 == 0 else dict(temperature=0.0)
        engine.add_request(
            str(i),
            prompt,
            SamplingParams(
                max_tokens=rng.randint(1, 14),
                ignore_eos=True,
                detokenize=False,
                output_kind="final_only",
                **seeded,
            ),
        )
    return {out.request_id: out.outputs[0].token_ids for out in run_to_completion(engine)}
