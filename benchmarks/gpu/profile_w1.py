"""Where W1's time goes, on the GPU: per-step host phases against the GPU's forward time, then a
kernel table (torch.profiler) for one prefill-carrying step and one decode-only step.

    python3 benchmarks/gpu/profile_w1.py [engine flags...]

Host phases are wall-clock spans on the engine thread (schedule, prepare, forward launch, the
sampler, which ends in the step's one host sync, and the rest of the step); the GPU span is a
pair of CUDA events around the forward pass. A step whose wall time far exceeds its GPU time is
waiting on the host.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict

import torch

from pagoda.engine.args import add_engine_args, configs_from_args
from pagoda.engine.bench.workload import random_workload
from pagoda.engine.llm_engine import LLMEngine
from pagoda.engine.sampling_params import SamplingParams


def timed(obj, name: str, spans: dict[str, float]) -> None:
    fn = getattr(obj, name)

    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spans[name] += time.perf_counter() - t

    setattr(obj, name, wrapper)


def main() -> None:
    argv = sys.argv[1:]
    steps_to_profile = 2  # profile the third step of each kind: compilation and warm-up are behind
    parser = argparse.ArgumentParser()
    add_engine_args(parser)
    args = parser.parse_args(
        [
            "--load-format",
            "dummy",
            "--dummy-shape",
            "llama-3.1-8b",
            "--max-num-seqs",
            "256",
            "--max-num-batched-tokens",
            "8192",
            "--max-model-len",
            "4096",
            *argv,
        ]
    )
    engine = LLMEngine(configs_from_args(args)[0], log_stats=False)
    runner = engine.runner
    wl = random_workload(256, (100, 1024), (100, 1024), 128000, 0)
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
        )
    spans: dict[str, float] = defaultdict(float)
    timed(engine.scheduler, "schedule", spans)
    timed(runner, "prepare", spans)
    timed(runner, "sampler", spans)
    gpu_events = []

    def gpu_timed(fn):
        def wrapper(*a, **k):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            t = time.perf_counter()
            start.record()
            out = fn(*a, **k)
            end.record()
            spans["forward_launch"] += time.perf_counter() - t
            gpu_events.append((start, end))
            return out

        return wrapper

    runner.model.forward = gpu_timed(runner.model.forward)
    if runner.graphs is not None:
        runner.graphs.run = gpu_timed(runner.graphs.run)

    totals = {kind: defaultdict(float) for kind in ("prefill", "decode")}
    counts = defaultdict(int)
    profiled = set()
    t0 = time.perf_counter()
    while engine.has_unfinished_requests():
        kind = (
            "decode"
            if not engine.scheduler.waiting
            and all(s.num_computed_tokens == s.num_tokens - 1 for s in engine.scheduler.running)
            else "prefill"
        )
        prof = None
        if kind not in profiled and counts[kind] == steps_to_profile:
            prof = torch.profiler.profile(
                activities=[
                    torch.profiler.ProfilerActivity.CPU,
                    torch.profiler.ProfilerActivity.CUDA,
                ]
            )
            prof.__enter__()
        spans.clear()
        gpu_events.clear()
        t = time.perf_counter()
        engine.step()
        wall = time.perf_counter() - t
        if prof is not None:
            torch.cuda.synchronize()
            prof.__exit__(None, None, None)
            profiled.add(kind)
            print(f"\n=== one {kind} step, kernels by CUDA time ===")
            print(
                prof.key_averages().table(
                    sort_by="cuda_time_total", row_limit=14, max_name_column_width=60
                )
            )
            continue
        torch.cuda.synchronize()
        gpu = sum(s.elapsed_time(e) for s, e in gpu_events) / 1e3
        acc = totals[kind]
        acc["wall"] += wall
        acc["gpu_forward"] += gpu
        for name, v in spans.items():
            acc[name] += v
        counts[kind] += 1
        if kind == "prefill":
            print(
                f"prefill step {counts[kind]}: wall {1e3 * wall:.1f} ms, GPU forward {1e3 * gpu:.1f} ms"
            )
    total = time.perf_counter() - t0
    print(f"\nW1 done in {total:.2f}s (profiled steps included; their tables above)")
    for kind, acc in totals.items():
        n = counts[kind]
        parts = ", ".join(f"{k} {v:.2f}s ({1e3 * v / n:.2f} ms/step)" for k, v in acc.items())
        print(f"{kind}: {n} steps: {parts}")


if __name__ == "__main__":
    main()
