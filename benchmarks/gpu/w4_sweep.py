"""The 4-bit kernels' tiles and pipeline stages (the one-row GEMV's; above one row, the GEMM's
with split-K) at the Llama-3.1-8B layer shapes (group 128, zero points), against bf16
torch.matmul on the same card, every kernel timed over weights that are not in L2 (cold_bench.py).
Prints one JSON line a layer and batch: the default tiles' time, the best five configurations,
the read rate (bytes = packed weights, scales and zeros).

    ROWS="1 8" python3 benchmarks/gpu/w4_sweep.py   (default ROWS=1: the one-row GEMV only)
"""

from __future__ import annotations

import itertools
import json
import os

import torch
from cold_bench import bench_cold, copies_for

from pagoda.engine.kernels.w4_gemv import w4_gemv
from pagoda.engine.kernels.w4a16_gemm import w4a16_matmul

ROWS = tuple(int(m) for m in os.environ.get("ROWS", "1").split())
SHAPES = {"qkv": (4096, 6144), "o": (4096, 4096), "gate_up": (4096, 28672), "down": (14336, 4096)}
GROUP = 128
# The one-row GEMV's (rows a program, K step, warps, stages).
ROW_CONFIGS = list(itertools.product((8, 16, 32), (1024, 2048), (4, 8), (1, 2, 3)))
# Above one row: (rows a program, K step, split-K, warps).
GEMM_CONFIGS = list(itertools.product((32, 64, 128), (128,), (None, 1, 2, 4, 8), (4, 8)))

W4 = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # packed, scales, zeros


def main() -> None:
    for name, (k, n) in SHAPES.items():
        w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02
        packed = torch.randint(-(2**31), 2**31 - 1, (n, k // 8), device="cuda", dtype=torch.int32)
        scales = torch.full((k // GROUP, n), 0.004, device="cuda", dtype=torch.float16)
        zeros = torch.full((k // GROUP, n), 8, device="cuda", dtype=torch.uint8)
        w4_bytes = packed.nbytes + scales.nbytes + zeros.nbytes
        w4: list[W4] = [
            (packed.clone(), scales.clone(), zeros.clone()) for _ in range(copies_for(w4_bytes))
        ]
        bf16 = [w.clone() for _ in range(copies_for(w.nbytes))]
        del w, packed
        for m in ROWS:
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            row = {"layer": name, "m": m, "bf16_us": bench_cold(lambda w, x=x: x @ w.T, bf16)}
            times = []
            for c in ROW_CONFIGS if m == 1 else GEMM_CONFIGS:
                if m == 1:
                    t = bench_cold(lambda p, x=x, c=c: w4_gemv(x, *p, GROUP, None, *c), w4)
                else:
                    t = bench_cold(
                        lambda p, x=x, c=c: w4a16_matmul(x, *p, GROUP, None, None, *c), w4
                    )
                times.append((round(t, 2), *c))
            t_default = bench_cold(lambda p, x=x: w4a16_matmul(x, *p, GROUP, None, None), w4)
            row.update(w4_default_us=round(t_default, 2), w4_best=sorted(times)[:5])
            row["w4_default_over_bf16"] = round(t_default / row["bf16_us"], 3)
            row["w4_default_tb_s"] = round(w4_bytes / t_default / 1e6, 2)
            row["w4_best_tb_s"] = round(w4_bytes / min(times)[0] / 1e6, 2)
            row["bf16_tb_s"] = round(2 * n * k / row["bf16_us"] / 1e6, 2)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
