"""Per-token FP8 quantization of activations in one kernel: each row's absolute maximum, its scale
(max / 448), and the row divided by it and rounded to e4m3. Unfused, PyTorch takes five kernels and
two extra passes over the row for this, once per linear layer: at batch 1 that costs more than the
FP8 GEMM saves. The reference is pagoda.engine.quantization.fp8.quantize_per_token.
"""

from __future__ import annotations

import torch

from pagoda.engine.kernels.triton_import import tl, triton

FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max
MIN_SCALE = 1.0 / (FP8_MAX * 512.0)  # as the reference: a zero row quantizes to zeros


@triton.jit
def _per_token_quant_fp8_kernel(
    x_ptr, q_ptr, scale_ptr, stride_x, stride_q, n_cols, fp8_max, min_scale, BLOCK: tl.constexpr
):
    row = tl.program_id(0).to(tl.int64)
    amax = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        x = tl.load(x_ptr + row * stride_x + cols, mask=cols < n_cols, other=0.0).to(tl.float32)
        amax = tl.maximum(amax, tl.abs(x))
    scale = tl.maximum(tl.math.div_rn(tl.max(amax, axis=0), fp8_max), min_scale)
    tl.store(scale_ptr + row, scale)
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        mask = cols < n_cols
        x = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
        q = tl.minimum(tl.maximum(tl.math.div_rn(x, scale), -fp8_max), fp8_max)
        tl.store(q_ptr + row * stride_q + cols, q.to(q_ptr.dtype.element_ty), mask=mask)


def per_token_quant_fp8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, K] with contiguous rows -> (e4m3 [M, K], fp32 scale [M, 1])."""
    if x.dim() != 2 or x.stride(1) != 1:
        raise ValueError(f"x must be [M, K] with contiguous rows, got {tuple(x.shape)}")
    n_rows, n_cols = x.shape
    q = torch.empty((n_rows, n_cols), dtype=FP8, device=x.device)
    scale = torch.empty((n_rows, 1), dtype=torch.float32, device=x.device)
    if n_rows:
        _per_token_quant_fp8_kernel[(n_rows,)](
            x, q, scale, x.stride(0), q.stride(0), n_cols, FP8_MAX, MIN_SCALE, BLOCK=1024
        )
    return q, scale
