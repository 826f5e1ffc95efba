"""The one-row kernels of batch-1 decode (kernels/w8_gemv.py's row kernel, kernels/w4_gemv.py):
against their references under Triton's interpreter, with tiles and pipeline stages other than
the defaults; and compiled for sm_90, that the weights are read in 16-byte vectors and that stages
above one do become asynchronous copies (the interpreter runs neither question)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hopper_compile import compile_w4_gemv, compile_w8_row

INTERPRETED = r"""
import torch
from pagoda.engine.kernels.w8_gemv import w8_gemv_row
from pagoda.engine.kernels.w4_gemv import w4_gemv
from pagoda.engine.quantization.w4 import dequantize_w4, pack_columns, w4_linear_reference

gen = torch.Generator().manual_seed(int.from_bytes(os.urandom(4), "little"))
# INT8 weights (the interpreter has no e4m3), fp16 activations: part-filled row tiles, a K that
# no step divides, several steps in flight.
for n, k, tiles in [(40, 300, (16, 128, 4, False, 3)), (64, 1024, (8, 256, 4, True, 2)),
                    (24, 2048, (None, None, 4, None, None))]:
    q = torch.randint(-127, 128, (n, k), generator=gen, dtype=torch.int8)
    scale = torch.rand(n, generator=gen) * 0.01 + 0.001
    x = torch.randn(1, k, generator=gen).half()
    bias = torch.randn(n, generator=gen).half()
    want = (x.float() @ (q.float() * scale[:, None]).T + bias.float()).half()
    got = w8_gemv_row(x, q, scale, bias, *tiles)
    torch.testing.assert_close(got, want, rtol=2e-3, atol=2e-3)
for n, k, group, stages in [(48, 512, 64, 3), (40, 2048, 128, 2)]:
    groups = k // group
    qw = torch.randint(0, 16, (n, k), generator=gen)
    scales = (torch.rand(groups, n, generator=gen) * 0.01 + 0.001).half()
    zeros = torch.randint(0, 16, (groups, n), generator=gen).to(torch.uint8)
    x = torch.randn(1, k, generator=gen).half()
    packed = pack_columns(qw)
    want = w4_linear_reference(x, dequantize_w4(packed, scales, zeros, group), None)
    got = w4_gemv(x, packed, scales, zeros, group, None, 16, 256, 4, stages)
    torch.testing.assert_close(got, want, rtol=2e-3, atol=2e-3)
print("kernels ok")
"""


def test_the_row_kernels_match_their_references_under_the_interpreter() -> None:
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    run = subprocess.run(
        [sys.executable, "-c", "import os\n" + INTERPRETED],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0 and "kernels ok" in run.stdout, run.stderr[-3000:]


@pytest.mark.parametrize(
    ("block_n", "block_k", "sum_each_step"), [(8, 1024, False), (32, 256, True)]
)
@pytest.mark.parametrize("stages", [1, 3])
def test_the_fp8_row_kernel_compiles_to_vector_reads_and_pipelines_on_request(
    stages: int, block_n: int, block_k: int, sum_each_step: bool
) -> None:
    pytest.importorskip("triton")
    ptx = compile_w8_row(block_n, block_k, sum_each_step, stages).asm["ptx"]
    assert "ld.global.b8" not in ptx  # no byte-wise weight reads
    if stages == 1:
        assert "ld.global.v4.b32" in ptx and "cp.async" not in ptx
    else:
        assert "cp.async.cg.shared.global" in ptx  # 16-byte asynchronous copies


@pytest.mark.parametrize(("even", "block_k", "sub"), [(True, 1024, 128), (False, 2048, 2048)])
@pytest.mark.parametrize("stages", [1, 3])
def test_the_4bit_gemv_compiles_for_hopper_and_pipelines_on_request(
    stages: int, even: bool, block_k: int, sub: int
) -> None:
    """Unmasked and masked tiles; one stage reads unmasked words in 16-byte vectors, more copy
    them asynchronously."""
    pytest.importorskip("triton")
    ptx = compile_w4_gemv(16, block_k, 8, stages, group=sub, even=even, has_bias=True).asm["ptx"]
    if stages == 1:
        assert "cp.async" not in ptx and ("ld.global.v4.b32" in ptx or not even)
    else:
        assert "cp.async" in ptx
