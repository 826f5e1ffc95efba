"""Check every Triton kernel against its reference, then time them, in one run on the GPU machine.

    python benchmarks/gpu/run_kernels.py [--quick] [--tune]

Prints a table last: per check family the worst relative error; per timing the median time (CUDA
graph replays), the memory floor (fewest bytes / measured copy bandwidth) and the fraction of it
achieved; --tune adds the attention kernel's tile and split variants. Exits 1 if any check fails.
Writes results.json under $OUT when OUT is set.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
from pathlib import Path

import torch
import triton
import triton.testing

# The cases and checks are the GPU tier's (tests/gpu/kernel_cases.py): this driver times them too.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "gpu"))
from kernel_cases import (
    CACHE_SHAPES,
    HEAD_CONFIGS,
    HEAD_DIMS,
    NORM_SHAPES,
    ROTARY_SHAPES,
    SILU_SHAPES,
    TOLERANCE,
    attention_batches,
    check_attention,
    check_fused_add_rms_norm,
    check_reshape_and_cache,
    check_rms_norm,
    check_rotary,
    check_silu_and_mul,
    make_attention_batch,
    split_forward,
    worst,
)

from pagoda.engine.attention.rope import Rope
from pagoda.engine.attention.triton_unified import TritonAttentionBackend
from pagoda.engine.kernels.activation import silu_and_mul, silu_and_mul_ref
from pagoda.engine.kernels.reshape_and_cache import reshape_and_cache, reshape_and_cache_ref
from pagoda.engine.kernels.rms_norm import fused_add_rms_norm, fused_add_rms_norm_ref
from pagoda.engine.kernels.unified_attention import decode_num_splits, unified_attention

# Llama-3.1-8B: 32 q heads, 8 kv heads, head_dim 128, hidden 4096, intermediate 14336.
HQ, HKV, D, HIDDEN, INTER = 32, 8, 128, 4096, 14336


def bench(fn) -> float:
    """Median microseconds over CUDA graph replays (launch gaps out of the number)."""
    fn()
    torch.cuda.synchronize()
    return triton.testing.do_bench_cudagraph(fn, rep=50, return_mode="median") * 1e3


def run_checks(gen: torch.Generator, quick: bool) -> list[tuple[str, int, float, bool]]:
    rows = []
    backend = TritonAttentionBackend()
    batches = attention_batches(gen)
    errs, ok = [], True
    for name, seqs in batches.items():
        for hq, hkv in HEAD_CONFIGS[:2] if quick else HEAD_CONFIGS:
            for d in HEAD_DIMS:
                err, cache_ok = check_attention(
                    backend.forward, seqs, hq, hkv, d, gen, num_pad_tokens=3
                )
                if not (cache_ok and err < TOLERANCE):
                    print(f"FAIL attention {name} {hq}/{hkv} d{d}: err {err} cache_ok {cache_ok}")
                errs.append(err)
                ok &= cache_ok
    rows.append(
        ("attention backend (all batches)", len(errs), worst(errs), ok and worst(errs) < TOLERANCE)
    )
    errs, ok = [], True
    for splits in (2, 4, 16):
        for hq, hkv, d in [(32, 8, 128), (9, 3, 64), (64, 8, 128)]:
            seqs = batches["decode"][:40] + [(0, 1), (4095, 1)]
            err, cache_ok = check_attention(split_forward(splits), seqs, hq, hkv, d, gen)
            errs.append(err)
            ok &= cache_ok
    rows.append(
        ("attention split-KV decode", len(errs), worst(errs), ok and worst(errs) < TOLERANCE)
    )
    for name, fn, shapes in [
        ("rms_norm", check_rms_norm, NORM_SHAPES),
        ("fused_add_rms_norm", check_fused_add_rms_norm, NORM_SHAPES),
        ("silu_and_mul", check_silu_and_mul, SILU_SHAPES),
        ("reshape_and_cache + rotary", check_rotary, ROTARY_SHAPES),
    ]:
        errs = [fn(*shape, gen) for shape in shapes]
        rows.append((name, len(errs), worst(errs), worst(errs) < TOLERANCE))
    exact = [check_reshape_and_cache(*shape, gen) for shape in CACHE_SHAPES]
    rows.append(
        ("reshape_and_cache (exact)", len(exact), 0.0 if all(exact) else math.nan, all(exact))
    )
    return rows


def measure_ceilings() -> tuple[float, float]:
    """Copy bandwidth (bytes read + written per second) and bf16 matmul FLOP/s on this card."""
    src = torch.randn(1 << 29, device="cuda")  # 2 GiB
    dst = torch.empty_like(src)
    copy_us = triton.testing.do_bench(lambda: dst.copy_(src), rep=200, return_mode="median") * 1e3
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    mm_us = bench(lambda: a @ b)
    return 2 * src.numel() * 4 / (copy_us * 1e-6), 2 * 8192**3 / (mm_us * 1e-6)


def decode_timings(
    gen: torch.Generator, bw: float, num_sms: int, quick: bool, tune: bool
) -> list[dict]:
    rows = []
    shapes = [(b, c) for b in (64, 128, 256) for c in (512, 1024, 2048)] + [
        (1, 4096),
        (8, 2048),
        (32, 1024),
    ]
    if quick:
        shapes = [(64, 1024), (256, 2048), (1, 4096)]
    tuning = {(64, 1024), (256, 2048), (1, 4096), (32, 1024)}
    for batch, ctx in shapes:
        b = make_attention_batch(
            [(ctx - 1, 1)] * batch, HQ, HKV, D, torch.bfloat16, torch.device("cuda"), gen
        )
        m = b.meta
        kv_bytes = batch * ctx * HKV * D * 2 * 2
        floor_us = kv_bytes / bw * 1e6
        auto = decode_num_splits(batch, HKV, num_sms)
        variants = [dict(num_splits=auto)]
        if tune and (batch, ctx) in tuning:
            variants += [
                dict(num_splits=s, tile_n=t, num_warps=w)
                for s in sorted({auto, 2 * auto})
                for t in (32, 64, 128)
                for w in (4, 8)
            ]
        for kw in variants:
            us = bench(
                lambda b=b, m=m, kw=kw: unified_attention(
                    b.q,
                    b.k_cache,
                    b.v_cache,
                    m.query_start_loc,
                    m.seq_lens,
                    m.block_tables,
                    1,
                    D**-0.5,
                    **kw,
                )
            )
            rows.append(
                dict(
                    kernel="decode attention",
                    shape=f"B{batch} ctx{ctx}",
                    config=kw,
                    us=us,
                    floor_us=floor_us,
                    frac=floor_us / us,
                )
            )
        del b
    return rows


def prefill_timings(gen: torch.Generator, mm_flops: float, bw: float, tune: bool) -> list[dict]:
    """Fresh and chunked prefill, and a W1-like mixed step: 240 decodes beside 2 prefill chunks."""
    rows = []
    mixed = [(1023, 1)] * 240 + [(0, 1024), (512, 768)]
    cases = [
        ("16 x 1024 fresh", [(0, 1024)] * 16),
        ("4 x 512 chunk at 3584", [(3584, 512)] * 4),
        ("240 decodes ctx1024 + 2 chunks", mixed),
    ]
    variants = [{}] + [
        dict(block_m=bm, tile_n=t, num_warps=w, num_stages=st)
        for bm, t, w, st in [
            (64, 64, 4, 2),
            (16, 64, 4, 2),
            (32, 64, 4, 2),
            (128, 64, 8, 2),
            (128, 64, 8, 3),
            (64, 128, 8, 2),
            (128, 128, 8, 2),
        ]
        if tune
    ]
    for name, seqs in cases:
        b = make_attention_batch(seqs, HQ, HKV, D, torch.bfloat16, torch.device("cuda"), gen)
        m = b.meta
        # QK^T and PV over the causal triangle of each chunk: 4 * D FLOPs per (query, visible key, head).
        flops = sum(4 * D * HQ * (q * c + q * (q + 1) / 2) for c, q in seqs)
        kv_bytes = sum(c + q for c, q in seqs) * HKV * D * 2 * 2
        floor_us = max(flops / mm_flops, kv_bytes / bw) * 1e6
        for kw in variants:
            us = bench(
                lambda b=b, m=m, kw=kw: unified_attention(
                    b.q,
                    b.k_cache,
                    b.v_cache,
                    m.query_start_loc,
                    m.seq_lens,
                    m.block_tables,
                    m.max_query_len,
                    D**-0.5,
                    **kw,
                )
            )
            rows.append(
                dict(
                    kernel="prefill attention",
                    shape=name,
                    config=kw,
                    us=us,
                    floor_us=floor_us,
                    frac=floor_us / us,
                    tflops=flops / us / 1e6,
                )
            )
        del b
    return rows


def small_kernel_timings(gen: torch.Generator, bw: float) -> list[dict]:
    rows = []

    def add(kernel: str, shape: str, nbytes: int, fn, ref) -> None:
        us, ref_us = bench(fn), bench(ref)
        floor_us = nbytes / bw * 1e6
        rows.append(
            dict(
                kernel=kernel,
                shape=shape,
                config={"torch_us": round(ref_us, 1)},
                us=us,
                floor_us=floor_us,
                frac=floor_us / us,
            )
        )

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, device="cuda").to(torch.bfloat16)

    for t in (256, 4096):
        x, res, w = randn(t, HIDDEN), randn(t, HIDDEN), randn(HIDDEN)
        add(
            "fused_add_rms_norm",
            f"T{t} h{HIDDEN}",
            4 * t * HIDDEN * 2,
            lambda: fused_add_rms_norm(x, res, w, 1e-5),
            lambda: fused_add_rms_norm_ref(x, res, w, 1e-5),
        )
        x = randn(t, 2 * INTER)
        add(
            "silu_and_mul",
            f"T{t} I{INTER}",
            3 * t * INTER * 2,
            lambda: silu_and_mul(x),
            lambda: silu_and_mul_ref(x),
        )
        qkv = randn(t, (HQ + 2 * HKV) * D)
        q, kn, vn = (
            x.view(t, h, D)
            for x, h in zip(qkv.split([HQ * D, HKV * D, HKV * D], dim=-1), (HQ, HKV, HKV))
        )
        pos = torch.randint(0, 8192, (t,), device="cuda")
        table = randn(8192, D).float()
        kc, vc = randn(t // 16 * 4, 16, HKV, D), randn(t // 16 * 4, 16, HKV, D)
        slots = torch.randperm(kc.shape[0] * 16, device="cuda")[:t]
        rope = Rope(pos, table)
        add(
            "reshape_and_cache + rotary",
            f"T{t} {HQ}/{HKV}x{D}",
            (2 * t * HQ * D + 4 * t * HKV * D) * 2,
            lambda: reshape_and_cache(kn, vn, kc, vc, slots, rotate=(q, pos, table)),
            lambda: (rope.apply(q, kn), reshape_and_cache_ref(kn, vn, kc, vc, slots)),
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer shapes")
    parser.add_argument(
        "--tune", action="store_true", help="time tile and split variants of attention"
    )
    args = parser.parse_args()
    seed = random.randrange(2**31)
    gen = torch.Generator(device="cuda").manual_seed(seed)
    props = torch.cuda.get_device_properties(0)
    print(
        f"device {props.name}, {props.multi_processor_count} SMs; torch {torch.__version__}, triton {triton.__version__}; seed {seed}",
        flush=True,
    )

    checks = run_checks(gen, args.quick)
    bw, mm = measure_ceilings()
    timings = decode_timings(gen, bw, props.multi_processor_count, args.quick, args.tune)
    timings += prefill_timings(gen, mm, bw, args.tune)
    timings += small_kernel_timings(gen, bw)

    print(
        f"\nceilings: copy {bw / 1e12:.2f} TB/s (read + write), bf16 matmul {mm / 1e12:.0f} TFLOP/s"
    )
    for t in timings:
        extra = f" {t['tflops']:.0f} TFLOP/s" if "tflops" in t else ""
        print(
            f"{t['kernel']:<20} {t['shape']:<24} {json.dumps(t['config']):<70} {t['us']:9.1f} us  floor {t['floor_us']:8.1f} us  {t['frac']:5.2f}{extra}"
        )
    print(f"\n{'check':<34} {'cases':>5} {'max rel err':>12}  result")
    for name, n, err, ok in checks:
        print(f"{name:<34} {n:>5} {err:>12.2e}  {'ok' if ok else 'FAIL'}")
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "results.json"), "w") as f:
            json.dump(
                dict(
                    device=props.name,
                    seed=seed,
                    copy_bw=bw,
                    matmul_flops=mm,
                    checks=checks,
                    timings=timings,
                ),
                f,
                indent=1,
            )
    return 0 if all(ok for *_, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
