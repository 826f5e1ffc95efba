"""Timing a linear layer's kernel as a decode step meets it: weights streamed from HBM, not L2.

A kernel timed over and over on one weight reads much of it from L2 (50 MiB on an H200, more
than an FP8 qkv or o projection of the 8B shape), so small layers look faster than they are in a
step, where 32 layers' weights pass through. Here each timed call runs the kernel over `copies`
distinct weights, together several times the L2, back to back in one CUDA graph (the launch
gaps between them counted, as in a step), and reports the time per copy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TypeVar

import triton.testing

# Several times the L2 of an H100/H200 (50 MiB), so no copy is still cached when its turn comes.
COLD_BYTES = 512 * 2**20

T = TypeVar("T")


def copies_for(nbytes: int) -> int:
    """How many copies of a weight of `nbytes` make the set cold, at least two."""
    return max(2, math.ceil(COLD_BYTES / nbytes))


def bench_cold(run: Callable[[T], object], weights: Sequence[T]) -> float:
    """Microseconds per call of `run(w)` over each of `weights` in turn (CUDA-graph replay median)."""

    def all_copies() -> None:
        for w in weights:
            run(w)

    return triton.testing.do_bench_cudagraph(all_copies, rep=100) * 1e3 / len(weights)
