"""Prefix caching changes no output: the default model, greedy and seeded, on a workload of heavy
sharing (one long common prefix, a repeated prompt, n > 1 forks) in a pool small enough that cached
blocks are evicted and sequences preempted.

"Equal" allows only what float rounding can cause: a prefill over cached context sums in another
order than one over the whole prompt, so logits differ in the last bits. A sequence may therefore
diverge once, after which the comparison of it ends, and only where rounding could flip the
choice: for greedy, at a near-tie (each side's token within the other's top 5, the rule of the HF
comparison tests); for seeded sampling, which inverts the CDF over token ids with the same uniform
draw, only to a neighbouring token id. Most sequences must match exactly.
"""

from __future__ import annotations

import random

from pagoda.engine.config import EngineConfig
from pagoda.engine.llm_engine import LLMEngine
from pagoda.engine.sampling_params import SamplingParams


def run(
    engine: LLMEngine, caching: bool
) -> tuple[dict[str, list[tuple[list[int], list]]], int, int]:
    """Outputs by request id, prompt tokens served from the cache, preemptions."""
    engine.kv.enable_prefix_caching = caching
    engine.kv.reset_prefix_cache()
    rng = random.Random(0)
    prefix = [rng.randrange(1000, 20000) for _ in range(40)]  # two full blocks and a half
    questions = [
        [rng.randrange(1000, 20000) for _ in range(rng.randrange(3, 12))] for _ in range(2)
    ]
    requests = []
    for i, q in enumerate(
        questions + questions[:1]
    ):  # the first question twice: a whole-prompt hit
        requests.append(
            (prefix + q, SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True, logprobs=5))
        )
        requests.append(
            (
                prefix + q,
                SamplingParams(
                    n=2, temperature=0.8, seed=i, max_tokens=6, ignore_eos=True, logprobs=5
                ),
            )
        )
    outputs, hits, preemptions = {}, 0, 0
    schedule = engine.scheduler.schedule

    def step():
        nonlocal hits, preemptions
        sched = schedule()
        preemptions += sched.num_preemptions
        engine.scheduler.schedule = lambda: sched  # the step runs the schedule just counted
        try:
            for out in engine.step():
                if out.finished:
                    outputs[out.request_id] = [(list(o.token_ids), o.logprobs) for o in out.outputs]
                    hits += out.num_cached_tokens
        finally:
            engine.scheduler.schedule = schedule

    for i, (prompt, params) in enumerate(requests):
        engine.add_request(str(i), prompt, params)
        for _ in range(2):  # staggered arrivals, so later requests find earlier blocks
            step()
    while engine.has_unfinished_requests():
        step()
    assert engine.kv.num_free_blocks == engine.kv.num_blocks
    assert len(outputs) == len(requests)
    return outputs, hits, preemptions


def test_outputs_with_prefix_caching_equal_outputs_without():
    config = EngineConfig(
        dtype="float32",
        max_model_len=64,
        max_num_batched_tokens=64,
        max_num_seqs=8,
        num_gpu_blocks_override=8,
    )
    engine = LLMEngine(config, log_stats=False)
    on, hits, preemptions = run(engine, caching=True)
    off, no_hits, _ = run(engine, caching=False)
    assert hits > 0 and no_hits == 0, "the workload was meant to hit the prefix cache"
    assert preemptions > 0, "the pool was meant to be too small for the batch"
    exact = 0
    for request_id, outs in off.items():
        greedy = int(request_id) % 2 == 0
        for (a_ids, a_top), (b_ids, b_top) in zip(on[request_id], outs):
            for step, (a, b) in enumerate(zip(a_ids, b_ids)):
                if a != b:
                    where = f"request {request_id} diverges at token {step}: {a} vs {b}"
                    if greedy:
                        assert a in b_top[step] and b in a_top[step], f"{where}, not a near-tie"
                    else:
                        assert abs(a - b) == 1, f"{where}, not a CDF neighbour"
                    break
            else:
                exact += 1
    assert exact >= sum(map(len, off.values())) - 2, f"only {exact} sequences matched exactly"
