"""Compile a Triton kernel for an H100/H200 (sm_90) on a machine without a GPU, to check what the
interpreter cannot: constexpr branches, layouts, bit casts, and what the compiled code does
(vector loads, asynchronous copies)."""

from __future__ import annotations

from typing import Any


def compile_for_hopper(
    kernel: Any,
    pointers: dict[str, str],
    ints: list[str],
    constexprs: dict[str, Any],
    num_warps: int,
) -> Any:
    """The compiled kernel (`.asm["cubin"]`, `.asm["ptx"]`), from its arguments in order:
    pointers (name -> Triton type), 32-bit ints, then constexprs (name -> value). Pointers and
    ints are taken as multiples of 16, the specialization a launch on 16-byte aligned tensors
    with such sizes gets (without it loads compile to single bytes, not what the GPU runs)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature = pointers | dict.fromkeys(ints, "i32") | dict.fromkeys(constexprs, "constexpr")
    names = list(signature)
    source = ASTSource(
        fn=kernel,
        signature=signature,
        constexprs={(names.index(k),): v for k, v in constexprs.items()},
        attrs={(names.index(k),): [["tt.divisibility", 16]] for k in [*pointers, *ints]},
    )
    target = GPUTarget("cuda", 90, 32)
    return triton.compile(source, target=target, options={"num_warps": num_warps})
