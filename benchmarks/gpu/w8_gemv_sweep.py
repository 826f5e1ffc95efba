"""The FP8 GEMV's tiles and pipeline stages (and, above one row, split-K) at the Llama-3.1-8B
layer shapes, against bf16 torch.matmul on the same card, every kernel timed over weights that
are not in L2 (cold_bench.py: as in a decode step, not as in a loop over one weight). Prints one
JSON line a layer and batch: the default tiles' time, the best five configurations, the read rate
(bytes = the weight read).

    ROWS="1 8" python3 benchmarks/gpu/w8_gemv_sweep.py   (default ROWS=1: the row kernel only)
"""

from __future__ import annotations

import itertools
import json
import os
from functools import partial

import torch
from cold_bench import bench_cold, copies_for

from pagoda.engine.kernels.w8_gemv import w8_gemv, w8_gemv_row
from pagoda.engine.quantization.fp8 import fp8_linear_scaled_mm, quantize_per_channel

ROWS = tuple(int(m) for m in os.environ.get("ROWS", "1").split())
SHAPES = {"qkv": (4096, 6144), "o": (4096, 4096), "gate_up": (4096, 28672), "down": (14336, 4096)}
# The row kernel's (rows a program, K step, warps, sum each step, stages).
ROW_CONFIGS = list(
    itertools.product((8, 16, 32), (256, 512, 1024), (4,), (False, True), (1, 2, 3, 4))
)
# Above one row: (rows a program, K step, split-K, warps).
GEMM_CONFIGS = list(itertools.product((16, 32, 64), (256, 512), (None, 1), (4, 8)))


def main() -> None:
    for name, (k, n) in SHAPES.items():
        w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02
        q, scale = quantize_per_channel(w)
        fp8 = [(q.clone(), scale.clone()) for _ in range(copies_for(q.nbytes))]
        bf16 = [w.clone() for _ in range(copies_for(w.nbytes))]
        del w, q
        for m in ROWS:
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            row = {"layer": name, "m": m, "bf16_us": bench_cold(lambda w, x=x: x @ w.T, bf16)}
            if m == 1:
                kernel, configs = w8_gemv_row, ROW_CONFIGS
            else:
                kernel, configs = w8_gemv, GEMM_CONFIGS
                row["scaled_mm_us"] = bench_cold(
                    lambda qs, x=x: fp8_linear_scaled_mm(x, *qs, None), fp8
                )
            times = []
            for config in configs:
                run = partial(kernel, x)
                t = bench_cold(lambda qs, run=run, c=config: run(*qs, None, *c), fp8)
                times.append((round(t, 2), *config))
            t_default = bench_cold(lambda qs, x=x: w8_gemv(x, *qs, None), fp8)
            row.update(gemv_default_us=round(t_default, 2), gemv_best=sorted(times)[:5])
            row["gemv_default_tb_s"] = round(n * k / t_default / 1e6, 2)
            row["gemv_best_tb_s"] = round(n * k / min(times)[0] / 1e6, 2)
            row["bf16_tb_s"] = round(2 * n * k / row["bf16_us"] / 1e6, 2)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
