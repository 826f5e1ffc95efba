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


def compile_w8_row(
    block_n: int, block_k: int, sum_each_step: bool, stages: int, has_bias: bool = False
) -> Any:
    """kernels/w8_gemv.py's row kernel (FP8 weights, bf16 activations), unmasked tiles."""
    from pagoda.engine.kernels.w8_gemv import _w8_gemv_row_kernel

    pointers = {"x_ptr": "*bf16", "w_ptr": "*fp8e4nv", "scale_ptr": "*fp32"}
    pointers |= {"bias_ptr": "*fp32", "y_ptr": "*bf16"}
    constexprs = {"HAS_BIAS": has_bias, "EVEN": True, "BLOCK_N": block_n, "BLOCK_K": block_k}
    constexprs |= {"SUM_EACH_STEP": sum_each_step, "NUM_STAGES": stages}
    return compile_for_hopper(_w8_gemv_row_kernel, pointers, ["N", "K", "stride_wn"], constexprs, 4)


def compile_w4_gemv(
    block_n: int,
    block_k: int,
    warps: int,
    stages: int,
    group: int = 128,
    even: bool = True,
    has_bias: bool = False,
) -> Any:
    """kernels/w4_gemv.py's one-row GEMV (groups of `group` inputs, one sub-tile a group)."""
    from pagoda.engine.kernels.w4_gemv import _w4_gemv_kernel

    pointers = {"x_ptr": "*bf16", "w_ptr": "*i32", "scale_ptr": "*fp16", "zero_ptr": "*u8"}
    pointers |= {"bias_ptr": "*bf16", "y_ptr": "*bf16"}
    ints = ["N", "K", "stride_wn", "stride_sg"]
    constexprs = {"GROUP": group, "HAS_BIAS": has_bias, "EVEN": even, "BLOCK_N": block_n}
    constexprs |= {"BLOCK_K": block_k, "SUB": group, "NUM_STAGES": stages}
    return compile_for_hopper(_w4_gemv_kernel, pointers, ints, constexprs, warps)
