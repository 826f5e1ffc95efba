"""SiLU-and-mul, the gate of a gated MLP: x = [gate | up] -> silu(gate) * up."""

from __future__ import annotations

import torch

from pagoda.engine.kernels.triton_import import tl, triton

_BLOCK = 1024


@triton.jit
def _silu_and_mul_kernel(x_ptr, out_ptr, stride_x, stride_o, n_cols, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < n_cols
    gate = tl.load(x_ptr + row * stride_x + cols, mask=mask).to(tl.float32)
    up = tl.load(x_ptr + row * stride_x + n_cols + cols, mask=mask).to(tl.float32)
    out = gate / (1.0 + tl.exp(-gate)) * up
    tl.store(out_ptr + row * stride_o + cols, out.to(out_ptr.dtype.element_ty), mask=mask)


def _check(x: torch.Tensor) -> None:
    if x.dim() != 2 or x.shape[1] % 2 or x.stride(1) != 1:
        raise ValueError(
            f"x must be [N, 2 * intermediate] with contiguous rows, got {tuple(x.shape)}"
        )


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """x [N, 2I] -> [N, I]."""
    _check(x)
    n_rows, n_cols = x.shape[0], x.shape[1] // 2
    out = torch.empty((n_rows, n_cols), dtype=x.dtype, device=x.device)
    if n_rows:
        _silu_and_mul_kernel[(n_rows, triton.cdiv(n_cols, _BLOCK))](
            x, out, x.stride(0), out.stride(0), n_cols, BLOCK=_BLOCK, num_warps=4
        )
    return out


def silu_and_mul_ref(x: torch.Tensor) -> torch.Tensor:
    _check(x)
    gate, up = x.float().chunk(2, dim=-1)
    return (torch.nn.functional.silu(gate) * up).to(x.dtype)
