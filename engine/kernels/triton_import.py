"""Triton, or a stand-in so that kernel modules still import where Triton is not installed.

A CPU-only torch build ships no Triton. The references beside each kernel must still work there, so
the `@triton.jit` definitions have to evaluate; calling a kernel without Triton raises.
"""

from __future__ import annotations

import os
import types

# Triton 3.9 warns at every compile that the default for fusing a multiply and an add into one
# FMA is unset, and 3.10 turns the fusion off by default. The kernels were checked and measured
# with it on: say so, unless the user has chosen.
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

try:
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:
    HAS_TRITON = False

    class _Unavailable:
        def __init__(self, fn):
            self.fn = fn

        def __getitem__(self, grid):
            raise RuntimeError(f"Triton is not installed: cannot launch kernel {self.fn.__name__}")

    def _jit(fn=None, **_options):  # @triton.jit and @triton.jit(do_not_specialize=...)
        return _Unavailable(fn) if fn is not None else _Unavailable

    triton = types.SimpleNamespace(
        jit=_jit, cdiv=lambda a, b: -(-a // b), next_power_of_2=lambda n: 1 << (n - 1).bit_length()
    )
    tl = types.SimpleNamespace(constexpr=int)

__all__ = ["HAS_TRITON", "tl", "triton"]
