"""Triton, or a stand-in so that kernel modules still import where Triton is not installed.

A CPU-only torch build ships no Triton. The references beside each kernel must still work there, so
the `@triton.jit` definitions have to evaluate; calling a kernel without Triton raises.
"""

from __future__ import annotations

import types

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
