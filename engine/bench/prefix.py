"""`pagoda bench prefix`: prefix caching on and off, on a shared-prefix and a no-sharing workload.

Shared: every request is the same `--shared-prefix-len` tokens followed by its own
`--question-len` tokens (random ids, fixed seed). Unique: the same lengths, but every request's
prefix is its own, so the cache never hits (0% hit rate): what caching costs when it cannot help.
In each run the first request runs alone, as the first user of a system prompt does in a server
(the cache can only serve blocks already computed), then the rest arrive at once. The engine is
loaded and warmed up once, then runs each workload with caching off and on, alternating,
`--repeats` times (the cache emptied before each run), reporting mean TTFT, requests/s, tokens/s
and the share of prompt tokens the cache served.
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
    g = p.add_argument_group(
        "workload (a shared system prompt, then one short question per request)"
    )
    g.add_argument("--num-prompts", type=int, default=100)
    g.add_argument("--shared-prefix-len", type=int, default=2000)
    g.add_argument("--question-len", type=int, default=50)
    g.add_argument("--output-len", type=int, default=16)
    g.add_argument("--workload-seed", type=int, default=0)
    g.add_argument(
        "--repeats", type=int, default=1, help="runs of each workload and setting, alternating"
    )
    g.add_argument("--result-file", help="write the results as JSON here")


def prefix_workload(
    num_prompts: int, prefix_len: int, question_len: int, vocab_size: int, seed: int, shared: bool
) -> list[list[int]]:
    """Prompts of prefix_len + question_len random ids: one prefix for all, or one each."""
    rng = random.Random(seed)
    prefix = [rng.randrange(vocab_size) for _ in range(prefix_len)]
    prompts = []
    for _ in range(num_prompts):
        own = prefix if shared else [rng.randrange(vocab_size) for _ in range(prefix_len)]
        prompts.append(own + [rng.randrange(vocab_size) for _ in range(question_len)])
    return prompts


def run_prefix(config: EngineConfig, args: argparse.Namespace) -> int:
    from pagoda.engine.llm_engine import LLMEngine
    from pagoda.engine.runner.model_runner import ModelRunner

    if (
        min(args.num_prompts, args.question_len, args.output_len, args.repeats) < 1
        or args.shared_prefix_len < 0
    ):
        raise ValueError(
            "--num-prompts, --question-len, --output-len and --repeats must be at least 1, "
            "--shared-prefix-len at least 0"
        )
    engine = LLMEngine(config, log_stats=False)
    assert isinstance(engine.runner, ModelRunner), "LLMEngine(config) builds the real runner"
    vocab = engine.runner.model_config.vocab_size
    workloads = {
        name: prefix_workload(
            args.num_prompts,
            args.shared_prefix_len,
            args.question_len,
            vocab,
            args.workload_seed,
            name == "shared",
        )
        for name in ("shared", "unique")
    }
    print(
        f"workload: {args.num_prompts} requests of {args.shared_prefix_len} prefix (shared, or each its own) + "
        f"{args.question_len} own prompt tokens, {args.output_len} output tokens each; "
        f"KV cache {engine.kv.num_blocks} blocks",
        file=sys.stderr,
    )
    _run(
        engine, [p[-args.question_len :] for p in workloads["shared"][:2]], args.output_len, False
    )  # warm-up
    results = [
        {"workload": name, **_run(engine, prompts, args.output_len, caching)}
        for name, prompts in workloads.items()
        for _ in range(args.repeats)
        for caching in (False, True)
    ]
    for r in results:
        print(json.dumps(r), flush=True)
    summary = summarize(results)
    print(json.dumps(summary), flush=True)
    print(
        f"shared prefix: mean TTFT {summary['shared_ttft_off_s']:.3f}s -> {summary['shared_ttft_on_s']:.3f}s "
        f"({summary['shared_ttft_reduction']:.2f}x lower), throughput {summary['shared_throughput_ratio']:.2f}x; "
        f"no sharing (0% hits): throughput with caching {summary['unique_throughput_ratio']:.4f}x of without",
        flush=True,
    )
    if args.result_file:
        with open(args.result_file, "w") as f:
            json.dump({"runs": results, "summary": summary}, f, indent=2)
    return 0


def summarize(results: list[dict]) -> dict:
    """Means over repeats: TTFT and throughput ratios, caching on against off, per workload."""

    def mean(workload: str, caching: bool, key: str) -> float:
        values = [
            r[key] for r in results if r["workload"] == workload and r["prefix_caching"] == caching
        ]
        return sum(values) / len(values)

    off, on = mean("shared", False, "mean_ttft_s"), mean("shared", True, "mean_ttft_s")
    return {
        "shared_ttft_off_s": round(off, 4),
        "shared_ttft_on_s": round(on, 4),
        "shared_ttft_reduction": round(off / on, 2),
        "shared_throughput_ratio": round(
            mean("shared", True, "total_tok_per_s") / mean("shared", False, "total_tok_per_s"), 3
        ),
        "unique_cached_prompt_pct": mean("unique", True, "cached_prompt_pct"),
        "unique_throughput_ratio": round(
            mean("unique", True, "total_tok_per_s") / mean("unique", False, "total_tok_per_s"), 4
        ),
    }


def _run(engine, prompts: list[list[int]], output_len: int, caching: bool) -> dict:
    engine.kv.enable_prefix_caching = caching
    engine.kv.reset_prefix_cache()
    params = SamplingParams(
        max_tokens=output_len,
        ignore_eos=True,
        temperature=0.0,
        detokenize=False,
        output_kind="final_only",
    )
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
    return {
        "prefix_caching": caching,
        "requests": len(prompts),
        "seconds": round(dt, 2),
        "mean_ttft_s": round(sum(ttfts) / len(ttfts), 4),
        "requests_per_s": round(len(prompts) / dt, 3),
        "total_tok_per_s": round((prompt_tokens + generated) / dt, 1),
        "cached_prompt_pct": round(100 * cached / prompt_tokens, 1),
    }
