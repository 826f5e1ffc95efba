"""The FP8 GEMV's tile sizes (and, above one row, split-K) at the Llama-3.1-8B layer shapes, batch 1 and 8, against
bf16 torch.matmul and torch._scaled_mm on the same card: CUDA-graph replay medians, and the
fraction of the copy bandwidth each reaches (bytes = the weight read). Prints one JSON line a case."""

from __future__ import annotations

import itertools
import json
import os
from functools import partial

import torch
import triton.testing

from pagoda.engine.kernels.w8_gemv import w8_gemv, w8_gemv_row
from pagoda.engine.quantization.fp8 import fp8_linear_scaled_mm, quantize_per_channel

# Batches swept: ROWS="1 8" adds the GEMM path above one row (many more compiles).
ROWS = tuple(int(m) for m in os.environ.get("ROWS", "1").split())
SHAPES = {"qkv": (4096, 6144), "o": (4096, 4096), "gate_up": (4096, 28672), "down": (14336, 4096)}


def bench(fn) -> float:
    return triton.testing.do_bench_cudagraph(fn, rep=50) * 1e3  # microseconds


def main() -> None:
    for name, (k, n) in SHAPES.items():
        w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02
        q, scale = quantize_per_channel(w)
        for m in ROWS:
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            row = {"layer": name, "m": m, "bf16_us": bench(partial(torch.matmul, x, w.T))}
            row["scaled_mm_us"] = bench(partial(fp8_linear_scaled_mm, x, q, scale, None))
            best = None
            if m == 1:  # the row kernel: rows a program, K step, warps
                configs = itertools.product((4, 8, 16, 32), (256, 1024), (4,), (False, True))
                cases = [(c, partial(w8_gemv_row, x, q, scale, None, *c)) for c in configs]
            else:
                configs = itertools.product((16, 32, 64), (256, 512), (None, 1), (4, 8))
                cases = [(c, partial(w8_gemv, x, q, scale, None, *c)) for c in configs]
            for config, fn in cases:
                t = bench(fn)
                if best is None or t < best[0]:
                    best = (round(t, 2), *config)
            t_default = bench(partial(w8_gemv, x, q, scale, None))
            row.update(gemv_default_us=t_default, gemv_best=best)
            row["gemv_default_tb_s"] = n * k / t_default / 1e6
            row["bf16_tb_s"] = 2 * n * k / row["bf16_us"] / 1e6
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
