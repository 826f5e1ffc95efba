"""One decode step's LoRA work at Llama-3.1-8B's shapes on a GPU (issue 17, point 5): each
projection's adapter delta (q|k|v, o, gate|up, down; rank 16, 8 slots, 256 tokens) with the
kernels of pagoda.engine.lora.kernels, with the kernels they replaced (a copy below, kept only
here: one shrink of a program per slot's row block walking all of K, one expand per slice), and
the base model's own product for scale. Each is timed in a captured CUDA graph of 32 layers (their
own weights, so L2 holds no layer's A or B from the last), replayed after a warm-up, with CUDA
events: microseconds per layer, and the step's total (x32 layers); last, one graph of all four
projections of 32 layers per kernel set (the step's LoRA cost, gaps between launches included).
Two mixes: the tokens round-robin over the 8 adapters (W1's decode steps) and a random mix with
base tokens. The old and new kernels' outputs are checked equal first.

    source benchmarks/gpu/device_env.sh; python3 benchmarks/gpu/lora_kernels_bench.py
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F

from pagoda.engine.kernels.triton_import import tl, triton
from pagoda.engine.lora.batch import LoRABatch
from pagoda.engine.lora.kernels import add_lora

# (name, in, slice outputs) of the 8B shape on one GPU
PROJECTIONS = [
    ("q|k|v", 4096, [4096, 1024, 1024]),
    ("o", 4096, [4096]),
    ("gate|up", 4096, [14336, 14336]),
    ("down", 14336, [4096]),
]


@triton.jit
def _old_shrink_kernel(
    x_ptr,
    a_ptr,
    s_ptr,
    sorted_ptr,
    counts_ptr,
    starts_ptr,
    K,
    N,
    stride_xm,
    stride_as,
    stride_an,
    stride_sm,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    slot = tl.program_id(1)
    pid_n = tl.program_id(2)
    count = tl.load(counts_ptr + slot)
    if pid_m * BLOCK_M >= count:
        return
    start = tl.load(starts_ptr + slot)
    offs = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = offs < count
    rows = tl.load(sorted_ptr + start + offs, mask=row_mask, other=0).to(tl.int64)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_mask = cols < N
    a_base = a_ptr + slot.to(tl.int64) * stride_as
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_mask = ks < K
        x = tl.load(
            x_ptr + rows[:, None] * stride_xm + ks[None, :],
            mask=row_mask[:, None] & k_mask[None, :],
            other=0.0,
        )
        a = tl.load(
            a_base + cols[:, None] * stride_an + ks[None, :],
            mask=col_mask[:, None] & k_mask[None, :],
            other=0.0,
        )
        acc += tl.dot(x, tl.trans(a))
    tl.store(
        s_ptr + rows[:, None] * stride_sm + cols[None, :],
        acc.to(s_ptr.dtype.element_ty),
        mask=row_mask[:, None] & col_mask[None, :],
    )


@triton.jit
def _old_expand_kernel(
    s_ptr,
    b_ptr,
    y_ptr,
    sorted_ptr,
    counts_ptr,
    starts_ptr,
    N,
    R,
    s_col0,
    y_col0,
    stride_sm,
    stride_bs,
    stride_bn,
    stride_ym,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_R: tl.constexpr,
):
    pid_m = tl.program_id(0)
    slot = tl.program_id(1)
    pid_n = tl.program_id(2)
    count = tl.load(counts_ptr + slot)
    if pid_m * BLOCK_M >= count:
        return
    start = tl.load(starts_ptr + slot)
    offs = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = offs < count
    rows = tl.load(sorted_ptr + start + offs, mask=row_mask, other=0).to(tl.int64)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_mask = cols < N
    rs = tl.arange(0, BLOCK_R)
    r_mask = rs < R
    s = tl.load(
        s_ptr + rows[:, None] * stride_sm + s_col0 + rs[None, :],
        mask=row_mask[:, None] & r_mask[None, :],
        other=0.0,
    )
    b = tl.load(
        b_ptr + slot.to(tl.int64) * stride_bs + cols[:, None] * stride_bn + rs[None, :],
        mask=col_mask[:, None] & r_mask[None, :],
        other=0.0,
    )
    acc = tl.dot(s, tl.trans(b))
    y_ptrs = y_ptr + rows[:, None] * stride_ym + y_col0 + cols[None, :]
    mask = row_mask[:, None] & col_mask[None, :]
    y = tl.load(y_ptrs, mask=mask, other=0.0)
    tl.store(y_ptrs, (y.to(tl.float32) + acc).to(y_ptr.dtype.element_ty), mask=mask)


def old_add_lora(
    x: torch.Tensor,
    y: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    sizes: list[int],
    batch: LoRABatch,
) -> None:
    """The replaced kernels as the engine launched them (b's slices as the per-slice B)."""
    m, k = x.shape
    n, r = a.shape[1], b.shape[2]
    block_m = 16 if m <= 64 else 64
    s = torch.empty((m, n), dtype=x.dtype, device=x.device)
    block_n = max(16, min(64, triton.next_power_of_2(n)))
    _old_shrink_kernel[(triton.cdiv(m, block_m), a.shape[0], triton.cdiv(n, block_n))](
        x,
        a,
        s,
        batch.sorted_tokens,
        batch.slot_counts,
        batch.slot_starts,
        k,
        n,
        x.stride(0),
        a.stride(0),
        a.stride(1),
        s.stride(0),
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_K=64,
    )
    offset = 0
    for i, size in enumerate(sizes):
        b_i = b[:, offset : offset + size]
        _old_expand_kernel[(triton.cdiv(m, block_m), b.shape[0], triton.cdiv(size, 64))](
            s,
            b_i,
            y,
            batch.sorted_tokens,
            batch.slot_counts,
            batch.slot_starts,
            size,
            r,
            i * r,
            offset,
            s.stride(0),
            b_i.stride(0),
            b_i.stride(1),
            y.stride(0),
            BLOCK_M=block_m,
            BLOCK_N=64,
            BLOCK_R=max(16, triton.next_power_of_2(r)),
        )
        offset += size


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
        print(f"{'projection':<10} {'base GEMM':>10} {'LoRA new':>10} {'LoRA old':>10}")
        totals = np.zeros(3)
        for name, (x, y, ab, ws, sizes) in weights.items():
            got, want = y.clone(), y.clone()
            add_lora(x, got, *ab[0], sizes, batch)
            old_add_lora(x, want, *ab[0], sizes, batch)
            torch.testing.assert_close(got.float(), want.float(), atol=3e-2, rtol=2e-2)
            times = [
                graph_us([partial(F.linear, x, w) for w in ws]),
                graph_us([partial(add_lora, x, y, a, b, sizes, batch) for a, b in ab]),
                graph_us([partial(old_add_lora, x, y, a, b, sizes, batch) for a, b in ab]),
            ]
            times = [t / n_layers for t in times]
            totals += times
            print(f"{name:<10} " + " ".join(f"{t:>10.1f}" for t in times))
        print(f"{'layer':<10} " + " ".join(f"{t:>10.1f}" for t in totals))
        print(
            f"x{n_layers} layers, ms per step: base GEMMs {totals[0] * n_layers / 1000:.2f}, "
            f"LoRA new {totals[1] * n_layers / 1000:.2f}, old {totals[2] * n_layers / 1000:.2f}"
        )
        for label, fn in (("new", add_lora), ("old", old_add_lora)):
            step = [
                partial(fn, x, y, *ab[layer], sizes, batch)
                for layer in range(n_layers)
                for x, y, ab, _, sizes in weights.values()
            ]
            print(f"one graph of the step's LoRA work ({label}): {graph_us(step) / 1000:.2f} ms")


if __name__ == "__main__":
    main()
