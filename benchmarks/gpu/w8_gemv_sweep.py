"""The FP8 GEMV's tile sizes and split-K at the Llama-3.1-8B layer shapes, batch 1 and 8, against
bf16 torch.matmul and torch._scaled_mm on the same card: CUDA-graph replay medians, and the
fraction of the copy bandwidth each reaches (bytes = the weight read). Prints one JSON line a case."""

from __future__ import annotations

import itertools
import json
from functools import partial

import torch
import triton.testing

from pagoda.engine.kernels.w8_gemv import w8_gemv
from pagoda.engine.quantization.fp8 import fp8_linear_scaled_mm, quantize_per_channel

SHAPES = {"qkv": (4096, 6144), "o": (4096, 4096), "gate_up": (4096, 28672), "down": (14336, 4096)}


def bench(fn) -> float:
    return triton.testing.do_bench_cudagraph(fn, rep=50) * 1e3  # microseconds


def main() -> None:
    for name, (k, n) in SHAPES.items():
        w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02
        q, scale = quantize_per_channel(w)
        for m in (1, 4):
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            row = {"layer": name, "m": m, "bf16_us": bench(partial(torch.matmul, x, w.T))}
            row["scaled_mm_us"] = bench(partial(fp8_linear_scaled_mm, x, q, scale, None))
            best = None
            for bn, bk, sk, nw in itertools.product((8, 16, 32, 64), (256, 512), (None, 1), (4, 8)):
                if m > 1 and bn < 16:
                    continue  # tl.dot's least N
                t = bench(partial(w8_gemv, x, q, scale, None, bn, bk, sk, nw))
                if best is None or t < best[0]:
                    best = (t, bn, bk, sk, nw)
            t_default = bench(partial(w8_gemv, x, q, scale, None))
            row.update(gemv_default_us=t_default, gemv_best=best)
            row["gemv_default_tb_s"] = n * k / t_default / 1e6
            row["bf16_tb_s"] = 2 * n * k / row["bf16_us"] / 1e6
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
