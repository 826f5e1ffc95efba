"""`pagoda bench prefix`: a shared system prompt before short questions, prefix caching on and off.

Every request is the same `--shared-prefix-len` tokens followed by its own `--question-len`
tokens (random ids, fixed seed). The first request runs alone, as the first user of a system
prompt does in a server (the cache can only serve blocks already computed), then the rest arrive
at once. The engine is loaded and warmed up once, then runs the workload twice, caching off then on
(the cache emptied before each run), reporting mean TTFT, requests/s and tokens/s, and the share of
prompt tokens the cache served.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time

from pagoda.engine.config import EngineConfig
from pagoda.engine.sampling_params import SamplingParams


def add_prefix_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("workload (a shared system prompt, then one short question per request)")
    g.add_argument("--num-prompts", type=int, default=100)
    g.add_argument("--shared-prefix-len", type=int, default=2000)
    g.add_argument("--question-len", type=int, default=50)
    g.add_argument("--output-len", type=int, default=16)
    g.add_argument("--workload-seed", type=int, default=0)
    g.add_argument("--result-file", help="write the results as JSON here")


def shared_prefix_workload(num_prompts: int, prefix_len: int, question_len: int, vocab_size: int,
                           seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    prefix = [rng.randrange(vocab_size) for _ in range(prefix_len)]
    return [prefix + [rng.randrange(vocab_size) for _ in range(question_len)] for _ in range(num_prompts)]


def run_prefix(config: EngineConfig, args: argparse.Namespace) -> int:
    from pagoda.engine.llm_engine import LLMEngine

    if min(args.num_prompts, args.question_len, args.output_len) < 1 or args.shared_prefix_len < 0:
        raise ValueError("--num-prompts, --question-len and --output-len must be at least 1, "
                         "--shared-prefix-len at least 0")
    engine = LLMEngine(config, log_stats=False)
    prompts = shared_prefix_workload(args.num_prompts, args.shared_prefix_len, args.question_len,
                                     engine.runner.model_config.vocab_size, args.workload_seed)
    print(f"workload: {len(prompts)} requests of {args.shared_prefix_len} shared + {args.question_len} own "
          f"prompt tokens, {args.output_len} output tokens each; KV cache {engine.kv.num_blocks} blocks",
          file=sys.stderr)
    _run(engine, [p[-args.question_len:] for p in prompts[:2]], args.output_len, False)  # warm-up
    results = [_run(engine, prompts, args.output_len, caching) for caching in (False, True)]
    for r in results:
        print(json.dumps(r), flush=True)
    off, on = results
    print(f"prefix caching: mean TTFT {off['mean_ttft_s']:.3f}s -> {on['mean_ttft_s']:.3f}s, "
          f"throughput {on['total_tok_per_s'] / off['total_tok_per_s']:.2f}x", flush=True)
    if args.result_file:
        with open(args.result_file, "w") as f:
            json.dump(results, f, indent=2)
    return 0


def _run(engine, prompts: list[list[int]], output_len: int, caching: bool) -> dict:
    engine.kv.enable_prefix_caching = caching
    engine.kv.reset_prefix_cache()
    params = SamplingParams(max_tokens=output_len, ignore_eos=True, temperature=0.0, detokenize=False,
                            output_kind="final_only")
    ttfts, cached, generated = [], 0, 0
    t0 = time.perf_counter()
    for first, end in ((0, 1), (1, len(prompts))):
        for i in range(first, end):
            engine.add_request(str(i), prompts[i], SamplingParams(**vars(params)))
        while engine.has_unfinished_requests():
            for out in engine.step():  # finished requests only (final_only)
                ttfts.append(out.metrics.first_token_time - out.metrics.arrival_time)
                cached += out.num_cached_tokens
                generated += sum(len(o.token_ids) for o in out.outputs)
    dt = time.perf_counter() - t0
    prompt_tokens = sum(map(len, prompts))
    return {"prefix_caching": caching, "requests": len(prompts), "seconds": round(dt, 2),
            "mean_ttft_s": round(sum(ttfts) / len(ttfts), 3), "requests_per_s": round(len(prompts) / dt, 3),
            "total_tok_per_s": round((prompt_tokens + generated) / dt, 1),
            "cached_prompt_pct": round(100 * cached / prompt_tokens, 1)}
