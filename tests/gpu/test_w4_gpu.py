"""The 4-bit dequantize-and-multiply Triton kernel (kernels/w4a16_gemm.py) against the float32
reference (quantization/w4.py's dequantize_w4, then a matmul) on fresh random inputs at
Llama-3.1-8B's and 70B's layer shapes, odd batch sizes, group 128 with and without act-order,
symmetric and zero-point; and a tiny AWQ and GPTQ checkpoint served on the GPU against the
dequantized model on the CPU (GPU tier)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU"),
]

from quantized_checkpoint import write_w4_pair  # noqa: E402

from pagoda.engine.kernels.w4_gemv import w4_gemv  # noqa: E402
from pagoda.engine.kernels.w4a16_gemm import w4a16_matmul  # noqa: E402
from pagoda.engine.llm import LLM  # noqa: E402
from pagoda.engine.quantization.w4 import dequantize_w4, pack_columns  # noqa: E402
from pagoda.engine.sampling_params import SamplingParams  # noqa: E402

SHAPES = [(4096, 4096), (4096, 14336), (14336, 4096), (8192, 28672)]  # (K, N)
GROUP = 128


def random_w4(n: int, k: int, kind: str, g: torch.Generator) -> tuple[torch.Tensor, ...]:
    """(packed, scales, zeros, g_idx) on the GPU: sym has every zero 8, zero-point random zeros,
    act-order a random permutation of the groups over the inputs."""
    q = torch.randint(0, 16, (n, k), device="cuda", generator=g)
    groups = k // GROUP
    scales = (0.5 + torch.rand(groups, n, device="cuda", generator=g)) * 0.004
    if kind == "sym":
        zeros = torch.full((groups, n), 8, device="cuda")
    else:
        zeros = torch.randint(0, 16, (groups, n), device="cuda", generator=g)
    g_idx = None
    if kind == "act-order":
        g_idx = (torch.randperm(k, device="cuda", generator=g) // GROUP).to(torch.int32)
    return pack_columns(q), scales.half(), zeros.to(torch.uint8), g_idx


@pytest.mark.parametrize("kind", ["sym", "zero-point", "act-order"])
@pytest.mark.parametrize("batch", [1, 3, 16, 17, 100, 257])
@pytest.mark.parametrize(("k", "n"), SHAPES)
def test_w4a16_matches_the_reference(k: int, n: int, batch: int, kind: str) -> None:
    g = torch.Generator("cuda").manual_seed(k + 3 * n + batch)
    packed, scales, zeros, g_idx = random_w4(n, k, kind, g)
    x = torch.randn(batch, k, device="cuda", generator=g).to(torch.bfloat16)
    bias = torch.randn(n, device="cuda", generator=g).to(torch.bfloat16)
    out = w4a16_matmul(x, packed, scales, zeros, GROUP, g_idx, bias)
    assert out.dtype == torch.bfloat16 and out.shape == (batch, n)
    weight = dequantize_w4(packed, scales, zeros, GROUP, g_idx)
    want = x.float() @ weight.T + bias.float()
    rel = ((out.float() - want).norm() / want.norm()).item()
    # bf16 output rounding (2^-9); act-order also rounds each weight to bf16 before the product.
    assert rel < 1e-2, rel


@pytest.mark.parametrize("batch", [1, 5, 33])
def test_one_group_over_all_inputs_and_fp16(batch: int) -> None:
    """group -1 (one scale a row: the group is K), fp16 activations, no bias, a split-K given;
    at one row the GEMV too."""
    g = torch.Generator("cuda").manual_seed(batch)
    n, k = 1000, 4096  # N no multiple of the block
    q = torch.randint(0, 16, (n, k), device="cuda", generator=g)
    scales = (torch.rand(1, n, device="cuda", generator=g) * 0.004).half()
    zeros = torch.randint(0, 16, (1, n), device="cuda", generator=g).to(torch.uint8)
    x = torch.randn(batch, k, device="cuda", generator=g).half()
    packed = pack_columns(q)
    want = x.float() @ dequantize_w4(packed, scales, zeros, k).T
    for split_k in (1, 4):
        out = w4a16_matmul(x, packed, scales, zeros, k, None, None, split_k=split_k)
        assert ((out.float() - want).norm() / want.norm()).item() < 1e-2
    if batch == 1:  # the one-row GEMV, masked (N = 1000), its K steps inside the one group
        out = w4_gemv(x, packed, scales, zeros, k, None)
        assert ((out.float() - want).norm() / want.norm()).item() < 1e-2


@pytest.mark.parametrize("stages", [2, 3, 4])
@pytest.mark.parametrize(("k", "n"), SHAPES)
def test_the_one_row_gemv_pipelined(k: int, n: int, stages: int) -> None:
    """The GEMV with K steps in flight (cp.async into shared memory), as the sweep may choose:
    zero points, bf16, both tile widths."""
    g = torch.Generator("cuda").manual_seed(k + n + stages)
    packed, scales, zeros, _ = random_w4(n, k, "zero-point", g)
    x = torch.randn(1, k, device="cuda", generator=g, dtype=torch.bfloat16)
    want = x.float() @ dequantize_w4(packed, scales, zeros, GROUP).T
    for block_k, warps in ((1024, 4), (2048, 8)):
        out = w4_gemv(x, packed, scales, zeros, GROUP, None, 16, block_k, warps, stages)
        assert ((out.float() - want).norm() / want.norm()).item() < 1e-2, (block_k, stages)


@pytest.mark.parametrize("fmt", ["awq", "gptq-act-order", "gptq-v2-channel"])
def test_a_four_bit_checkpoint_on_the_gpu_matches_the_dequantized_model(
    tmp_path: Path, fmt: str
) -> None:
    stored, plain = write_w4_pair(tmp_path, fmt)
    prompt = {"prompt_token_ids": [5, 17, 42, 99, 3, 8, 8, 120, 44, 7, 61, 250, 9, 13, 77, 31, 2]}
    params = SamplingParams(max_tokens=4, temperature=0.0, prompt_logprobs=0)
    small = dict(max_num_seqs=4, num_gpu_blocks_override=64, max_model_len=64)
    [want] = LLM(str(plain), dtype="float32", device="cpu", **small).generate(prompt, params)
    # bf16's own error on this model (the dequantized weights and activations rounded to bf16, as
    # the act-order path rounds its dequantized tile): the GPU may differ from float32 by a few
    # times that, not by more.
    [bf16] = LLM(str(plain), dtype="bfloat16", device="cpu", **small).generate(prompt, params)
    llm = LLM(str(stored), dtype="bfloat16", device="cuda", **small)
    layer = llm.engine.runner.model.model.layers[0].mlp.down_proj  # type: ignore[attr-defined]
    assert layer.get_buffer("weight_packed").is_cuda
    [got] = llm.generate(prompt, params)
    assert want.prompt_logprobs and got.prompt_logprobs and bf16.prompt_logprobs
    for pos in range(1, len(prompt["prompt_token_ids"])):
        token = prompt["prompt_token_ids"][pos]
        exact = want.prompt_logprobs[pos][token]
        bf16_error = abs(bf16.prompt_logprobs[pos][token] - exact)
        assert got.prompt_logprobs[pos][token] == pytest.approx(
            exact, abs=max(5e-2 + 2e-2 * abs(exact), 3 * bf16_error)
        ), (pos, bf16_error)
