"""`pagoda bench latency` (vLLM's `bench latency`): the time to generate --output-len tokens for a
batch of --batch-size prompts of --input-len tokens, run --num-iters times after --num-iters-warmup,
and the mean time of one decode step; beside it, the weight-read floor of one step (the bytes of
the weights over the memory bandwidth given), the regime where quantized weights pay off.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from pagoda.engine.config import EngineConfig
from pagoda.engine.sampling_params import SamplingParams


def add_latency_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("latency")
    g.add_argument("--input-len", type=int, default=32)
    g.add_argument("--output-len", type=int, default=128)
    g.add_argument("--batch-size", type=int, default=1)
    g.add_argument("--num-iters-warmup", type=int, default=2)
    g.add_argument("--num-iters", type=int, default=5)
    g.add_argument(
        "--memory-bandwidth-gbps",
        type=float,
        default=None,
        help="the device's memory bandwidth in GB/s, for the weight-read floor (H200: 4800)",
    )
    g.add_argument("--result-file", help="write the result as JSON here")
    g.add_argument(
        "--workload",
        choices=["synthetic", "rewrite"],
        default="synthetic",
        help="synthetic: --input-len token ids; rewrite: 'rewrite this code with the variable "
        "renamed' (output repeats the prompt: what --speculative-config ngram is for)",
    )


# The rewrite workload: the answer repeats most of the prompt, one name changed.
REWRITE_CODE = """def summarize(orders, tax_rate):
    subtotal = 0
    for order in orders:
        if order.quantity <= 0:
            continue
        line = order.unit_price * order.quantity
        if order.discount:
            line = line - line * order.discount
        subtotal = subtotal + line
    tax = subtotal * tax_rate
    return {"subtotal": subtotal, "tax": tax, "total": subtotal + tax}
"""
REWRITE_NAMES = ["amount", "net", "base", "running", "acc", "value", "sum_lines", "gross"]


def run_latency(config: EngineConfig, args: argparse.Namespace) -> int:
    from pagoda.engine.llm_engine import LLMEngine
    from pagoda.engine.runner.model_runner import ModelRunner

    engine = LLMEngine(config, log_stats=False)
    runner = engine.runner
    if not isinstance(runner, ModelRunner):
        raise SystemExit(
            "pagoda bench latency: runs one rank in its own process (no --tensor-parallel-size)"
        )
    weight_bytes = sum(t.numel() * t.element_size() for t in _weights(runner.model))
    vocab = min(runner.model_config.vocab_size, 128000)
    prompts = [
        [(7 + 13 * i + 31 * b) % vocab for i in range(args.input_len)]
        for b in range(args.batch_size)
    ]
    if args.workload == "rewrite":
        prompts = [
            engine.tokenize(
                f"Rewrite this code with the variable `subtotal` renamed to "
                f"`{REWRITE_NAMES[b % len(REWRITE_NAMES)]}`. Output only the code.\n\n"
                f"{REWRITE_CODE}\nRewritten code:\n"
            )
            for b in range(args.batch_size)
        ]

    def one_run() -> tuple[float, float]:
        """(seconds for the whole batch, seconds of the first step: the prefill)."""
        for b, prompt in enumerate(prompts):
            engine.add_request(
                f"lat-{time.monotonic_ns()}-{b}",
                prompt,
                SamplingParams(
                    max_tokens=args.output_len,
                    ignore_eos=True,
                    temperature=0.0,
                    detokenize=False,
                    output_kind="final_only",
                ),
            )
        t0 = time.perf_counter()
        engine.step()
        first = time.perf_counter() - t0
        while engine.has_unfinished_requests():
            engine.step()
        return time.perf_counter() - t0, first

    for _ in range(args.num_iters_warmup):
        one_run()
    spec = engine.spec
    drafted = (spec.stats.num_draft_tokens, spec.stats.num_accepted_tokens) if spec else (0, 0)
    runs = [one_run() for _ in range(args.num_iters)]
    total = [t for t, _ in runs]
    decode_step = [(t - first) / max(args.output_len - 1, 1) for t, first in runs]
    result = {
        "engine": "pagoda",
        "model": config.dummy_shape or config.name,
        "quantization": config.quantization or "none",
        "dtype": str(runner.dtype).removeprefix("torch."),
        "batch_size": args.batch_size,
        "input_len": len(prompts[0]),
        "output_len": args.output_len,
        "latency_mean_s": round(statistics.mean(total), 4),
        "latency_p50_s": round(statistics.median(total), 4),
        "decode_step_mean_ms": round(1000 * statistics.mean(decode_step), 3),
        "weight_bytes": weight_bytes,
        "workload": args.workload,
    }
    if spec is not None:  # over the timed runs: accepted / proposed tokens
        proposed = spec.stats.num_draft_tokens - drafted[0]
        accepted = spec.stats.num_accepted_tokens - drafted[1]
        result["speculative_config"] = config.speculative_config
        result["acceptance_rate"] = round(accepted / proposed, 3) if proposed else 0.0
    if args.memory_bandwidth_gbps:
        floor_ms = 1000 * weight_bytes / (args.memory_bandwidth_gbps * 1e9)
        result["weight_read_floor_ms"] = round(floor_ms, 3)
        result["decode_step_over_floor"] = round(result["decode_step_mean_ms"] / floor_ms, 2)
    print(json.dumps(result), flush=True)
    print(
        f"batch {args.batch_size}: {result['latency_mean_s']} s for {args.output_len} tokens, "
        f"{result['decode_step_mean_ms']} ms a decode step",
        file=sys.stderr,
    )
    if args.result_file:
        with open(args.result_file, "w") as f:
            json.dump(result, f, indent=2)
    return 0


def _weights(model: torch.nn.Module) -> list[torch.Tensor]:
    """Every tensor a decode step reads: parameters and the quantized layers' buffers."""
    return [*model.parameters(), *(b for name, b in model.named_buffers() if "weight" in name)]
