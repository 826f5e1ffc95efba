"""Where a batch-1 decode step's GPU time goes: one request, ten decode steps under
torch.profiler (CUDA graphs included: CUPTI records the kernels a graph replays), the kernels
by total CUDA time.

    python3 benchmarks/gpu/profile_decode.py [engine flags...]   (e.g. --quantization fp8)
"""

from __future__ import annotations

import argparse
import sys

import torch

from pagoda.engine.args import add_engine_args, configs_from_args
from pagoda.engine.llm_engine import LLMEngine
from pagoda.engine.sampling_params import SamplingParams

STEPS = 10


def main() -> None:
    parser = argparse.ArgumentParser()
    add_engine_args(parser)
    args = parser.parse_args(
        ["--load-format", "dummy", "--dummy-shape", "llama-3.1-8b", "--max-model-len", "4096"]
        + sys.argv[1:]
    )
    engine = LLMEngine(configs_from_args(args)[0], log_stats=False)
    params = SamplingParams(max_tokens=64, ignore_eos=True, temperature=0.0, detokenize=False)
    engine.add_request("0", list(range(100, 132)), params)
    for _ in range(8):  # the prefill, then warm decode steps
        engine.step()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(STEPS):
            engine.step()
        torch.cuda.synchronize()
    events = prof.key_averages()
    total = sum(e.device_time_total for e in events)
    print(
        f"=== {STEPS} decode steps at batch 1: {total / STEPS / 1e3:.3f} ms of kernels a step ==="
    )
    for e in sorted(events, key=lambda e: -e.device_time_total)[:24]:
        print(
            f"{e.device_time_total / STEPS:9.1f} us/step {e.count // STEPS:5d} calls/step "
            f"{e.device_time_total / max(e.count, 1):7.2f} us/call  {e.key[:90]}"
        )


if __name__ == "__main__":
    main()
