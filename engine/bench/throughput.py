"""`pagoda bench throughput`: offline throughput on a W1-shaped workload, with HF as the comparator.

Reports requests/s, output tokens/s and total tokens/s, and the KV cache's waste: the share of
reserved slots that hold no token, averaged over the steps, beside what static preallocation of
max_model_len per request (the systems the vLLM paper measured) would waste on the same batches.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from pagoda.engine.bench.workload import Workload, random_workload
from pagoda.engine.config import EngineConfig
from pagoda.engine.lora.request import LoRARequest
from pagoda.engine.sampling_params import SamplingParams


def add_throughput_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "workload (W1: 256 requests, prompts and outputs uniform in 100..1024)"
    )
    g.add_argument("--num-prompts", type=int, default=256)
    g.add_argument("--input-len", type=int, nargs=2, default=[100, 1024], metavar=("MIN", "MAX"))
    g.add_argument("--output-len", type=int, nargs=2, default=[100, 1024], metavar=("MIN", "MAX"))
    g.add_argument("--workload-seed", type=int, default=0)
    g.add_argument(
        "--hf-baseline",
        action="store_true",
        help="also run HF transformers static-batched generate on the same workload",
    )
    g.add_argument("--hf-batch-size", type=int, default=64)
    g.add_argument("--result-file", help="write the results as JSON here")
    g.add_argument(
        "--lora-path",
        nargs="+",
        default=None,
        help="LoRA adapter folders (needs --enable-lora): request i runs adapter i mod their count",
    )


def run_throughput(config: EngineConfig, args: argparse.Namespace) -> int:
    from pagoda.engine.llm_engine import LLMEngine
    from pagoda.engine.runner.model_runner import ModelRunner

    t0 = time.perf_counter()
    engine = LLMEngine(config, log_stats=False)
    load_s = time.perf_counter() - t0
    runner = engine.runner
    assert isinstance(runner, ModelRunner), "LLMEngine(config) builds the real runner"
    # W1 draws ids below 128000, as hf_baseline.py does, so both runs see the very same requests.
    vocab = min(runner.model_config.vocab_size, 128000)
    wl = random_workload(
        args.num_prompts, tuple(args.input_len), tuple(args.output_len), vocab, args.workload_seed
    )
    print(
        f"workload: {len(wl.prompts)} requests, {wl.prompt_tokens} prompt tokens, {wl.output_tokens} output "
        f"tokens; model loaded in {load_s:.1f}s; KV cache {engine.kv.num_blocks} blocks",
        file=sys.stderr,
    )
    results = {
        "engine": "pagoda",
        "model": config.dummy_shape or config.name,
        "device": str(runner.device),
        "dtype": str(runner.dtype).removeprefix("torch."),
        "loras": len(args.lora_path or []),
        **_run_engine(engine, wl, args.lora_path or []),
    }
    _print(results)
    all_results = [results]
    if args.hf_baseline:
        hf = run_hf_static(config, engine, wl, args.hf_batch_size)
        _print(hf)
        all_results.append(hf)
        print(
            f"speedup over HF static (output tok/s): {results['output_tok_per_s'] / hf['output_tok_per_s']:.2f}x"
        )
    if args.result_file:
        with open(args.result_file, "w") as f:
            json.dump(all_results, f, indent=2)
    return 0


def _run_engine(engine, wl: Workload, lora_paths: list[str]) -> dict:
    loras = [LoRARequest(f"lora{i}", i + 1, path) for i, path in enumerate(lora_paths)]
    for i, (prompt, out) in enumerate(zip(wl.prompts, wl.output_lens)):
        engine.add_request(
            str(i),
            prompt,
            SamplingParams(
                max_tokens=out,
                ignore_eos=True,
                temperature=0.0,
                detokenize=False,
                output_kind="final_only",
            ),
            lora_request=loras[i % len(loras)] if loras else None,
        )
    bs = engine.config.block_size
    used = reserved = static = 0
    generated = steps = decode_steps = 0
    decode_s = 0.0
    t0 = time.perf_counter()
    while engine.has_unfinished_requests():
        # A decode-only step: nothing waits and every running sequence has its prompt in the cache.
        decode_only = not engine.scheduler.waiting and all(
            s.num_computed_tokens == s.num_tokens - 1 for s in engine.scheduler.running
        )
        ts = time.perf_counter()
        for out in engine.step():  # finished requests only (final_only)
            generated += sum(len(o.token_ids) for o in out.outputs)
        if decode_only:
            decode_steps += 1
            decode_s += time.perf_counter() - ts
        steps += 1
        running = engine.scheduler.running
        used += sum(s.num_computed_tokens for s in running)
        reserved += sum(len(s.block_table) for s in running) * bs
        static += len(running) * engine.max_model_len  # a static system reserves the whole context
    dt = time.perf_counter() - t0
    n = len(wl.prompts)
    return {
        "requests": n,
        "seconds": round(dt, 2),
        "steps": steps,
        "decode_only_steps": decode_steps,
        "decode_only_seconds": round(decode_s, 2),
        "requests_per_s": round(n / dt, 3),
        "output_tok_per_s": round(generated / dt, 1),
        "total_tok_per_s": round((generated + wl.prompt_tokens) / dt, 1),
        "kv_waste_pct": round(100 * (1 - used / max(reserved, 1)), 2),
        "static_prealloc_waste_pct": round(100 * (1 - used / max(static, 1)), 2),
    }


def run_hf_static(config: EngineConfig, engine, wl: Workload, batch_size: int) -> dict:
    """HF transformers' generate, static batches, left-padded, each batch run to its longest output."""
    import torch

    from pagoda.engine.bench.hf_model import load_hf_model

    device, dtype = engine.runner.device, engine.runner.dtype
    model = load_hf_model(config, engine.runner.model_config, device, dtype)
    t0 = time.perf_counter()
    done = 0
    for i in range(0, len(wl.prompts), batch_size):
        ps, outs = wl.prompts[i : i + batch_size], wl.output_lens[i : i + batch_size]
        width = max(map(len, ps))
        ids = torch.zeros(len(ps), width, dtype=torch.long)
        mask = torch.zeros(len(ps), width, dtype=torch.long)
        for j, p in enumerate(ps):
            ids[j, width - len(p) :] = torch.tensor(p)
            mask[j, width - len(p) :] = 1
        with torch.inference_mode():
            model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=max(outs),
                min_new_tokens=max(outs),
                do_sample=False,
                pad_token_id=0,
                eos_token_id=None,
            )
        done += sum(outs)
    dt = time.perf_counter() - t0
    n = len(wl.prompts)
    return {
        "engine": f"hf-transformers static batch {batch_size}",
        "requests": n,
        "seconds": round(dt, 2),
        "requests_per_s": round(n / dt, 3),
        "output_tok_per_s": round(done / dt, 1),
        "total_tok_per_s": round((done + wl.prompt_tokens) / dt, 1),
    }


def _print(r: dict) -> None:
    print(json.dumps(r), flush=True)
