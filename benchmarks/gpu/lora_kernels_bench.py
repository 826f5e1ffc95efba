"""One decode step's LoRA work at Llama-3.1-8B's shapes on a GPU (issue 17, point 5): each
projection's adapter delta (q|k|v, o, gate|up, down; rank 16, 8 slots, 256 tokens) with the
kernels of pagoda.engine.lora.kernels, and the base model's own product for scale (the kernels'
correctness is tests/gpu/test_lora_gpu.py's; the kernels they replaced and their figures are in
docs/performance.md). Each is timed in a captured CUDA graph of 32 layers (their
own weights, so L2 holds no layer's A or B from the last), replayed after a warm-up, with CUDA
events: microseconds per layer, and the step's total (x32 layers); last, one graph of all four
projections of 32 layers (the step's LoRA cost, gaps between launches included). Two mixes: the
tokens round-robin over the 8 adapters (W1's decode steps) and a random mix with base tokens.

    source benchmarks/gpu/device_env.sh; python3 benchmarks/gpu/lora_kernels_bench.py
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F

from pagoda.engine.lora.batch import LoRABatch
from pagoda.engine.lora.kernels import add_lora

# (name, in, slice outputs) of the 8B shape on one GPU
PROJECTIONS = [
    ("q|k|v", 4096, [4096, 1024, 1024]),
    ("o", 4096, [4096]),
    ("gate|up", 4096, [14336, 14336]),
    ("down", 14336, [4096]),
]


def graph_us(calls: list[Callable[[], object]], replays: int = 20) -> float:
    """Microseconds of one replay of a graph of the calls (after an eager run and a warm-up)."""
    for call in calls:
        call()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for call in calls:
            call()
    for _ in range(3):
        graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(replays):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1000 / replays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--layers", type=int, default=32)
    args = parser.parse_args()
    device, dtype, n_layers = torch.device("cuda"), torch.bfloat16, args.layers
    torch.manual_seed(0)
    print(torch.cuda.get_device_name(), f"tokens {args.tokens} rank {args.rank} slots {args.slots}")
    mixes = {
        "8 adapters round-robin": np.arange(args.tokens) % args.slots,
        "random, base among them": np.random.default_rng(0).integers(-1, args.slots, args.tokens),
    }
    weights = {}  # projection -> (x, y, [(a, b) per layer], [w per layer])
    for name, k, sizes in PROJECTIONS:
        x = torch.randn(args.tokens, k, device=device, dtype=dtype)
        y = torch.randn(args.tokens, sum(sizes), device=device, dtype=dtype)
        ab = [
            (
                torch.randn(args.slots, len(sizes) * args.rank, k, device=device, dtype=dtype)
                * k**-0.5,
                torch.randn(args.slots, sum(sizes), args.rank, device=device, dtype=dtype) * 0.1,
            )
            for _ in range(n_layers)
        ]
        ws = [torch.randn(sum(sizes), k, device=device, dtype=dtype) for _ in range(n_layers)]
        weights[name] = (x, y, ab, ws, sizes)
    batch = LoRABatch(args.tokens, args.slots, device)
    for mix, token_slots in mixes.items():
        batch.set(token_slots)
        print(f"\n{mix}: microseconds per layer (one projection)")
        print(f"{'projection':<10} {'base GEMM':>10} {'LoRA':>10}")
        totals = np.zeros(2)
        for name, (x, y, ab, ws, sizes) in weights.items():
            times = [
                graph_us([partial(F.linear, x, w) for w in ws]),
                graph_us([partial(add_lora, x, y, a, b, sizes, batch) for a, b in ab]),
            ]
            times = [t / n_layers for t in times]
            totals += times
            print(f"{name:<10} " + " ".join(f"{t:>10.1f}" for t in times))
        print(f"{'layer':<10} " + " ".join(f"{t:>10.1f}" for t in totals))
        print(
            f"x{n_layers} layers, ms per step: base GEMMs {totals[0] * n_layers / 1000:.2f}, "
            f"LoRA {totals[1] * n_layers / 1000:.2f}"
        )
        step = [
            partial(add_lora, x, y, *ab[layer], sizes, batch)
            for layer in range(n_layers)
            for x, y, ab, _, sizes in weights.values()
        ]
        print(f"one graph of the step's LoRA work: {graph_us(step) / 1000:.2f} ms")


if __name__ == "__main__":
    main()
