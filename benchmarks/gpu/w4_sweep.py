"""The 4-bit kernels' tile sizes (the one-row GEMV's; above one row, the GEMM's with split-K) at the Llama-3.1-8B layer shapes (group 128, zero
points), batches 1 and 8, against bf16 torch.matmul on the same card: CUDA-graph replay
medians, and the bandwidth each reaches on its weight read (packed weights, scales and zeros for
the 4-bit kernel). Prints one JSON line a case."""

from __future__ import annotations

import itertools
import json
import os
from functools import partial

import torch
import triton.testing

from pagoda.engine.kernels.w4_gemv import w4_gemv
from pagoda.engine.kernels.w4a16_gemm import w4a16_matmul

# Batches swept: ROWS="1 8" adds the GEMM path above one row (many more compiles).
ROWS = tuple(int(m) for m in os.environ.get("ROWS", "1").split())
SHAPES = {"qkv": (4096, 6144), "o": (4096, 4096), "gate_up": (4096, 28672), "down": (14336, 4096)}
GROUP = 128


def bench(fn) -> float:
    return triton.testing.do_bench_cudagraph(fn, rep=50) * 1e3  # microseconds


def main() -> None:
    for name, (k, n) in SHAPES.items():
        w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02
        packed = torch.randint(-(2**31), 2**31 - 1, (n, k // 8), device="cuda", dtype=torch.int32)
        scales = torch.full((k // GROUP, n), 0.004, device="cuda", dtype=torch.float16)
        zeros = torch.full((k // GROUP, n), 8, device="cuda", dtype=torch.uint8)
        w4_bytes = packed.nbytes + scales.nbytes + zeros.nbytes
        run = partial(w4a16_matmul, packed=packed, scales=scales, zeros=zeros, group_size=GROUP)

        def gemm(x, block_n, block_k, split_k, num_warps, run=run):
            return run(x, None, None, block_n, block_k, split_k, num_warps)

        for m in ROWS:
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            row = {"layer": name, "m": m, "bf16_us": bench(partial(torch.matmul, x, w.T))}
            best = None
            if m == 1:  # the one-row kernel: rows a program, K step, warps
                configs = itertools.product((8, 16, 32), (1024, 2048), (4, 8))
                cases = [
                    (c, partial(w4_gemv, x, packed, scales, zeros, GROUP, None, *c))
                    for c in configs
                ]
            else:
                configs = itertools.product((32, 64, 128), (128,), (None, 1, 2, 4, 8), (4, 8))
                cases = [(c, partial(gemm, x, *c)) for c in configs]
            for config, fn in cases:
                t = bench(fn)
                if best is None or t < best[0]:
                    best = (round(t, 2), *config)
            t_default = bench(partial(run, x, g_idx=None, bias=None))
            row.update(w4_default_us=t_default, w4_best=best)
            row["w4_default_over_bf16"] = round(t_default / row["bf16_us"], 3)
            row["w4_default_tb_s"] = round(w4_bytes / t_default / 1e6, 2)
            row["bf16_tb_s"] = round(2 * n * k / row["bf16_us"] / 1e6, 2)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
