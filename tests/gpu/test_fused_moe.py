"""The Triton fused-MoE kernel against the PyTorch reference (GPU tier), bf16, Mixtral- and
Qwen3-MoE-like shapes, batches from one token to a prefill."""

from __future__ import annotations

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU"),
]

from pagoda.engine.kernels.fused_moe import fused_moe  # noqa: E402
from pagoda.engine.layers.moe import fused_moe_reference, select_experts  # noqa: E402


@pytest.mark.parametrize("num_tokens", [1, 7, 64, 1000])
@pytest.mark.parametrize(
    "num_experts,top_k,hidden,intermediate,renormalize",
    [(8, 2, 4096, 14336 // 8, True), (128, 8, 2048, 768, False), (4, 2, 256, 96, True)],
)
def test_fused_moe(num_tokens, num_experts, top_k, hidden, intermediate, renormalize) -> None:
    gen = torch.Generator("cuda").manual_seed(num_tokens)

    def randn(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=gen, device="cuda") * scale).to(torch.bfloat16)

    x = randn(num_tokens, hidden)
    w13 = randn(num_experts, 2 * intermediate, hidden, scale=hidden**-0.5)
    w2 = randn(num_experts, hidden, intermediate, scale=intermediate**-0.5)
    weights, ids = select_experts(
        randn(num_tokens, num_experts).float(), top_k, renormalize, torch.bfloat16
    )
    got = fused_moe(x, w13, w2, weights, ids).float()
    want = fused_moe_reference(x.float(), w13.float(), w2.float(), weights.float(), ids)
    err = ((got - want).norm() / want.norm()).item()
    assert err < 1e-2, f"relative error {err}"
