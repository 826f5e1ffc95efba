"""Punica-style LoRA kernels in Triton: shrink (x A^T, down to the rank) and expand (s B^T, added
into the layer's output), over tokens grouped by slot (LoRABatch), so a batch that mixes adapters
and the base runs in one launch each, and a CUDA graph captured once serves any mix. Every launch
size depends on the pass's token count M and the layer's shape only, never on the mix. The
reference is pagoda.engine.lora.ops, whose rounding they keep: s is rounded to x's dtype once,
from float32 sums; y += s B^T is summed in float32 and rounded once.

Shrink, split-K. At decode a slot holds a few dozen tokens, one block of rows, so a program per
(slot, row block) would leave most SMs idle while each walks all of K (4,096; 14,336 for
down_proj). The grid's third axis splits K instead: enough chunks (of at least MIN_CHUNK
columns) for about two programs per SM when every slot's tokens fill one row block
(shrink_plan); a program sums its chunk in float32 into a workspace [splits, M, N], and a
second launch (_lora_shrink_reduce_kernel) adds the splits in a fixed order and rounds: the
result does not depend on which program ran first, unlike atomic adds (it does on M, which sets
the split, in float32's last bits, as the base GEMMs' own kernels do). One split (prefill's many
row blocks already fill the GPU) stores s directly. All n slices of a layer (q|k|v, gate|up) are
one shrink: A is stacked [slots, n*R, K]; N = n*R is one block up to 128 (rank 32 of q|k|v), so x
is read once.

Expand, one launch per layer. B is stacked over the slices on the output axis, [slots, sum(out_i),
R], so y's column c takes B's row c; the grid's first axis runs over column blocks of slice 0,
then of slice 1, then 2 (a block never crosses a slice's end), and a block of slice i reads s's
columns i*R : (i+1)*R (64 at a time). A program walks its slot's row blocks (the grid's third axis
interleaves them): at decode, slots of ~M/slots tokens, no program is launched only to return,
and a slot holding every token still has a program per column block.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch

from pagoda.engine.kernels.triton_import import tl, triton
from pagoda.engine.lora.batch import LoRABatch

MIN_CHUNK = 256  # K columns a shrink program sums at least: below it the splits' sums cost more
PROGRAMS_PER_SM = 2
MAX_SLICES = 3  # q|k|v


@triton.jit
def _lora_shrink_kernel(
    x_ptr,
    a_ptr,
    out_ptr,
    sorted_ptr,
    counts_ptr,
    starts_ptr,
    K,
    N,
    K_PER_SPLIT,
    stride_xm,
    stride_as,
    stride_an,
    stride_osplit,
    stride_om,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    IEEE: tl.constexpr,
):
    """out[split, rows, block] = x[rows, chunk] A[slot, block, chunk]^T for one block of a slot's
    rows, one K chunk and one block of N (out is s itself, in x's dtype, when there is one split).
    """
    pid_m = tl.program_id(0)
    slot = tl.program_id(1)
    n_blocks = tl.cdiv(N, BLOCK_N)
    split = tl.program_id(2) // n_blocks
    pid_n = tl.program_id(2) % n_blocks
    count = tl.load(counts_ptr + slot)
    if pid_m * BLOCK_M >= count:
        return
    start = tl.load(starts_ptr + slot)
    offs = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = offs < count
    rows = tl.load(sorted_ptr + start + offs, mask=row_mask, other=0).to(tl.int64)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_mask = cols < N
    a_base = a_ptr + slot.to(tl.int64) * stride_as
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    k_lo = split * K_PER_SPLIT  # chunks are whole BLOCK_Ks: only the last one ends inside one
    k_hi = tl.minimum(k_lo + K_PER_SPLIT, K)
    for k0 in range(k_lo, k_hi, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_mask = ks < K
        x = tl.load(
            x_ptr + rows[:, None] * stride_xm + ks[None, :],
            mask=row_mask[:, None] & k_mask[None, :],
            other=0.0,
        )
        a = tl.load(
            a_base + cols[:, None] * stride_an + ks[None, :],
            mask=col_mask[:, None] & k_mask[None, :],
            other=0.0,
        )
        if IEEE:  # float32 models: no TF32 rounding, as torch's own float32 matmuls
            acc += tl.dot(x, tl.trans(a), input_precision="ieee")
        else:
            acc += tl.dot(x, tl.trans(a))
    tl.store(
        out_ptr + split * stride_osplit + rows[:, None] * stride_om + cols[None, :],
        acc.to(out_ptr.dtype.element_ty),
        mask=row_mask[:, None] & col_mask[None, :],
    )


@triton.jit
def _lora_shrink_reduce_kernel(
    ws_ptr,
    s_ptr,
    sorted_ptr,
    counts_ptr,
    starts_ptr,
    N,
    SPLITS,
    stride_wsplit,
    stride_wm,
    stride_sm,
    LAST_SLOT: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    UNROLL: tl.constexpr,
):
    """s[rows] = sum over splits of ws[split, rows], in split order, rounded to s's dtype, for a
    block of the tokens that have a slot (sorted positions starts[0] to the last slot's end) and a
    block of N."""
    pid = tl.program_id(0)
    first = tl.load(starts_ptr)  # the base model's tokens sort first
    end = tl.load(starts_ptr + LAST_SLOT) + tl.load(counts_ptr + LAST_SLOT)
    pos = first + pid * BLOCK_M + tl.arange(0, BLOCK_M)
    if first + pid * BLOCK_M >= end:
        return
    row_mask = pos < end
    rows = tl.load(sorted_ptr + pos, mask=row_mask, other=0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    offsets = rows[:, None] * stride_wm + cols[None, :]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for split0 in range(0, SPLITS, UNROLL):  # UNROLL loads in flight, not one L2 trip at a time
        for j in tl.static_range(UNROLL):
            split = split0 + j
            n = tl.where(split < SPLITS, N, 0)  # past the last split: nothing
            acc += tl.load(
                ws_ptr + split * stride_wsplit + offsets,
                mask=row_mask[:, None] & (cols < n)[None, :],
                other=0.0,
            )
    tl.store(
        s_ptr + rows[:, None] * stride_sm + cols[None, :],
        acc.to(s_ptr.dtype.element_ty),
        mask=row_mask[:, None] & (cols < N)[None, :],
    )


@triton.jit
def _lora_expand_kernel(
    s_ptr,
    b_ptr,
    y_ptr,
    sorted_ptr,
    counts_ptr,
    starts_ptr,
    N0,
    N1,
    N2,
    R,
    stride_sm,
    stride_bs,
    stride_bn,
    stride_ym,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_R: tl.constexpr,
    IEEE: tl.constexpr,
):
    """y[rows, block] += s[rows, i*R : (i+1)*R] B[slot, block]^T for one column block (of slice
    i) and every BLOCK_M-th row block of the slot's tokens from the program's third index."""
    pid_n = tl.program_id(0)
    slot = tl.program_id(1)
    pid_m = tl.program_id(2)
    count = tl.load(counts_ptr + slot)
    if pid_m * BLOCK_M >= count:
        return
    start = tl.load(starts_ptr + slot)
    # Column blocks: slice 0's cdiv(N0, BLOCK_N), then slice 1's, then slice 2's (N1, N2 may be 0).
    blocks0 = tl.cdiv(N0, BLOCK_N)
    blocks01 = blocks0 + tl.cdiv(N1, BLOCK_N)
    in1 = pid_n >= blocks0
    in2 = pid_n >= blocks01
    first_block = tl.where(in2, blocks01, tl.where(in1, blocks0, 0))
    slice_start = tl.where(in2, N0 + N1, tl.where(in1, N0, 0))
    slice_size = tl.where(in2, N2, tl.where(in1, N1, N0))
    s_col0 = (in1.to(tl.int32) + in2.to(tl.int32)) * R
    local = (pid_n - first_block) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_mask = local < slice_size
    cols = slice_start + local
    b_base = b_ptr + slot.to(tl.int64) * stride_bs + cols[:, None] * stride_bn
    for m0 in range(pid_m * BLOCK_M, count, tl.num_programs(2) * BLOCK_M):
        offs = m0 + tl.arange(0, BLOCK_M)
        row_mask = offs < count
        rows = tl.load(sorted_ptr + start + offs, mask=row_mask, other=0).to(tl.int64)
        y_ptrs = y_ptr + rows[:, None] * stride_ym + cols[None, :]
        mask = row_mask[:, None] & col_mask[None, :]
        y = tl.load(y_ptrs, mask=mask, other=0.0)  # under way while s B^T is summed
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for r0 in range(0, R, BLOCK_R):  # once up to rank 64
            rs = r0 + tl.arange(0, BLOCK_R)
            r_mask = rs < R
            s = tl.load(
                s_ptr + rows[:, None] * stride_sm + s_col0 + rs[None, :],
                mask=row_mask[:, None] & r_mask[None, :],
                other=0.0,
            )
            b = tl.load(b_base + rs[None, :], mask=col_mask[:, None] & r_mask[None, :], other=0.0)
            if IEEE:
                acc += tl.dot(s, tl.trans(b), input_precision="ieee")
            else:
                acc += tl.dot(s, tl.trans(b))
        tl.store(y_ptrs, (y.to(tl.float32) + acc).to(y_ptr.dtype.element_ty), mask=mask)


@functools.cache
def _num_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 16  # Triton's interpreter on the CPU: a nominal count (tests pick K to split or not)


def _block_m(m: int, slots: int) -> int:
    """Rows per block: about one block per slot when the tokens spread over every slot."""
    return max(16, min(64, triton.next_power_of_2(triton.cdiv(m, slots))))


class ShrinkPlan(NamedTuple):
    block_m: int
    block_n: int
    block_k: int
    splits: int  # K's chunks
    k_per_split: int  # whole BLOCK_Ks
    num_warps: int


def shrink_plan(m: int, k: int, n: int, slots: int, element_size: int, sms: int) -> ShrinkPlan:
    """The shrink's tiles for M tokens, x [M, K], A [slots, N, K]; K split into enough chunks for
    about PROGRAMS_PER_SM programs per SM over the row blocks that M tokens spread over the slots
    fill (times N's blocks), each chunk at least MIN_CHUNK columns."""
    block_m, block_n = _block_m(m, slots), max(16, min(128, triton.next_power_of_2(n)))
    # Shared memory: the x and A tiles times 3 stages, under 100 KiB; registers: the float32
    # [BLOCK_M, BLOCK_N] sums over the warps' threads.
    block_k = (128 if block_n <= 64 else 64) * 2 // element_size
    blocks = max(triton.cdiv(m, block_m), min(slots, m)) * triton.cdiv(n, block_n)
    splits = max(1, min(PROGRAMS_PER_SM * sms // blocks, k // MIN_CHUNK))
    k_per_split = triton.cdiv(triton.cdiv(k, splits), block_k) * block_k
    num_warps = 8 if block_m * block_n >= 8192 else 4
    return ShrinkPlan(
        block_m, block_n, block_k, triton.cdiv(k, k_per_split), k_per_split, num_warps
    )


def lora_shrink(x: torch.Tensor, a: torch.Tensor, batch: LoRABatch) -> torch.Tensor:
    """x [M, K] (rows contiguous), a [slots, N, K] -> s [M, N] (x's dtype; rows of base tokens
    are left unwritten: nothing reads them)."""
    m, k = x.shape
    slots, n = a.shape[0], a.shape[1]
    plan = shrink_plan(m, k, n, slots, x.element_size(), _num_sms(x.device))
    block_m, block_n, block_k, splits, k_per_split, num_warps = plan
    n_blocks = triton.cdiv(n, block_n)  # one up to rank 32 of q|k|v: x read once
    s = torch.empty((m, n), dtype=x.dtype, device=x.device)
    out = s if splits == 1 else torch.empty((splits, m, n), dtype=torch.float32, device=x.device)
    _lora_shrink_kernel[(triton.cdiv(m, block_m), slots, splits * n_blocks)](
        x,
        a,
        out,
        batch.sorted_tokens,
        batch.slot_counts,
        batch.slot_starts,
        k,
        n,
        k_per_split,
        x.stride(0),
        a.stride(0),
        a.stride(1),
        out.stride(0) if splits > 1 else 0,
        out.stride(-2),
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_K=block_k,
        IEEE=x.dtype == torch.float32,
        num_warps=num_warps,
    )
    if splits > 1:
        reduce_m = 8
        _lora_shrink_reduce_kernel[(triton.cdiv(m, reduce_m), n_blocks)](
            out,
            s,
            batch.sorted_tokens,
            batch.slot_counts,
            batch.slot_starts,
            n,
            splits,
            out.stride(0),
            out.stride(1),
            s.stride(0),
            LAST_SLOT=slots - 1,
            BLOCK_M=reduce_m,
            BLOCK_N=block_n,
            UNROLL=8,
        )
    return s


def lora_expand(
    s: torch.Tensor, b: torch.Tensor, slice_sizes: list[int], y: torch.Tensor, batch: LoRABatch
) -> None:
    """y += s B^T per token's slot: b [slots, sum(slice_sizes), R] holds slice i's B in rows
    sum(slice_sizes[:i]) onwards, read against s's columns i*R : (i+1)*R; y [M, sum] (columns
    contiguous)."""
    if len(slice_sizes) > MAX_SLICES:
        raise ValueError(f"a LoRA layer of {len(slice_sizes)} slices, above {MAX_SLICES}")
    m = s.shape[0]
    slots, r = b.shape[0], b.shape[2]
    sizes = [*slice_sizes, 0, 0][:MAX_SLICES]
    block_m = _block_m(m, slots)
    block_n = max(16, min(128, triton.next_power_of_2(max(sizes))))
    col_blocks = sum(triton.cdiv(size, block_n) for size in sizes)
    # Row-block programs per (column block, slot): one when the tokens spread over the slots.
    row_programs = triton.cdiv(m, block_m * slots)
    _lora_expand_kernel[(col_blocks, slots, row_programs)](
        s,
        b,
        y,
        batch.sorted_tokens,
        batch.slot_counts,
        batch.slot_starts,
        *sizes,
        r,
        s.stride(0),
        b.stride(0),
        b.stride(1),
        y.stride(0),
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_R=max(16, min(64, triton.next_power_of_2(r))),
        IEEE=s.dtype == torch.float32,
    )


def add_lora(
    x: torch.Tensor,
    y: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    slice_sizes: list[int],
    batch: LoRABatch,
) -> None:
    """The kernels' add_lora_ref: y += each token's adapter delta, one shrink and one expand."""
    lora_expand(lora_shrink(x, a, batch), b, slice_sizes, y, batch)
